"""Rules that relate several fields of a topology; each returns Problems, none raises.

`check_topology` runs them all so a user sees every problem in one pass: the references, roles
and services rules here, and by theme: `checks_routing` (uplinks, OSPF, BGP), `checks_addresses`
(VIPs, subnets, where servers are), `checks_services` (IPVS state deploy must be able to create),
`checks_ipv6` (IPv6 VIPs, dual-stack links), `checks_fields` (a field's value its type lets through but the kernel, ssh or the health agent
cannot use), `sysctls` (names the kernel has) and `checks_pointless` (warnings: settings that do
nothing).
"""

from __future__ import annotations

import difflib
from collections import defaultdict

from lvscluster.model.addressing import assign_addresses
from lvscluster.model.checks_addresses import placement_problems
from lvscluster.model.checks_fields import field_problems
from lvscluster.model.checks_ipv6 import ipv6_problems
from lvscluster.model.checks_pointless import pointless_settings
from lvscluster.model.checks_routing import routing_problems
from lvscluster.model.checks_services import service_problems
from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem
from lvscluster.model.sysctls import sysctl_problems
from lvscluster.model.topology import Health, Topology

FLAG_SCHEDULER = {"mh-fallback": "mh", "mh-port": "mh", "sh-fallback": "sh", "sh-port": "sh"}


def check_topology(topology: Topology) -> list[Problem]:
    """Every cross-field problem of a topology that passed field validation."""
    problems: list[Problem] = []
    interfaces, address_problems = assign_addresses(topology)
    problems += address_problems
    cluster = Cluster(topology, interfaces)
    for rule in (_links, _roles, _router_ids, _addresses, _vips, _services, _real_servers, _health, _ecmp, _sync, _peer_keys):
        problems += rule(cluster)
    problems += routing_problems(cluster) + placement_problems(cluster) + sysctl_problems(cluster)
    problems += service_problems(cluster) + field_problems(cluster) + ipv6_problems(cluster) + pointless_settings(cluster)
    return problems


def _links(cluster: Cluster) -> list[Problem]:
    problems = []
    seen: dict[tuple[str, str], tuple] = {}
    names: dict[str, int] = {}
    for li, link in enumerate(cluster.topology.links):
        if link.name:
            if link.name in names:
                sync = cluster.topology.defaults.sync
                why = "; defaults.sync.interface names it, and cannot say which link it means" if sync and sync.interface == link.name else ""
                problems.append(Problem(("links", li, "name"), f"link name {link.name!r} is also used by links[{names[link.name]}]{why}"))
            names.setdefault(link.name, li)
        nodes_on_link = set()
        for ei, ep in enumerate(link.endpoints):
            loc = ("links", li, "endpoints", ei)
            if ep.node not in cluster.topology.nodes:
                problems.append(Problem(loc, f"unknown node {ep.node!r}{_did_you_mean(ep.node, cluster.topology.nodes)}"))
                continue
            if ep.node in nodes_on_link:
                problems.append(Problem(loc, f"node {ep.node!r} appears twice on this link"))
            nodes_on_link.add(ep.node)
            key = (ep.node, ep.interface)
            if key in seen:
                problems.append(Problem(loc, f"interface {ep.node}:{ep.interface} is already used by links[{seen[key][0]}]"))
            seen.setdefault(key, (li, ei))
            if ep.interface == "lo":
                problems.append(Problem(loc, "interface 'lo' is the loopback and cannot be a link endpoint"))
    return problems


def _roles(cluster: Cluster) -> list[Problem]:
    problems = []
    for name, node in cluster.topology.nodes.items():
        if node.role in ("director", "router") and node.router_id is None:
            problems.append(Problem(("nodes", name), f"a {node.role} needs a router_id (an IPv4 address unique in the topology)"))
        if node.max_paths is not None and node.role != "router":
            problems.append(Problem(("nodes", name, "max_paths"), "max_paths applies only to routers"))
        if node.role != "director":
            for field in ("sysctls", "timeouts", "announce", "ipvs_defense"):
                if getattr(node, field):
                    problems.append(Problem(("nodes", name, field), f"{field} applies only to directors"))
        if node.drain and node.role not in ("director", "real_server"):
            problems.append(Problem(("nodes", name, "drain"), "drain applies only to directors and real servers"))
        if node.gateway is not None and node.role in ("director", "router"):
            problems.append(Problem(("nodes", name, "gateway"), "gateway applies only to clients and real servers (routers and directors learn routes by OSPF)"))
    return problems


def _router_ids(cluster: Cluster) -> list[Problem]:
    problems, owner = [], {}
    for name, node in cluster.topology.nodes.items():
        if node.router_id is None:
            continue
        if node.router_id in owner:
            problems.append(Problem(("nodes", name, "router_id"), f"router_id {node.router_id} is also used by {owner[node.router_id]}"))
        owner.setdefault(node.router_id, name)
    return problems


