"""Dual stack on the host: the shipped `dualstack` topology's IPv6 VIP reaches the router by
OSPFv3 (ospf6d) with one ECMP next hop per director, beside the IPv4 VIP by OSPFv2, and
`dualbgp`'s by BGP (FRR bgpd, or ExaBGP) over an IPv6 session per uplink; a drain and a health
withdrawal move the router off a director; and a DR real server holding the IPv6 VIP
on lo (as deploy adds it, `nodad`) never answers neighbour solicitations for it on its LAN.

Namespaces are named `v6-*` and removed even when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lvscluster.apply import frr
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster, plan_director, plan_real_server
from lvscluster.plan.health import HealthVerdict
from tests.integration.test_frr_config import Namespaces, ip, wait_for_hops, wire_routers_and_directors

ROOT = Path(__file__).parent.parent.parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path("/usr/lib/frr/ospf6d").exists(), reason="FRR is not installed (apt-get install frr)"),
]


@pytest.fixture
def namespaces():
    spaces = Namespaces()
    yield spaces
    spaces.cleanup()


@pytest.mark.parametrize("topology", ["dualstack", "dualbgp"])
def test_router_spreads_both_vips_over_every_director(topology: str, namespaces: Namespaces) -> None:
    """OSPFv2 + OSPFv3 (dualstack) and BGP over an IPv4 and an IPv6 session per uplink (dualbgp):
    one next hop per director for each VIP; a drain and a withdrawal of the IPv6 VIP move the router
    off a director for it."""
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / f"{topology}.lvs.yml"))
    ns = wire_routers_and_directors(cluster, namespaces, prefix="v6-frr")
    router = ns["r1"]
    vip4, vip6 = (f"{v.address}/{v.address.max_prefixlen}" for v in cluster.topology.vips)
    uplinks = cluster.uplinks("r1")
    v4 = {u.director.node: str(u.director.address.ip) for u in uplinks}
    face = {u.director.node: u.router.name for u in uplinks}  # the router's interface towards each director
    started = time.monotonic()
    assert wait_for_hops(router, vip6, sorted(face.values())) == sorted(face.values())
    print(f"measured: {topology}: IPv6 VIP with {len(face)} next hops {time.monotonic() - started:.1f} s after FRR started")
    assert wait_for_hops(router, vip4, sorted(v4.values())) == sorted(v4.values())
    kernel = json.loads(subprocess.run(["ip", "-n", router, "-6", "-j", "route", "show", vip6],
                                       capture_output=True, text=True, check=True).stdout)
    assert sorted(h["dev"] for h in kernel[0]["nexthops"]) == sorted(face.values())
    assert all(ipaddress.ip_address(h["gateway"]).is_link_local for h in kernel[0]["nexthops"])
    # BFD guards the IPv6 peering too (OSPFv3 neighbours, IPv6 BGP sessions): one session per family and uplink
    deadline = time.monotonic() + 10
    while True:
        bfd = json.loads(subprocess.run(["vtysh", "-N", router, "-c", "show bfd peers json"],
                                        capture_output=True, text=True).stdout or "[]")
        up = sorted((ipaddress.ip_address(p["peer"]).version, p["interface"]) for p in bfd if p["status"] == "up")
        if up == sorted((v, f) for f in face.values() for v in (4, 6)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert up == sorted((v, f) for f in face.values() for v in (4, 6)), bfd

    def deploy(variant: Cluster, verdicts: dict[str, HealthVerdict] | None = None) -> None:
        for director in cluster.directors:
            frr.reload(ns[director], plan_director(variant, director, (verdicts or {}).get(director)).frr)

    started = time.monotonic()
    deploy(cluster.with_node("d1", drain=True))  # OSPF cost on lo, OSPFv3 external metric; BGP: AS path prepended
    assert wait_for_hops(router, vip6, [face["d2"]]) == [face["d2"]]
    print(f"measured: {topology}: drain of d1 left the IPv6 VIP on d2 alone after {time.monotonic() - started:.1f} s")
    assert wait_for_hops(router, vip4, [v4["d2"]]) == [v4["d2"]]
    deploy(cluster)
    assert wait_for_hops(router, vip6, sorted(face.values())) == sorted(face.values())
    assert wait_for_hops(router, vip4, sorted(v4.values())) == sorted(v4.values())

    # d2's agent withdraws the IPv6 VIP alone: the router keeps d1 for it, both for the IPv4 VIP
    started = time.monotonic()
    deploy(cluster, {"d2": HealthVerdict(withdrawn=frozenset({"web6"}))})
    assert wait_for_hops(router, vip6, [face["d1"]]) == [face["d1"]]
    print(f"measured: {topology}: withdrawal of the IPv6 VIP on d2 took {time.monotonic() - started:.1f} s")
    assert wait_for_hops(router, vip4, sorted(v4.values()), timeout=1) == sorted(v4.values())
    assert frr.config_delta(ns["d2"], plan_director(cluster, "d2", HealthVerdict(withdrawn=frozenset({"web6"}))).frr) == []


def _probe(netns: str, address: str) -> str:
    """Connect to `address` port 9 from `netns`: "answered" (a RST came back) or "silent"."""
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET6);s.settimeout(1.5)\n"
            "try: s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError: print('answered')\n"
            "except OSError: print('silent')\nelse: print('answered')")
    return subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", code, address],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_dr_real_server_keeps_the_ipv6_vip_off_its_lan(namespaces: Namespaces) -> None:
    """No sysctl needed (there is no arp_ignore for IPv6): Linux answers a neighbour solicitation
    only for an address on the interface it arrived on, so the VIP /128 on lo is not resolvable on
    the LAN, while packets the director sends to the real server's own address (DR) are accepted."""
    from lvscluster.netlink.links import Links

    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / "dualstack.lvs.yml"))
    state = plan_real_server(cluster, "rs1")
    vip6 = str(cluster.topology.vips[1].address)
    assert not [k for k in state.sysctls if k.startswith("net.ipv6")]
    tag = f"v6-nd-{os.getpid() % 10000}"
    director, real = namespaces.add(f"{tag}-d"), namespaces.add(f"{tag}-rs")
    ip("link", "add", "v6tmp-d", "type", "veth", "peer", "name", "v6tmp-rs")
    ip("link", "set", "v6tmp-d", "netns", director, "name", "lan0")
    ip("link", "set", "v6tmp-rs", "netns", real, "name", "eth0")
    d_addr, rs_addr = (cluster.interface_on(n, 3).address6 for n in ("d1", "rs1"))
    for space, name, address in ((director, "lan0", d_addr), (real, "eth0", rs_addr)):
        ip("-n", space, "addr", "add", str(address), "dev", name, "nodad")
        ip("-n", space, "link", "set", name, "up")
    with Links(real) as links:  # as deploy adds them
        for address in state.addresses:
            links.add_address(address)
        assert {a.key for a in links.addresses(["lo"])} == {a.key for a in state.addresses}
    lo = subprocess.run(["ip", "-n", real, "-6", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert f"{vip6}/128 scope global nodad" in lo

    ip("-n", director, "-6", "route", "add", f"{vip6}/128", "dev", "lan0")  # ask the LAN for the VIP itself
    assert _probe(director, vip6) == "silent"
    neigh = subprocess.run(["ip", "-n", director, "-6", "neigh", "show", vip6], capture_output=True, text=True).stdout
    assert "lladdr" not in neigh, neigh  # INCOMPLETE or FAILED: nobody answered the solicitation
    ip("-n", director, "-6", "route", "replace", f"{vip6}/128", "via", str(rs_addr.ip), "dev", "lan0")  # DR
    assert _probe(director, vip6) == "answered"


def test_exabgp_announces_the_ipv6_vip_over_its_ipv6_sessions(namespaces: Namespaces, tmp_path: Path) -> None:
    """dualbgp with `announcer: exabgp`: each director's ExaBGP has an IPv4 and an IPv6 neighbour,
    each naming its family, and the /128 reaches the router over the IPv6 ones from both
    directors; a drain leaves d2 alone for it, d2's withdrawal of the IPv6 VIP falls back to the
    drained d1, and the IPv4 VIP keeps both directors meanwhile."""
    from lvscluster.apply import exabgp

    text = (ROOT / "topology" / "dualbgp.lvs.yml").read_text()
    (tmp_path / "dualbgp.lvs.yml").write_text(text.replace("bfd: true}", "bfd: true, announcer: exabgp}", 1))
    cluster = Cluster.from_topology(load_topology(tmp_path / "dualbgp.lvs.yml"))
    assert cluster.announcer("d1") == "exabgp"
    ns = wire_routers_and_directors(cluster, namespaces, prefix="v6-exa")
    router = ns["r1"]
    vip4, vip6 = (f"{v.address}/{v.address.max_prefixlen}" for v in cluster.topology.vips)
    uplinks = cluster.uplinks("r1")
    v4 = {u.director.node: str(u.director.address.ip) for u in uplinks}
    face = {u.director.node: u.router.name for u in uplinks}
    try:
        started = time.monotonic()
        for director in cluster.directors:
            exabgp.apply(ns[director], plan_director(cluster, director).exabgp)
        assert wait_for_hops(router, vip6, sorted(face.values())) == sorted(face.values())
        print(f"measured: exabgp: IPv6 VIP with {len(face)} next hops {time.monotonic() - started:.1f} s after ExaBGP started")
        assert wait_for_hops(router, vip4, sorted(v4.values())) == sorted(v4.values())
        desired = plan_director(cluster, "d1").exabgp
        assert exabgp.observe(ns["d1"], desired) == desired and f"route {vip6} next-hop self" in desired.routes
        assert frr.config_delta(ns["d1"], plan_director(cluster, "d1").frr) == []  # a default route per family

        started = time.monotonic()
        exabgp.apply(ns["d1"], plan_director(cluster.with_node("d1", drain=True), "d1").exabgp)
        assert wait_for_hops(router, vip6, [face["d2"]]) == [face["d2"]]
        print(f"measured: exabgp: drain of d1 left the IPv6 VIP on d2 alone after {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        exabgp.apply(ns["d2"], plan_director(cluster, "d2", HealthVerdict(withdrawn=frozenset({"web6"}))).exabgp)
        assert wait_for_hops(router, vip6, [face["d1"]]) == [face["d1"]]  # the drained one, as a last resort
        print(f"measured: exabgp: withdrawal of the IPv6 VIP on d2 took {time.monotonic() - started:.1f} s")
        assert wait_for_hops(router, vip4, [v4["d2"]]) == [v4["d2"]]  # d1 is drained for both families
    finally:
        for director in cluster.directors:
            exabgp.stop(ns[director])


def test_ospfv3_keys_authenticate_the_ipv6_peering(namespaces: Namespaces, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`ospf.auth` also puts the OSPFv3 authentication trailer (HMAC-SHA-256, same key id and key)
    on every ospf6d uplink: with the router's key d1 forms an OSPFv3 adjacency and gives the router
    its IPv6 next hop; d2 with another key never does (and ospf6d drops its packets), until it gets
    the right key."""
    text = (ROOT / "topology" / "dualstack.lvs.yml").read_text()
    line = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n"
    assert line in text
    (tmp_path / "dualstack.lvs.yml").write_text(text.replace(
        line, "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true, auth: {key_id: 7, key: {env: LVS_TEST_KEY}}}\n", 1))
    monkeypatch.setenv("LVS_TEST_KEY", "right-key")
    cluster = Cluster.from_topology(load_topology(tmp_path / "dualstack.lvs.yml"))
    monkeypatch.setenv("LVS_TEST_KEY", "wrong-key")
    wrong = plan_cluster(Cluster.from_topology(load_topology(tmp_path / "dualstack.lvs.yml")))["d2"].frr
    right = plan_cluster(cluster)["d2"].frr
    assert " ipv6 ospf6 authentication key-id 7 hash-algo hmac-sha-256 key wrong-key\n" in wrong
    assert " ipv6 ospf6 authentication key-id 7 hash-algo hmac-sha-256 key right-key\n" in right

    ns = wire_routers_and_directors(cluster, namespaces, configs={"d2": wrong}, prefix="v6-auth")
    router, vip6 = ns["r1"], f"{cluster.topology.vips[1].address}/128"
    face = {u.director.node: u.router.name for u in cluster.uplinks("r1")}

    def full_neighbours() -> list[str]:
        shown = json.loads(subprocess.run(["vtysh", "-N", router, "-c", "show ipv6 ospf6 neighbor json"],
                                          capture_output=True, text=True).stdout or "{}")
        return sorted(n["interfaceName"] for n in shown.get("neighbors", []) if n.get("state") == "Full")

    started = time.monotonic()
    assert wait_for_hops(router, vip6, [face["d1"]]) == [face["d1"]]
    print(f"measured: OSPFv3 with authentication: d1's IPv6 next hop {time.monotonic() - started:.1f} s after FRR started")
    assert full_neighbours() == [face["d1"]]
    time.sleep(5)  # longer than the dead interval (3 s): d2's OSPFv3 never came up
    assert wait_for_hops(router, vip6, [face["d1"]], timeout=1) == [face["d1"]]
    assert full_neighbours() == [face["d1"]]
    interface = json.loads(subprocess.run(["vtysh", "-N", router, "-c", f"show ipv6 ospf6 interface {face['d2']} json"],
                                          capture_output=True, text=True).stdout or "{}")
    auth = interface[face["d2"]]["authInfo"]  # the trailer is on, and d2's packets fail it
    assert auth["authType"] == "manualkey" and auth["rxPktDrop"] > 0, interface
    started = time.monotonic()
    frr.reload(ns["d2"], right)
    assert wait_for_hops(router, vip6, sorted(face.values())) == sorted(face.values())
    print(f"measured: OSPFv3 with authentication: d2 joined {time.monotonic() - started:.1f} s after getting the right key")
    assert full_neighbours() == sorted(face.values())
