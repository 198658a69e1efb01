"""Rules about addresses: what a VIP may be, where real servers and sorry servers are, subnets
that overlap, the sync group, and return paths NAT needs; each returns Problems, none raises.
"""

from __future__ import annotations

import ipaddress

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem

IPV6_MIN_MTU = 1280
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# ranges no interface address may come from: the kernel drops packets from them as martians
# (0/8, 127/8 without route_localnet, 224/4 and the limited broadcast as sources), IPv6 likewise
MARTIAN_SUBNETS = {
    ipaddress.ip_network("0.0.0.0/8"): "'this network' (0.0.0.0/8), which no packet may come from",
    ipaddress.ip_network("127.0.0.0/8"): "loopback (127.0.0.0/8): the kernel drops it on a wire as a martian",
    ipaddress.ip_network("224.0.0.0/4"): "multicast (224.0.0.0/4): an interface needs a unicast address",
    ipaddress.ip_network("255.255.255.255/32"): "the limited broadcast address",
    ipaddress.ip_network("::/128"): "the unspecified address",
    ipaddress.ip_network("::1/128"): "loopback (::1)",
    ipaddress.ip_network("ff00::/8"): "multicast (ff00::/8): an interface needs a unicast address",
}


def placement_problems(cluster: Cluster) -> list[Problem]:
    """Every address problem of a topology whose fields parsed."""
    problems = _vip_kinds(cluster) + _subnets(cluster) + _sync_group(cluster)
    nodes = cluster.topology.nodes
    if any(ep.node not in nodes for link in cluster.topology.links for ep in link.endpoints):
        return problems  # `_links` names the unknown node first
    return problems + _targets(cluster) + _nat_return_path(cluster) + _sync_reach(cluster)


def unusable_vip(address) -> str | None:
    """Why an IPv4 address cannot be a VIP (None when it can)."""
    if address.version != 4:
        return None
    if address.is_unspecified:
        return "the unspecified address (0.0.0.0 means 'any address')"
    if address.is_loopback:
        return "a loopback address (127.0.0.0/8 never leaves a host)"
    if address.is_multicast:
        return "a multicast address (224.0.0.0/4): a TCP or UDP service needs a unicast address"
    if address == LIMITED_BROADCAST:
        return "the limited broadcast address (no router forwards it)"
    if address.is_link_local:
        return "a link-local address (169.254.0.0/16 is never routed)"
    if address.is_reserved:
        return "a reserved address (240.0.0.0/4 is not routed)"
    return None


def _vip_kinds(cluster: Cluster) -> list[Problem]:
    problems = []
    for vi, vip in enumerate(cluster.topology.vips):
        why = unusable_vip(vip.address)
        if why:
            problems.append(Problem(("vips", vi, "address"), f"VIP {vip.address} is {why}"))
    return problems


def _subnets(cluster: Cluster) -> list[Problem]:
    """Subnets that overlap without being equal (equal ones are `checks._addresses`'), subnets no
    interface address may come from; IPv6 links need MTU 1280."""
    problems = []
    links = cluster.topology.links
    places = cluster.subnet_places  # every subnet and subnet6, in file order
    for k, (li, field, subnet) in enumerate(places):
        kj = cluster.subnets.first_overlap(subnet)  # indexed: comparing every pair was quadratic in links
        if kj is not None and kj < k:
            lj, other_field, other = places[kj]
            problems.append(Problem(("links", li, field), (
                f"{field} {subnet} overlaps links[{lj}] {other_field} {other}: their routes and addresses would conflict")))
        martian = next((net for net in MARTIAN_SUBNETS if net.version == subnet.version and subnet.overlaps(net)), None)
        if martian:
            verb = "is" if subnet.subnet_of(martian) else "includes"
            problems.append(Problem(("links", li, field), f"{field} {subnet} {verb} {MARTIAN_SUBNETS[martian]}"))
    for li, link in enumerate(links):
        if (link.subnet.version == 6 or link.subnet6 is not None) and link.mtu is not None and link.mtu < IPV6_MIN_MTU:
            problems.append(Problem(("links", li, "mtu"), (
                f"mtu {link.mtu} on an IPv6 link: IPv6 needs at least {IPV6_MIN_MTU} (the kernel disables IPv6 below it)")))
    return problems


def _sync_group(cluster: Cluster) -> list[Problem]:
    sync = cluster.topology.defaults.sync
    if sync is None or sync.group.is_multicast:
        return []
    block = "224.0.0.0/4" if sync.group.version == 4 else "ff00::/8"
    return [Problem(("defaults", "sync", "group"), (
        f"group {sync.group} is not a multicast address ({block}): the sync daemons send to a multicast group"))]


