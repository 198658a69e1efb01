"""Rules about the IPVS services deploy creates and the nodes it reaches: services the kernel
holds once (a fwmark is one service whatever the VIP), destinations that would be added twice,
NAT real servers with no way back through a director, two nodes on one machine; each returns
Problems, none raises.
"""

from __future__ import annotations

import ipaddress

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem, once


def service_problems(cluster: Cluster) -> list[Problem]:
    """Every service and node-access problem; the ones that need addresses run only once every
    link names known nodes."""
    problems = _fwmarks(cluster) + _access(cluster)
    nodes = cluster.topology.nodes
    if any(ep.node not in nodes for link in cluster.topology.links for ep in link.endpoints):
        return problems
    return problems + _destinations(cluster) + _nat_adjacency(cluster) + _gateways(cluster)


def _fwmarks(cluster: Cluster) -> list[Problem]:
    """IPVS knows a fwmark service by its mark (and address family) alone, not by the VIP."""
    problems, owner = [], {}
    for vi, vip in enumerate(cluster.topology.vips):
        for si, svc in enumerate(vip.services):
            if svc.protocol != "fwmark" or svc.fwmark is None:
                continue
            key = (svc.fwmark, vip.address.version)
            if key in owner and owner[key][0] != vi:
                other = owner[key]
                problems.append(Problem(("vips", vi, "services", si, "fwmark"), (
                    f"fwmark {svc.fwmark} is also the service vips[{other[0]}].services[{other[1]}]: IPVS holds one "
                    "service per mark whatever the VIP, so deploy could not create both")))
            owner.setdefault(key, (vi, si))
    return problems


def _destinations(cluster: Cluster) -> list[Problem]:
    """Two real servers (or a real server and the sorry server) at one address and port would be
    the same IPVS destination: the kernel refuses the second (EEXIST)."""
    problems = []
    nodes = cluster.topology.nodes
    for vi, vip in enumerate(cluster.topology.vips):
        for svc in vip.services:
            seen: dict[tuple[str, int], int] = {}
            for ri, ref in enumerate(vip.real_servers):
                if ref.node not in nodes or nodes[ref.node].role != "real_server":
                    continue  # `checks._real_servers` reports it
                address = cluster.real_server_address(ref, vip.address.version)
                if address is None:
                    continue
                key = (address, ref.port or svc.port or 0)
                if key in seen and seen[key] != ri:
                    problems.append(Problem(("vips", vi, "real_servers", ri), (
                        f"{ref.node} is at {_where(key)}, as real_servers[{seen[key]}] is: the kernel holds one "
                        "destination per address and port, so deploy could not add both")))
                seen.setdefault(key, ri)
            sorry = vip.sorry_server
            if sorry is not None:
                key = (str(sorry.address), sorry.port or svc.port or 0)
                if key in seen:
                    problems.append(Problem(("vips", vi, "sorry_server"), (
                        f"sorry server {_where(key)} is where real_servers[{seen[key]}] is: the kernel holds one "
                        "destination per address and port, so it could not be added beside it")))
    return once(problems)


def _where(key: tuple[str, int]) -> str:
    address, port = key
    return f"{address} port {port}" if port else address


def _nat_adjacency(cluster: Cluster) -> list[Problem]:
    """NAT replies return through the director only when the real server's gateway is that director."""
    problems = []
    nodes = cluster.topology.nodes
    for vi, vip in enumerate(cluster.topology.vips):
        if not any(svc.forward == "nat" for svc in vip.services):
            continue
        for ri, ref in enumerate(vip.real_servers):
            if ref.node not in nodes or nodes[ref.node].role != "real_server":
                continue
            lonely = [d for d in cluster.directors if not cluster.shared_links(ref.node, d)]
            if lonely:
                problems.append(Problem(("vips", vi, "real_servers", ri, "node"), (
                    f"NAT needs {ref.node} on a link with every director (its replies go back through its gateway, "
                    f"the director); it shares none with {', '.join(lonely)}")))
    return once(problems)


def _gateways(cluster: Cluster) -> list[Problem]:
    """A default route must point at a node that forwards: a router or a director on the link."""
    problems = []
    owners = {ipaddress.ip_address(i.ip): i for i in cluster.interfaces}
    for name, node in cluster.topology.nodes.items():
        if node.gateway is None:
            continue
        loc = ("nodes", name, "gateway")
        mine = [i for i in cluster.interfaces_of(name) if node.gateway in i.address.network]
        owner = owners.get(node.gateway)
        if any(ipaddress.ip_address(i.ip) == node.gateway for i in cluster.interfaces_of(name)):
            problems.append(Problem(loc, (
                f"gateway {node.gateway} is {name}'s own address: a default route must point at another node")))
        elif any(node.gateway in (i.address.network.network_address, i.address.network.broadcast_address)
                 and i.address.network.prefixlen < i.address.network.max_prefixlen - 1 for i in mine):
            problems.append(Problem(loc, (
                f"gateway {node.gateway} is the network or broadcast address of {mine[0].address.network}, never a node's")))
        elif owner is not None and cluster.role(owner.node) in ("client", "real_server"):
            problems.append(Problem(loc, (
                f"gateway {node.gateway} is {owner.node}:{owner.name}'s, a {cluster.role(owner.node)}, which does not "
                "forward packets: point the default route at a router (or, for NAT, a director)")))
        elif owner is None and mine:
            problems.append(Problem(loc, (
                f"gateway {node.gateway} is no node's address on {name}'s link {mine[0].address.network}: a lab has "
                "nothing there (fine only for a machine outside the topology)"), warning=True))
    return problems


def _access(cluster: Cluster) -> list[Problem]:
    """Two nodes reached the same way would be deployed onto one machine, each undoing the other."""
    problems, owner = [], {}
    for name, node in cluster.topology.nodes.items():
        if node.access is None:
            continue
        if node.access in owner:
            problems.append(Problem(("nodes", name, "access"), (
                f"access {node.access} is also {owner[node.access]}'s: two nodes on one machine would overwrite "
                "each other's addresses, sysctls and IPVS state")))
        owner.setdefault(node.access, name)
    return problems
