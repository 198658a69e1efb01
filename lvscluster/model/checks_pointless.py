"""Settings that work but do nothing, or do less than they seem to: warnings, not errors.

The options a mode ignores (one-packet scheduling on TCP, a tunnel type without `forward: tun`,
OSPF settings on a BGP director), a secret file every user can read, settings that leave a
service nothing to do (every director drained, every real server at weight 0), and values that
defeat their own purpose (BFD slower than OSPF's dead interval, automatic defences with
amemthresh 0, persistence with netmask /0, a flag listed twice).
"""

from __future__ import annotations

import ipaddress
import os
import stat

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem, once


# schedulers that use a weight only to skip weight 0 (ip_vs_rr.c, ip_vs_lc.c, ip_vs_dh.c)
WEIGHTLESS_SCHEDULERS = ("rr", "lc", "dh")
LOCAL_MULTICAST = ipaddress.IPv4Network("224.0.0.0/24")  # never forwarded, whatever the TTL


def pointless_settings(cluster: Cluster) -> list[Problem]:
    """Every warning of a topology whose fields parsed."""
    return (_services(cluster) + _weights(cluster) + _sync_ttl(cluster) + _announce_settings(cluster)
            + _secrets(cluster) + _idle(cluster) + _slow_bfd(cluster) + _defense(cluster))


def _warn(loc: tuple, message: str) -> Problem:
    return Problem(loc, message, warning=True)


def _services(cluster: Cluster) -> list[Problem]:
    problems = []
    directors = len(cluster.directors)
    for vi, vip in enumerate(cluster.topology.vips):
        for si, svc in enumerate(vip.services):
            loc = ("vips", vi, "services", si)
            for fi, flag in enumerate(svc.flags or []):
                if flag == "one-packet" and svc.protocol in ("tcp", "sctp"):
                    problems.append(_warn((*loc, "flags", fi), (
                        f"one-packet scheduling applies to UDP only; the kernel ignores it on a {svc.protocol} service")))
            if "tunnel" in svc.model_fields_set and svc.forward != "tun":
                problems.append(_warn((*loc, "tunnel"), (
                    f"tunnel {svc.tunnel} applies only to forward: tun; forward: {svc.forward} ignores it")))
            flags = svc.flags or []
            for fi, flag in enumerate(flags):
                if flag in flags[:fi]:
                    problems.append(_warn((*loc, "flags", fi), f"flag {flag!r} is already listed as flags[{flags.index(flag)}]"))
            if svc.netmask == 0 and svc.persistence:
                problems.append(_warn((*loc, "netmask"), (
                    "netmask /0 makes every client one persistence group: for the persistence time, all of the "
                    "service's new connections go to one real server")))
            if svc.allow_multiple_directors and svc.forward == "nat" and directors == 1:
                problems.append(_warn((*loc, "allow_multiple_directors"), (
                    "allow_multiple_directors with one director: there is no other director to allow")))
    return problems


def _weights(cluster: Cluster) -> list[Problem]:
    """Weights other than 0 and 1 mean nothing to rr, lc and dh (keepalived configs often have them)."""
    problems = []
    for vi, vip in enumerate(cluster.topology.vips):
        schedulers = {svc.scheduler for svc in vip.services}
        if not schedulers or not schedulers <= set(WEIGHTLESS_SCHEDULERS):
            continue
        for ri, ref in enumerate(vip.real_servers):
            if ref.weight > 1:
                problems.append(_warn(("vips", vi, "real_servers", ri, "weight"), (
                    f"weight {ref.weight} does nothing with scheduler {', '.join(sorted(schedulers))} (it only skips "
                    "weight 0); use wrr, wlc or mh to share by weight")))
    return problems


def _sync_ttl(cluster: Cluster) -> list[Problem]:
    sync = cluster.topology.defaults.sync
    if sync is None or sync.ttl == 1 or sync.group not in LOCAL_MULTICAST:
        return []
    return [_warn(("defaults", "sync", "ttl"), (
        f"ttl {sync.ttl} does nothing for group {sync.group}: 224.0.0.0/24 is never forwarded beyond the link"))]


def _announce_settings(cluster: Cluster) -> list[Problem]:
    """OSPF settings on a BGP director (and the reverse), BFD with ExaBGP, routing settings on hosts."""
    problems = []
    topology = cluster.topology
    for name, node in topology.nodes.items():
        if node.role in ("client", "real_server"):
            for field in ("ospf", "bgp"):
                if getattr(node, field) is not None:
                    problems.append(_warn(("nodes", name, field), (
                        f"{field} applies only to routers and directors; {name} is a {node.role} and ignores it")))
            continue
        if node.role != "director":
            continue
        announce = cluster.announce(name)
        if node.ospf is not None and announce == "bgp":
            problems.append(_warn(("nodes", name, "ospf"), f"{name} announces by BGP and ignores its ospf settings"))
        if node.bgp is not None and announce == "ospf":
            problems.append(_warn(("nodes", name, "bgp"), f"{name} announces by OSPF and ignores its bgp settings"))
        if announce == "bgp" and cluster.bgp(name).announcer == "exabgp":
            own = node.bgp is not None and "bfd" in node.bgp.model_fields_set and node.bgp.bfd
            shared = "bfd" in topology.defaults.bgp.model_fields_set and topology.defaults.bgp.bfd
            if own or shared:
                loc = ("nodes", name, "bgp", "bfd") if own else ("defaults", "bgp", "bfd")
                problems.append(_warn(loc, (
                    f"bfd: true does nothing on {name}: ExaBGP has no BFD, so its router notices a dead director "
                    f"by the hold timer ({cluster.bgp(name).hold} s)")))
    return once(problems)


