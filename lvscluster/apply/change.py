"""A planned change to a director (drain, undrain) applied from what deploy recorded, without observing first.

Under emulation a drain spent 4-40 s in a whole deploy (netlink dumps, three vtysh reads,
frr-reload's fallbacks) before its one changed FRR line reached the router. A director whose
record (the topology deploy last applied to it) is on this machine needs none of that: the
record's desired state is what the node holds, so the change is the diff of two pure plans,
applied under the node's apply lock (one daemon's vty socket, or one vtysh run) and recorded
in the same hold (its agent never sees the new state with the old record). FRR's result is
still read back and checked (`frr.reload`); a node without a record, or an apply that fails,
gets a whole deploy instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lvscluster.apply import frr
from lvscluster.apply.backends import apply_lock
from lvscluster.apply.backends import wake_agent
from lvscluster.apply.deploy import agent_verdict, read_deployed, topology_snapshot
from lvscluster.apply.lifecycle import deploy_nodes
from lvscluster.apply.placement import Placement, placement_of
from lvscluster.apply.reach import backend_for
from lvscluster.errors import LvsClusterError
from lvscluster.files import write_atomic
from lvscluster.model.cluster import Cluster
from lvscluster.plan.desired import plan_director
from lvscluster.plan.diff import diff_node
from lvscluster.runfiles import deployed_path

Progress = Callable[[str], None]


def change_director(cluster: Cluster, lab: dict[str, Placement] | None, node: str, progress: Progress,
                    frr_restarted: bool = False) -> int:
    """Bring one director from its recorded topology to `cluster`'s; returns the number of changes.

    Quick (no observation) when deploy's record of the node is here; a whole deploy of the node
    otherwise. `frr_restarted`: FRR was just started empty (a revived node): its running config
    is read (the node's agent may have loaded it already: loading it again would reset the OSPF
    interfaces and drop the adjacency for ~1.6 s), the rest is taken as recorded."""
    backend = backend_for(placement_of(cluster, node, lab))
    if cluster.role(node) != "director" or not backend.placement.on_this_machine or backend.dry_run:
        return deploy_nodes(cluster, lab, [node], progress)
    try:
        record = deployed_path(node, backend.placement.netns)
        recorded_text = record.read_text() if record.exists() else None
        recorded = read_deployed(node, backend.placement.netns) if recorded_text else None
        if recorded is None or node not in recorded.topology.nodes:
            raise LvsClusterError("no record of what deploy applied")
        asked = time.monotonic()
        with apply_lock(backend.placement.netns):
            if (waited := time.monotonic() - asked) >= 0.5:
                progress(f"{node}: waited {waited:.1f} s for its apply lock (its agent was converging)")
            if record.read_text() != recorded_text:
                raise LvsClusterError("the record changed meanwhile (a deploy or the agent)")
            # planned in the hold, with the verdict the agent last applied: one read before the
            # lock could be seconds old (a revive held it while FRR started) and undo the agent
            verdict = agent_verdict(cluster, node, backend)
            before, after = plan_director(recorded, node, verdict), plan_director(cluster, node, verdict)
            if frr_restarted:  # started empty, but the agent may have configured it since: read it
                before = before.model_copy(update={"frr": frr.running_config(backend.frr_pathspace, backend.runner)})
            actions = diff_node(after, before)
            for action in actions:
                progress(f"{node}: {action.summary}: {action.reason}")
            backend.apply_under_lock(actions, frr_running=before.frr)
            write_atomic(record, topology_snapshot(cluster))
        wake_agent(node, backend.placement.netns)  # it re-plans with its live verdict at once
        return len(actions)
    except (LvsClusterError, OSError) as exc:
        progress(f"{node}: quick change not possible ({exc}): deploying the node whole")
        return deploy_nodes(cluster, lab, [node], progress)
