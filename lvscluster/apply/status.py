"""Cluster status (read-only): what each node holds, whether it matches the topology, and ECMP.

Per director: pending changes, OSPF neighbours and whether the VIP is announced, IPVS services
with per-dest connections and rates, sync daemons, and a fingerprint of each service's dest
order (directors whose fingerprints differ would hash the same flow to different real servers).
Per router: the ECMP next hops of each VIP in the kernel. Per real server: VIP and sysctls.
"""

from __future__ import annotations

import hashlib

from lvscluster.apply import frr
from lvscluster.apply.backends import KernelBackend
from lvscluster.apply.deploy import DeployPlan
from lvscluster.errors import LvsClusterError


def order_fingerprint(dest_keys: list[str]) -> str:
    """A short digest of a dest list in kernel order (equal lists, equal digests)."""
    return hashlib.sha256("\n".join(dest_keys).encode()).hexdigest()[:12]


def ospf_neighbors(pathspace: str | None) -> list[dict]:
    """FRR's OSPF neighbours (router id, state, interface); none when FRR is not running."""
    if not frr.is_running(pathspace):
        return []
    try:
        data = frr.vtysh_json(pathspace, "show ip ospf neighbor json", daemon="ospfd")
    except (LvsClusterError, ValueError):
        return []
    neighbors = []
    for router_id, entries in data.get("neighbors", {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            state = str(entry.get("nbrState", entry.get("state", "")))
            neighbors.append({"router_id": router_id, "state": state.split("/")[0],
                              "interface": str(entry.get("ifaceName", "")).split(":")[0]})
    return neighbors


def bgp_peers(pathspace: str | None) -> list[dict]:
    """FRR's BGP peers (address, state); none when FRR or bgpd is not running."""
    if not frr.is_running(pathspace) or not frr.running(pathspace or "", "bgpd"):
        return []
    try:
        data = frr.vtysh_json(pathspace, "show bgp ipv4 unicast summary json", daemon="bgpd")
    except (LvsClusterError, ValueError):
        return []
    return [{"address": address, "state": str(peer.get("state", ""))}
            for address, peer in data.get("peers", {}).items()]


def _announced(desired, observed, neighbors: list[dict], peers: list[dict]) -> dict[str, bool]:
    """Per VIP of a director: on lo, and announced by whoever speaks for it (OSPF Full, a BGP
    session Established, or ExaBGP having confirmed the route)."""
    vips_up = {a.address for a in observed.addresses}
    if desired.exabgp is not None:
        routes = {r.split()[1] for r in (observed.exabgp.routes if observed.exabgp else ())}
        return {a.address: a.address in vips_up and a.address in routes for a in desired.addresses}
    speaking = any(n["state"] == "Full" for n in neighbors) or any(p["state"] == "Established" for p in peers)
    return {a.address: a.address in vips_up and speaking and observed.frr == desired.frr for a in desired.addresses}


def _director(backend: KernelBackend, desired, observed) -> dict:
    from lvscluster.netlink import IpvsSocket

    services = []
    with IpvsSocket(backend.netns) as sock:
        service_stats = sock.service_stats()
        for svc in observed.ipvs.services if observed.ipvs else ():
            dest_stats = sock.dest_stats(svc)
            stats = service_stats.get(svc.key)
            services.append({
                "service": svc.key, "scheduler": svc.scheduler, "flags": list(svc.flags),
                "conns": stats.conns if stats else 0, "cps": stats.cps if stats else 0,
                "order": order_fingerprint([d.key for d in svc.dests]),
                "dests": [{"dest": d.key, "forward": d.forward, "weight": d.weight,
                           "active": getattr(dest_stats.get(d.key), "active_conns", 0) or 0,
                           "inactive": getattr(dest_stats.get(d.key), "inact_conns", 0) or 0,
                           "conns": getattr(dest_stats.get(d.key), "conns", 0) or 0} for d in svc.dests],
            })
    health = _health(desired.name, backend.netns)
    for svc in services:
        for dest in svc["dests"]:
            dest["health"] = health.get((svc["service"], dest["dest"].rpartition(":")[0]), "-")
    neighbors = ospf_neighbors(backend.frr_pathspace)
    peers = bgp_peers(backend.frr_pathspace)
    vips_up = {a.address for a in observed.addresses}
    announced = _announced(desired, observed, neighbors, peers)
    return {
        "services": services,
        "sync": [{"state": d.state, "interface": d.interface, "syncid": d.syncid}
                 for d in (observed.ipvs.daemons if observed.ipvs else ())],
        "ospf_neighbors": neighbors,
        "bgp_peers": peers,
        "agent": bool(health),
        "vips": {a.address: {"on_lo": a.address in vips_up, "announced": announced[a.address]} for a in desired.addresses},
    }


def _health(node: str, netns: str | None) -> dict[tuple[str, str], str]:
    """What the director's running agent says of each checked dest: `up`, or `down: <why>`."""
    from lvscluster.runfiles import read_health_record

    record = read_health_record(node, netns) or {}
    return {(t["service"], t["address"]): "up" if t["up"] else f"down: {t['detail']}"
            for t in record.get("targets", {}).values()}


def _router(backend: KernelBackend, cluster) -> dict:
    from lvscluster.netlink import Links

    with Links(backend.netns) as links:
        return {"ecmp": {f"{v.address}/32": links.nexthops(f"{v.address}/32") for v in cluster.topology.vips},
                "ospf_neighbors": ospf_neighbors(backend.frr_pathspace)}


def cluster_status(plan: DeployPlan) -> dict:
    """Status of every managed node, from an observed deploy plan (no changes made)."""
    nodes: dict[str, dict] = {}
    for name, actions in plan.actions.items():
        role = plan.cluster.role(name)
        backend = plan.backends[name]
        entry = {"role": role, "reached_by": backend.description, "in_sync": not actions,
                 "pending": [f"{a.summary}: {a.reason}" for a in actions]}
        if backend.placement.on_this_machine:
            if role == "director":
                entry.update(_director(backend, plan.desired[name], plan.observed[name]))
            elif role == "router":
                entry.update(_router(backend, plan.cluster))
        nodes[name] = entry
    orders = {}
    for name, entry in nodes.items():
        for svc in entry.get("services", ()):
            orders.setdefault(svc["service"], {})[name] = svc["order"]
    consistent = {svc: len(set(by_node.values())) == 1 for svc, by_node in orders.items()}
    for entry in nodes.values():
        for svc in entry.get("services", ()):
            svc["order_matches_other_directors"] = consistent[svc["service"]]
    return {"cluster": plan.cluster.name, "in_sync": all(n["in_sync"] for n in nodes.values()),
            "mh_tables_consistent": all(consistent.values()), "nodes": nodes}
