"""Forwarding modes beyond DR carry real traffic: the shipped TUN and NAT topologies, end to end.

TUN: two directors, announcing the VIP through ExaBGP, encapsulate (ipip) to real servers in
another subnet, which answer the client directly. NAT: one director rewrites VIP:80 to real-server:8080 and the real servers'
replies return through it (their gateway).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from labkit import CLIENT, cli, in_node, wait_for_ecmp

from lvscluster.apply import exabgp
from lvscluster.lab import netns as lab_provider
from lvscluster.netlink import IpvsSocket

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
def lab(request, tmp_path: Path):
    name = request.param
    topology = tmp_path / f"{name}.lvs.yml"
    shutil.copy(ROOT / "topology" / f"{name}.lvs.yml", topology)
    lab_provider.down(name)
    yield name, topology
    lab_provider.down(name)


def up_and_deploy(topology: Path) -> None:
    for args in (("lab", "up", str(topology)), ("deploy", "--yes", str(topology))):
        code, output = cli(*args)
        assert code == 0, output


def traffic(name: str, vip: str, count: int, timeout: float = 60) -> dict:
    """Run the client until the VIP answers (OSPF needs a few seconds to converge)."""
    deadline = time.monotonic() + timeout
    while True:
        done = in_node(name, "c1", sys.executable, "-c", CLIENT, vip, str(count))
        if done.returncode == 0 or time.monotonic() > deadline:
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)
        time.sleep(2)


def tun_specifics(name: str, topology: Path, answers: dict) -> None:
    """The VIP lives on the real servers' tunnel device; the directors announce through ExaBGP
    (tun.lvs.yml: announcer exabgp), which deploy started; destroy stops it first, and the
    router drops the VIP at once."""
    addresses = in_node(name, "rs1", "ip", "-j", "addr", "show", "tunl0").stdout
    assert "10.99.0.20" in addresses
    assert all(exabgp.pid(f"{name}.{d}") for d in ("d1", "d2"))
    assert sorted(wait_for_ecmp(name, "r1", "10.99.0.20", 2)) == ["10.1.1.2", "10.1.2.2"]
    code, output = cli("destroy", "--yes", str(topology))
    assert code == 0 and "stop ExaBGP" in output, output
    assert wait_for_ecmp(name, "r1", "10.99.0.20", 0, timeout=30) == []
    assert not any(exabgp.pid(f"{name}.{d}") for d in ("d1", "d2"))


def nat_specifics(name: str, topology: Path, answers: dict) -> None:
    """The real servers' replies return through the director: it is their gateway."""
    route = json.loads(in_node(name, "rs1", "ip", "-j", "route", "show", "default").stdout)
    assert route[0]["gateway"] == "10.2.0.1"  # the director's LAN address


# mode: (VIP, requests, the HTTP service's dests in d1's kernel as (address, port, forward, tunnel type), what else to check)
MODES = {
    "tun": ("10.99.0.20", 60, {("10.3.0.2", 80, "tun", None), ("10.3.0.3", 80, "tun", None)}, tun_specifics),
    "nat": ("10.99.0.30", 40, {("10.2.0.2", 8080, "nat", None), ("10.2.0.3", 8080, "nat", None)}, nat_specifics),
}


@pytest.mark.parametrize("lab", list(MODES), indirect=True)
def test_forwarding_mode_carries_traffic(lab) -> None:
    """TUN: encapsulated to real servers in another subnet. NAT: VIP:80 rewritten to the real
    servers' 8080. Both: every request answered by a real server, the dests as the topology
    says, and a second deploy changes nothing."""
    name, topology = lab
    vip, requests, dests, specifics = MODES[name]
    up_and_deploy(topology)
    answers = traffic(name, vip, requests)
    assert sum(answers["http"].values()) == requests and set(answers["http"]) == {"rs1", "rs2"}
    assert answers["udp"] in ("rs1 ping", "rs2 ping")
    with IpvsSocket(f"{name}.d1") as sock:
        http = next(s for s in sock.services() if s.port == 80)
    assert {(d.address, d.port, d.forward, d.tun_type) for d in http.dests} == dests
    code, output = cli("deploy", "--yes", str(topology))
    assert code == 0 and output.strip().endswith("no changes"), output
    specifics(name, topology, answers)
