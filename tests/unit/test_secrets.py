"""OSPF keys and BGP passwords: read from a file or the environment at load, rendered into FRR,
never printed (plans, reasons, repr), written mode 0600, and both ends of an uplink must agree."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lvscluster.cli.deploy import plan_json
from lvscluster.errors import TopologyError
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.model.secrets import REDACTED, redact_frr
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_node
from lvscluster.state import NodeState

ROOT = Path(__file__).parent.parent.parent
DEMO = (ROOT / "topology" / "demo.lvs.yml").read_text()
OSPF_KEY, BGP_PASSWORD = "k3y-0spf", "bgp-pa55word"


OSPF_LINE = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}"


def with_defaults(tmp_path: Path, extra: str) -> Path:
    """The demo topology with `extra` lines in place of its `defaults.ospf` line."""
    assert OSPF_LINE in DEMO
    path = tmp_path / "demo.lvs.yml"
    path.write_text(DEMO.replace(OSPF_LINE + "\n", extra, 1))
    return path


@pytest.fixture
def keyed(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ospf.key").write_text(OSPF_KEY + "\n# only the first line counts\n")
    return with_defaults(tmp_path, "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true, auth: {key_id: 7, key: {file: keys/ospf.key}}}\n")


def test_a_file_secret_is_read_relative_to_the_topology_and_rendered_into_both_ends(keyed: Path) -> None:
    cluster = Cluster.from_topology(load_topology(keyed))
    states = plan_cluster(cluster)
    for node in ("r1", "d1", "d2"):
        assert f" ip ospf message-digest-key 7 md5 {OSPF_KEY}\n" in states[node].frr
        assert " ip ospf authentication message-digest\n" in states[node].frr
    # the model never shows it: a dump (the deployed snapshot) keeps the reference, repr too
    dumped = json.dumps(cluster.topology.model_dump(mode="json"))
    assert OSPF_KEY not in dumped and str(keyed.parent / "keys" / "ospf.key") in dumped
    assert OSPF_KEY not in repr(cluster.topology)


def test_an_environment_secret_and_the_bgp_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LVS_TEST_BGP", BGP_PASSWORD)
    path = with_defaults(tmp_path, "  announce: bgp\n  bgp: {password: {env: LVS_TEST_BGP}}\n")
    states = plan_cluster(Cluster.from_topology(load_topology(path)))
    assert " neighbor 10.1.1.2 password bgp-pa55word\n" in states["r1"].frr
    assert " neighbor 10.1.1.1 password bgp-pa55word\n" in states["d1"].frr


@pytest.mark.parametrize("auth,env,message", [
    ("{key: {file: missing.key}}", {}, "secret file {dir}/missing.key does not exist"),
    ("{key: {env: LVS_TEST_UNSET}}", {}, "environment variable LVS_TEST_UNSET (a secret) is not set"),
    ("{key: {env: LVS_TEST_LONG}}", {"LVS_TEST_LONG": "x" * 17}, "an OSPF MD5 key is at most 16 characters; Secret(env='LVS_TEST_LONG') holds 17"),
    ("{key: {env: LVS_TEST_SPACE}}", {"LVS_TEST_SPACE": "two words"}, "the secret may not contain spaces or quotes"),
    ("{key: {env: A, file: b}}", {}, "exactly one of them"),
    ("{key: {value: plain}}", {}, "unknown field (its name is not shown: it may be the secret itself); a secret is written as {{file: PATH}} or {{env: NAME}} (allowed: env, file)"),
])
def test_a_bad_secret_is_a_file_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str, env: dict, message: str) -> None:
    monkeypatch.delenv("LVS_TEST_UNSET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = with_defaults(tmp_path, f"  ospf: {{auth: {auth}}}\n")
    with pytest.raises(TopologyError) as error:
        load_topology(path)
    text = str(error.value)
    assert text.startswith(f"{path}:5: defaults.ospf.auth"), text
    assert message.format(dir=tmp_path.resolve()) in text
    assert "two words" not in text and "x" * 17 not in text  # not even in an error


def test_a_director_and_its_router_must_hold_the_same_key(keyed: Path) -> None:
    text = keyed.read_text().replace("d2:  {role: director, router_id: 10.255.0.12}",
                                     "d2:  {role: director, router_id: 10.255.0.12, ospf: {hello: 1}}")
    keyed.write_text(text)
    with pytest.raises(TopologyError) as error:
        load_topology(keyed)
    assert "nodes.d2.ospf: d2 and its router r1 differ in OSPF authentication" in str(error.value)


def test_the_ospf_key_also_authenticates_ospfv3_and_is_redacted_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With IPv6 VIPs the same key id and key go into OSPFv3's authentication trailer (HMAC-SHA-256)
    on every ospf6d uplink, at both ends; a plan never shows that key either."""
    monkeypatch.setenv("LVS_TEST_OSPF", OSPF_KEY)
    text = (ROOT / "topology" / "dualstack.lvs.yml").read_text()
    assert OSPF_LINE in text
    path = tmp_path / "dualstack.lvs.yml"
    path.write_text(text.replace(OSPF_LINE, OSPF_LINE[:-1] + ", auth: {key_id: 7, key: {env: LVS_TEST_OSPF}}}", 1))
    states = plan_cluster(Cluster.from_topology(load_topology(path)))
    line = f" ipv6 ospf6 authentication key-id 7 hash-algo hmac-sha-256 key {OSPF_KEY}\n"
    for node, uplinks in (("r1", 2), ("d1", 1), ("d2", 1)):
        assert states[node].frr.count(line) == uplinks and f" ip ospf message-digest-key 7 md5 {OSPF_KEY}\n" in states[node].frr
    printed = json.dumps(plan_json({"d1": diff_node(states["d1"], NodeState(name="d1", role="director"))}))
    assert OSPF_KEY not in printed and f"hash-algo hmac-sha-256 key {REDACTED}" in printed


