"""Interface addressing: each link endpoint gets the next free host of the link's subnet.

Explicit endpoint addresses are honoured and skipped when numbering the others, so adding
an explicit address never renumbers the rest of the link. A dual-stack link (`subnet6:` beside
an IPv4 `subnet:`) numbers its IPv6 subnet the same way, from `address6:` and the free hosts:
one interface, two addresses.
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
    address6: ipaddress.IPv6Interface | None = None  # a dual-stack link's IPv6 address

    @property
    def ip(self) -> str:
        """The bare address, e.g. `10.2.0.5`."""
        return str(self.address.ip)

    def address_of(self, version: int) -> IPInterface | None:
        """The interface's IPv4 or IPv6 address (None when its link carries no such subnet)."""
        if self.address.version == version:
            return self.address
        return self.address6 if version == 6 else None

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        """Every address of the interface: the link subnet's, then the `subnet6` one."""
        return (self.address,) if self.address6 is None else (self.address, self.address6)


def _usable_hosts(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network):
    if subnet.prefixlen >= subnet.max_prefixlen - 1:  # /31 and /32 (RFC 3021): every address
        return iter(subnet)
    return subnet.hosts()


def assign_addresses(topology: Topology) -> tuple[list[NodeInterface], list[Problem]]:
    """Every endpoint's interface and addresses, plus the problems found on the way."""
    interfaces: list[NodeInterface] = []
    problems: list[Problem] = []
    for li, link in enumerate(topology.links):
        explicit = [ep.address for ep in link.endpoints]
        addresses = _number(link.subnet, explicit, ("links", li), "address", problems)
        explicit6 = [ep.address6 for ep in link.endpoints]
        if link.subnet6 is not None and link.subnet.version == 4:
            addresses6 = _number(link.subnet6, explicit6, ("links", li), "address6", problems)
        else:
            addresses6 = [None] * len(link.endpoints)
            for ei, address6 in enumerate(explicit6):
                if address6 is None:
                    continue
                why = (f"this link's subnet {link.subnet} is IPv6 already: write it as address:" if link.subnet.version == 6
                       else "needs subnet6: on the link (an IPv6 subnet beside its IPv4 subnet)")
                problems.append(Problem(("links", li, "endpoints", ei, "address6"), f"address6 {address6}: {why}"))
        for ep, address, address6 in zip(link.endpoints, addresses, addresses6):
            if address is None:
                break
            iface6 = ipaddress.IPv6Interface(f"{address6}/{link.subnet6.prefixlen}") if address6 is not None else None
            iface = ipaddress.ip_interface(f"{address}/{link.subnet.prefixlen}")
            interfaces.append(NodeInterface(ep.node, ep.interface, iface, li, link.name, iface6))
    return interfaces, problems


def _number(subnet, explicit: list, loc: tuple, field: str, problems: list[Problem]) -> list:
    """One address per endpoint: its explicit one, else the next free host (None once the subnet is full)."""
    taken: set = set()
    for ei, address in enumerate(explicit):
        if address is None:
            continue
        where = (*loc, "endpoints", ei, field)
        if address.version != subnet.version or address not in subnet:
            name = "subnet6" if field == "address6" else "subnet"
            problems.append(Problem(where, f"{field} {address} is outside the link's {name} {subnet}"))
        elif address in (subnet.network_address, subnet.broadcast_address) and subnet.prefixlen < subnet.max_prefixlen - 1:
            problems.append(Problem(where, f"{field} {address} is the network or broadcast address of {subnet}"))
        taken.add(address)
    free = (host for host in _usable_hosts(subnet) if host not in taken)
    out: list = []
    for address in explicit:
        address = address if address is not None else next(free, None)
        if address is None:
            field_name = "subnet6" if field == "address6" else "subnet"
            problems.append(Problem((*loc, field_name), f"{field_name} {subnet} is too small for {len(explicit)} endpoints"))
            return out + [None] * (len(explicit) - len(out))
        out.append(address)
    return out


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
