"""Deploy's rollout on nodes held in memory (apply.memory.MemoryBackend): order, stop at the first
failure, Ctrl-C between nodes, and the deploy after each converging. No kernel, no root: the
same logic the VM's interrupted-deploy test drives, in seconds."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from lvscluster.apply.deploy import DeployInterrupted, apply_plan, managed, plan_deploy
from lvscluster.apply.memory import MemoryBackend, apply_action
from lvscluster.errors import ApplyError
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_node

ROOT = Path(__file__).parents[2]
DEMO_ORDER = ["rs1", "rs2", "rs3", "r1", "d1", "d2"]  # real servers, routers, then directors


@pytest.fixture
def terminal_sigint():
    """SIGINT as an interactive session has it (Python's KeyboardInterrupt handler), whatever this
    suite inherited: a suite started in the background with `&` inherits SIGINT ignored, and then
    deploy rightly leaves Ctrl-C alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def demo(**hooks) -> tuple[Cluster, dict[str, MemoryBackend]]:
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / "demo.lvs.yml"))
    nodes = [n for n, s in plan_cluster(cluster).items() if managed(s)]
    return cluster, {n: MemoryBackend(n, cluster.role(n), **hooks) for n in nodes}


def interrupt() -> None:
    """Ctrl-C as the terminal sends it, to this (the main) thread, and handled before returning.

    os.kill(os.getpid()) sends it to the process: with another thread alive (the suite's VM batch)
    the kernel may hand it to that thread and the main thread run the handler later, so two could
    be handled as one. The second Ctrl-C test failed once in a full clean-clone run (2026-12-07)
    and never alone; this takes delivery out of the question."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    time.sleep(0.001)  # a blocking call returns only after the handler ran


def deploy(cluster: Cluster, backends: dict[str, MemoryBackend]) -> list[str]:
    return apply_plan(plan_deploy(cluster, None, backends=backends))


def touched(backends: dict[str, MemoryBackend]) -> list[str]:
    return [n for n in DEMO_ORDER if backends[n].applied]


def test_every_action_kind_leaves_what_the_diff_wanted() -> None:
    """The memory node is faithful: applying a node's whole plan, the diff is empty (ecmp8 and
    tun hold every kind: IPVS, sync, timeouts, addresses, sysctls, tunnels, FRR, ExaBGP)."""
    for name in ("ecmp8", "tun", "nat"):
        cluster = Cluster.from_topology(load_topology(ROOT / "topology" / f"{name}.lvs.yml"))
        for node, desired in plan_cluster(cluster).items():
            backend = MemoryBackend(node, desired.role)
            backend.apply(diff_node(desired, backend.observe(desired)))
            assert diff_node(desired, backend.observe(desired)) == [], (name, node)


def test_rollout_goes_real_servers_routers_directors_and_a_second_deploy_changes_nothing() -> None:
    cluster, backends = demo()
    plan = plan_deploy(cluster, None, backends=backends)
    assert list(plan.actions) == DEMO_ORDER and plan.total > 60
    assert apply_plan(plan) == DEMO_ORDER
    assert all(len(b.applied) == 1 for b in backends.values())
    again = plan_deploy(cluster, None, backends=backends)
    assert again.total == 0 and apply_plan(again) == []


def test_a_failure_stops_the_rollout_at_that_node_and_the_next_deploy_continues() -> None:
    fail = {"on": lambda a: a.node == "d1" and a.kind == "add_dest"}
    cluster, backends = demo(fail_on=lambda a: fail["on"](a))
    with pytest.raises(ApplyError) as stopped:
        deploy(cluster, backends)
    message = str(stopped.value)
    assert message.startswith("deploy stopped at d1: memory:d1: add dest ")
    assert "done: rs1, rs2, rs3, r1; not touched: d2" in message
    assert touched(backends) == ["rs1", "rs2", "rs3", "r1", "d1"]  # d2 untouched
    attempted = backends["d1"].applied[0]
    took_effect = attempted[:next(i for i, a in enumerate(attempted) if a.kind == "add_dest")]
    assert took_effect  # sysctls, sync daemons, the service: applied before the failing dest

    fail["on"] = lambda a: False  # the cause fixed
    resumed = plan_deploy(cluster, None, backends=backends)
    assert [n for n, acts in resumed.actions.items() if acts] == ["d1", "d2"]
    assert not set(took_effect) & set(resumed.actions["d1"])  # what took effect is not done twice
    assert resumed.actions["d1"][0].kind == "add_dest"
    assert apply_plan(resumed) == ["d1", "d2"]
    assert plan_deploy(cluster, None, backends=backends).total == 0


def test_ctrl_c_finishes_the_node_then_stops_and_the_next_deploy_finishes(terminal_sigint) -> None:
    def interrupt_at_rs2(node: str) -> None:
        if node == "rs2":
            interrupt()

    cluster, backends = demo(before_apply=interrupt_at_rs2)
    with pytest.raises(DeployInterrupted) as stopped:
        deploy(cluster, backends)
    assert stopped.value.exit_code == 130
    assert "after rs2" in str(stopped.value) and "done: rs1, rs2; not touched: rs3, r1, d1, d2" in str(stopped.value)
    assert touched(backends) == ["rs1", "rs2"]
    assert plan_deploy(cluster, None, backends=backends).actions["rs2"] == []  # rs2 was finished, not cut
    for backend in backends.values():
        backend.before_apply = None
    assert deploy(cluster, backends) == ["rs3", "r1", "d1", "d2"]
    assert plan_deploy(cluster, None, backends=backends).total == 0


def test_a_second_ctrl_c_stops_at_once(terminal_sigint) -> None:
    def interrupt_twice_at_r1(node: str) -> None:
        if node == "r1":
            interrupt()
            interrupt()

    cluster, backends = demo(before_apply=interrupt_twice_at_r1)
    with pytest.raises(KeyboardInterrupt):
        deploy(cluster, backends)
    assert touched(backends) == ["rs1", "rs2", "rs3"]  # r1's apply never began
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # deploy's handler is gone


def test_an_interrupt_after_the_last_node_is_no_error(terminal_sigint) -> None:
    def interrupt_at_d2(node: str) -> None:
        if node == "d2":
            interrupt()

    cluster, backends = demo(before_apply=interrupt_at_d2)
    assert deploy(cluster, backends) == DEMO_ORDER  # nothing was left to stop before


def test_dests_go_to_the_head_of_the_list_as_the_kernel_puts_them() -> None:
    from lvscluster.plan.actions import Action
    from lvscluster.state import IpvsDest, IpvsService, NodeState

    svc = IpvsService(protocol="tcp", address="10.99.0.10", port=80)
    state = NodeState(name="d1", role="director")
    state = apply_action(state, Action(node="d1", kind="add_service", reason="t", service=svc))
    for last in (4, 5, 6):
        state = apply_action(state, Action(node="d1", kind="add_dest", reason="t", service=svc,
                                           dest=IpvsDest(address=f"10.2.0.{last}", port=80)))
    assert [d.address for d in state.ipvs.services[0].dests] == ["10.2.0.6", "10.2.0.5", "10.2.0.4"]


def test_an_ignored_sigint_stays_ignored() -> None:
    """A deploy started with SIGINT ignored (`lvscluster deploy ... &` from a script, nohup-like
    runners) leaves it ignored: no terminal's Ctrl-C is meant for it, so nothing stops it."""
    def interrupt_at_rs2(node: str) -> None:
        if node == "rs2":
            interrupt()

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cluster, backends = demo(before_apply=interrupt_at_rs2)
        assert deploy(cluster, backends) == DEMO_ORDER
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