def _addresses(cluster: Cluster) -> list[Problem]:
    problems, owner = [], {}
    for iface in cluster.interfaces:
        for address in iface.addresses:
            ip = address.ip
            if ip in owner and owner[ip] != (iface.node, iface.name):
                other = owner[ip]
                problems.append(Problem(("links", iface.link_index), f"address {ip} of {iface.node}:{iface.name} is also assigned to {other[0]}:{other[1]}"))
            owner.setdefault(ip, (iface.node, iface.name))
    subnets = defaultdict(list)
    for li, link in enumerate(cluster.topology.links):
        subnets[link.subnet].append((li, "subnet"))
        if link.subnet6 is not None and link.subnet.version == 4:  # else `checks_ipv6` reports it
            subnets[link.subnet6].append((li, "subnet6"))
    for subnet, places in subnets.items():
        for li, field in places[1:]:
            first = places[0]
            where = f"links[{first[0]}]" + (" (its subnet6)" if first[1] == "subnet6" and field == "subnet" else "")
            problems.append(Problem(("links", li, field), f"{field} {subnet} is also used by {where}"))
    for name, node in cluster.topology.nodes.items():
        if node.gateway is None:
            continue
        if not any(node.gateway in a.network for i in cluster.interfaces_of(name) for a in i.addresses):
            problems.append(Problem(("nodes", name, "gateway"), f"gateway {node.gateway} is on none of {name}'s links"))
    return problems


def _vips(cluster: Cluster) -> list[Problem]:
    problems, names, addresses = [], {}, {}
    for vi, vip in enumerate(cluster.topology.vips):
        if vip.name in names:
            problems.append(Problem(("vips", vi, "name"), f"VIP name {vip.name!r} is also used by vips[{names[vip.name]}]"))
        names.setdefault(vip.name, vi)
        if vip.address in addresses:
            problems.append(Problem(("vips", vi, "address"), f"VIP address {vip.address} is also used by vips[{addresses[vip.address]}]"))
        addresses.setdefault(vip.address, vi)
        for k in cluster.subnets.holding(vip.address):
            li, field, subnet = cluster.subnet_places[k]
            problems.append(Problem(("vips", vi, "address"), f"VIP {vip.address} lies inside links[{li}] {field} {subnet}; a VIP must be routed, not on a link"))
        if not cluster.directors:
            problems.append(Problem(("vips", vi), "a VIP needs at least one director"))
    return problems


def _services(cluster: Cluster) -> list[Problem]:
    problems = []
    for vi, vip in enumerate(cluster.topology.vips):
        keys: dict[tuple, int] = {}
        for si, svc in enumerate(vip.services):
            loc = ("vips", vi, "services", si)
            if svc.protocol == "fwmark":
                if svc.fwmark is None:
                    problems.append(Problem(loc, "a fwmark service needs a fwmark (a number from 1)"))
                if svc.port is not None:
                    problems.append(Problem((*loc, "port"), "a fwmark service has no port (the mark selects the packets)"))
            else:
                if svc.port is None:
                    problems.append(Problem(loc, f"a {svc.protocol} service needs a port (1-65535)"))
                if svc.fwmark is not None:
                    problems.append(Problem((*loc, "fwmark"), "fwmark applies only to protocol: fwmark"))
            key = (svc.protocol, svc.port, svc.fwmark)
            if key in keys:
                problems.append(Problem(loc, f"the same service is already defined as services[{keys[key]}]"))
            keys.setdefault(key, si)
            for fi, flag in enumerate(svc.flags or []):
                wanted = FLAG_SCHEDULER.get(flag)
                if wanted and wanted != svc.scheduler:
                    problems.append(Problem((*loc, "flags", fi), f"flag {flag!r} works only with scheduler {wanted!r}, not {svc.scheduler!r}"))
            if svc.tunnel_port is not None and (svc.forward != "tun" or svc.tunnel != "gue"):
                problems.append(Problem((*loc, "tunnel_port"), "tunnel_port applies only to forward: tun with tunnel: gue"))
            if svc.forward == "tun" and svc.tunnel == "gue" and svc.tunnel_port is None:
                problems.append(Problem((*loc, "tunnel_port"), "a gue tunnel needs tunnel_port (the real servers' FOU port)"))
            if svc.netmask is not None and svc.persistence == 0:
                problems.append(Problem((*loc, "netmask"), "netmask groups clients for persistence; set persistence too"))
            limit = 32 if vip.address.version == 4 else 128
            if svc.netmask is not None and svc.netmask > limit:
                problems.append(Problem((*loc, "netmask"), f"netmask /{svc.netmask} is longer than an IPv{vip.address.version} address"))
            if svc.forward == "nat" and len(cluster.directors) > 1 and not svc.allow_multiple_directors:
                problems.append(Problem((*loc, "forward"), (
                    f"NAT with {len(cluster.directors)} directors: replies must return through the director that holds "
                    "the connection, which all-active ECMP does not guarantee; use dr or tun, or set "
                    "allow_multiple_directors: true once return routing is pinned per director")))
            if svc.allow_multiple_directors and svc.forward != "nat":
                problems.append(Problem((*loc, "allow_multiple_directors"), "allow_multiple_directors applies only to forward: nat"))
    return problems


