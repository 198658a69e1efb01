"""Run code and open sockets inside a network namespace, without moving the process.

`setns(2)` with CLONE_NEWNET changes only the calling thread. `in_netns(netns, fn)` runs
`fn` in a short-lived helper thread that first enters the namespace (via pyroute2's
`netns.setns`, never creating it), so:

* sockets created there (`socket_in_netns`) stay bound to that namespace for their life,
  which is how the IPVS generic netlink socket reaches a namespace's IPVS;
* files opened there under `/proc/sys/net` show that namespace's sysctls (the kernel picks
  the sysctl set from the opener's namespace), which is how `sysctl.py` reads and writes
  `net.ipv4.vs.*`, `arp_ignore`, `rp_filter` per namespace.

The main thread never changes namespace, so a failure cannot leave the process in the
wrong one. `netns=None` means the current namespace and calls `fn` directly.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Callable, TypeVar

from pyroute2 import netns as _pr2_netns

from lvscluster.errors import EnvironmentProblem

T = TypeVar("T")
NETNS_RUN_DIR = "/run/netns"


def netns_path(netns: str) -> str:
    """`/run/netns/NAME` for a name; a path (e.g. `/proc/PID/ns/net`) as is."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def check_netns(netns: str | None) -> None:
    """Raise EnvironmentProblem unless `netns` is None or an existing namespace."""
    if netns is not None and not os.path.exists(netns_path(netns)):
        raise EnvironmentProblem(f"network namespace {netns!r} does not exist")


def in_netns(netns: str | None, fn: Callable[..., T], *args, **kwargs) -> T:
    """Call `fn(*args, **kwargs)` inside `netns` (a setns'd helper thread) and return its result."""
    if netns is None:
        return fn(*args, **kwargs)
    check_netns(netns)
    result: list = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            _pr2_netns.setns(netns_path(netns), flags=0)
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=runner, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside `netns`; it keeps working there from any thread."""
    return in_netns(netns, socket.socket, family, kind, proto)
