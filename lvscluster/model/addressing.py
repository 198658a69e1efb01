"""Interface addressing: each link endpoint gets the next free host of the link's subnet.

Explicit endpoint addresses are honoured and skipped when numbering the others, so adding
an explicit address never renumbers the rest of the link.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvscluster.model.problems import Problem
from lvscluster.model.topology import Topology

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class NodeInterface:
    """One node's interface on one link, with its address (prefix length of the link)."""

    node: str
    name: str
    address: IPInterface
    link_index: int
    link_name: str | None

    @property
    def ip(self) -> str:
        """The bare address, e.g. `10.2.0.5`."""
        return str(self.address.ip)


def _usable_hosts(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network):
    if subnet.prefixlen >= subnet.max_prefixlen - 1:  # /31 and /32 (RFC 3021): every address
        return iter(subnet)
    return subnet.hosts()


def assign_addresses(topology: Topology) -> tuple[list[NodeInterface], list[Problem]]:
    """Every endpoint's interface and address, plus the problems found on the way."""
    interfaces: list[NodeInterface] = []
    problems: list[Problem] = []
    for li, link in enumerate(topology.links):
        subnet = link.subnet
        taken: set = set()
        for ei, ep in enumerate(link.endpoints):
            if ep.address is None:
                continue
            loc = ("links", li, "endpoints", ei, "address")
            if ep.address.version != subnet.version or ep.address not in subnet:
                problems.append(Problem(loc, f"address {ep.address} is outside the link's subnet {subnet}"))
            elif ep.address in (subnet.network_address, subnet.broadcast_address) and subnet.prefixlen < subnet.max_prefixlen - 1:
                problems.append(Problem(loc, f"address {ep.address} is the network or broadcast address of {subnet}"))
            taken.add(ep.address)
        free = (host for host in _usable_hosts(subnet) if host not in taken)
        for ei, ep in enumerate(link.endpoints):
            address = ep.address
            if address is None:
                address = next(free, None)
                if address is None:
                    wanted = len(link.endpoints)
                    problems.append(Problem(("links", li, "subnet"), f"subnet {subnet} is too small for {wanted} endpoints"))
                    break
            iface = ipaddress.ip_interface(f"{address}/{subnet.prefixlen}")
            interfaces.append(NodeInterface(ep.node, ep.interface, iface, li, link.name))
    return interfaces, problems
