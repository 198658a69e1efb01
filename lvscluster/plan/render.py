"""Rendering (pure): FRR configuration text and daemon lists from jinja2 templates in the package."""

from __future__ import annotations

import json
from collections.abc import Collection
from functools import cache

import jinja2

from lvscluster.model.cluster import Cluster
from lvscluster.state import ExabgpState, NodeState

BFD_PROFILE = "lvscluster"
# A drained director announces its VIPs at this OSPF cost: the router keeps only the cheaper
# (undrained) directors in its ECMP set, and falls back to the drained ones if none is left.
# (`max-metric router-lsa` would not do it: stub links keep their cost.)
DRAIN_COST = 1000
# ... and over BGP with its AS prepended this many times (a longer path, the same fallback).
DRAIN_PREPEND = 3


@cache
def environment() -> jinja2.Environment:
    """The one jinja2 environment: package templates, strict undefined, trimmed blocks."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lvscluster", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # package templates do not change under a running process (no stat per render)
    )


def _render(template: str, **context) -> str:
    text = environment().get_template(template).render(**context)
    return "".join(f"{line.rstrip()}\n" for line in text.splitlines() if line.strip())


def frr_context(cluster: Cluster, node: str, withdrawn: Collection[str] = ()) -> dict:
    """The values the FRR templates of one director or router use."""
    spec = cluster.topology.nodes[node]
    context = {"hostname": node, "router_id": str(spec.router_id), "ospf": cluster.ospf(node), "bfd_profile": BFD_PROFILE,
               "asn": cluster.asn(node), "bgp": cluster.bgp(node)}
    director = spec.role == "director"
    links, peers, peers6 = [], [], []
    for u in cluster.uplinks(node):
        mine, theirs = (u.director, u.router) if director else (u.router, u.director)
        announce = cluster.announce(u.director.node)
        # OSPFv3 on the uplinks with an IPv6 address, when some VIP is IPv6 (ospf6d peers by link-local addresses)
        ospf6 = cluster.ipv6_vips and announce == "ospf" and mine.address_of(6) is not None
        links.append({"interface": mine.name, "subnet": str(mine.address.network), "announce": announce, "ospf6": ospf6})
        if announce == "bgp":
            # ExaBGP has no BFD: its sessions end by the hold timer (or a NOTIFICATION when it stops)
            bfd = cluster.bgp(node).bfd and cluster.bgp(u.director.node).announcer != "exabgp"
            peer = {"asn": cluster.asn(theirs.node), "bfd": bfd}
            peers.append({**peer, "address": str(theirs.address.ip), "local": str(mine.address.ip)})
            # IPv6 VIPs: a second, IPv6 session over the uplink's global addresses (address-family ipv6 unicast)
            if cluster.ipv6_vips and mine.address_of(6) is not None and theirs.address_of(6) is not None:
                peers6.append({**peer, "address": str(theirs.address_of(6).ip), "local": str(mine.address_of(6).ip)})
    context.update(peers=peers, peers6=peers6)
    context["ospf6"] = any(link["ospf6"] for link in links)
    if director:
        nat = any(svc.forward == "nat" for vip in cluster.topology.vips for svc in vip.services)
        announce = cluster.announce(node)
        asn = cluster.asn(node)
        context.update(uplinks=links, announce=announce, forwarding=nat, announcer=cluster.announcer(node),
                       drain_cost=DRAIN_COST if spec.drain and announce == "ospf" else None,
                       drain_prepend=" ".join([str(asn)] * DRAIN_PREPEND) if spec.drain and announce == "bgp" else None,
                       vips=[f"{v.address}/32" for v in cluster.topology.vips if v.name not in withdrawn and v.address.version == 4],
                       vips6=[f"{v.address}/128" for v in cluster.topology.vips if v.name not in withdrawn and v.address.version == 6])
    else:
        protocols = cluster.router_protocols(node)
        context.update(downlinks=links, max_paths=spec.max_paths or 8, forwarding=True, forwarding6=context["ospf6"] or bool(peers6),
                       protocols=protocols,
                       bfd=cluster.ospf(node) if "ospf" in protocols or not protocols else cluster.bgp(node))
    return context


def runs_ospf6(cluster: Cluster, node: str) -> bool:
    """True when a director or router speaks OSPFv3: some VIP is IPv6 and an OSPF uplink of the
    node has an IPv6 address (`subnet6:`)."""
    return cluster.ipv6_vips and any(cluster.announce(u.director.node) == "ospf" and u.director.address_of(6)
                                     for u in cluster.uplinks(node))


def frr_daemons(cluster: Cluster, node: str) -> tuple[str, ...]:
    """The FRR daemons a director or router runs: zebra, and ospfd/ospf6d/bgpd/bfdd as its config needs
    (a director announcing through ExaBGP: zebra and staticd, for its default routes)."""
    if cluster.role(node) == "director" and cluster.announcer(node) == "exabgp":
        return ("zebra", "staticd")
    protocols = cluster.router_protocols(node) if cluster.role(node) == "router" else {cluster.announce(node)}
    protocols = protocols or {"ospf"}
    bfd = ("ospf" in protocols and cluster.ospf(node).bfd) or ("bgp" in protocols and cluster.bgp(node).bfd)
    ospf6 = "ospf" in protocols and runs_ospf6(cluster, node)
    return ("zebra", *(["bfdd"] if bfd else []), *(["ospfd"] if "ospf" in protocols else []),
            *(["ospf6d"] if ospf6 else []), *(["bgpd"] if "bgp" in protocols else []))


def render_frr(cluster: Cluster, node: str, withdrawn: Collection[str] = ()) -> str:
    """The whole frr.conf of a director or router; a director leaves the `withdrawn` VIPs
    (names) unannounced."""
    role = cluster.role(node)
    return _render(f"frr/{role}.conf.j2", **frr_context(cluster, node, withdrawn))


EXABGP_PROCESS = "lvscluster-announce"
# Filled in on the machine that runs ExaBGP (the backend), so the plan stays machine-independent:
# the command that runs lvscluster there, and the node's ExaBGP directory.
LVSCLUSTER_COMMAND, EXABGP_DIR = "@LVSCLUSTER@", "@EXABGP_DIR@"


def render_exabgp(cluster: Cluster, node: str, withdrawn: Collection[str] = ()) -> ExabgpState:
    """A director's ExaBGP (`announcer: exabgp`): one neighbour per uplink router (and family), and the routes
    its API process announces: every VIP /32 (and /128, to the IPv6 neighbours) not `withdrawn`,
    with the AS prepended when drained."""
    context = frr_context(cluster, node, withdrawn)
    config = _render("exabgp/director.conf.j2", **context, process=EXABGP_PROCESS,
                     command=LVSCLUSTER_COMMAND, directory=EXABGP_DIR)
    path = f" as-path [ {' '.join([str(context['asn'])] * (DRAIN_PREPEND + 1))} ]" if context["drain_prepend"] else ""
    routes = tuple(sorted(f"route {vip} next-hop self{path}" for vip in context["vips"] + context["vips6"]))
    return ExabgpState(config=config, routes=routes)


def render_daemons(cluster: Cluster, node: str) -> str:
    """The FRR `daemons` file of a director or router."""
    return _render("frr/daemons.j2", hostname=node, daemons=frr_daemons(cluster, node))


def state_json(state: NodeState) -> str:
    """A node's desired state as stable, diffable JSON."""
    return json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def render_files(cluster: Cluster, states: dict[str, NodeState]) -> dict[str, str]:
    """Every node's `<node>/{state.json,frr.conf,daemons}` as {relative path: text}; writes nothing."""
    files = {}
    for name, state in states.items():
        files[f"{name}/state.json"] = state_json(state)
        if state.frr is not None:
            files[f"{name}/frr.conf"] = state.frr
            files[f"{name}/daemons"] = render_daemons(cluster, name)
    return files
