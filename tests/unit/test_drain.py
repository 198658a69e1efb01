"""Draining in the plan: a drained director announces at DRAIN_COST, a drained real server gets weight 0."""

from __future__ import annotations

from pathlib import Path

from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_node
from lvscluster.plan.render import DRAIN_COST

ROOT = Path(__file__).parent.parent.parent


def drained(*names: str) -> dict:
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / "ecmp8.lvs.yml"))
    for name in names:
        cluster = cluster.with_node(name, drain=True)
    return plan_cluster(cluster)


def test_draining_a_director_changes_only_its_ospf_cost() -> None:
    before, after = drained(), drained("d3")
    changed = {node: diff_node(after[node], before[node]) for node in after}
    assert {node: [a.kind for a in acts] for node, acts in changed.items() if acts} == {"d3": ["set_frr"]}
    assert f"interface lo\n ip ospf cost {DRAIN_COST}\n" in after["d3"].frr
    assert "ip ospf cost" not in after["d4"].frr
    assert after["d3"].ipvs == before["d3"].ipvs  # IPVS and sync keep running: old flows still served


def test_draining_a_real_server_quiesces_it_on_every_director_in_place() -> None:
    before, after = drained(), drained("rs2")
    for director in (f"d{i}" for i in range(1, 9)):
        actions = diff_node(after[director], before[director])
        assert [(a.kind, a.dest.address, a.dest.weight) for a in actions] == [("set_dest", "10.2.0.11", 0)] * 3
        for old, new in zip(before[director].ipvs.services, after[director].ipvs.services):
            assert [d.address for d in old.dests] == [d.address for d in new.dests]  # mh table order kept
    assert diff_node(after["rs2"], before["rs2"]) == []  # the real server itself keeps its VIP


def test_a_quick_reannouncement_waits_out_the_hold(tmp_path: Path) -> None:
    import time

    from lvscluster.apply.lifecycle import hold_reannouncement, note_withdrawal

    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / "ecmp8.lvs.yml"))
    record, said = tmp_path / "withdrawals.json", []
    assert hold_reannouncement(cluster, "d3", said.append, hold=0.5, path=record) == 0.0  # never withdrew
    note_withdrawal(cluster, "d3", path=record)
    started = time.monotonic()
    waited = hold_reannouncement(cluster, "d3", said.append, hold=0.5, path=record)
    assert 0.3 < waited <= 0.5 and time.monotonic() - started >= waited
    assert said and "holding its announcement" in said[0]
    assert hold_reannouncement(cluster, "d4", said.append, hold=0.5, path=record) == 0.0  # another director
