"""A validated topology with its derived facts: addresses, uplinks, real-server addresses.

`Cluster` answers the questions plan and lab keep asking ("which interface of d1 faces a
router?", "what address does rs2 have on the directors' LAN?") in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from lvscluster.model.addressing import NodeInterface, assign_addresses
from lvscluster.model.topology import BgpSettings, IpvsDefense, OspfSettings, RealServerRef, Timeouts, Topology

OSPF_ECMP_DEFAULT = 8


@dataclass(frozen=True)
class Uplink:
    """A point-to-point link between a director and a router."""

    director: NodeInterface
    router: NodeInterface


@dataclass
class Cluster:
    """The topology plus everything derived from it."""

    topology: Topology
    interfaces: list[NodeInterface] = field(default_factory=list)

    @classmethod
    def from_topology(cls, topology: Topology) -> "Cluster":
        """Derive addresses; the topology must already have passed `check_topology`."""
        interfaces, _ = assign_addresses(topology)
        return cls(topology, interfaces)

    def with_node(self, node: str, **fields) -> "Cluster":
        """The same cluster with some fields of one node changed, e.g. `with_node("d3", drain=True)`."""
        nodes = dict(self.topology.nodes)
        nodes[node] = nodes[node].model_copy(update=fields)
        return Cluster.from_topology(self.topology.model_copy(update={"nodes": nodes}))

    @property
    def name(self) -> str:
        """The topology's name (the lab prefix)."""
        return self.topology.name

    def role(self, node: str) -> str:
        """The node's role."""
        return self.topology.nodes[node].role

    @cached_property
    def directors(self) -> list[str]:
        """Director names in file order."""
        return self.topology.nodes_with_role("director")

    @cached_property
    def routers(self) -> list[str]:
        """Router names in file order."""
        return self.topology.nodes_with_role("router")

    @cached_property
    def real_servers(self) -> list[str]:
        """Real-server names in file order."""
        return self.topology.nodes_with_role("real_server")

    def interfaces_of(self, node: str) -> list[NodeInterface]:
        """The node's interfaces in link order."""
        return [i for i in self.interfaces if i.node == node]

    def link_members(self, link_index: int) -> list[NodeInterface]:
        """Every interface on one link."""
        return [i for i in self.interfaces if i.link_index == link_index]

    def shared_links(self, a: str, b: str) -> list[int]:
        """Indexes of the links both nodes are on."""
        mine = {i.link_index for i in self.interfaces_of(a)}
        return [i.link_index for i in self.interfaces_of(b) if i.link_index in mine]

    def interface_on(self, node: str, link_index: int) -> NodeInterface | None:
        """The node's interface on one link, if it is on it."""
        return next((i for i in self.interfaces_of(node) if i.link_index == link_index), None)

    def uplinks(self, node: str) -> list[Uplink]:
        """Point-to-point director<->router links of a director or a router."""
        found = []
        for li in {i.link_index for i in self.interfaces_of(node)}:
            members = self.link_members(li)
            roles = {self.role(m.node): m for m in members}
            if len(members) == 2 and set(roles) == {"director", "router"}:
                found.append(Uplink(roles["director"], roles["router"]))
        return sorted(found, key=lambda u: u.director.link_index)

    def ospf(self, node: str) -> OspfSettings:
        """The node's OSPF settings (its own, else the defaults)."""
        return self.topology.nodes[node].ospf or self.topology.defaults.ospf

    def announce(self, node: str) -> str:
        """How a director announces the VIPs (`ospf` or `bgp`); a router speaks what its directors do."""
        spec = self.topology.nodes[node]
        return spec.announce or self.topology.defaults.announce

    def announcer(self, director: str) -> str:
        """Who speaks for a director: `frr` (ospfd or bgpd), or `exabgp` (BGP through ExaBGP's API)."""
        if self.announce(director) != "bgp":
            return "frr"
        return self.bgp(director).announcer

    def router_protocols(self, router: str) -> set[str]:
        """The announce protocols of the directors on a router's downlinks."""
        return {self.announce(u.director.node) for u in self.uplinks(router)}

    def bgp(self, node: str) -> BgpSettings:
        """The node's BGP settings: the defaults, with the fields the node sets itself."""
        own = self.topology.nodes[node].bgp
        base = self.topology.defaults.bgp
        return base.model_copy(update={f: getattr(own, f) for f in own.model_fields_set}) if own else base

    def asn(self, node: str) -> int:
        """The node's AS number: its own, else the directors' or the routers' shared one."""
        bgp = self.bgp(node)
        if bgp.asn is not None:
            return bgp.asn
        return bgp.director_asn if self.role(node) == "director" else bgp.router_asn

    def ipvs_defense(self, node: str) -> IpvsDefense:
        """The director's IPVS DoS defences (its own, else the defaults)."""
        return self.topology.nodes[node].ipvs_defense or self.topology.defaults.ipvs_defense

    def timeouts(self, node: str) -> Timeouts | None:
        """The node's IPVS timeouts (its own, else the defaults, else None)."""
        return self.topology.nodes[node].timeouts or self.topology.defaults.timeouts

    def sysctl_overrides(self, node: str) -> dict[str, str]:
        """The user's sysctls for a node: defaults, then the node's own."""
        return {**self.topology.defaults.sysctls, **self.topology.nodes[node].sysctls}

    @cached_property
    def ecmp_limit(self) -> int:
        """How many directors ECMP can use: the smallest router `max_paths` (default 8); with any
        director on OSPF, at most 8 (BGP lifts that limit to `max_paths`)."""
        paths = [self.topology.nodes[r].max_paths or OSPF_ECMP_DEFAULT for r in self.routers]
        limit = min(paths) if paths else OSPF_ECMP_DEFAULT
        if any(self.announce(d) == "ospf" for d in self.directors):
            limit = min(limit, OSPF_ECMP_DEFAULT)
        return limit

    def real_server_interface(self, ref: RealServerRef, version: int = 4) -> NodeInterface | None:
        """The real server's interface directors reach it on: one on a link shared with every
        director that carries the VIP's address family (`version`)."""
        for iface in self.interfaces_of(ref.node):
            if iface.address_of(version) and all(self.interface_on(d, iface.link_index) for d in self.directors):
                return iface
        return None

    def real_server_address(self, ref: RealServerRef, version: int = 4) -> str | None:
        """The address directors send to for a VIP of IP `version`: explicit, else on the shared
        link, else its first address of that family."""
        if ref.address is not None:
            return str(ref.address)
        iface = self.real_server_interface(ref, version)
        if iface is None:
            iface = next((i for i in self.interfaces_of(ref.node) if i.address_of(version)), None)
        return str(iface.address_of(version).ip) if iface else None

    @cached_property
    def ipv6_vips(self) -> bool:
        """True when any VIP is IPv6: the directors and routers then speak OSPFv3 (or BGP IPv6) too."""
        return any(vip.address.version == 6 for vip in self.topology.vips)

    def sync_interface(self, director: str) -> str | None:
        """The director's interface for connection sync: on the named link, else that name."""
        sync = self.topology.defaults.sync
        if sync is None:
            return None
        for li, link in enumerate(self.topology.links):
            if link.name == sync.interface:
                iface = self.interface_on(director, li)
                return iface.name if iface else None
        return sync.interface
