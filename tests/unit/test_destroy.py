"""The destroy plan removes what deploy added, restores journaled sysctls, and nothing else."""

from __future__ import annotations

from lvscluster.plan.destroy import plan_destroy
from lvscluster.state import InterfaceAddress, IpvsDest, IpvsService, IpvsState, NodeState, SyncDaemon

VIP = InterfaceAddress(interface="lo", address="10.99.0.10/32")
OTHER = InterfaceAddress(interface="lo", address="192.0.2.1/32")
MINE = IpvsService(protocol="tcp", address="10.99.0.10", port=80, dests=(IpvsDest(address="10.2.0.4", port=80),))
THEIRS = IpvsService(protocol="tcp", address="192.0.2.1", port=443)
SYNC = SyncDaemon(state="master", interface="lan0", syncid=10)
FRR = "frr defaults traditional\nno ip forwarding\n!\nrouter ospf\n network 10.99.0.10/32 area 0.0.0.0\nexit\n!\nend\n"


def director(**update) -> NodeState:
    base = NodeState(name="d1", role="director", addresses=(VIP,), sysctls={"net.ipv4.vs.sloppy_tcp": "1"},
                     ipvs=IpvsState(services=(MINE,), daemons=(SYNC,)), frr=FRR)
    return base.model_copy(update=update)


def test_destroy_removes_only_what_deploy_manages() -> None:
    observed = director(addresses=(VIP, OTHER), ipvs=IpvsState(services=(MINE, THEIRS), daemons=(SYNC,)))
    actions = plan_destroy(director(), observed, {"net.ipv4.vs.sloppy_tcp": "0"})
    assert [a.kind for a in actions] == ["set_frr", "del_address", "del_service", "del_daemon", "set_sysctl"]
    assert actions[1].address == VIP and actions[2].service.key == "tcp/10.99.0.10:80"
    assert actions[4].value == "0" and actions[4].previous == "1"
    assert "router ospf" not in actions[0].frr and "no ip forwarding" in actions[0].frr


def test_destroy_of_a_clean_node_is_empty() -> None:
    clean = NodeState(name="d1", role="director", sysctls={"net.ipv4.vs.sloppy_tcp": "0"}, ipvs=IpvsState())
    assert plan_destroy(director(), clean, {"net.ipv4.vs.sloppy_tcp": "0"}) == []


def test_frr_already_emptied_is_not_reapplied() -> None:
    assert "set_frr" not in [a.kind for a in plan_destroy(director(), director(), {}, frr_emptied=True)]


def test_sysctl_without_journal_is_left_alone() -> None:
    assert [a.kind for a in plan_destroy(director(), director(), {})] == ["set_frr", "del_address", "del_service", "del_daemon"]


def test_router_frr_leaves_forwarding_as_deploy_found_it() -> None:
    router_frr = "frr defaults traditional\nno ipv6 forwarding\n!\nrouter ospf\nexit\n!\nend\n"
    router = NodeState(name="r1", role="router", sysctls={"net.ipv4.ip_forward": "1"}, frr=router_frr)
    actions = plan_destroy(router, router, {"net.ipv4.ip_forward": "0"})
    assert "no ip forwarding" in actions[0].frr  # zebra would otherwise keep (or turn) forwarding on
    assert [(a.kind, a.value) for a in actions[1:]] == [("set_sysctl", "0")]
    kept = plan_destroy(router, router, {})
    assert "no ip forwarding" not in kept[0].frr  # never journaled: deploy found forwarding on
