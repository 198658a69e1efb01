"""IPVS connection entries of a namespace (what `ipvsadm -lnc` shows), with their origin.

The kernel offers no netlink dump of connections; it publishes them in
`/proc/net/ip_vs_conn_sync` (the variant that also says whether an entry was created here
or received from another director by sync). The file is per network namespace, so it is
read from a thread that entered the namespace (`/proc/thread-self/net/...`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

from lvscluster.netlink.netns import in_netns

PROC_FILE = "/proc/thread-self/net/ip_vs_conn_sync"


@dataclass(frozen=True)
class IpvsConnection:
    """One connection entry: client -> VIP -> real server, its state and where it came from."""

    protocol: str
    client: str
    vip: str
    dest: str
    state: str
    origin: str  # "local" or "sync"
    expires: int  # seconds

    def as_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)


def _endpoint(address: str, port: str) -> str:
    if ":" in address:  # IPv6 as the kernel's %pI6: 2001:0db8:0000:...
        host = f"[{ipaddress.IPv6Address(address)}]"
    else:  # IPv4 as 8 hex digits
        host = str(ipaddress.IPv4Address(int(address, 16)))
    return f"{host}:{int(port, 16)}"


def parse_connections(text: str) -> list[IpvsConnection]:
    """Parse the kernel's ip_vs_conn_sync table (the header line is skipped)."""
    entries = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        proto, caddr, cport, vaddr, vport, daddr, dport, state, origin, expires = fields[:10]
        entries.append(IpvsConnection(proto.lower(), _endpoint(caddr, cport), _endpoint(vaddr, vport),
                                      _endpoint(daddr, dport), state, origin.lower(), int(expires)))
    return entries


def _read_table(netns: str | None) -> str:
    def read() -> str:
        try:
            with open(PROC_FILE) as handle:
                return handle.read()
        except FileNotFoundError:  # IPVS not loaded
            return ""

    return in_netns(netns, read)


def connections(netns: str | None) -> list[IpvsConnection]:
    """Every IPVS connection entry in the namespace; empty when IPVS is not loaded."""
    return parse_connections(_read_table(netns))


def count_in_table(text: str, vip: str, port: int, state: str = "ESTABLISHED") -> dict[str, int]:
    """{"local": n, "sync": n}: entries to a VIP:port in one state, counted without parsing
    every entry (a scaletest samples thousands of them in a slow VM). The kernel prints an IPv4
    address as 8 hex digits, an IPv6 one as %pI6 (eight groups of four hex digits)."""
    address = ipaddress.ip_address(vip)
    token = f" {address.exploded if address.version == 6 else format(int(address), '08X')} {port:04X} "
    counts = {"local": 0, "sync": 0}
    for line in text.splitlines():
        if token in line:
            fields = line.split()
            if len(fields) >= 10 and fields[7] == state:
                counts["sync" if fields[8].lower() == "sync" else "local"] += 1
    return counts


def count_connections(netns: str | None, vip: str, port: int, state: str = "ESTABLISHED") -> dict[str, int]:
    """`count_in_table` on the namespace's connection table."""
    return count_in_table(_read_table(netns), vip, port, state)
