"""Health in the plan (pure): rise/fall counting, the verdict, and what it changes on a director."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lvscluster.plan.health import DestKey, HealthBook, HealthVerdict, RiseFall, decide, health_targets
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_director
from lvscluster.plan.diff import diff_node

ROOT = Path(__file__).parent.parent.parent


def demo() -> Cluster:
    return Cluster.from_topology(load_topology(ROOT / "topology" / "demo.lvs.yml"))


def test_targets_take_the_most_specific_health_and_the_dest_port() -> None:
    targets = {str(t.key): t for t in health_targets(demo())}
    assert sorted(targets) == sorted(f"web {svc} {rs}" for svc in ("tcp/80", "udp/53") for rs in ("rs1", "rs2", "rs3"))
    http, udp = targets["web tcp/80 rs2"], targets["web udp/53 rs2"]
    assert (http.spec.type, http.address, http.port) == ("http", "10.2.0.5", 80)
    assert (udp.spec.type, udp.spec.send, udp.port, udp.vip_address) == ("udp", "ping", 53, "10.99.0.10")


def test_fall_failures_in_a_row_take_it_down_and_rise_successes_bring_it_back() -> None:
    state = RiseFall(rise=3, fall=2)
    assert [state.record(ok) for ok in (False, True, False)] == [False, False, False] and state.up
    assert state.record(False) and not state.up  # the second failure in a row
    assert [state.record(ok) for ok in (True, True, False, True, True)] == [False] * 5 and not state.up
    assert state.record(True) and state.up  # the third success in a row


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_state_is_the_last_run_long_enough_to_flip_it(rise: int, fall: int, results: list[bool]) -> None:
    """Replaying any sequence: the state changes exactly when a run of `fall` failures (while
    up) or `rise` successes (while down) completes."""
    state, up, run = RiseFall(rise, fall), True, 0
    for ok in results:
        run = run + 1 if ok != up else 0
        flipped = run >= (rise if ok else fall) and ok != up
        if flipped:
            up, run = ok, 0
        assert state.record(ok) == flipped and state.up == up


def test_a_failed_real_server_is_quiesced_not_removed() -> None:
    cluster = demo()
    key = DestKey("web", "tcp/80", "rs2")
    healthy, sick = plan_director(cluster, "d1"), plan_director(cluster, "d1", decide(cluster, [key]))
    actions = diff_node(sick, healthy)
    assert [(a.kind, a.dest.address, a.dest.weight) for a in actions] == [("set_dest", "10.2.0.5", 0)]
    assert [d.address for d in sick.ipvs.services[0].dests] == [d.address for d in healthy.ipvs.services[0].dests]
    assert sick.frr == healthy.frr  # still announced: rs1 and rs3 serve


def test_no_healthy_real_server_withdraws_the_vip_but_keeps_it_on_lo() -> None:
    cluster = demo()
    down = [DestKey("web", svc, rs) for svc in ("tcp/80", "udp/53") for rs in ("rs1", "rs2", "rs3")]
    verdict = decide(cluster, down)
    assert verdict.withdrawn == {"web"} and verdict.sorry == frozenset()
    assert verdict.quiesced == frozenset()  # no service with every weight at 0 while the router converges
    state = plan_director(cluster, "d1", verdict)
    assert "network 10.99.0.10/32" not in state.frr and "network 10.99.0.10/32" in plan_director(cluster, "d1").frr
    assert state.ipvs == plan_director(cluster, "d1").ipvs
    assert [a.address for a in state.addresses] == ["10.99.0.10/32"]  # packets in flight are still served
    # one service with a healthy real server keeps the VIP announced
    assert decide(cluster, down[:5]).withdrawn == frozenset()


def test_a_service_with_no_healthy_server_keeps_its_weights_while_another_keeps_the_vip() -> None:
    """A director whose links come back sees its checks rise one by one: web's udp/53 may be up
    again while every tcp/80 check is still down. Quiescing all of tcp/80 would refuse each of its
    new connections for that round; its weights stay until one of them is healthy again."""
    cluster = demo()
    tcp_down = [DestKey("web", "tcp/80", rs) for rs in ("rs1", "rs2", "rs3")]
    verdict = decide(cluster, tcp_down)
    assert verdict == HealthVerdict()  # announced (udp/53 serves), tcp/80 as deployed
    assert plan_director(cluster, "d1", verdict) == plan_director(cluster, "d1")
    # as soon as one tcp/80 check is up again, the others are quiesced
    assert decide(cluster, tcp_down[1:]).quiesced == frozenset(tcp_down[1:])


def test_quorum_withdraws_before_the_last_server_fails() -> None:
    topology = load_topology(ROOT / "topology" / "demo.lvs.yml")
    cluster = Cluster.from_topology(topology.model_copy(update={"vips": [topology.vips[0].model_copy(update={"quorum": 2})]}))
    down = [DestKey("web", svc, rs) for svc in ("tcp/80", "udp/53") for rs in ("rs1", "rs2")]
    assert decide(cluster, down).withdrawn == {"web"}
    assert decide(cluster, down[1:]).withdrawn == frozenset()  # tcp/80 still has rs1 and rs3


def test_a_sorry_server_takes_over_instead_of_a_withdrawal() -> None:
    topology = load_topology(ROOT / "topology" / "demo.lvs.yml")
    vip = {**topology.vips[0].model_dump(), "sorry_server": {"address": "10.2.0.99", "port": 8080}}
    cluster = Cluster.from_topology(topology.model_validate({**topology.model_dump(), "vips": [vip]}))
    down = [DestKey("web", "tcp/80", rs) for rs in ("rs1", "rs2", "rs3")]
    verdict = decide(cluster, down)
    assert verdict.withdrawn == frozenset() and verdict.sorry == {("web", "tcp/80")}
    http = plan_director(cluster, "d2", verdict).ipvs.services[0]
    assert [(d.address, d.port, d.weight) for d in http.dests] == [
        ("10.2.0.99", 8080, 1), ("10.2.0.6", 80, 0), ("10.2.0.5", 80, 0), ("10.2.0.4", 80, 0)]
    assert verdict.to_json()["sorry"] == ["web tcp/80"]


def test_every_director_reaches_the_same_verdict_from_the_same_results() -> None:
    cluster = demo()
    books = {d: HealthBook(health_targets(cluster)) for d in cluster.directors}
    results = [("web tcp/80 rs1", False), ("web tcp/80 rs1", False), ("web udp/53 rs3", False)]
    for book in books.values():
        keys = {str(t.key): t.key for t in book.targets}
        for name, ok in results:
            book.record(keys[name], ok)
    verdicts = {d: b.verdict(cluster) for d, b in books.items()}
    assert verdicts["d1"] == verdicts["d2"] == HealthVerdict(quiesced=frozenset({DestKey("web", "tcp/80", "rs1")}))


def test_the_agent_plans_a_verdict_once_and_plans_again_when_it_changes(tmp_path: Path) -> None:
    """Most repair rounds see the verdict of the last: the agent reuses that plan (a render costs
    ~1 s under emulation) and plans again for a new verdict or a reloaded topology."""
    from types import SimpleNamespace

    from lvscluster.health.agent import Agent

    topology = tmp_path / "demo.lvs.yml"
    topology.write_text((ROOT / "topology" / "demo.lvs.yml").read_text())
    agent = Agent(topology_path=topology, node="d1", backend=SimpleNamespace(netns=f"lvst-noexist-{tmp_path.name}"))
    assert agent.load()
    healthy = agent.book.verdict(agent.cluster)
    first = agent._desired(healthy)
    assert agent._desired(HealthVerdict()) is first == plan_director(agent.cluster, "d1", healthy)
    rs2 = next(t.key for t in agent.book.targets if str(t.key) == "web tcp/80 rs2")
    quiesced = agent._desired(HealthVerdict(quiesced=frozenset({rs2})))
    assert quiesced == plan_director(agent.cluster, "d1", HealthVerdict(quiesced=frozenset({rs2}))) != first
    topology.write_text(topology.read_text().replace("interval: 2", "interval: 3"))
    os.utime(topology, (1, 1))
    assert agent.load() and agent._desired(healthy) is not first
