"""Churn specs and the control variant: parsed and checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvscluster.errors import LvsClusterError
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.scaletest.churn import parse_churn
from lvscluster.scaletest.run import control_cluster

ROOT = Path(__file__).parent.parent.parent
ECMP8 = Cluster.from_topology(load_topology(ROOT / "topology" / "ecmp8.lvs.yml"))


def test_a_churn_spec_becomes_events_in_time_order() -> None:
    events = parse_churn("kill d4@20s, drain d3@5s,undrain d3@15000ms,revive d4@0.5m", ECMP8, 40)
    assert [(e.at, e.action, e.node) for e in events] == [
        (5.0, "drain", "d3"), (15.0, "undrain", "d3"), (20.0, "kill", "d4"), (30.0, "revive", "d4")]
    assert events[0].label == "drain d3@5s"
    assert parse_churn("", ECMP8, 10) == []


def test_every_problem_in_a_churn_spec_is_named_at_once() -> None:
    with pytest.raises(LvsClusterError) as caught:
        parse_churn("drain r1@1s,kill d9@2s,revive d2@3s,drain d1@99s,drain d5@4s,drain d5@6s,bogus", ECMP8, 60)
    assert str(caught.value).splitlines() == [
        "--churn: 'drain r1@1s': 'r1' is not a director of ecmp8 (directors: d1, d2, d3, d4, d5, d6, d7, d8)",
        "--churn: 'kill d9@2s': 'd9' is not a director of ecmp8 (directors: d1, d2, d3, d4, d5, d6, d7, d8)",
        "--churn: 'drain d1@99s': at 99s is not before the end of the run (60s)",
        "--churn: 'bogus': expected ACTION NODE@TIME, e.g. 'drain d3@5s' (drain, undrain, kill, revive, crash-frr, "
        "cut-sync, restore-sync, restart-agent, link-down, link-up)",
        "--churn: 'revive d2@3s': d2 is active at that time",
        "--churn: 'drain d5@6s': d5 is drained at that time",
    ]


def test_the_control_variant_drops_what_keeps_flows_alive() -> None:
    normal, control = plan_cluster(ECMP8)["d1"], plan_cluster(control_cluster(ECMP8))["d1"]
    assert {s.scheduler for s in normal.ipvs.services} == {"mh"}
    assert {(s.scheduler, s.flags) for s in control.ipvs.services} == {("wlc", ())}
    assert control.ipvs.daemons == () and len(normal.ipvs.daemons) == 2
    assert normal.sysctls["net.ipv4.vs.sloppy_tcp"] == "1" and control.sysctls["net.ipv4.vs.sloppy_tcp"] == "0"
    assert [d.address for s in control.ipvs.services for d in s.dests] == \
           [d.address for s in normal.ipvs.services for d in s.dests]


def test_fault_events_name_their_kind_of_node_and_keep_their_order() -> None:
    events = parse_churn("crash-frr d1@5s, cut-sync d2@10s, link-down rs3@15s, link-up rs3@30s, "
                         "restore-sync d2@35s, restart-agent d2@40s", ECMP8, 60)
    assert [e.label for e in events][:3] == ["crash-frr d1@5s", "cut-sync d2@10s", "link-down rs3@15s"]
    with pytest.raises(LvsClusterError) as caught:
        parse_churn("link-down d1@1s, crash-frr rs1@2s, restore-sync d3@3s, cut-sync d4@4s, cut-sync d4@5s, "
                    "link-up rs2@6s, kill d5@7s, cut-sync d5@8s", ECMP8, 60)
    assert str(caught.value).splitlines() == [
        "--churn: 'link-down d1@1s': 'd1' is not a real server of ecmp8 (real servers: rs1, rs2, rs3, rs4)",
        "--churn: 'crash-frr rs1@2s': 'rs1' is not a director of ecmp8 (directors: d1, d2, d3, d4, d5, d6, d7, d8)",
        "--churn: 'restore-sync d3@3s': d3's sync is flowing at that time",
        "--churn: 'cut-sync d4@5s': d4's sync is cut at that time",
        "--churn: 'link-up rs2@6s': rs2 is active at that time",
        "--churn: 'cut-sync d5@8s': d5's sync is flowing and it is killed at that time",
    ]
