"""Deploy: observe every node, diff against the topology, apply node by node.

The rollout order keeps traffic safe: real servers first (they must accept the VIP before
any director sends it to them), then routers (5-tuple hashing, maximum-paths), then the
directors one at a time, each fully configured before it announces the VIP. The first
failure stops the rollout: the nodes before it are done, the nodes after it untouched,
and the error names the node and the action.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lvscluster.apply.backends import NodeBackend, apply_lock
from lvscluster.apply.commands import DEFAULT_RUNNER, Runner
from lvscluster.apply.placement import Placement, placement_of
from lvscluster.apply.reach import backend_for
from lvscluster.errors import ApplyError, EnvironmentProblem, LvsClusterError
from lvscluster.model.cluster import Cluster
from lvscluster.model.topology import Topology
from lvscluster.plan.actions import Action
from lvscluster.plan.desired import plan_cluster, plan_director
from lvscluster.plan.diff import diff_node
from lvscluster.plan.health import HealthVerdict
from lvscluster.runfiles import deployed_path, read_health_record
from lvscluster.state import NodeState

Progress = Callable[[str], None]
OBSERVE_WORKERS = 8  # nodes observed at once
ROLLOUT_ROLES = ("real_server", "router", "director")


def _quiet(_: str) -> None:
    pass


def agent_verdict(cluster: Cluster, node: str, backend: NodeBackend) -> HealthVerdict | None:
    """The health verdict of a director's running agent (None: no agent, or not a director)."""
    if cluster.role(node) != "director" or not backend.placement.on_this_machine:
        return None  # an ssh node's agent is not consulted yet
    record = read_health_record(node, backend.placement.netns)
    verdict = HealthVerdict.from_json(record["verdict"]) if record and "verdict" in record else None
    return verdict if verdict and (verdict.quiesced or verdict.withdrawn or verdict.sorry) else None


def _verdict_summary(verdict: HealthVerdict) -> str:
    parts = [f"{len(verdict.quiesced)} quiesced"] if verdict.quiesced else []
    parts += [f"{', '.join(sorted(verdict.withdrawn))} withdrawn"] if verdict.withdrawn else []
    parts += [f"{len(verdict.sorry)} on the sorry server"] if verdict.sorry else []
    return "; ".join(parts)


def managed(state: NodeState) -> bool:
    """True when the node has anything for deploy to manage (clients usually do not)."""
    return bool(state.addresses or state.sysctls or state.tunnels or state.ipvs or state.frr)


def rollout_order(cluster: Cluster, nodes: list[str]) -> list[str]:
    """Real servers, routers, then directors (each group in file order)."""
    return [n for role in ROLLOUT_ROLES for n in nodes if cluster.role(n) == role]


@dataclass
class DeployPlan:
    """Desired and observed state of every managed node and the actions between them."""

    cluster: Cluster
    backends: dict[str, NodeBackend]
    desired: dict[str, NodeState]
    observed: dict[str, NodeState]
    actions: dict[str, list[Action]] = field(default_factory=dict)
    teardown: bool = False  # a destroy plan: what deploy applied is forgotten, not recorded

    @property
    def total(self) -> int:
        """How many actions the plan holds."""
        return sum(len(a) for a in self.actions.values())


def require_root(backends: dict[str, NodeBackend]) -> None:
    """Local netlink and FRR work needs root; say so before touching anything."""
    if os.geteuid() != 0 and any(b.placement.on_this_machine for b in backends.values()):
        raise EnvironmentProblem("deploy and status need root for netlink and FRR on this machine: run with sudo")


def plan_deploy(cluster: Cluster, lab: dict[str, Placement] | None, progress: Progress = _quiet,
                runner: Runner = DEFAULT_RUNNER, only: list[str] | None = None,
                backends: dict[str, NodeBackend] | None = None) -> DeployPlan:
    """Observe every managed node (or the `only` ones) and compute its actions (changes nothing).
    `lab`: where the lab built from the topology put each node, if one is up; `backends` reach
    nodes some other way (tests: `apply.memory.MemoryBackend`)."""
    desired = {name: state for name, state in plan_cluster(cluster, only).items() if managed(state)}
    order = rollout_order(cluster, list(desired))
    given = backends or {}
    backends = {name: given.get(name) or backend_for(placement_of(cluster, name, lab), runner) for name in order}
    require_root(backends)
    for name in order:  # a director's running agent has quiesced or withdrawn: plan with its verdict
        verdict = agent_verdict(cluster, name, backends[name])
        if verdict is not None:
            progress(f"{name}: with its agent's health verdict ({_verdict_summary(verdict)})")
            desired[name] = plan_director(cluster, name, verdict)
    if order:
        progress(f"observing {len(order)} nodes: {', '.join(order)}")
    # Nodes are independent: observe them side by side (each is netlink dumps plus a vtysh or ssh
    # round trip); the plan keeps the rollout order.
    with ThreadPoolExecutor(max_workers=min(OBSERVE_WORKERS, len(order) or 1)) as pool:
        futures = {name: pool.submit(backends[name].observe, desired[name]) for name in order}
    observed, actions = {}, {}
    for name in order:
        try:
            observed[name] = futures[name].result()
        except LvsClusterError as exc:
            reached_by = backends[name].description
            where = "" if str(exc).startswith(reached_by) else f" ({reached_by})"  # ssh and docker errors name it
            raise ApplyError(f"cannot observe {name}{where}: {exc}") from None
        actions[name] = diff_node(desired[name], observed[name])
    return DeployPlan(cluster, backends, {n: desired[n] for n in order}, observed, actions)


