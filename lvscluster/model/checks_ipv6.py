"""Rules for IPv6 VIPs and dual-stack links; each returns Problems, none raises.

An IPv6 VIP is announced over the uplinks' IPv6 subnets (`subnet6:` on a dual-stack link), by
OSPFv3 (ospf6d) or by BGP over an IPv6 session per uplink (address-family ipv6 unicast, FRR
bgpd or ExaBGP), and forwarded by DR to the real servers' IPv6 addresses on a shared link. What
lvscluster does not configure yet (TUN ip6ip6, NAT over IPv6) is refused here rather than
half-deployed.
"""

from __future__ import annotations

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem, once


def ipv6_problems(cluster: Cluster) -> list[Problem]:
    """Every dual-stack and IPv6-VIP problem; the uplink rules run only once every link names known nodes."""
    problems = _dual_stack_links(cluster)
    nodes = cluster.topology.nodes
    if any(ep.node not in nodes for link in cluster.topology.links for ep in link.endpoints):
        return problems
    return problems + _ipv6_vips(cluster)


def _dual_stack_links(cluster: Cluster) -> list[Problem]:
    problems = []
    for li, link in enumerate(cluster.topology.links):
        if link.subnet6 is not None and link.subnet.version == 6:
            problems.append(Problem(("links", li, "subnet6"), (
                f"subnet6 makes an IPv4 link dual-stack, but this link's subnet {link.subnet} is IPv6 already; "
                "write the IPv4 subnet in subnet: and the IPv6 one in subnet6:")))
    return problems


def _ipv6_vips(cluster: Cluster) -> list[Problem]:
    problems: list[Problem] = []
    for vi, vip in enumerate(cluster.topology.vips):
        if vip.address.version != 6:
            continue
        for si, svc in enumerate(vip.services):
            if svc.forward != "dr":
                why = ("tun needs ip6ip6 tunnels on the real servers" if svc.forward == "tun"
                       else "nat needs the real servers' IPv6 default route through a director")
                problems.append(Problem(("vips", vi, "services", si, "forward"), (
                    f"an IPv6 VIP forwards by dr only for now: {why}, which lvscluster does not configure yet")))
        bare = [d for d in cluster.directors if not any(
            u.director.address_of(6) for u in cluster.uplinks(d))]
        if bare:
            how = " or ".join(sorted({"OSPFv3" if cluster.announce(d) == "ospf" else "a BGP IPv6 session" for d in bare}))
            problems.append(Problem(("vips", vi, "address"), (
                f"IPv6 VIP {vip.address} needs an IPv6 uplink on every director (subnet6: on its link to the router); "
                f"{', '.join(bare)} {'has' if len(bare) == 1 else 'have'} none, so {how} could not announce it from there")))
    return once(problems)
