"""Faults to inject into a lab node, and the way back (the scaletest's churn events use them).

`kill_node` is what a power cut or a kernel panic looks like to the rest of the cluster: the
router learns of it only from BFD or OSPF dead timers. IPVS state inside the node is left as it
was, like a machine that comes back with a stale table. `revive_node` brings the links up and
starts FRR empty; the caller then deploys the node's configuration again.

The smaller faults: `crash_frr` (kill -9 of the routing daemons; a director's agent starts them
again), `cut_sync`/`restore_sync` (IPVS sync datagrams dropped by nftables), `pull_cables`/
`plug_cables` (a real server's links down and up), `kill_agent` (the health-check agent).
`NetnsFaults` gives the scaletest these faults by node for a namespace lab (a Docker lab's are
in `dockerfaults`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Protocol

from lvscluster.apply import frr
from lvscluster.apply.backends import apply_lock
from lvscluster.apply.processes import alive, kill_and_wait
from lvscluster.errors import ApplyError
from lvscluster.lab.common import add_default_routes
from lvscluster.runfiles import read_health_record
from lvscluster.netlink import Links

SYNC_PORT = 8848  # IPVS connection sync (the kernel's default port)
CUT_SYNC_TABLE = "lvscluster_cut_sync"
ROUTING_DAEMONS = ("ospfd", "bgpd")


def kill_node(namespace: str) -> list[str]:
    """Set every link of the node down and SIGKILL its FRR daemons; returns the links taken down.

    Under the node's apply lock, and FRR's run directory cleared as a power cut clears /run: the
    node's agent (alive in the lab, unlike on a dead machine) must not take the killed daemons
    for crashed ones and start them again while the node is meant to be dead."""
    with apply_lock(namespace):
        with Links(namespace) as links:
            down = [name for name, info in links.links().items() if name != "lo" and info["up"]]
            for name in down:
                links.set_down(name)
        pathspace = frr.pathspace_for(namespace)
        pids = frr.daemon_pids(pathspace)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        frr.stop(pathspace)  # waits for the killed daemons to be gone, removes their pid files and sockets
    return down


def revive_node(namespace: str, links_down: list[str], daemons: tuple[str, ...] = frr.DAEMONS) -> None:
    """Bring up the links `kill_node` took down and start FRR's `daemons` (clearing what the killed
    daemons left), under the node's apply lock."""
    with apply_lock(namespace):
        with Links(namespace) as links:
            for name in links_down:
                links.set_up(name)
        pathspace = frr.pathspace_for(namespace)
        frr.stop(pathspace)  # stale pid files and vty sockets would make start() return early
        frr.start(pathspace, namespace, daemons=daemons)


def crash_frr(namespace: str, daemons: tuple[str, ...] = ROUTING_DAEMONS) -> list[str]:
    """kill -9 of the node's routing daemons (zebra and bfdd live on); returns the ones killed."""
    pathspace = frr.pathspace_for(namespace)
    found = [(daemon, pid) for daemon in daemons for pid in frr.daemon_pids(pathspace, (daemon,)) if alive(pid)]
    kill_and_wait([pid for _, pid in found])
    return [daemon for daemon, _ in found]


def _nft(namespace: str, *argv: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", namespace, "nft", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise ApplyError(f"nft in {namespace}: {done.stderr.strip()}")


def cut_sync(namespace: str) -> None:
    """Drop the node's IPVS sync datagrams, sent and received (as a lossy or partitioned sync link)."""
    _nft(namespace, f"table inet {CUT_SYNC_TABLE} {{ "
                    f"chain out {{ type filter hook output priority 0; udp dport {SYNC_PORT} drop; }}; "
                    f"chain in {{ type filter hook input priority 0; udp dport {SYNC_PORT} drop; }}; }}")


def restore_sync(namespace: str) -> None:
    """Undo `cut_sync`."""
    _nft(namespace, "delete", "table", "inet", CUT_SYNC_TABLE)


def pull_cables(namespace: str) -> list[str]:
    """Set every link of the node down (checks to it time out; nothing is reset); returns them."""
    with Links(namespace) as links:
        down = [name for name, info in links.links().items() if name != "lo" and info["up"]]
        for name in down:
            links.set_down(name)
    return down


def plug_cables(namespace: str, links_down: list[str], gateways: list[str]) -> None:
    """Bring the links up again, and the default routes via `gateways` (one per address family)
    that went down with them."""
    with Links(namespace) as links:
        for name in links_down:
            links.set_up(name)
    add_default_routes(namespace, gateways)


def kill_agent(node: str, namespace: str, timeout: float = 10) -> int | None:
    """kill -9 of the director's health-check agent (by the pid in its record); returns that pid."""
    pid = (read_health_record(node, namespace) or {}).get("pid")
    if not pid or not alive(pid):
        return None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


class NodeFaults(Protocol):
    """A lab's faults on its directors, by node (what a lab provider's `faults` gives the scaletest)."""

    def kill(self, node: str) -> list[str]:
        """A power cut: links down, FRR gone; returns the links taken down (for `revive`)."""
        ...

    def revive(self, node: str, links: list[str], daemons: tuple[str, ...]) -> None:
        """The way back from `kill`: links up, FRR's `daemons` running; the caller deploys the node."""
        ...

    def crash_frr(self, node: str) -> list[str]:
        """kill -9 of ospfd and bgpd; returns the daemons killed."""
        ...

    def restart_agent(self, node: str) -> None:
        """kill -9 of the director's health-check agent, then started again."""
        ...

    def agent_runs(self, node: str) -> bool:
        """Whether the director's agent runs."""
        ...

    def restart_dead_frr(self, node: str, daemons: tuple[str, ...]) -> bool:
        """After the traffic, where no agent runs: FRR's `daemons` running again; True when the
        caller must deploy the node to give them their configuration."""
        ...


class NetnsFaults:
    """The scaletest's faults on the directors of a namespace lab (each a namespace of this
    machine, its FRR under a pathspace with no watchfrr, its agent forked by `lab up`)."""

    def __init__(self, namespaces: dict[str, str], start_agent: Callable[[str], object]):
        self.namespaces, self.start_agent = namespaces, start_agent  # start_agent(node): as `lab up` did

    def kill(self, node: str) -> list[str]:
        """`kill_node`: every link down, FRR killed; returns the links."""
        return kill_node(self.namespaces[node])

    def revive(self, node: str, links: list[str], daemons: tuple[str, ...]) -> None:
        """`revive_node`: the links up, FRR started empty (its agent lived on)."""
        revive_node(self.namespaces[node], links, daemons)

    def crash_frr(self, node: str) -> list[str]:
        """kill -9 of ospfd and bgpd (the agent starts them again); returns the ones killed."""
        return crash_frr(self.namespaces[node])

    def restart_agent(self, node: str) -> None:
        """kill -9 of the director's agent, then started again as `lab up` did."""
        kill_agent(node, self.namespaces[node])
        self.start_agent(node)

    def agent_runs(self, node: str) -> bool:
        """Whether the director's agent runs (its record names a live process)."""
        return read_health_record(node, self.namespaces[node]) is not None

    def restart_dead_frr(self, node: str, daemons: tuple[str, ...]) -> bool:
        """Start the daemons that died again (empty); True when any did (the caller deploys the node)."""
        namespace = self.namespaces[node]
        return bool(frr.restart_dead(frr.pathspace_for(namespace), namespace, daemons))