def _sync_reach(cluster: Cluster) -> list[Problem]:
    """Sync messages are multicast on one link: every director's sync interface must reach the others."""
    sync = cluster.topology.defaults.sync
    if sync is None or len(cluster.directors) < 2 or any(link.name == sync.interface for link in cluster.topology.links):
        return []  # a link name: `checks._sync` names the directors that are not on it
    for director in cluster.directors:
        name = cluster.sync_interface(director)
        iface = next((i for i in cluster.interfaces_of(director) if i.name == name), None)
        if iface is None:
            continue  # `checks._sync` reports a director without it
        members = {m.node for m in cluster.link_members(iface.link_index)}
        missing = [d for d in cluster.directors if d not in members]
        if missing:
            return [Problem(("defaults", "sync", "interface"), (
                f"{director}'s sync interface {name} is on links[{iface.link_index}], and {', '.join(missing)} "
                "not: sync is multicast on one link, so those directors would never receive each other's "
                "connections; name the link all directors share"))]
    return []


def _targets(cluster: Cluster) -> list[Problem]:
    """A real server's explicit address or a sorry server may not be a VIP; a DR real server's
    explicit address lies on a link it shares with every director."""
    topology, problems = cluster.topology, []
    vips = {vip.address: vip.name for vip in topology.vips}
    others = {ipaddress.ip_address(i.ip): (i.node, i.name) for i in cluster.interfaces
              if cluster.role(i.node) != "real_server"}
    shared = cluster.director_links
    for vi, vip in enumerate(topology.vips):
        forwards = {svc.forward for svc in vip.services}
        for ri, ref in enumerate(vip.real_servers):
            if ref.address is None:
                continue
            loc = ("vips", vi, "real_servers", ri, "address")
            if ref.address in vips:
                problems.append(Problem(loc, (
                    f"address {ref.address} is VIP {vips[ref.address]!r}: the director would forward the service to itself")))
            elif ref.address in others and others[ref.address][0] != ref.node:
                node, iface = others[ref.address]
                problems.append(Problem(loc, (
                    f"address {ref.address} is {node}:{iface}'s, a {cluster.role(node)}: the service would be sent there")))
            elif "dr" in forwards and ref.node in topology.nodes and cluster.directors:
                mine = [li for li in shared if cluster.interface_on(ref.node, li)
                        and ref.address.version == topology.links[li].subnet.version
                        and ref.address in topology.links[li].subnet]
                if not mine:
                    where = ", ".join(str(topology.links[li].subnet) for li in shared if cluster.interface_on(ref.node, li)
                                      and topology.links[li].subnet.version == ref.address.version)
                    problems.append(Problem(loc, (
                        f"DR reaches {ref.node} at {ref.address} by its MAC address, so the address must be in the subnet "
                        f"of a link {ref.node} shares with every director ({where or 'it shares none'})")))
        sorry = vip.sorry_server
        if sorry is not None and sorry.address in vips:
            problems.append(Problem(("vips", vi, "sorry_server", "address"), (
                f"sorry server {sorry.address} is VIP {vips[sorry.address]!r}: the director would forward the service to itself")))
        elif sorry is not None and sorry.address in others and cluster.role(others[sorry.address][0]) != "client":
            node, iface = others[sorry.address]
            problems.append(Problem(("vips", vi, "sorry_server", "address"), (
                f"sorry server {sorry.address} is {node}:{iface}'s, a {cluster.role(node)}, which serves no connections")))
    return problems


def _nat_return_path(cluster: Cluster) -> list[Problem]:
    """NAT replies must pass the director: a router on the real servers' LAN lets them skip it."""
    topology, problems = cluster.topology, []
    reported = set()
    gateways: dict[int, tuple[list[str], set]] = {}  # link index -> its routers, its directors' addresses

    def link_gateways(li: int) -> tuple[list[str], set]:
        if li not in gateways:  # once per link: every real server of a LAN used to list its members again
            members = cluster.link_members(li)
            gateways[li] = ([m.node for m in members if cluster.role(m.node) == "router"],
                            {ipaddress.ip_address(m.ip) for m in members if cluster.role(m.node) == "director"})
        return gateways[li]

    for vi, vip in enumerate(topology.vips):
        if not any(svc.forward == "nat" for svc in vip.services):
            continue
        for ri, ref in enumerate(vip.real_servers):
            node = topology.nodes.get(ref.node)
            if node is None or node.role != "real_server" or ref.node in reported:
                continue
            for iface in cluster.interfaces_of(ref.node):
                routers, directors = link_gateways(iface.link_index)
                if not routers or (node.gateway is not None and node.gateway in directors):
                    continue
                reported.add(ref.node)
                loc = ("nodes", ref.node, "gateway") if node.gateway is not None else ("vips", vi, "real_servers", ri, "node")
                problems.append(Problem(loc, (
                    f"NAT: {ref.node} shares links[{iface.link_index}] with router {routers[0]}, so its replies can leave "
                    f"through {routers[0]} and skip the director that must rewrite them; give {ref.node} a director's "
                    "address on that link as gateway, or take the router off the real servers' LAN")))
                break
    return problems
