"""Warnings: settings that are valid but pointless are printed by `validate` with exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lvscluster.model.loader import load_topology_with_warnings

ROOT = Path(__file__).resolve().parents[2]

OSPF_KEY = """
name: keys
defaults:
  ospf: {auth: {key: {file: ospf.key}}}
nodes:
  r1: {role: router, router_id: 10.255.0.1}
  d1: {role: director, router_id: 10.255.0.11}
links:
  - {endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}
"""

ONE_NAT_DIRECTOR_ALL_DRAINED = """
name: drained
vips:
  - name: nat
    address: 10.99.0.30
    services: [{protocol: tcp, port: 80, forward: nat, scheduler: wlc, allow_multiple_directors: true}]
    real_servers: [{node: rs1}]
nodes:
  r1: {role: router, router_id: 10.255.0.1}
  d1: {role: director, router_id: 10.255.0.11, drain: true}
  rs1: {role: real_server}
links:
  - {endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}
  - {endpoints: [d1:lan0, rs1:eth0], subnet: 10.2.0.0/24}
"""


def _topology(tmp_path: Path, text: str, key_mode: int | None = None) -> Path:
    if key_mode is not None:
        key = tmp_path / "ospf.key"
        key.write_text("s3cret\n")
        key.chmod(key_mode)
    path = tmp_path / "t.lvs.yml"
    path.write_text(text)
    return path


def test_world_readable_secret_file_is_a_warning(tmp_path: Path) -> None:
    path = _topology(tmp_path, OSPF_KEY, 0o644)
    _, warnings = load_topology_with_warnings(path)
    assert warnings == [f"{path}:4: defaults.ospf.auth.key: warning: secret file {tmp_path / 'ospf.key'} is "
                        "readable by every user (mode 0644); chmod 600 it"]


def test_private_secret_file_gives_no_warning(tmp_path: Path) -> None:
    assert load_topology_with_warnings(_topology(tmp_path, OSPF_KEY, 0o600))[1] == []


def test_one_director_warnings(tmp_path: Path) -> None:
    _, warnings = load_topology_with_warnings(_topology(tmp_path, ONE_NAT_DIRECTOR_ALL_DRAINED))
    assert [line.split(": ", 1)[1] for line in warnings] == [
        "vips[0].services[0].allow_multiple_directors: warning: allow_multiple_directors with one director: "
        "there is no other director to allow",
        "nodes.d1.drain: warning: every director is drained: the router keeps using them all (a drain only moves "
        "traffic to undrained directors)"]


def test_validate_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    path = _topology(tmp_path, OSPF_KEY, 0o644)
    done = subprocess.run([sys.executable, "-m", "lvscluster.cli", "validate", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: valid"
    assert ": warning: secret file " in done.stderr
    as_json = subprocess.run([sys.executable, "-m", "lvscluster.cli", "validate", "--json", str(path)],
                             capture_output=True, text=True, cwd=ROOT)
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["valid"] is True and report["problems"] == {str(path): []}
    assert len(report["warnings"][str(path)]) == 1
