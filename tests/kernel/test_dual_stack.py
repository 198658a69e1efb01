"""Dual stack on a real IPVS kernel: an IPv4 and an IPv6 VIP over the same two all-active directors.

`topology/dualstack.lvs.yml` as shipped: OSPF announces the IPv4 VIP, OSPFv3 the IPv6 one (the
router's next hops are the directors' link-local addresses), DR to two real servers that hold
both VIPs on lo, IPVS sync over IPv4 multicast carrying the IPv6 connections too. Commands run
in-process through the CLI app, as in test_lab_deploy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from labkit import cli, drain_undrain_holds, http_answers, service_counter, udp_answer, wait_for_ecmp

from lvscluster.lab import netns as lab_provider
from lvscluster.netlink.connections import connections

ROOT = Path(__file__).parent.parent.parent
LAB, DIRECTORS = "dualstack", ("d1", "d2")
VIP4, VIP6 = "10.99.0.10", "2001:db8:99::10"


@pytest.fixture(scope="module")
def dualstack(tmp_path_factory):
    """The dualstack lab, up and deployed once for the module (agents running: web6 has health checks)."""
    topology = tmp_path_factory.mktemp("dualstack") / "dualstack.lvs.yml"
    shutil.copy(ROOT / "topology" / "dualstack.lvs.yml", topology)
    lab_provider.down(LAB)
    code, output = cli("lab", "up", str(topology))
    assert code == 0, output
    code, output = cli("deploy", "--yes", str(topology))
    assert code == 0, output
    yield topology
    lab_provider.down(LAB)


def test_both_vips_reach_both_real_servers_through_both_directors(dualstack: Path) -> None:
    """The router spreads each VIP over both directors (OSPF and OSPFv3), and new connections to
    either VIP are answered by both real servers, over both directors; UDP over IPv6 too."""
    assert len(wait_for_ecmp(LAB, "r1", VIP4, 2)) == 2
    hops6 = wait_for_ecmp(LAB, "r1", VIP6, 2)
    assert len(hops6) == 2 and all(h.startswith("fe80::") for h in hops6), hops6
    for vip in (VIP4, VIP6):
        answers = http_answers(LAB, "c1", vip, 40)
        assert sorted(answers) == ["rs1", "rs2"], (vip, answers)
        service = f"tcp/[{vip}]:80" if ":" in vip else f"tcp/{vip}:80"
        carried = service_counter(LAB, DIRECTORS, service, 40)
        assert all(carried.values()), (vip, carried)  # ECMP gave each director some of the 40
    assert udp_answer(LAB, "c1", VIP6, 53, "ping").split(" ")[0] in ("rs1", "rs2")
    # an IPv6 connection scheduled on one director reached the other by (IPv4 multicast) sync
    synced = [c for d in DIRECTORS for c in connections(f"{LAB}.{d}") if c.origin == "sync" and VIP6 in c.vip]
    assert synced, "no IPv6 connection entry was synced between the directors"
    print(f"measured: dual stack: both VIPs over 2 directors; {len(synced)} IPv6 entries learnt by sync")


def test_a_director_drains_under_ipv6_traffic_and_no_flow_breaks(dualstack: Path, tmp_path: Path) -> None:
    """A scaletest on the IPv6 VIP: long-lived flows and new connections while d2 is drained and
    undrained; the router drops d2's OSPFv3 next hop and takes it back, and no flow breaks."""
    assert len(wait_for_ecmp(LAB, "r1", VIP6, 2)) == 2
    report = drain_undrain_holds(dualstack, tmp_path / "v6", "IPv6 scaletest", "--vip", "web6")
    hops = [len(c["next_hops"]) for c in report["ecmp_changes"]]
    assert 1 in hops and hops[-1] == 2, report["ecmp_changes"]  # d2 left the IPv6 ECMP set and came back
