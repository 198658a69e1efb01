"""Desired node state: what each director, real server and router should hold (pure).

`plan_cluster` turns a validated `Cluster` into one `NodeState` per node. The dest order of
every IPVS service is the same on every director: the kernel inserts a dest at the head of
its list, so the kernel order is the reverse of the topology's `real_servers` order, and a
real server appended to the file is a plain insert with no reordering anywhere.
"""

from __future__ import annotations

from collections.abc import Collection

from lvscluster.gcpause import cyclic_gc_paused
from lvscluster.model.cluster import Cluster
from lvscluster.model.topology import Service, Vip
from lvscluster.plan.health import DestKey, HealthVerdict, service_label
from lvscluster.plan.render import render_exabgp, render_frr
from lvscluster.state import InterfaceAddress, IpvsDest, IpvsService, IpvsState, IpvsTimeouts, NodeState, SyncDaemon

# What every all-active director needs (docs/topology.md, "What each node gets", says why).
DIRECTOR_SYSCTLS: dict[str, str] = {
    "net.ipv4.vs.sloppy_tcp": "1",  # schedule mid-flow TCP packets ECMP moved here
    "net.ipv4.vs.sloppy_sctp": "1",
    "net.ipv4.vs.schedule_icmp": "1",  # ICMP errors follow their flow
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.vs.conntrack": "0",
    "net.ipv4.vs.backup_only": "0",  # 1 would stop forwarding while the backup daemon runs
    "net.ipv4.conf.all.arp_ignore": "1",  # the VIP on lo must not answer ARP on the LAN
    "net.ipv4.conf.all.arp_announce": "2",
}
DR_REAL_SERVER_SYSCTLS: dict[str, str] = {
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.conf.lo.arp_ignore": "1",
    "net.ipv4.conf.lo.arp_announce": "2",
}
TUN_REAL_SERVER_SYSCTLS: dict[str, str] = {
    "net.ipv4.conf.all.rp_filter": "0",  # decapsulated packets arrive on tunl0 from the director
    "net.ipv4.conf.tunl0.rp_filter": "0",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
}
ROUTER_SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.fib_multipath_hash_policy": "3",  # custom fields: a true 5-tuple hash, also over veth
    "net.ipv4.fib_multipath_hash_fields": "0x0037",
    "net.ipv4.fib_multipath_use_neigh": "1",
}
# ... and with IPv6 VIPs: forward IPv6 and hash IPv6 flows by the same 5 tuple
ROUTER_SYSCTLS6: dict[str, str] = {
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.fib_multipath_hash_policy": "3",
    "net.ipv6.fib_multipath_hash_fields": "0x0037",
}
TUNNEL_TYPE = {"ipip": None, "gue": "gue", "gre": "gre"}


def vip_prefix(vip: Vip) -> str:
    """The VIP as a host prefix: `10.99.0.10/32` or `2001:db8::10/128`."""
    return f"{vip.address}/{vip.address.max_prefixlen}"


def ipvs_service(cluster: Cluster, vip: Vip, service: Service, health: HealthVerdict | None = None) -> IpvsService:
    """The kernel service for one VIP service, dests in kernel (reversed topology) order.

    `health` (the agent's verdict) quiesces failed real servers (weight 0: the mh table keeps
    their slots) and puts the VIP's sorry server at the head of the list when none is healthy."""
    health = health or HealthVerdict()
    label = service_label(service)
    forward = service.forward

    def dest(address: str, port: int | None, weight: int) -> IpvsDest:
        return IpvsDest(
            address=address,
            port=0 if service.protocol == "fwmark" else port,
            forward=forward,
            weight=weight,
            tun_type=TUNNEL_TYPE[service.tunnel] if forward == "tun" else None,
            tun_port=service.tunnel_port if forward == "tun" and service.tunnel == "gue" else None,
        )

    dests = []
    for ref in vip.real_servers:
        quiesced = cluster.topology.nodes[ref.node].drain or DestKey(vip.name, label, ref.node) in health.quiesced
        dests.append(dest(cluster.real_server_address(ref, vip.address.version), ref.port or service.port, 0 if quiesced else ref.weight))
    if (vip.name, label) in health.sorry and vip.sorry_server is not None:
        sorry = vip.sorry_server
        dests.append(dest(str(sorry.address), sorry.port or service.port, 1))  # last here: the kernel's head
    family = vip.address.version
    return IpvsService(
        protocol=service.protocol,
        address=None if service.protocol == "fwmark" else str(vip.address),
        port=service.port or 0,
        fwmark=service.fwmark or 0,
        family=family,
        scheduler=service.scheduler,
        flags=service.effective_flags,
        persistence=service.persistence,
        netmask=service.netmask if service.netmask is not None else vip.address.max_prefixlen,
        dests=tuple(reversed(dests)),
    )