def apply_plan(plan: DeployPlan, progress: Progress = _quiet) -> list[str]:
    """Apply node by node in rollout order; returns the nodes changed. Stops at the first failure.

    Ctrl-C (SIGINT) lets the node being changed finish, then stops before the next one; a
    second Ctrl-C stops at once (the next deploy continues from whatever state that left)."""
    done: list[str] = []
    pending = [n for n, acts in plan.actions.items() if acts]
    for name in plan.actions:  # directors already right hold this topology now
        if name in pending:
            continue
        if _record_changes(plan, name):  # under the lock: its agent may be acting on the old record
            _apply_and_record(plan, name, [])
        else:
            _record_deployed(plan, name)
    with _interrupt_between_nodes() as interrupted:
        for index, name in enumerate(pending):
            actions = plan.actions[name]
            progress(f"applying {len(actions)} changes to {name} ({plan.backends[name].description})")
            try:
                _apply_and_record(plan, name, actions)
            except LvsClusterError as exc:
                raise ApplyError(f"deploy stopped at {name}: {exc}\n" + _rollout_state(done, pending[index + 1:])
                                 + "\n  run deploy again once the cause is fixed: it continues from the current state") from None
            done.append(name)
            if interrupted() and index + 1 < len(pending):
                raise DeployInterrupted("deploy interrupted (Ctrl-C) after " + name + "\n" + _rollout_state(done, pending[index + 1:])
                                        + "\n  run deploy again to finish: it continues from the current state")
    return done


class DeployInterrupted(ApplyError):
    """Ctrl-C between two nodes: the rollout stopped cleanly."""

    exit_code = 130


def _rollout_state(done: list[str], untouched: list[str]) -> str:
    return f"  done: {', '.join(done) or 'none'}; not touched: {', '.join(untouched) or 'none'}"


@contextlib.contextmanager
def _interrupt_between_nodes():
    """While applying: the first SIGINT is noted (the caller stops after the current node), the
    second raises KeyboardInterrupt as usual. Outside the main thread, and where SIGINT is
    ignored (a job started in the background with `&`, or under nohup-like runners: no terminal's
    Ctrl-C is meant for it), SIGINT is left alone."""
    seen = []

    def note(signum, frame):
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        sys.stderr.write("\ninterrupt: finishing the current node, then stopping (Ctrl-C again to stop at once)\n")

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, note)
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, previous)


def _apply_and_record(plan: DeployPlan, name: str, actions: list[Action]) -> None:
    """Apply one node's actions. On this machine, under the node's apply lock, the node is observed
    again first (its agent may have changed it since the plan), and a director records the topology
    it now holds in the same hold, so its agent never sees the new state with the old topology."""
    backend = plan.backends[name]
    if not _keeps_records_here(backend):
        if plan.cluster.role(name) == "director" and not backend.dry_run:  # kept on the node, for its agent
            backend.apply_recorded(actions, name, None if plan.teardown else _snapshot(plan))
        else:
            backend.apply(actions)
        return
    with apply_lock(backend.placement.netns):
        if not plan.teardown:  # the node's agent may have changed it since the plan: apply what still differs
            actions = diff_node(plan.desired[name], backend.observe(plan.desired[name]))
        backend.apply_under_lock(actions)
        _record_deployed(plan, name)


def _keeps_records_here(backend: NodeBackend) -> bool:
    """A real change to a node on this machine: its apply lock and deploy's record are here."""
    return backend.placement.on_this_machine and not backend.dry_run


def read_deployed(node: str, netns: str | None) -> Cluster | None:
    """The cluster as deploy last applied it to this director (what its agent keeps), or None."""
    try:
        document = json.loads(deployed_path(node, netns).read_text())
    except (OSError, ValueError):
        return None
    return Cluster.from_topology(Topology.model_validate(document))


def topology_snapshot(cluster: Cluster) -> str:
    """The topology as a director's record holds it (canonical JSON)."""
    return json.dumps(cluster.topology.model_dump(mode="json"), sort_keys=True)


def _snapshot(plan: DeployPlan) -> str:
    return topology_snapshot(plan.cluster)


def _record_changes(plan: DeployPlan, name: str) -> bool:
    """True when a director's recorded topology is not the one being deployed (say, a deploy
    that failed at this director left its kernel changed and its record old)."""
    backend = plan.backends[name]
    if plan.teardown or plan.cluster.role(name) != "director" or not _keeps_records_here(backend):
        return False
    try:
        return deployed_path(name, backend.placement.netns).read_text() != _snapshot(plan)
    except OSError:
        return True


def _record_deployed(plan: DeployPlan, name: str) -> None:
    """Keep the topology a director now holds (its agent converges to it, not to the file, so an
    edited file changes nothing until `deploy`); a destroyed director's record is removed."""
    backend = plan.backends[name]
    if plan.cluster.role(name) != "director" or not _keeps_records_here(backend):
        return
    backend.record_deployed(name, None if plan.teardown else _snapshot(plan))


def plan_teardown(plan: DeployPlan) -> DeployPlan:
    """The destroy plan for an observed cluster: directors first (withdraw), then routers, then real servers."""
    from lvscluster.plan.destroy import destroy_frr, plan_destroy

    actions = {}
    for name in reversed(list(plan.actions)):
        desired, observed, backend = plan.desired[name], plan.observed[name], plan.backends[name]
        originals = backend.originals()
        emptied = False
        if desired.frr is not None and observed.frr is not None:
            empty = desired.model_copy(update={"frr": destroy_frr(desired, observed, originals)})
            emptied = backend.observe(empty).frr == empty.frr
        actions[name] = plan_destroy(desired, observed, originals, frr_emptied=emptied)
    return DeployPlan(plan.cluster, plan.backends, plan.desired, plan.observed, actions, teardown=True)
