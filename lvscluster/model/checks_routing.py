"""Rules about how directors reach their routers: router ids, uplinks, OSPF and BGP settings.

Both ends of an uplink must agree (OSPF hello, dead and area; BGP AS numbers must differ), or
the adjacency or the ECMP set never forms; each rule returns Problems, none raises.
"""

from __future__ import annotations

import ipaddress

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem

UNSPECIFIED = ipaddress.IPv4Address("0.0.0.0")


def routing_problems(cluster: Cluster) -> list[Problem]:
    """Every routing problem; the uplink rules run only once every link names known nodes."""
    problems = _router_ids(cluster) + _timers(cluster)
    nodes = cluster.topology.nodes
    if any(ep.node not in nodes for link in cluster.topology.links for ep in link.endpoints):
        return problems  # `_links` names the unknown node; uplinks cannot be worked out before it is fixed
    return problems + _routers(cluster) + _uplink_subnets(cluster) + _ospf_peers(cluster) + _bgp_peers(cluster)


def _router_ids(cluster: Cluster) -> list[Problem]:
    problems = []
    for name, node in cluster.topology.nodes.items():
        if node.router_id == UNSPECIFIED:
            problems.append(Problem(("nodes", name, "router_id"), (
                "router_id 0.0.0.0 is not a router id (FRR refuses it); use an address unique in the topology")))
        elif node.router_id is not None and node.role not in ("director", "router"):
            problems.append(Problem(("nodes", name, "router_id"), (
                f"router_id applies only to routers and directors; {name} is a {node.role} and ignores it"), warning=True))
    return problems


def _timers(cluster: Cluster) -> list[Problem]:
    """OSPF dead longer than hello, BGP hold longer than keepalive, wherever they are set."""
    topology = cluster.topology
    places = [(("defaults",), topology.defaults.ospf, topology.defaults.bgp)]
    places += [(("nodes", name), node.ospf, node.bgp and cluster.bgp(name)) for name, node in topology.nodes.items()]
    problems = []
    for loc, ospf, bgp in places:
        if ospf is not None and ospf.dead <= ospf.hello:
            problems.append(Problem((*loc, "ospf", "dead"), (
                f"dead {ospf.dead} s is not longer than hello {ospf.hello} s: the neighbour would be declared dead "
                "between two hellos (make dead 3-4 times hello)")))
        if bgp is not None and bgp.keepalive >= bgp.hold:
            problems.append(Problem((*loc, "bgp", "keepalive"), (
                f"keepalive {bgp.keepalive} s is not shorter than hold {bgp.hold} s: the session would expire "
                "before the next keepalive (make hold 3 times keepalive)")))
    return problems


def _routers(cluster: Cluster) -> list[Problem]:
    if not cluster.directors:
        return []
    if not cluster.routers:
        return [Problem(("nodes",), (
            "no router: the directors announce the VIPs to a node with role: router on their uplinks, and there is none"))]
    return [Problem(("nodes", d), (
        f"director {d} has no uplink (a link with exactly two endpoints, {d} and a router): it would announce "
        "its VIPs to nobody")) for d in cluster.directors if not cluster.uplinks(d)]


def _uplink_subnets(cluster: Cluster) -> list[Problem]:
    problems = []
    for director in cluster.directors:
        for uplink in cluster.uplinks(director):
            subnet = cluster.topology.links[uplink.director.link_index].subnet
            if subnet.version == 4:
                continue
            if cluster.announce(director) == "ospf":
                why = "OSPFv2 (router ospf) carries IPv4 only; give the uplink an IPv4 subnet"
            else:
                why = ("BGP would announce the IPv4 VIPs with an IPv6 next hop (RFC 5549), which lvscluster does not "
                       "configure; give the uplink an IPv4 subnet")
            problems.append(Problem(("links", uplink.director.link_index, "subnet"), (
                f"subnet {subnet} is IPv6 but this link is the {cluster.announce(director).upper()} uplink of "
                f"{director} and {uplink.router.node}: {why}")))
    return problems


def _ospf_peers(cluster: Cluster) -> list[Problem]:
    """Hello, dead and area must be the same on both ends of an OSPF uplink."""
    nodes, problems = cluster.topology.nodes, []
    for director in cluster.directors:
        if cluster.announce(director) != "ospf":
            continue
        for uplink in cluster.uplinks(director):
            router = uplink.router.node
            mine, theirs = cluster.ospf(director), cluster.ospf(router)
            where = ("nodes", director, "ospf") if nodes[director].ospf else ("nodes", router, "ospf")
            for field in ("hello", "dead", "area"):
                a, b = getattr(mine, field), getattr(theirs, field)
                unit = "" if field == "area" else " s"
                if a != b:
                    problems.append(Problem((*where, field), (
                        f"{field} {a}{unit} on {director} but {b}{unit} on its router {router} (links[{uplink.director.link_index}]): "
                        "OSPF neighbours that differ in it never form an adjacency")))
    return problems


def _bgp_peers(cluster: Cluster) -> list[Problem]:
    """A director and its router in one AS would be iBGP: the router's maximum-paths (eBGP only) builds no ECMP."""
    nodes, problems = cluster.topology.nodes, []
    for director in cluster.directors:
        if cluster.announce(director) != "bgp":
            continue
        for uplink in cluster.uplinks(director):
            router = uplink.router.node
            asn = cluster.asn(director)
            if asn != cluster.asn(router):
                continue
            where = next((("nodes", n, "bgp") for n in (director, router) if nodes[n].bgp), ("defaults", "bgp"))
            problems.append(Problem(where, (
                f"{director} and its router {router} are both in AS {asn}: that is iBGP, which lvscluster does not "
                "configure (the router's maximum-paths builds ECMP from eBGP paths only); give directors and routers "
                "different AS numbers")))
    return problems
