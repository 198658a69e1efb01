"""What every lab provider uses: progress callbacks, the lab's namespaces and processes, waiting for a port.

Every provider gives each node a network namespace named `<lab>.<node>` (a Docker lab attaches its
containers' namespaces under that name), so these work on any lab.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute, netns

from lvscluster.errors import ApplyError
from lvscluster.lab.layout import default_route_prefix
from lvscluster.netlink.links import address_args
from lvscluster.netlink.netns import socket_in_netns

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""
    pass


def lab_namespaces(lab: str) -> list[str]:
    """Every namespace on this machine that belongs to the lab (named `<lab>.<node>`)."""
    return sorted(n for n in netns.listnetns() if n.startswith(f"{lab}."))


def not_up(lab: str, topology_path: Path) -> ApplyError:
    """The error for a command that needs the lab running."""
    return ApplyError(f"lab {lab!r} is not up: run `lvscluster lab up {topology_path}`")


def wait_listening(namespace: str, ports: tuple[int, ...], timeout: float) -> None:
    """Wait until something accepts on each TCP port inside the namespace (a Python start is slow in a VM)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            probe = socket_in_netns(namespace, socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.settimeout(1)
                probe.connect(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ApplyError(f"nothing listens on port {port} after {timeout:g} s") from None
                time.sleep(0.2)
            finally:
                probe.close()


def add_addresses(ipr: IPRoute, index: int, *addresses: str | None) -> None:
    """Put each address ("10.2.0.4/24", "2001:db8:2::4/64"; None skipped) on an interface; IPv6
    ones without duplicate address detection, so they answer at once."""
    for address in filter(None, addresses):
        ipr.addr("add", index=index, **address_args(address))


def add_default_routes(namespace: str, gateways: list[str]) -> None:
    """A default route via each gateway (one per address family) in the namespace, replacing
    one that is there."""
    with IPRoute(netns=namespace) as ipr:
        for gateway in gateways:
            ipr.route("replace", dst=default_route_prefix(gateway), gateway=gateway)


def processes_in(namespace: str) -> list[int]:
    """PIDs of the processes whose network namespace is `namespace` (read from /proc)."""
    try:
        target = os.stat(f"/run/netns/{namespace}")
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev) and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids
