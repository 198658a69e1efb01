"""The network an import cannot know: a router, directors, a client and links, marked FILL IN.

Real servers are grouped onto LAN links by address: the widest subnet from /24 to /29 around
them that holds no VIP and has room for the router and every director. Router and director
addresses on a LAN are the subnet's highest free ones, so they never take a real server's or a
sorry server's address. Uplinks, the client link and router ids come from 100.64.0.0/10 (shared
address space), away from every address the import found.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lvscluster.errors import LvsClusterError

PREFIXES = range(24, 30)
BASES = [ipaddress.ip_network(f"100.{64 + i}.0.0/16") for i in range(64)]


@dataclass
class Lan:
    """A LAN link: its real servers (node name -> address), the router if it is on it, its subnet."""

    name: str
    subnet: ipaddress.IPv4Network
    members: dict[str, str]
    router: bool = True
    infra: dict[str, str] = field(default_factory=dict)  # r1 / dN -> address


@dataclass
class Skeleton:
    """Router, directors, client and links for the imported services."""

    directors: list[str]
    base: ipaddress.IPv4Network
    lans: list[Lan]
    problems: list[str] = field(default_factory=list)

    def uplink(self, index: int) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.base.network_address + (index + 1) * 256}/30")

    @property
    def client_subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.base.network_address}/24")

    def router_id(self, index: int) -> str:
        return str(self.base.network_address + 255 * 256 + index + 1)


def _fits(subnet, members, avoid, room) -> bool:
    if any(a in subnet for a in avoid):
        return False
    return subnet.num_addresses - 2 >= len(members) + room


def _group(addresses: list[ipaddress.IPv4Address], avoid, room: int, problems: list[str]) -> list[tuple]:
    """Addresses as subnets: the widest /24../29 around each group that avoids `avoid` and has `room`
    (else the /24, with a problem that validation will name too)."""
    groups: list[tuple[ipaddress.IPv4Network, list]] = []
    left = sorted(set(addresses))
    while left:
        first = left[0]
        for prefix in PREFIXES:
            subnet = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
            members = [a for a in left if a in subnet]
            if _fits(subnet, members, avoid, room) and first not in (subnet.network_address, subnet.broadcast_address):
                break
        else:
            subnet = ipaddress.ip_network(f"{first}/24", strict=False)
            members = [a for a in left if a in subnet]
            problems.append(f"no subnet from /24 to /29 around real server {first} leaves out the VIPs (or has "
                            f"room for the router and directors): {subnet} is used; edit that link by hand")
        groups.append((subnet, members))
        left = [a for a in left if a not in subnet]
    return groups


def _infra(subnet, taken, names: list[str]) -> dict[str, str]:
    """The highest free host addresses of `subnet`, one per name (router first)."""
    free = [h for h in reversed(list(subnet.hosts())) if h not in taken]
    return {name: str(free[i]) for i, name in enumerate(names) if i < len(free)}


def build_skeleton(real_servers: dict[str, str], nat_nodes: set[str], vips: list[str], others: list[str],
                   directors: int) -> Skeleton:
    """Lay out `real_servers` (node -> address) on LANs; `nat_nodes` get no router on their LAN."""
    names = [f"d{i + 1}" for i in range(directors)]
    avoid = [ipaddress.ip_address(v) for v in vips]
    known = {ipaddress.ip_address(a) for a in [*real_servers.values(), *vips, *others]}
    by_address = {ipaddress.ip_address(a): n for n, a in real_servers.items()}
    lans, problems = [], []
    for index, (subnet, members) in enumerate(_group(list(by_address), avoid, directors + 1, problems)):
        nodes = {by_address[a]: str(a) for a in members}
        router = not any(n in nat_nodes for n in nodes)
        taken = known | set(members)
        infra = _infra(subnet, taken, (["r1"] if router else []) + names)
        lans.append(Lan(f"lan{index}", subnet, nodes, router, infra))
    used = [lan.subnet for lan in lans]
    for base in BASES:
        if not any(base.overlaps(s) for s in used) and not any(a in base for a in known):
            return Skeleton(names, base, lans, problems)
    raise LvsClusterError("import: every /16 of 100.64.0.0/10 is in use; edit the links by hand")
