"""Read and write sysctls (`net.ipv4.vs.*`, `arp_ignore`, `rp_filter`, ...) in a namespace.

`/proc/sys/net` shows the network namespace of the thread that *opens* a file there, so
each call opens its files inside a setns'd helper thread (`netns.in_netns`); one thread
serves a whole batch of names. Names are dotted (`net.ipv4.conf.all.arp_ignore`); an
interface name that contains dots can be given in slash form
(`net/ipv4/conf/eth0.100/rp_filter`). Values are compared whitespace-normalised
(`"3\t50"` reads as `"3 50"`).
"""

from __future__ import annotations

import os

from lvscluster.errors import EnvironmentProblem, NetlinkOperationError
from lvscluster.netlink.netns import in_netns

PROC_SYS = "/proc/sys"


def sysctl_path(name: str) -> str:
    """`/proc/sys/...` path of a dotted (or slash-separated) sysctl name."""
    rel = name if "/" in name else name.replace(".", "/")
    return os.path.join(PROC_SYS, rel.lstrip("/"))


def normalise(value: str) -> str:
    """Whitespace-normalised value, as the kernel's multi-value sysctls print with tabs."""
    return " ".join(str(value).split())


def _read_all(names) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            with open(sysctl_path(name)) as f:
                out[name] = normalise(f.read())
        except FileNotFoundError:
            out[name] = None
    return out


def _write_all(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = sysctl_path(name)
        try:
            with open(path, "w") as f:
                f.write(normalise(value))
        except FileNotFoundError:
            hint = " (is ip_vs loaded?)" if ".vs." in name or "/vs/" in name else ""
            raise EnvironmentProblem(f"sysctl {name} does not exist{hint}") from None
        except OSError as err:
            raise NetlinkOperationError(f"cannot set {name} = {value}: {err.strerror}") from err


def read_sysctls(netns: str | None, names) -> dict[str, str | None]:
    """{name: value} for each name in `netns`; None for a sysctl that does not exist."""
    return in_netns(netns, _read_all, list(names))


def read_sysctl(netns: str | None, name: str) -> str | None:
    """One sysctl's value in `netns` (None if it does not exist)."""
    return read_sysctls(netns, [name])[name]


def write_sysctls(netns: str | None, values: dict[str, str]) -> None:
    """Set several sysctls in `netns`, in the given order."""
    in_netns(netns, _write_all, dict(values))


def write_sysctl(netns: str | None, name: str, value: str) -> None:
    """Set one sysctl in `netns`."""
    write_sysctls(netns, {name: value})