def _secrets(cluster: Cluster) -> list[Problem]:
    """A secret file others can read gives the OSPF key or BGP password away."""
    topology = cluster.topology
    places = [(("defaults", "ospf", "auth", "key"), topology.defaults.ospf.auth and topology.defaults.ospf.auth.key),
              (("defaults", "bgp", "password"), topology.defaults.bgp.password)]
    for name, node in topology.nodes.items():
        places.append((("nodes", name, "ospf", "auth", "key"), node.ospf and node.ospf.auth and node.ospf.auth.key))
        places.append((("nodes", name, "bgp", "password"), node.bgp and node.bgp.password))
    problems = []
    for loc, secret in places:
        if not secret or secret.file is None:
            continue
        try:
            mode = os.stat(secret.file).st_mode
        except OSError:
            continue  # the secret was read when the topology loaded; a file gone since is not this rule's business
        if mode & stat.S_IROTH:
            problems.append(_warn(loc, (
                f"secret file {secret.file} is readable by every user (mode {stat.S_IMODE(mode):04o}); chmod 600 it")))
    return problems


def _idle(cluster: Cluster) -> list[Problem]:
    """Every director drained steers nothing; every real server at weight 0 takes no new connection."""
    problems = []
    nodes = cluster.topology.nodes
    if cluster.directors and all(nodes[d].drain for d in cluster.directors):
        last = cluster.directors[-1]
        problems.append(_warn(("nodes", last, "drain"), (
            "every director is drained: the router keeps using them all (a drain only moves traffic to undrained "
            "directors)")))
    for vi, vip in enumerate(cluster.topology.vips):
        idle = [ref.weight == 0 or (ref.node in nodes and nodes[ref.node].drain) for ref in vip.real_servers]
        if idle and all(idle):
            problems.append(_warn(("vips", vi, "real_servers"), (
                f"every real server of VIP {vip.name!r} has weight 0 or is drained: its services accept no new connection")))
    return problems


def _slow_bfd(cluster: Cluster) -> list[Problem]:
    """BFD that detects a dead neighbour no sooner than OSPF's dead interval or BGP's hold time adds nothing."""
    topology, problems = cluster.topology, []
    known = all(ep.node in topology.nodes for link in topology.links for ep in link.endpoints)
    ospf_users = [r for r in cluster.routers if known and "ospf" in cluster.router_protocols(r)]  # uplinks need known nodes
    ospf_users += [d for d in cluster.directors if cluster.announce(d) == "ospf"]
    for name in ospf_users:
        ospf = cluster.ospf(name)
        detect = ospf.bfd_interval_ms * ospf.bfd_multiplier / 1000
        if ospf.bfd and detect >= ospf.dead:
            where = ("nodes", name, "ospf") if topology.nodes[name].ospf else ("defaults", "ospf")
            problems.append(_warn((*where, "bfd_interval_ms"), (
                f"BFD notices a dead neighbour after {detect:g} s ({ospf.bfd_interval_ms} ms x {ospf.bfd_multiplier}), "
                f"no sooner than OSPF's dead interval ({ospf.dead} s): bfd adds nothing")))
    for name in cluster.directors:
        bgp = cluster.bgp(name)
        if cluster.announce(name) != "bgp" or cluster.announcer(name) != "frr" or not bgp.bfd:
            continue
        detect = bgp.bfd_interval_ms * bgp.bfd_multiplier / 1000
        if detect >= bgp.hold:
            own = topology.nodes[name].bgp
            where = ("nodes", name, "bgp") if own and own.model_fields_set & {"bfd_interval_ms", "bfd_multiplier"} else ("defaults", "bgp")
            problems.append(_warn((*where, "bfd_interval_ms"), (
                f"BFD notices a dead neighbour after {detect:g} s ({bgp.bfd_interval_ms} ms x {bgp.bfd_multiplier}), "
                f"no sooner than BGP's hold time ({bgp.hold} s): bfd adds nothing")))
    return once(problems)


def _defense(cluster: Cluster) -> list[Problem]:
    """Mode 1 (automatic) defences engage while free memory is below amemthresh: with 0, never."""
    topology = cluster.topology
    places = [(("defaults", "ipvs_defense"), topology.defaults.ipvs_defense)]
    places += [(("nodes", name, "ipvs_defense"), node.ipvs_defense) for name, node in topology.nodes.items()
               if node.role == "director" and node.ipvs_defense is not None]
    problems = []
    for loc, defense in places:
        automatic = [name for name in ("drop_entry", "drop_packet", "secure_tcp") if getattr(defense, name) == 1]
        if defense.amemthresh == 0 and automatic:
            problems.append(_warn((*loc, "amemthresh"), (
                f"amemthresh 0: free memory is never below 0 pages, so {', '.join(automatic)} at 1 (automatic) never "
                f"engage{'s' if len(automatic) == 1 else ''}; use 3 to keep {'it' if len(automatic) == 1 else 'them'} on, "
                "or a threshold in pages")))
    return problems