def _real_servers(cluster: Cluster) -> list[Problem]:
    problems = []
    nodes = cluster.topology.nodes
    for vi, vip in enumerate(cluster.topology.vips):
        seen: dict[str, int] = {}
        for ri, ref in enumerate(vip.real_servers):
            loc = ("vips", vi, "real_servers", ri)
            if ref.node not in nodes:
                problems.append(Problem((*loc, "node"), f"unknown node {ref.node!r}{_did_you_mean(ref.node, nodes)}"))
                continue
            if nodes[ref.node].role != "real_server":
                problems.append(Problem((*loc, "node"), f"{ref.node} is a {nodes[ref.node].role}, not a real_server"))
                continue
            if ref.node in seen:
                problems.append(Problem((*loc, "node"), f"{ref.node} is already listed as real_servers[{seen[ref.node]}]"))
            seen.setdefault(ref.node, ri)
            forwards = {svc.forward for svc in vip.services}
            if ref.port is not None and forwards - {"nat"}:
                problems.append(Problem((*loc, "port"), f"only NAT can send to another port; this VIP forwards by {', '.join(sorted(forwards - {'nat'}))}"))
            version = vip.address.version
            if "dr" in forwards and ref.address is None and cluster.directors:
                if cluster.real_server_interface(ref, version) is None:
                    problems.append(Problem((*loc, "node"), _dr_unreachable(cluster, ref.node, version)))
            elif cluster.real_server_address(ref, version) is None:
                family = "an IPv6 address (a link with subnet6:)" if version == 6 else "an address"
                problems.append(Problem((*loc, "node"), f"{ref.node} has no {family}: put it on a link or give address:"))
            if ref.address is not None and ref.address.version != version:
                problems.append(Problem((*loc, "address"), (
                    f"address {ref.address} is IPv{ref.address.version} but the VIP is IPv{version}: IPVS forwards "
                    "by dr and nat within one address family (tun could cross families, but the kernel then refuses "
                    "to start connection sync, and lvscluster does not configure such tunnels)")))
    return problems


def _dr_unreachable(cluster: Cluster, node: str, version: int) -> str:
    """Why DR cannot reach a real server: no link with every director, or none of the VIP's family."""
    shared = [i.link_index for i in cluster.interfaces_of(node)
              if all(cluster.interface_on(d, i.link_index) for d in cluster.directors)]
    if version == 6 and shared:
        links = ", ".join(f"links[{li}]" for li in shared)
        return (f"DR to an IPv6 VIP needs {node} on a link with IPv6 (subnet6:) shared with every director; "
                f"{links} carries IPv4 only")
    lonely = [d for d in cluster.directors if not cluster.shared_links(node, d)]
    return (f"DR needs {node} on the same L2 link as every director; it shares none with "
            f"{', '.join(lonely) or 'all of them on one link'}")


# Health fields that mean something only for some check types.
HEALTH_FIELD_TYPES = {
    "path": ("http", "https"), "host": ("http", "https"), "expect_status": ("http", "https"),
    "digest": ("http", "https"), "verify_tls": ("https",), "send": ("udp",), "expect": ("udp",),
    "query": ("dns",), "record": ("dns",), "command": ("exec",),
}


def _health(cluster: Cluster) -> list[Problem]:
    problems = []
    for vi, vip in enumerate(cluster.topology.vips):
        placed = [(("vips", vi, "health"), vip.health, vip.services)]
        placed += [(("vips", vi, "services", si, "health"), svc.health, [svc]) for si, svc in enumerate(vip.services)]
        placed += [(("vips", vi, "real_servers", ri, "health"), ref.health, vip.services)
                   for ri, ref in enumerate(vip.real_servers)]
        for loc, health, services in placed:
            if health is not None:
                problems += _health_spec(loc, health, services)
        if vip.quorum > 1 and vip.quorum > len(vip.real_servers):
            problems.append(Problem(("vips", vi, "quorum"), (
                f"quorum {vip.quorum} but the VIP has {len(vip.real_servers)} real servers: it would never be announced")))
        if vip.sorry_server is not None and vip.sorry_server.address.version != vip.address.version:
            problems.append(Problem(("vips", vi, "sorry_server", "address"), (
                f"address {vip.sorry_server.address} is IPv{vip.sorry_server.address.version} but the VIP is IPv{vip.address.version}")))
    return problems