def plan_director(cluster: Cluster, name: str, health: HealthVerdict | None = None) -> NodeState:
    """A director: VIPs on lo, all-active sysctls, IPVS services and sync daemons, FRR.

    `health` is the director's agent verdict: quiesced dests, sorry servers, withdrawn VIPs
    (still on lo, so in-flight packets are served, but no longer announced)."""
    vips = cluster.topology.vips
    sysctls = dict(DIRECTOR_SYSCTLS)
    if any(svc.forward == "nat" for vip in vips for svc in vip.services):
        sysctls["net.ipv4.ip_forward"] = "1"
    sysctls.update(cluster.ipvs_defense(name).sysctls())
    sysctls.update(cluster.sysctl_overrides(name))
    daemons = []
    sync = cluster.topology.defaults.sync
    interface = cluster.sync_interface(name)
    if sync is not None and interface is not None:
        for state in ("backup", "master"):  # backup first: receive before sending
            daemons.append(SyncDaemon(state=state, interface=interface, syncid=sync.syncid, group=str(sync.group),
                                      port=sync.port, ttl=sync.ttl, maxlen=sync.maxlen))
    timeouts = cluster.timeouts(name)
    services = tuple(ipvs_service(cluster, vip, svc, health) for vip in vips for svc in vip.services)
    return NodeState(
        name=name,
        role="director",
        addresses=tuple(InterfaceAddress(interface="lo", address=vip_prefix(vip)) for vip in vips),
        sysctls=sysctls,
        ipvs=IpvsState(
            services=services,
            daemons=tuple(daemons),
            timeouts=IpvsTimeouts(**timeouts.model_dump()) if timeouts else IpvsTimeouts(),
        ),
        frr=render_frr(cluster, name, withdrawn=health.withdrawn if health else ()),
        exabgp=render_exabgp(cluster, name, withdrawn=health.withdrawn if health else ())
        if cluster.announcer(name) == "exabgp" else None,
    )


def plan_real_server(cluster: Cluster, name: str) -> NodeState:
    """A real server: the VIPs it serves on lo (DR) or tunl0 (TUN) and the ARP/rp_filter sysctls
    (IPv4 VIPs; an IPv6 VIP on lo needs none)."""
    addresses, sysctls, tunnels = [], {}, []
    for vip in cluster.vips_of(name):
        forwards = {svc.forward for svc in vip.services}
        if "tun" in forwards:
            addresses.append(InterfaceAddress(interface="tunl0", address=vip_prefix(vip)))
            sysctls.update(TUN_REAL_SERVER_SYSCTLS)
            if "tunl0" not in tunnels:
                tunnels.append("tunl0")
        elif "dr" in forwards:
            # IPv6 needs no sysctl: Linux answers a neighbour solicitation only for an address on the
            # interface it arrived on, so the VIP /128 on lo stays unanswered on the LAN (docs/topology.md)
            addresses.append(InterfaceAddress(interface="lo", address=vip_prefix(vip)))
            if vip.address.version == 4:
                sysctls.update(DR_REAL_SERVER_SYSCTLS)
    return NodeState(name=name, role="real_server", addresses=tuple(addresses), sysctls=sysctls, tunnels=tuple(tunnels))


def plan_router(cluster: Cluster, name: str) -> NodeState:
    """A router in the topology: 5-tuple multipath hashing (IPv4, and IPv6 with IPv6 VIPs) and FRR with maximum-paths."""
    sysctls = {**ROUTER_SYSCTLS, **(ROUTER_SYSCTLS6 if cluster.ipv6_vips else {})}
    return NodeState(name=name, role="router", sysctls=sysctls, frr=render_frr(cluster, name))


def plan_cluster(cluster: Cluster, only: Collection[str] | None = None) -> dict[str, NodeState]:
    """Desired state of every node (or the `only` ones), keyed by node name, in file order."""
    planners = {"director": plan_director, "real_server": plan_real_server, "router": plan_router}
    states = {}
    with cyclic_gc_paused():  # several models per real server, none cyclic
        for name, node in cluster.topology.nodes.items():
            if only is not None and name not in only:
                continue
            planner = planners.get(node.role)
            states[name] = planner(cluster, name) if planner else NodeState(name=name, role=node.role)
    return states

