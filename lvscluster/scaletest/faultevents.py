"""The scaletest's smaller fault events on a lab node, and the repair after the traffic.

crash-frr, cut-sync/restore-sync, restart-agent (directors) and link-down/link-up (real
servers), carried out with `lab.faults`. A crashed FRR is the director's agent's to restart;
where no agent ran, `repair` starts the daemons again and deploys the node once the traffic
has ended, so a scaletest never leaves a lab broken.
"""

from __future__ import annotations

from collections.abc import Callable

from lvscluster.apply import frr
from lvscluster.apply.lifecycle import deploy_nodes
from lvscluster.apply.placement import Placement, namespaces_of
from lvscluster.lab import faults
from lvscluster.lab import netns as lab_provider
from lvscluster.lab.layout import plan_lab
from lvscluster.model.cluster import Cluster
from lvscluster.plan.render import frr_daemons
from lvscluster.runfiles import read_health_record
from lvscluster.scaletest.report import ChurnEvent

FAULT_ACTIONS = ("crash-frr", "cut-sync", "restore-sync", "restart-agent", "link-down", "link-up")


class FaultEvents:
    """Carries out fault events on one lab; remembers what it must undo."""

    def __init__(self, cluster: Cluster, lab: dict[str, Placement], progress: Callable[[str], None]):
        self.cluster, self.lab, self.progress = cluster, lab, progress
        self.namespaces = namespaces_of(lab)
        self.gateways = plan_lab(cluster).default_routes
        self.unplugged: dict[str, list[str]] = {}
        self.crashed: set[str] = set()
        self.cut: set[str] = set()

    def carry_out(self, event: ChurnEvent) -> None:
        """Do one fault event now."""
        node, namespace = event.node, self.namespaces[event.node]
        if event.action == "crash-frr":
            faults.crash_frr(namespace)
            self.crashed.add(node)
        elif event.action == "cut-sync":
            faults.cut_sync(namespace)
            self.cut.add(node)
        elif event.action == "restore-sync":
            faults.restore_sync(namespace)
            self.cut.discard(node)
        elif event.action == "restart-agent":
            faults.kill_agent(node, namespace)
            lab_provider.start_agent(self.cluster.name, node)
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
            namespace = self.namespaces[node]
            if read_health_record(node, namespace) is not None:
                continue  # its agent restarts FRR and reloads the configuration
            if frr.restart_dead(frr.pathspace_for(namespace), namespace, frr_daemons(current, node)):
                self.progress(f"{node}: no agent runs there; FRR started again and the node deployed")
                deploy_nodes(current, self.lab, [node], lambda _: None)
        self.cut.clear()
        self.unplugged.clear()
        self.crashed.clear()
