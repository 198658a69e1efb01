"""A validated topology with its derived facts: addresses, uplinks, real-server addresses.

`Cluster` answers the questions plan and lab keep asking ("which interface of d1 faces a
router?", "what address does rs2 have on the directors' LAN?") in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from lvscluster.model.addressing import NodeInterface, SubnetIndex, assign_addresses
from lvscluster.model.topology import BgpSettings, IpvsDefense, OspfSettings, RealServerRef, Timeouts, Topology, Vip

OSPF_ECMP_DEFAULT = 8


@dataclass(frozen=True)
class Uplink:
    """A point-to-point link between a director and a router."""

    director: NodeInterface
    router: NodeInterface


@dataclass(frozen=True)
class _InterfaceIndex:
    """The interfaces by node (in link order), by link (in endpoint order) and by (node, link)
    (the node's first on that link)."""

    by_node: dict[str, list[NodeInterface]]
    by_link: dict[int, list[NodeInterface]]
    by_node_link: dict[tuple[str, int], NodeInterface]

    @classmethod
    def of(cls, interfaces: list[NodeInterface]) -> "_InterfaceIndex":
        """Index `interfaces` in one pass."""
        index = cls({}, {}, {})
        for iface in interfaces:
            index.by_node.setdefault(iface.node, []).append(iface)
            index.by_link.setdefault(iface.link_index, []).append(iface)
            index.by_node_link.setdefault((iface.node, iface.link_index), iface)
        return index


@dataclass
class Cluster:
    """The topology plus everything derived from it.

    Lookups by node, link or real server use indexes built once, on first use (a scan of every
    interface per question made validate and render quadratic in real servers); `interfaces`
    is therefore never changed after the first lookup."""

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

    @cached_property
    def _index(self) -> _InterfaceIndex:
        return _InterfaceIndex.of(self.interfaces)

    def interfaces_of(self, node: str) -> list[NodeInterface]:
        """The node's interfaces in link order."""
        return list(self._index.by_node.get(node, ()))

    def link_members(self, link_index: int) -> list[NodeInterface]:
        """Every interface on one link."""
        return list(self._index.by_link.get(link_index, ()))

    def shared_links(self, a: str, b: str) -> list[int]:
        """Indexes of the links both nodes are on."""
        mine = {i.link_index for i in self._index.by_node.get(a, ())}
        return [i.link_index for i in self._index.by_node.get(b, ()) if i.link_index in mine]

    def interface_on(self, node: str, link_index: int) -> NodeInterface | None:
        """The node's interface on one link, if it is on it."""
        return self._index.by_node_link.get((node, link_index))

    @cached_property
    def subnet_places(self) -> list[tuple[int, str, object]]:
        """Every link subnet as (link index, field `subnet` or `subnet6`, network), in file order."""
        return [(li, field, subnet) for li, link in enumerate(self.topology.links)
                for field, subnet in (("subnet", link.subnet), ("subnet6", link.subnet6)) if subnet is not None]

    @cached_property
    def subnets(self) -> SubnetIndex:
        """The links' subnets (`subnet_places` order), indexed: which hold an address, which overlap."""
        return SubnetIndex([subnet for _, _, subnet in self.subnet_places])

    @cached_property
    def director_links(self) -> tuple[int, ...]:
        """Indexes of the links every director is on (none without directors), in file order."""
        if not self.directors:
            return ()
        on = self._index.by_node_link
        return tuple(li for li in range(len(self.topology.links)) if all((d, li) in on for d in self.directors))

    @cached_property
    def _director_link_set(self) -> frozenset[int]:
        return frozenset(self.director_links)

    def uplinks(self, node: str) -> list[Uplink]:
        """Point-to-point director<->router links of a director or a router."""
        found = []
        for li in {i.link_index for i in self._index.by_node.get(node, ())}:
            members = self._index.by_link[li]
            if len(members) != 2:
                continue
            roles = {self.role(m.node): m for m in members}
            if set(roles) == {"director", "router"}:
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
        candidates = self._index.by_node.get(ref.node, ())
        if not self.directors:  # every link is shared with all of none
            return next((iface for iface in candidates if iface.address_of(version)), None)
        shared = self._director_link_set
        return next((iface for iface in candidates if iface.link_index in shared and iface.address_of(version)), None)

    def real_server_address(self, ref: RealServerRef, version: int = 4) -> str | None:
        """The address directors send to for a VIP of IP `version`: explicit, else on the shared
        link, else its first address of that family."""
        if ref.address is not None:
            return str(ref.address)
        iface = self.real_server_interface(ref, version)
        if iface is None:
            iface = next((i for i in self._index.by_node.get(ref.node, ()) if i.address_of(version)), None)
        return str(iface.address_of(version).ip) if iface else None

    @cached_property
    def ipv6_vips(self) -> bool:
        """True when any VIP is IPv6: the directors and routers then speak OSPFv3 (or BGP IPv6) too."""
        return any(vip.address.version == 6 for vip in self.topology.vips)

    @cached_property
    def _vips_by_real_server(self) -> dict[str, list[Vip]]:
        vips: dict[str, list[Vip]] = {}
        for vip in self.topology.vips:
            for node in dict.fromkeys(ref.node for ref in vip.real_servers):
                vips.setdefault(node, []).append(vip)
        return vips

    def vips_of(self, node: str) -> list[Vip]:
        """The VIPs that list the node among their real servers, in file order."""
        return list(self._vips_by_real_server.get(node, ()))

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