def test_plans_and_reasons_never_show_the_secret(keyed: Path) -> None:
    desired = plan_cluster(Cluster.from_topology(load_topology(keyed)))["d1"]
    fresh = diff_node(desired, NodeState(name="d1", role="director"))
    printed = json.dumps(plan_json({"d1": fresh}))
    assert OSPF_KEY not in printed and f"message-digest-key 7 md5 {REDACTED}" in printed
    # a drifted FRR's frr-reload delta is part of the reason: redacted too
    drift = desired.model_copy(update={"frr": f"! differs from the desired configuration:\n+ interface up0\n"
                                              f"+  ip ospf message-digest-key 7 md5 {OSPF_KEY}\n"})
    reasons = [a.reason for a in diff_node(desired, drift)]
    assert reasons == [f"FRR configuration differs: + interface up0; + ip ospf message-digest-key 7 md5 {REDACTED}"]
    assert redact_frr(" neighbor 10.1.1.1 password pw\n") == f" neighbor 10.1.1.1 password {REDACTED}\n"


def test_render_writes_files_holding_secrets_mode_0600(keyed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "lvscluster.cli", "render", str(keyed), "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "mode 0600" in done.stdout, done.stdout + done.stderr
    assert OSPF_KEY not in done.stdout + done.stderr
    conf = out / "d1" / "frr.conf"
    assert OSPF_KEY in conf.read_text()
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o600}


def test_an_unknown_node_on_a_link_is_reported_not_a_crash(keyed: Path) -> None:
    """(hypothesis found it: the key check walked the uplinks before the unknown node was fixed)"""
    keyed.write_text(keyed.read_text().replace("  rs2: {role: real_server}", "  rs9: {role: real_server}"))
    with pytest.raises(TopologyError) as error:
        load_topology(keyed)
    assert "unknown node 'rs2'" in str(error.value)


@pytest.mark.parametrize("name,make,message", [
    ("zero", lambda p: p.symlink_to("/dev/zero"), "secret file {path} is not a regular file"),
    ("fifo", lambda p: os.mkfifo(p), "secret file {path} is not a regular file"),
    ("dir", lambda p: p.mkdir(), "secret file {path} is not a regular file"),
    ("huge", lambda p: p.write_text("k" * 70000), "secret file {path} is 70000 bytes; a secret file holds at most 65536"),
])
def test_a_secret_file_is_a_small_regular_file(tmp_path: Path, name: str, make, message: str) -> None:
    """/dev/zero once ran out of memory and a FIFO blocked the load for ever."""
    make(tmp_path / name)
    path = with_defaults(tmp_path, f"  ospf: {{auth: {{key: {{file: {name}}}}}}}\n")
    with pytest.raises(TopologyError) as error:
        load_topology(path)
    assert error.value.problems == [f"{path}:5: defaults.ospf.auth.key: " + message.format(path=(tmp_path / name).resolve())]
