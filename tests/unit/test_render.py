"""Rendering and desired state: golden files per shipped topology, and the invariants all-active needs.

Set LVS_UPDATE_GOLDEN=1 to rewrite tests/golden/, then review the diff before committing.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import pytest

from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology, parse_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.files import write_tree
from lvscluster.plan.render import render_files

ROOT = Path(__file__).parent.parent.parent
TOPOLOGIES = sorted((ROOT / "topology").glob("*.lvs.yml"))
GOLDEN = ROOT / "tests" / "golden"


def _cluster(path: Path) -> Cluster:
    return Cluster.from_topology(load_topology(path))


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=[t.name for t in TOPOLOGIES])
def test_render_matches_golden(topology: Path, tmp_path: Path) -> None:
    cluster = _cluster(topology)
    write_tree(tmp_path, render_files(cluster, plan_cluster(cluster)))
    expected = GOLDEN / cluster.name
    if os.environ.get("LVS_UPDATE_GOLDEN"):
        shutil.rmtree(expected, ignore_errors=True)
        shutil.copytree(tmp_path, expected)
    compare = filecmp.dircmp(tmp_path, expected)
    mismatches = []

    def walk(cmp: filecmp.dircmp, prefix: str = "") -> None:
        mismatches.extend(f"{prefix}{name}" for name in cmp.diff_files + cmp.left_only + cmp.right_only)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(compare)
    assert mismatches == []


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=[t.name for t in TOPOLOGIES])
def test_render_is_stable(topology: Path, tmp_path: Path) -> None:
    cluster = _cluster(topology)
    write_tree(tmp_path / "a", render_files(cluster, plan_cluster(cluster)))
    write_tree(tmp_path / "b", render_files(_cluster(topology), plan_cluster(_cluster(topology))))
    assert not filecmp.dircmp(tmp_path / "a", tmp_path / "b").diff_files


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=[t.name for t in TOPOLOGIES])
def test_every_director_holds_the_same_ipvs_services_in_the_same_order(topology: Path) -> None:
    cluster = _cluster(topology)
    states = plan_cluster(cluster)
    services = {name: states[name].ipvs.services for name in cluster.directors}
    first = services[cluster.directors[0]]
    assert first, "a shipped topology should define services"
    assert all(s == first for s in services.values())


def test_demo_director_state() -> None:
    cluster = _cluster(ROOT / "topology" / "demo.lvs.yml")
    d1 = plan_cluster(cluster)["d1"]
    assert [a.key for a in d1.addresses] == ["10.99.0.10/32 on lo"]
    assert d1.sysctls["net.ipv4.vs.sloppy_tcp"] == "1" and d1.sysctls["net.ipv4.vs.conntrack"] == "0"
    http = d1.ipvs.services[0]
    assert http.key == "tcp/10.99.0.10:80" and http.scheduler == "mh" and http.flags == ("mh-fallback", "mh-port")
    # kernel order: the reverse of the file's real_servers order (rs1, rs2, rs3 = .4, .5, .6)
    assert [(d.address, d.weight) for d in http.dests] == [("10.2.0.6", 2), ("10.2.0.5", 1), ("10.2.0.4", 1)]
    assert [(d.state, d.interface, d.syncid) for d in d1.ipvs.daemons] == [("backup", "lan0", 10), ("master", "lan0", 10)]
    assert " network 10.99.0.10/32 area 0.0.0.0" in d1.frr.splitlines()
    assert " network 10.1.1.0/30 area 0.0.0.0" in d1.frr.splitlines()
    assert "interface lan0" not in d1.frr  # OSPF runs only on the uplinks


def test_real_server_and_router_state() -> None:
    cluster = _cluster(ROOT / "topology" / "demo.lvs.yml")
    states = plan_cluster(cluster)
    rs1 = states["rs1"]
    assert [a.key for a in rs1.addresses] == ["10.99.0.10/32 on lo"]
    assert rs1.sysctls["net.ipv4.conf.all.arp_ignore"] == "1" and rs1.sysctls["net.ipv4.conf.all.arp_announce"] == "2"
    r1 = states["r1"]
    assert r1.sysctls["net.ipv4.fib_multipath_hash_policy"] == "3"
    assert " maximum-paths 8" in r1.frr.splitlines()
    assert states["c1"].ipvs is None and states["c1"].frr is None


TUN_NAT = """
name: modes
defaults: {sysctls: {net.ipv4.vs.amemthresh: 2048}}
vips:
  - name: tun
    address: 10.99.0.20
    services: [{protocol: tcp, port: 80, forward: tun, tunnel: gue, tunnel_port: 5555}]
    real_servers: [{node: rs1}]
  - name: nat
    address: 10.99.0.30
    services: [{protocol: tcp, port: 80, forward: nat, scheduler: wlc}]
    real_servers: [{node: rs2, port: 8080, weight: 5}]
