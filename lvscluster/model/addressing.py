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


def _block(version: int, value: int, prefix: int) -> tuple[int, int, int]:
    """The CIDR block of `prefix` bits that holds `value`, as a hashable key."""
    bits = 32 if version == 4 else 128
    return version, value >> (bits - prefix) << (bits - prefix), prefix


class SubnetIndex:
    """The links' subnets by block, so "which subnets hold this address" and "which subnet overlaps
    this one" are a few lookups per prefix length in use, not a comparison with every link."""

    def __init__(self, subnets: list):
        self._links: dict[tuple[int, int, int], list[int]] = {}  # block -> link indexes, in file order
        for li, subnet in enumerate(subnets):
            self._links.setdefault((subnet.version, int(subnet.network_address), subnet.prefixlen), []).append(li)
        prefixes: dict[int, set[int]] = {}
        for version, _, prefix in self._links:
            prefixes.setdefault(version, set()).add(prefix)
        self._prefixes = {version: sorted(lengths) for version, lengths in prefixes.items()}
        self._overlaps: dict[tuple[int, int, int], int] | None = None

    def holding(self, address) -> list[int]:
        """Indexes of the links whose subnet holds `address` (of its IP version), in file order."""
        found: list[int] = []
        for prefix in self._prefixes.get(address.version, ()):
            found += self._links.get(_block(address.version, int(address), prefix), ())
        return sorted(found)

    def first_overlap(self, subnet) -> int | None:
        """The first link whose subnet overlaps `subnet` without being equal to it (two CIDR blocks
        overlap only when one holds the other), or None."""
        if self._overlaps is None:
            self._overlaps = overlaps = {}

            def note(block: tuple[int, int, int], index: int) -> None:
                overlaps[block] = min(overlaps.get(block, index), index)

            for inner, indexes in self._links.items():
                version, value, prefix = inner
                for shorter in self._prefixes[version]:
                    if shorter >= prefix:
                        break
                    outer = _block(version, value, shorter)
                    if outer in self._links:  # `inner` lies in `outer`: each overlaps the other
                        note(inner, self._links[outer][0])
                        note(outer, indexes[0])
        return self._overlaps.get((subnet.version, int(subnet.network_address), subnet.prefixlen))
