"""The sysctl names a topology may set on directors (`defaults.sysctls`, a node's `sysctls`).

Deploy writes each one under `/proc/sys` and fails on a name the kernel lacks, so names are
checked when the topology loads: `net.ipv4.vs.*` against Linux 6.1's IPVS sysctls
(Documentation/networking/ipvs-sysctl.rst, plus the lblc/lblcr schedulers' own),
`net.ipv4.conf.IFACE.*` against its per-interface names; other names by their form.
"""

from __future__ import annotations

import difflib
import re

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem

IPVS_SYSCTLS = frozenset({
    "am_droprate", "amemthresh", "backup_only", "cache_bypass", "conn_reuse_mode", "conntrack", "drop_entry",
    "drop_packet", "expire_nodest_conn", "expire_quiescent_template", "ignore_tunneled", "nat_icmp_send",
    "pmtu_disc", "run_estimation", "schedule_icmp", "secure_tcp", "sloppy_sctp", "sloppy_tcp", "snat_reroute",
    "sync_persist_mode", "sync_ports", "sync_qlen_max", "sync_refresh_period", "sync_retries", "sync_sock_size",
    "sync_threshold", "sync_version", "lblc_expiration", "lblcr_expiration",
})
IPVS_SYSCTLS_AFTER_6_1 = {"est_cpulist": "6.2", "est_nice": "6.2"}
IPVS_TWO_NUMBERS = frozenset({"sync_threshold"})  # e.g. "3 50"; the others take one number
INTERFACE_SYSCTLS = frozenset({
    "accept_local", "accept_redirects", "accept_source_route", "arp_accept", "arp_announce", "arp_evict_nocarrier",
    "arp_filter", "arp_ignore", "arp_notify", "bc_forwarding", "bootp_relay", "disable_policy", "disable_xfrm",
    "drop_gratuitous_arp", "drop_unicast_in_l2_multicast", "force_igmp_version", "forwarding",
    "igmpv2_unsolicited_report_interval", "igmpv3_unsolicited_report_interval", "ignore_routes_with_linkdown",
    "log_martians", "mc_forwarding", "medium_id", "promote_secondaries", "proxy_arp", "proxy_arp_pvlan",
    "route_localnet", "rp_filter", "secure_redirects", "send_redirects", "shared_media", "src_valid_mark", "tag",
})
ALWAYS_THERE = ("all", "default", "lo", "tunl0")  # interfaces every director has (tunl0 once ipip is loaded)
ROOTS = ("abi", "debug", "dev", "fs", "kernel", "net", "user", "vm")
_PART = re.compile(r"^[A-Za-z0-9_@:+-]+$")
_SLASH_PART = re.compile(r"^[A-Za-z0-9_@:+.-]+$")  # the slash form lets an interface name hold dots
_NUMBER = re.compile(r"^-?(\d+|0x[0-9a-fA-F]+)$")


def sysctl_problems(cluster: Cluster) -> list[Problem]:
    """Unknown names and values that are no number, in `defaults.sysctls` and every node's `sysctls`."""
    topology = cluster.topology
    places = [(("defaults", "sysctls"), topology.defaults.sysctls)]
    places += [(("nodes", name, "sysctls"), node.sysctls) for name, node in topology.nodes.items()
               if node.role == "director"]  # `checks._roles` refuses sysctls on other nodes
    interfaces = {i.name for d in cluster.directors for i in cluster.interfaces_of(d)}
    problems = []
    for loc, sysctls in places:
        for name, value in sysctls.items():
            problems += _check(loc + (name,), name, value, interfaces)
    return problems


def _parts(name: str) -> list[str]:
    """`net.ipv4.conf.eth0.rp_filter` (or the slash form, for interface names with dots) -> its parts."""
    return name.strip("/").split("/") if "/" in name else name.split(".")


def _check(loc: tuple, name: str, value: str, interfaces: set[str]) -> list[Problem]:
    parts = _parts(name)
    pattern = _SLASH_PART if "/" in name else _PART
    if len(parts) < 2 or not all(pattern.match(p) and p not in (".", "..") for p in parts):
        return [Problem(loc, f"sysctl {name!r} is not a sysctl name (dotted words, e.g. net.ipv4.vs.amemthresh)")]
    if parts[0] not in ROOTS:
        return [Problem(loc, f"sysctl {name!r} is under no /proc/sys directory ({', '.join(ROOTS)})"
                             f"{_guess(parts[0], ROOTS, lambda g: '.'.join([g, *parts[1:]]))}")]
    if parts[:3] == ["net", "ipv4", "vs"]:
        return _ipvs(loc, name, parts, value)
    if parts[:3] == ["net", "ipv4", "conf"]:
        return _interface(loc, name, parts, value, interfaces)
    return []


def _ipvs(loc: tuple, name: str, parts: list[str], value: str) -> list[Problem]:
    key = ".".join(parts[3:])
    if key in IPVS_SYSCTLS_AFTER_6_1:
        return [Problem(loc, f"sysctl {name} came with Linux {IPVS_SYSCTLS_AFTER_6_1[key]}: Debian 12's 6.1 kernel "
                             "has none, and deploy would fail writing it")]
    if key not in IPVS_SYSCTLS:
        return [Problem(loc, f"unknown IPVS sysctl {name!r} (Linux 6.1 has no such name)"
                             f"{_guess(key, IPVS_SYSCTLS, lambda g: 'net.ipv4.vs.' + g)}")]
    numbers = value.split()
    wanted = 2 if key in IPVS_TWO_NUMBERS else 1
    if len(numbers) != wanted or not all(_NUMBER.match(n) for n in numbers):
        what = "two numbers, e.g. \"3 50\"" if wanted == 2 else "a number"
        return [Problem(loc, f"{name} takes {what}, not {value!r}")]
    if key == "backup_only" and numbers[0] != "0":
        return [Problem(loc, "backup_only 1 stops forwarding while a sync backup daemon runs, and every all-active "
                             "director runs one: the director would drop its traffic")]
    return []


def _interface(loc: tuple, name: str, parts: list[str], value: str, interfaces: set[str]) -> list[Problem]:
    if len(parts) != 5:
        return [Problem(loc, f"sysctl {name!r} should be net.ipv4.conf.INTERFACE.NAME (an interface name with dots "
                             "goes in the slash form, net/ipv4/conf/eth0.100/rp_filter)")]
    interface, key = parts[3], parts[4]
    problems = []
    if key not in INTERFACE_SYSCTLS:
        problems.append(Problem(loc, f"unknown interface sysctl {name!r} (Linux 6.1 has no such name)"
                                     f"{_guess(key, INTERFACE_SYSCTLS, lambda g: f'net.ipv4.conf.{interface}.{g}')}"))
    elif not _NUMBER.match(value.strip()):
        problems.append(Problem(loc, f"{name} takes a number, not {value!r}"))
    if interface not in ALWAYS_THERE and interface not in interfaces:
        problems.append(Problem(loc, (
            f"no director has an interface {interface!r} in the topology: deploy fails on a director without it"),
            warning=True))
    return problems


def _guess(word: str, known, spell) -> str:
    guess = difflib.get_close_matches(word, sorted(known), n=1)
    return f"; did you mean {spell(guess[0])!r}?" if guess else ""