nodes:
  r1: {role: router, router_id: 10.255.0.1}
  d1: {role: director, router_id: 10.255.0.11, timeouts: {tcp: 30, tcp_fin: 5, udp: 60}}
  rs1: {role: real_server}
  rs2: {role: real_server}
links:
  - {endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}
  - {name: lan0, endpoints: [d1:lan0, rs1:eth0, rs2:eth0], subnet: 10.2.0.0/24}
"""


def test_tun_and_nat_modes() -> None:
    topology, _ = parse_topology(TUN_NAT, "modes.lvs.yml")
    states = plan_cluster(Cluster.from_topology(topology))
    tun, nat = states["d1"].ipvs.services
    assert tun.dests[0].forward == "tun" and tun.dests[0].tun_type == "gue" and tun.dests[0].tun_port == 5555
    assert nat.scheduler == "wlc" and nat.flags == () and nat.dests[0].port == 8080 and nat.dests[0].weight == 5
    assert states["d1"].sysctls["net.ipv4.ip_forward"] == "1"  # NAT forwards replies
    assert states["d1"].sysctls["net.ipv4.vs.amemthresh"] == "2048"
    assert states["d1"].ipvs.timeouts.tcp == 30
    assert states["rs1"].tunnels == ("tunl0",) and states["rs1"].addresses[0].interface == "tunl0"
    assert states["rs1"].sysctls["net.ipv4.conf.tunl0.rp_filter"] == "0"
    assert states["rs2"].addresses == ()  # NAT real servers need no VIP


def test_config_shape_ignores_banners_order_and_exit_lines_but_not_blocks() -> None:
    from lvscluster.apply.frr import config_shape

    rendered = "! d1\nfrr version 8.4\ninterface up0\n ip ospf hello-interval 1\n ip ospf bfd\nexit\n!\nbfd\n profile p\n exit\n !\nexit\n"
    running = ("Building configuration...\n\nCurrent configuration:\n!\nhostname x\ninterface up0\n ip ospf bfd\n"
               " ip ospf hello-interval 1\nexit\n!\nbfd\n profile p\n exit\n !\nexit\n!\nend\n")
    assert config_shape(rendered) == config_shape(running)
    assert ("bfd", "profile p") in config_shape(running)
    moved = "interface up1\n ip ospf bfd\n ip ospf hello-interval 1\nexit\nbfd\n profile p\nexit\n"
    assert config_shape(moved) != config_shape(running)  # same lines in another block differ
    assert config_shape(running + "router ospf\n") != config_shape(running)


def test_removals_are_vtysh_commands_block_by_block() -> None:
    from lvscluster.apply.frr import config_shape, removal_commands

    drained = "interface lo\n ip ospf cost 1000\n ip ospf passive\nexit\nrouter ospf\n network 10.99.0.10/32 area 0\nexit\n"
    normal = "interface lo\n ip ospf passive\nexit\nrouter ospf\n network 10.99.0.10/32 area 0\nexit\n"
    assert removal_commands(config_shape(normal), config_shape(drained)) == []  # only additions: vtysh -f
    assert removal_commands(config_shape(drained), config_shape(normal)) == [  # an undrain
        "configure terminal", "interface lo", "no ip ospf cost 1000", "end"]
    # a whole block goes at once; an interface's settings one by one (FRR then shows no interface)
    assert removal_commands(config_shape(normal), config_shape("ip forwarding\n")) == [
        "configure terminal", "interface lo", "no ip ospf passive", "end", "configure terminal", "no router ospf", "end"]
    assert removal_commands(config_shape("interface lo\n no ip ospf passive\nexit\n"), config_shape("interface lo\nexit\n")) == [
        "configure terminal", "interface lo", "ip ospf passive", "end"]
    assert removal_commands(config_shape("router bgp 65000\n address-family ipv4 unicast\n  network 10.99.0.10/32\n"
                                         " exit-address-family\nexit\n"),
                            config_shape("router bgp 65000\n address-family ipv4 unicast\n exit-address-family\nexit\n")) == [
        "configure terminal", "router bgp 65000", "address-family ipv4 unicast", "no network 10.99.0.10/32", "end"]


def test_dualstack_state() -> None:
    """An IPv6 VIP: family-6 services to the real servers' subnet6 addresses, the VIP /128 on lo of
    directors and real servers (no IPv6 sysctl on the real servers), OSPFv3 announcing it through
    the VIP prefix list, IPv6 forwarding and hashing on the router."""
    from lvscluster.plan.health import HealthVerdict
    from lvscluster.plan.desired import plan_director
    from lvscluster.plan.render import frr_daemons

    cluster = _cluster(ROOT / "topology" / "dualstack.lvs.yml")
    states = plan_cluster(cluster)
    d1, rs1, r1 = states["d1"], states["rs1"], states["r1"]
    assert [a.key for a in d1.addresses] == ["10.99.0.10/32 on lo", "2001:db8:99::10/128 on lo"]
    assert [a.key for a in rs1.addresses] == ["10.99.0.10/32 on lo", "2001:db8:99::10/128 on lo"]
    assert not [k for k in rs1.sysctls if k.startswith("net.ipv6")]
    assert [(s.key, s.family, s.netmask) for s in d1.ipvs.services] == [
        ("tcp/10.99.0.10:80", 4, 32), ("tcp/[2001:db8:99::10]:80", 6, 128),
        ("udp/[2001:db8:99::10]:53", 6, 128), ("fwmark6/6", 6, 128)]
    assert [d.address for d in d1.ipvs.services[1].dests] == ["2001:db8:2::5", "2001:db8:2::4"]
    assert r1.sysctls["net.ipv6.conf.all.forwarding"] == "1" and r1.sysctls["net.ipv6.fib_multipath_hash_policy"] == "3"
    assert "no ipv6 forwarding" not in r1.frr and "no ipv6 forwarding" in d1.frr
    assert "ospf6d" in frr_daemons(cluster, "d1") and "ospf6d" in frr_daemons(cluster, "r1")
    assert "ipv6 prefix-list LVSCLUSTER-VIP6 seq 5 permit 2001:db8:99::10/128" in d1.frr.splitlines()
    withdrawn = plan_director(cluster, "d1", HealthVerdict(withdrawn=frozenset({"web6"}))).frr
    assert "permit 2001:db8:99::10/128" not in withdrawn and " network 10.99.0.10/32 area 0.0.0.0" in withdrawn.splitlines()
    drained = plan_director(cluster.with_node("d1", drain=True), "d1").frr.splitlines()
    assert " set metric 1000" in drained and " ip ospf cost 1000" in drained
    # an IPv4-only topology renders no OSPFv3 at all
    assert "ospf6" not in plan_cluster(_cluster(ROOT / "topology" / "demo.lvs.yml"))["d1"].frr
