"""The scaletest's smaller fault events on a lab node, and the repair after the traffic.

crash-frr, cut-sync/restore-sync, restart-agent (directors) and link-down/link-up (real
servers), carried out with `lab.faults` in the node's namespace and, for what happens to a
director's processes, with its lab provider's `NodeFaults` (a namespace lab's or a Docker
lab's). A crashed FRR is the director's agent's (or watchfrr's) to restart; where no agent ran,
`repair` sees the daemons running again and deploys the node once the traffic has ended, so a
scaletest never leaves a lab broken.
"""

from __future__ import annotations

from collections.abc import Callable

from lvscluster.apply.lifecycle import deploy_nodes
from lvscluster.apply.placement import Placement, namespaces_of
from lvscluster.lab import faults
from lvscluster.lab.faults import NodeFaults
from lvscluster.lab.layout import plan_lab
from lvscluster.model.cluster import Cluster
from lvscluster.plan.render import frr_daemons
from lvscluster.scaletest.report import ChurnEvent

FAULT_ACTIONS = ("crash-frr", "cut-sync", "restore-sync", "restart-agent", "link-down", "link-up")


class FaultEvents:
    """Carries out fault events on one lab; remembers what it must undo."""

    def __init__(self, cluster: Cluster, lab: dict[str, Placement], node_faults: NodeFaults,
                 progress: Callable[[str], None]):
        self.cluster, self.lab, self.node_faults, self.progress = cluster, lab, node_faults, progress
        self.namespaces = namespaces_of(lab)
        self.gateways = plan_lab(cluster).default_routes
        self.unplugged: dict[str, list[str]] = {}
        self.crashed: set[str] = set()
        self.cut: set[str] = set()

    def carry_out(self, event: ChurnEvent) -> None:
        """Do one fault event now."""
        node, namespace = event.node, self.namespaces[event.node]
        if event.action == "crash-frr":
            self.node_faults.crash_frr(node)
            self.crashed.add(node)
        elif event.action == "cut-sync":
            faults.cut_sync(namespace)
            self.cut.add(node)
        elif event.action == "restore-sync":
            faults.restore_sync(namespace)
            self.cut.discard(node)
        elif event.action == "restart-agent":
            self.node_faults.restart_agent(node)
        elif event.action == "link-down":
            self.unplugged[node] = faults.pull_cables(namespace)
        elif event.action == "link-up":
            faults.plug_cables(namespace, self.unplugged.pop(node, []), self.gateways.get(node, []))

    def repair(self, current: Cluster) -> None:
        """After the traffic: sync let through, cables plugged, and a crashed FRR no agent restarted
        started and configured again."""
        for node in sorted(self.cut):
            faults.restore_sync(self.namespaces[node])
        for node, links in sorted(self.unplugged.items()):
            faults.plug_cables(self.namespaces[node], links, self.gateways.get(node, []))
        for node in sorted(self.crashed):
            if self.node_faults.agent_runs(node):
                continue  # its agent restarts FRR (or sees watchfrr's) and reloads the configuration
            if self.node_faults.restart_dead_frr(node, frr_daemons(current, node)):
                self.progress(f"{node}: no agent runs there; FRR started again and the node deployed")
                deploy_nodes(current, self.lab, [node], lambda _: None)
        self.cut.clear()
        self.unplugged.clear()
        self.crashed.clear()
