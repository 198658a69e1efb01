"""Churn scenarios for the scaletest: `drain d3@5s,undrain d3@15s,kill d4@20s,revive d4@30s`.

Pure parsing and checking (the churn, and `--vip`: `chosen_vip`); `scaletest.run` carries the
steps out against a lab.

- drain / undrain: the director leaves / rejoins the router's ECMP set (OSPF cost), serving on;
- kill / revive: abrupt loss (every link down, FRR killed) and the way back (links up, FRR
  started and the node deployed again);
- crash-frr: kill -9 of a director's ospfd/bgpd (its agent starts them again, in a Docker lab
  its container's watchfrr; without either, the scaletest does after the traffic);
- cut-sync / restore-sync: a director's IPVS sync datagrams dropped, then let through again;
- restart-agent: a director's health-check agent killed and started again;
- link-down / link-up: a real server's cables pulled (its checks time out) and plugged back.
"""

from __future__ import annotations

import re

from lvscluster.errors import LvsClusterError
from lvscluster.model.cluster import Cluster
from lvscluster.model.topology import Vip
from lvscluster.scaletest.report import ChurnEvent

ACTIONS = ("drain", "undrain", "kill", "revive", "crash-frr", "cut-sync", "restore-sync", "restart-agent",
           "link-down", "link-up")
REAL_SERVER_ACTIONS = ("link-down", "link-up")
# per action: the node states it may follow, and the state it leaves
_ALLOWED = {"drain": ("active",), "undrain": ("drained",), "kill": ("active", "drained"), "revive": ("killed",),
            "crash-frr": ("active", "drained"), "restart-agent": ("active", "drained"), "link-down": ("active",),
            "link-up": ("unplugged",)}
_LEAVES = {"drain": "drained", "undrain": "active", "kill": "killed", "revive": "active", "link-down": "unplugged",
           "link-up": "active"}
_STEP = re.compile(r"^(?P<action>[a-z-]+)\s+(?P<node>[A-Za-z0-9_.-]+)\s*@\s*(?P<at>\d+(?:\.\d+)?)(?P<unit>ms|s|m)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_churn(spec: str, cluster: Cluster, duration: float) -> list[ChurnEvent]:
    """Parse and check a churn spec against the topology; every problem in one error."""
    steps, problems = [], []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = _STEP.match(item)
        if not match:
            problems.append(f"{item!r}: expected ACTION NODE@TIME, e.g. 'drain d3@5s' ({', '.join(ACTIONS)})")
            continue
        action, node = match["action"], match["node"]
        at = float(match["at"]) * _UNIT[match["unit"]]
        if action not in ACTIONS:
            problems.append(f"{item!r}: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        elif action in REAL_SERVER_ACTIONS and node not in cluster.real_servers:
            problems.append(f"{item!r}: {node!r} is not a real server of {cluster.name} "
                            f"(real servers: {', '.join(cluster.real_servers)})")
        elif action not in REAL_SERVER_ACTIONS and node not in cluster.directors:
            problems.append(f"{item!r}: {node!r} is not a director of {cluster.name} "
                            f"(directors: {', '.join(cluster.directors)})")
        elif at >= duration:
            problems.append(f"{item!r}: at {at:g}s is not before the end of the run ({duration:g}s)")
        else:
            steps.append(ChurnEvent(at, action, node))
    steps.sort(key=lambda s: s.at)
    problems += _sequence_problems(steps)
    if problems:
        raise LvsClusterError("--churn: " + "\n--churn: ".join(problems))
    return steps


def _sequence_problems(steps: list[ChurnEvent]) -> list[str]:
    """Each node's steps must make sense in order: no revive without a kill, no drain while dead,
    sync restored only where it was cut (and cut only once)."""
    problems, state, cut = [], {}, set()
    for step in steps:
        current = state.get(step.node, "active")
        if step.action in ("cut-sync", "restore-sync"):
            if (step.node in cut) != (step.action == "restore-sync") or current == "killed":
                problems.append(f"{step.label!r}: {step.node}'s sync is {'cut' if step.node in cut else 'flowing'}"
                                f"{' and it is killed' if current == 'killed' else ''} at that time")
            else:
                cut ^= {step.node}
            continue
        if current not in _ALLOWED[step.action]:
            problems.append(f"{step.label!r}: {step.node} is {current} at that time")
            continue
        state[step.node] = _LEAVES.get(step.action, current)
    return problems


def chosen_vip(cluster: Cluster, name: str | None) -> Vip:
    """The VIP a scaletest sends to: the one named (--vip), else the topology's first."""
    vips = {vip.name: vip for vip in cluster.topology.vips}
    if name is None:
        return cluster.topology.vips[0]
    if name not in vips:
        raise LvsClusterError(f"--vip {name}: {cluster.name} has no VIP of that name (its VIPs: {', '.join(vips)})")
    return vips[name]
