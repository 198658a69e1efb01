"""Lab layout (pure): the namespaces, cables, addresses, routes and processes a lab needs.

A lab is a set of bare machines and cables; configuring them is `deploy`'s job. Every name
the lab creates starts with the lab name and a dot (`demo.d1`), which no node or lab name
contains, so `lab down` can find exactly its own objects.

- a network namespace per node (`demo.d1`), and `demo.switch` holding one bridge per link
  with more than two endpoints;
- a veth pair per two-endpoint link, straight between the two node namespaces;
- a veth pair per endpoint of a bridged link, one end in the node, one on the bridge (bridge and
  port names come from the link's subnet and the endpoint, so they survive topology edits);
- IPv6 addresses too on dual-stack links (`subnet6:`), without duplicate address detection (a
  fresh lab has no duplicates, and DAD would hold each address back ~1 s);
- default routes for clients and real servers (their `gateway`, else the router on their link),
  one per address family their links carry;
- FRR daemons (no config yet) on routers and directors; test servers on real servers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lvscluster.plan.health import health_targets
from lvscluster.model.cluster import Cluster
from lvscluster.plan.render import frr_daemons

SWITCH = "_switch"  # node names cannot start with "_", so this never collides


@dataclass(frozen=True)
class Veth:
    """A veth pair: `name` in namespace `netns`, `peer` in namespace `peer_netns`."""

    netns: str
    name: str
    peer_netns: str
    peer: str
    address: str | None = None  # with prefix length, on `name`
    peer_address: str | None = None
    bridge: str | None = None  # the peer end is enslaved to this bridge (in peer_netns)
    mtu: int | None = None
    address6: str | None = None  # a dual-stack link's IPv6 address on `name`, with prefix length
    peer_address6: str | None = None


@dataclass(frozen=True)
class TestServer:
    """The lab's stand-in application on a real server: HTTP and echo on TCP, echo on UDP."""

    node: str
    netns: str
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]


@dataclass
class LabLayout:
    """Everything `lab up` creates for one topology."""

    name: str
    namespaces: dict[str, str] = field(default_factory=dict)  # node (or "switch") -> netns name
    bridges: list[str] = field(default_factory=list)  # in the switch namespace
    veths: list[Veth] = field(default_factory=list)
    default_routes: dict[str, list[str]] = field(default_factory=dict)  # node -> gateway per family (IPv4 first)
    frr_nodes: list[str] = field(default_factory=list)
    frr_daemons: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node -> zebra, bfdd, ospfd, bgpd
    test_servers: list[TestServer] = field(default_factory=list)
    agent_nodes: list[str] = field(default_factory=list)  # directors whose `lvscluster agent` the lab runs

    @property
    def switch(self) -> str:
        """The namespace holding the bridges."""
        return f"{self.name}.{SWITCH}"

    def netns(self, node: str) -> str:
        """The namespace of a node."""
        return self.namespaces[node]


def namespace_name(lab: str, node: str) -> str:
    """`demo` + `d1` -> `demo.d1`."""
    return f"{lab}.{node}"


def short_name(prefix: str, identity: str) -> str:
    """A name (an interface's: <= 15 characters with a short prefix) that depends only on what it
    connects, never on list positions: a lab that grows or loses a node keeps the names of
    everything else."""
    return prefix + hashlib.sha1(identity.encode()).hexdigest()[:10]


def plan_lab(cluster: Cluster) -> LabLayout:
    """The lab for a topology: pure data, nothing touched."""
    lab = LabLayout(name=cluster.name)
    for node in cluster.topology.nodes:
        lab.namespaces[node] = namespace_name(cluster.name, node)
    for li, link in enumerate(cluster.topology.links):
        members = cluster.link_members(li)
        if len(members) == 2:
            a, b = members
            lab.veths.append(Veth(lab.netns(a.node), a.name, lab.netns(b.node), b.name,
                                  str(a.address), str(b.address), mtu=link.mtu,
                                  address6=_text(a.address6), peer_address6=_text(b.address6)))
            continue
        bridge = short_name("br", str(link.subnet))
        lab.bridges.append(bridge)
        for member in members:
            port = short_name("p", f"{link.subnet} {member.node}:{member.name}")
            lab.veths.append(Veth(lab.netns(member.node), member.name, lab.switch, port,
                                  str(member.address), bridge=bridge, mtu=link.mtu, address6=_text(member.address6)))
    if lab.bridges:
        lab.namespaces[SWITCH] = lab.switch
    for name, node in cluster.topology.nodes.items():
        if node.role in ("client", "real_server"):
            gateways = [str(node.gateway) if node.gateway and node.gateway.version == version
                        else _router_on_link(cluster, name, version) for version in (4, 6)]
            if any(gateways):
                lab.default_routes[name] = [g for g in gateways if g]
        if node.role in ("router", "director"):
            lab.frr_nodes.append(name)
            lab.frr_daemons[name] = frr_daemons(cluster, name)
    for name in cluster.real_servers:
        tcp, udp = set(), set()
        for vip in cluster.topology.vips:
            for ref in vip.real_servers:
                if ref.node != name:
                    continue
                for svc in vip.services:
                    port = ref.port or svc.port
                    if svc.protocol == "tcp" and port:
                        tcp.add(port)
                    elif svc.protocol == "udp" and port:
                        udp.add(port)
        lab.test_servers.append(TestServer(name, lab.netns(name), tuple(sorted(tcp)), tuple(sorted(udp))))
    if health_targets(cluster):
        lab.agent_nodes = list(cluster.directors)
    return lab


def _text(address) -> str | None:
    return None if address is None else str(address)


def default_route_prefix(gateway: str) -> str:
    """The default route's destination for a gateway's family: 0.0.0.0/0 or ::/0."""
    return "::/0" if ":" in gateway else "0.0.0.0/0"


def _router_on_link(cluster: Cluster, node: str, version: int) -> str | None:
    """The IPv4 or IPv6 address of the first router (or NAT director) sharing a link with the node
    (on a link that carries that family)."""
    uses_nat = any(svc.forward == "nat" for vip in cluster.topology.vips for svc in vip.services
                   if node in {r.node for r in vip.real_servers})
    gateway_roles = ("director",) if uses_nat else ("router",)
    for iface in cluster.interfaces_of(node):
        for member in cluster.link_members(iface.link_index):
            if cluster.role(member.node) in gateway_roles and (address := member.address_of(version)) is not None:
                return str(address.ip)
    return None
