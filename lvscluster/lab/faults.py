"""Abrupt node loss in a lab: every link down and FRR killed (no polite withdrawal), and the way back.

`kill_node` is what a power cut or a kernel panic looks like to the rest of the cluster: the
router learns of it only from BFD or OSPF dead timers. IPVS state inside the node is left as it
was, like a machine that comes back with a stale table. `revive_node` brings the links up and
starts FRR empty; the caller then deploys the node's configuration again.
"""

from __future__ import annotations

import os
import signal

from lvscluster.apply import frr
from lvscluster.netlink import Links


def kill_node(namespace: str) -> list[str]:
    """Set every link of the node down and SIGKILL its FRR daemons; returns the links taken down."""
    with Links(namespace) as links:
        down = [name for name, info in links.links().items() if name != "lo" and info["up"]]
        for name in down:
            links.set_down(name)
    for pid in frr.daemon_pids(frr.pathspace_for(namespace)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return down


def revive_node(namespace: str, links_down: list[str], daemons: tuple[str, ...] = frr.DAEMONS) -> None:
    """Bring up the links `kill_node` took down and start FRR's `daemons` (clearing what the killed
    daemons left)."""
    with Links(namespace) as links:
        for name in links_down:
            links.set_up(name)
    pathspace = frr.pathspace_for(namespace)
    frr.stop(pathspace)  # stale pid files and vty sockets would make start() return early
    frr.start(pathspace, namespace, daemons=daemons)