def _health_spec(loc: tuple, health: Health, services) -> list[Problem]:
    problems = []
    for name in sorted(health.model_fields_set & HEALTH_FIELD_TYPES.keys()):
        if health.type not in HEALTH_FIELD_TYPES[name]:
            problems.append(Problem((*loc, name), f"{name} applies only to {' and '.join(HEALTH_FIELD_TYPES[name])} checks, not {health.type}"))
    if health.type == "dns" and not health.query:
        problems.append(Problem(loc, "a dns check needs query: the name to resolve"))
    if health.type == "exec" and not health.command:
        problems.append(Problem(loc, "an exec check needs command: an argument list, e.g. [/usr/local/bin/check-app, --quick]"))
    if health.type != "exec" and health.port is None and any(svc.protocol == "fwmark" for svc in services):
        problems.append(Problem(loc, f"this {health.type} check needs port: a fwmark service has none"))
    if health.timeout is not None and health.timeout > health.interval:
        problems.append(Problem((*loc, "timeout"), f"timeout {health.timeout:g} s is longer than interval {health.interval:g} s"))
    return problems


def _ecmp(cluster: Cluster) -> list[Problem]:
    count, limit = len(cluster.directors), cluster.ecmp_limit
    if count <= limit:
        return []
    last = cluster.directors[limit]
    ospf = any(cluster.announce(d) == "ospf" for d in cluster.directors)
    paths = [cluster.topology.nodes[r].max_paths or 8 for r in cluster.routers]
    if ospf and limit == 8 and (not paths or min(paths) > 8):
        return [Problem(("nodes", last), f"{count} directors but OSPF announces to at most 8; use announce: bgp "
                                         "(up to the router's max_paths) or remove directors")]
    why = "ECMP in this topology" if cluster.routers else "ECMP without a router max_paths"
    return [Problem(("nodes", last), f"{count} directors but {why} uses at most {limit} equal-cost paths; raise the router's max_paths or remove directors")]


def _sync(cluster: Cluster) -> list[Problem]:
    sync = cluster.topology.defaults.sync
    if sync is None or not cluster.directors:
        return []
    link_names = [link.name for link in cluster.topology.links if link.name]
    loc = ("defaults", "sync", "interface")
    if link_names.count(sync.interface) > 1:
        return []  # `_links` reports the duplicated link name: which link sync means is not known
    if sync.interface in link_names:
        missing = [d for d in cluster.directors if cluster.sync_interface(d) is None]
        if missing:
            return [Problem(loc, f"directors {', '.join(missing)} are not on link {sync.interface!r}")]
        return []
    missing = [d for d in cluster.directors if sync.interface not in {i.name for i in cluster.interfaces_of(d)}]
    if missing:
        known = sorted(set(link_names)) or ["(no named links)"]
        return [Problem(loc, f"{sync.interface!r} is neither a link name ({', '.join(known)}) nor an interface of {', '.join(missing)}")]
    return []


def _peer_keys(cluster: Cluster) -> list[Problem]:
    """Both ends of an uplink must hold the same OSPF key / BGP password, or they never peer."""
    nodes = cluster.topology.nodes
    if any(ep.node not in nodes for link in cluster.topology.links for ep in link.endpoints):
        return []  # `_links` names the unknown node; uplinks cannot be worked out before it is fixed
    problems = []
    for router in cluster.routers:
        for uplink in cluster.uplinks(router):
            director = uplink.director.node
            if cluster.announce(director) == "ospf":
                mine, theirs = cluster.ospf(director).auth, cluster.ospf(router).auth
                same = (mine is None) == (theirs is None) and (mine is None or (
                    mine.key_id, mine.key.value) == (theirs.key_id, theirs.key.value))
                what = "OSPF authentication (auth: type, key_id and key)"
                where = ("nodes", director, "ospf") if cluster.topology.nodes[director].ospf else ("nodes", router, "ospf")
            else:
                mine, theirs = cluster.bgp(director).password, cluster.bgp(router).password
                same = (mine is None) == (theirs is None) and (mine is None or mine.value == theirs.value)
                what = "BGP password"
                where = ("nodes", director, "bgp") if cluster.topology.nodes[director].bgp else ("nodes", router, "bgp")
            if not same:
                problems.append(Problem(where, f"{director} and its router {router} differ in {what}: they would never "
                                               "peer; set it in defaults or the same on both"))
    return problems


def _did_you_mean(name: str, known) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {guess[0]!r}?" if guess else ""
