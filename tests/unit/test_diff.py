"""The diff engine: observed state in, ordered actions with reasons out (table-driven)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvscluster.plan.actions import Action
from lvscluster.plan.diff import diff_dests, diff_node
from lvscluster.state import (InterfaceAddress, IpvsDest, IpvsService, IpvsState, IpvsTimeouts, NodeState,
                              SyncDaemon)

VIP = "10.99.0.10"


def dest(last_octet: int, weight: int = 1, port: int = 80) -> IpvsDest:
    return IpvsDest(address=f"10.2.0.{last_octet}", port=port, weight=weight)


def service(*dests: IpvsDest, scheduler: str = "mh", flags: tuple[str, ...] = ("mh-port",), port: int = 80) -> IpvsService:
    return IpvsService(protocol="tcp", address=VIP, port=port, scheduler=scheduler, flags=flags, dests=dests)


def director(*services: IpvsService, addresses=(InterfaceAddress(interface="lo", address=f"{VIP}/32"),),
             sysctls=None, daemons=(), frr="router ospf\n", timeouts=IpvsTimeouts()) -> NodeState:
    return NodeState(name="d1", role="director", addresses=addresses, sysctls=sysctls or {"net.ipv4.vs.sloppy_tcp": "1"},
                     ipvs=IpvsState(services=services, daemons=daemons, timeouts=timeouts), frr=frr)


def lines(actions: list[Action]) -> list[str]:
    return [f"{a.summary}: {a.reason}" for a in actions]


SYNC_B = SyncDaemon(state="backup", interface="lan0", syncid=10)
SYNC_M = SyncDaemon(state="master", interface="lan0", syncid=10)
FULL = director(service(dest(6, 2), dest(5), dest(4)), daemons=(SYNC_B, SYNC_M))

CASES = {
    "no-op": (FULL, FULL, []),
    "no-op with kernel-chosen sync maxlen": (
        FULL, FULL.model_copy(update={"ipvs": FULL.ipvs.model_copy(update={"daemons": (
            SYNC_B.model_copy(update={"maxlen": 1472}), SYNC_M.model_copy(update={"maxlen": 1472}))})}), []),
    "weight change is one set_dest": (
        director(service(dest(6, 3), dest(5), dest(4))), director(service(dest(6, 2), dest(5), dest(4))),
        ["set dest 10.2.0.6:80 weight 3 on tcp/10.99.0.10:80: weight 2 -> 3"]),
    "appended real server is one insert at the head": (
        director(service(dest(7), dest(6, 2), dest(5), dest(4))), director(service(dest(6, 2), dest(5), dest(4))),
        ["add dest 10.2.0.7:80 weight 1 to tcp/10.99.0.10:80: new real server"]),
    "removed real server is one delete": (
        director(service(dest(6, 2), dest(4))), director(service(dest(6, 2), dest(5), dest(4))),
        ["del dest 10.2.0.5:80 from tcp/10.99.0.10:80: real server removed from the topology"]),
    "divergent order is repaired by re-inserting the head": (
        director(service(dest(6), dest(5), dest(4))), director(service(dest(5), dest(6), dest(4))),
        ["del dest 10.2.0.5:80 from tcp/10.99.0.10:80: re-insert to restore the canonical order (mh/sh tables must match on every director)",
         "del dest 10.2.0.6:80 from tcp/10.99.0.10:80: re-insert to restore the canonical order (mh/sh tables must match on every director)",
         "add dest 10.2.0.5:80 weight 1 to tcp/10.99.0.10:80: re-insert in canonical order",
         "add dest 10.2.0.6:80 weight 1 to tcp/10.99.0.10:80: re-insert in canonical order"]),
    "scheduler change is set_service, dests untouched": (
        director(service(dest(5), scheduler="sh", flags=("sh-port",))), director(service(dest(5))),
        ["set service tcp/10.99.0.10:80 (sh): scheduler mh -> sh, flags mh-port -> sh-port"]),
    "removed service: withdraw first, then delete": (
        director(addresses=()), director(service(dest(5))),
        ["del address 10.99.0.10/32 on lo: VIP no longer in the topology",
         "del service tcp/10.99.0.10:80 (mh): service no longer in the topology"]),
    "sysctl drift": (
        FULL, FULL.model_copy(update={"sysctls": {"net.ipv4.vs.sloppy_tcp": "0"}}),
        ["set net.ipv4.vs.sloppy_tcp = 1: now 0, a director needs 1"]),
    "sysctl compared as numbers": (
        director(sysctls={"net.ipv4.fib_multipath_hash_fields": "0x0037", "net.ipv4.vs.sync_threshold": "3 50"}),
        director(sysctls={"net.ipv4.fib_multipath_hash_fields": "55", "net.ipv4.vs.sync_threshold": "3\t50"}), []),
    "sync interface change restarts both daemons": (
        FULL, FULL.model_copy(update={"ipvs": FULL.ipvs.model_copy(update={"daemons": (
            SYNC_B.model_copy(update={"interface": "eth1"}), SYNC_M)})}),
        ["stop sync backup on eth1 (syncid 10): sync settings changed",
         "start sync backup on lan0 (syncid 10): receive connection state from the other directors"]),
    "timeouts only where set": (
        director(timeouts=IpvsTimeouts(tcp=30)), director(timeouts=IpvsTimeouts(tcp=900, tcp_fin=120, udp=300)),
        ["set timeouts tcp 30 tcp_fin 0 udp 0: timeouts tcp 900 -> 30"]),
    "FRR drift": (FULL, FULL.model_copy(update={"frr": "router ospf\n maximum-paths 2\n"}),
                  ["apply FRR configuration: FRR configuration differs"]),
    "FRR drift names the frr-reload delta": (
        FULL, FULL.model_copy(update={"frr": "! differs from the desired configuration:\n- router ospf\n-  network 10.99.0.10/32 area 0\n"
                                              "+ router ospf\n+  network 10.99.0.11/32 area 0\n"}),
        ["apply FRR configuration: FRR configuration differs: - router ospf; - network 10.99.0.10/32 area 0; "
         "+ router ospf and 1 more"]),
}


@pytest.mark.parametrize("desired,observed,expected", CASES.values(), ids=CASES.keys())
def test_diff_node(desired: NodeState, observed: NodeState, expected: list[str]) -> None:
    assert lines(diff_node(desired, observed)) == expected


def test_empty_node_gets_everything_in_order() -> None:
    actions = diff_node(FULL, NodeState(name="d1", role="director"))
    kinds = [a.kind for a in actions]
    assert kinds == ["set_sysctl", "add_daemon", "add_daemon", "add_service", "add_dest", "add_dest", "add_dest",
                     "add_address", "set_frr"]
    assert [a.daemon.state for a in actions if a.daemon] == ["backup", "master"]
    # inserted last-first so the kernel list (head insertion) ends up 6, 5, 4
    assert [a.dest.address for a in actions if a.dest] == ["10.2.0.4", "10.2.0.5", "10.2.0.6"]


def apply_to_kernel_list(kernel: list[IpvsDest], actions: list[Action]) -> list[IpvsDest]:
    """What IPVS does with dest actions: delete anywhere, update in place, insert at the head."""
    kernel = list(kernel)
    for action in actions:
        index = next((i for i, d in enumerate(kernel) if d.key == action.dest.key), None)
        if action.kind == "del_dest":
            kernel.pop(index)
        elif action.kind == "set_dest":
            kernel[index] = action.dest
        else:
            assert index is None, "adding a dest the kernel already has fails with EEXIST"
            kernel.insert(0, action.dest)
    return kernel


dest_lists = st.lists(st.builds(dest, st.integers(1, 12), st.integers(0, 3)), max_size=10,
                      unique_by=lambda d: d.key)


@settings(max_examples=300, deadline=None)
@given(desired=dest_lists, observed=dest_lists)
def test_dest_actions_reach_the_desired_kernel_order(desired: list[IpvsDest], observed: list[IpvsDest]) -> None:
    svc = service(*desired)
    actions = diff_dests("d1", svc, tuple(observed))
    assert apply_to_kernel_list(observed, actions) == desired
    assert diff_dests("d1", svc, tuple(desired)) == []
    # nothing that is already in place at the tail is touched
    assert all(a.reason for a in actions)
