"""ExaBGP as a director's announcer (`announcer: exabgp`): rendering, diff, destroy, the bridge's commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvscluster.apply.exabgp_bridge import commands
from lvscluster.plan.health import HealthVerdict
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import parse_topology
from lvscluster.model.secrets import REDACTED, redact_frr
from lvscluster.plan.desired import plan_cluster, plan_director
from lvscluster.plan.destroy import plan_destroy
from lvscluster.plan.diff import diff_node
from lvscluster.plan.render import frr_daemons

ROOT = Path(__file__).parent.parent.parent
OSPF_LINE = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n"


def exabgp_demo(extra: str = "") -> Cluster:
    text = (ROOT / "topology" / "demo.lvs.yml").read_text()
    assert OSPF_LINE in text
    text = text.replace(OSPF_LINE, OSPF_LINE + "  announce: bgp\n  bgp: {announcer: exabgp" + extra + "}\n", 1)
    return Cluster.from_topology(parse_topology(text)[0])


def test_a_director_gets_an_exabgp_config_and_routes_and_frr_only_routes_its_replies() -> None:
    cluster = exabgp_demo()
    states = plan_cluster(cluster)
    d1 = states["d1"]
    assert d1.exabgp.routes == ("route 10.99.0.10/32 next-hop self",)
    config = d1.exabgp.config
    for line in ("neighbor 10.1.1.1 {", "local-address 10.1.1.2;", "local-as 65001;", "peer-as 65000;", "hold-time 3;",
                 "run @LVSCLUSTER@ exabgp-bridge @EXABGP_DIR@;", "processes [ lvscluster-announce ];"):
        assert line in config, line
    assert "router bgp" not in d1.frr and "ip route 0.0.0.0/0 10.1.1.1\n" in d1.frr
    assert frr_daemons(cluster, "d1") == ("zebra", "staticd")
    # the router peers with both, without BFD (ExaBGP has none): the hold timer ends a dead session
    assert " neighbor 10.1.1.2 remote-as 65001\n" in states["r1"].frr and "neighbor 10.1.1.2 bfd" not in states["r1"].frr
    assert states["d2"].exabgp.config.count("neighbor ") == 1 and states["c1"].exabgp is None


def test_drain_prepends_and_a_withdrawn_vip_leaves_the_routes() -> None:
    cluster = exabgp_demo()
    drained = plan_director(cluster.with_node("d1", drain=True), "d1")
    assert drained.exabgp.routes == ("route 10.99.0.10/32 next-hop self as-path [ 65001 65001 65001 65001 ]",)
    assert drained.exabgp.config == plan_director(cluster, "d1").exabgp.config  # a drain is a route change only
    withdrawn = plan_director(cluster, "d1", HealthVerdict(withdrawn=frozenset({"web"})))
    assert withdrawn.exabgp.routes == ()


def test_diff_reasons_and_destroy() -> None:
    cluster = exabgp_demo()
    desired = plan_director(cluster, "d1")
    running = desired.model_copy(update={"exabgp": desired.exabgp.model_copy(update={"routes": ()})})
    assert [(a.kind, a.reason) for a in diff_node(desired, running)] == [
        ("set_exabgp", "announce 10.99.0.10/32 next-hop self")]
    absent = desired.model_copy(update={"exabgp": None})
    assert [(a.summary, a.reason) for a in diff_node(desired, absent)] == [
        ("announce 1 routes through ExaBGP", "ExaBGP not running")]
    assert diff_node(desired, desired) == []
    actions = plan_destroy(desired, desired, {}, frr_emptied=True)
    assert actions[0].kind == "del_exabgp" and actions[0].summary == "stop ExaBGP"  # withdraw before anything else


def test_the_bgp_password_goes_to_exabgp_and_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LVS_TEST_BGP", "s3cret-pw")
    config = plan_director(exabgp_demo(", password: {env: LVS_TEST_BGP}"), "d1").exabgp.config
    assert '    md5-password "s3cret-pw";\n' in config
    assert f'md5-password "{REDACTED}";' in redact_frr(config) and "s3cret-pw" not in redact_frr(config)


@pytest.mark.parametrize("announced,wanted,expected", [
    ({}, {"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"}, ["announce route 10.99.0.10/32 next-hop self"]),
    ({"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"}, {}, ["withdraw route 10.99.0.10/32 next-hop self"]),
    # a drain replaces the route in one announcement: never a withdrawal first
    ({"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"},
     {"10.99.0.10/32": "route 10.99.0.10/32 next-hop self as-path [ 1 1 ]"},
     ["announce route 10.99.0.10/32 next-hop self as-path [ 1 1 ]"]),
    ({"10.99.0.11/32": "route 10.99.0.11/32 next-hop self"}, {"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"},
     ["withdraw route 10.99.0.11/32 next-hop self", "announce route 10.99.0.10/32 next-hop self"]),
    ({"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"}, {"10.99.0.10/32": "route 10.99.0.10/32 next-hop self"}, []),
])
def test_bridge_commands(announced: dict, wanted: dict, expected: list[str]) -> None:
    assert commands(announced, wanted) == expected


def test_the_bridge_reads_answers_that_arrive_together() -> None:
    """Two `done` in one write: both are seen (a buffered text stdin hid the second from select)."""
    import os

    from lvscluster.apply.exabgp_bridge import LineReader, _acknowledged

    read_end, write_end = os.pipe()
    reader = LineReader(read_end)
    os.write(write_end, b"done\ndone\n")
    assert _acknowledged(reader, 2) == (True, True)
    assert reader.readline(0.05) is None  # nothing more yet
    os.write(write_end, b"error\n")
    assert _acknowledged(reader, 1) == (False, True)
    os.close(write_end)
    assert reader.readline(1) == ""  # ExaBGP went away
    os.close(read_end)


def test_ipv6_vips_get_an_ipv6_neighbour_per_uplink_and_each_neighbour_one_family() -> None:
    """dualbgp with ExaBGP: the /128 is a route like the /32; each uplink has an IPv4 and an IPv6
    neighbour, each naming its family (ExaBGP's default, every family, would hand the /128 to the
    IPv4 session with an IPv4 next hop), and FRR routes the replies by a default route per family.
    An IPv4-only ExaBGP config names no family (unchanged, so no restart on upgrade)."""
    text = (ROOT / "topology" / "dualbgp.lvs.yml").read_text().replace("bfd: true}", "bfd: true, announcer: exabgp}", 1)
    cluster = Cluster.from_topology(parse_topology(text)[0])
    d1 = plan_director(cluster, "d1")
    assert d1.exabgp.routes == ("route 10.99.0.10/32 next-hop self", "route 2001:db8:99::10/128 next-hop self")
    blocks = d1.exabgp.config.split("neighbor ")[1:]
    assert [b.split()[0] for b in blocks] == ["10.1.1.1", "2001:db8:1:1::1"]
    assert "local-address 10.1.1.2;" in blocks[0] and "ipv4 unicast;" in blocks[0] and "ipv6" not in blocks[0]
    assert "local-address 2001:db8:1:1::2;" in blocks[1] and "ipv6 unicast;" in blocks[1] and "ipv4" not in blocks[1]
    assert "ip route 0.0.0.0/0 10.1.1.1\n" in d1.frr and "ipv6 route ::/0 2001:db8:1:1::1\n" in d1.frr
    withdrawn = plan_director(cluster, "d1", HealthVerdict(withdrawn=frozenset({"web6"}))).exabgp
    assert withdrawn.routes == ("route 10.99.0.10/32 next-hop self",)
    assert "family" not in plan_director(exabgp_demo(), "d1").exabgp.config


def test_frr_bgp_announces_ipv6_vips_in_their_own_address_family() -> None:
    """dualbgp with FRR bgpd: the IPv6 session leaves ipv4 unicast, carries the /128 (and the
    drain's prepend) in ipv6 unicast; the router takes max_paths there too."""
    cluster = Cluster.from_topology(parse_topology((ROOT / "topology" / "dualbgp.lvs.yml").read_text())[0])
    d1 = plan_director(cluster.with_node("d1", drain=True), "d1").frr
    v4, v6 = d1.split(" address-family ipv4 unicast\n")[1].split(" address-family ipv6 unicast\n")
    assert "network 10.99.0.10/32" in v4 and "no neighbor 2001:db8:1:1::1 activate" in v4 and "2001:db8:99" not in v4
    assert "network 2001:db8:99::10/128" in v6 and "neighbor 2001:db8:1:1::1 activate" in v6
    assert "neighbor 2001:db8:1:1::1 route-map LVSCLUSTER-DRAIN out" in v6 and "10.1.1.1" not in v6.split("exit\n")[0]
    r1 = plan_cluster(cluster)["r1"].frr.split(" address-family ipv6 unicast\n")[1].split(" exit-address-family")[0]
    assert "maximum-paths 8" in r1 and "neighbor 2001:db8:1:2::2 default-originate" in r1
