"""The sysctl names a topology may set on directors (`defaults.sysctls`, a node's `sysctls`).

Deploy writes each one under `/proc/sys` and fails on a name the kernel lacks, so names are
checked when the topology loads: `net.ipv4.vs.*` against Linux 6.1's IPVS sysctls
(Documentation/networking/ipvs-sysctl.rst, plus the lblc/lblcr schedulers' own),
`net.ipv4.conf.IFACE.*` against its per-interface names, other `net.ipv4.*` names against a list
(a warning: they depend on the kernel's build); other names by their form. A NAT director keeps
forwarding on.
"""

from __future__ import annotations

import difflib
import re

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem, once

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
# net.ipv4.* itself (a 6.18 kernel's names less those added after 6.1); an unknown one is a warning,
# since which of these a kernel has depends on its build
IPV4_SYSCTLS = frozenset("""
    cipso_cache_bucket_size cipso_cache_enable cipso_rbm_optfmt cipso_rbm_strictvalid
    fib_multipath_hash_fields fib_multipath_hash_policy fib_multipath_use_neigh
    fib_notify_on_flag_change fib_sync_mem fwmark_reflect icmp_echo_enable_probe
    icmp_echo_ignore_all icmp_echo_ignore_broadcasts icmp_errors_use_inbound_ifaddr
    icmp_ignore_bogus_error_responses icmp_msgs_burst icmp_msgs_per_sec icmp_ratelimit
    icmp_ratemask igmp_link_local_mcast_reports igmp_max_memberships igmp_max_msf igmp_qrv
    inet_peer_maxttl inet_peer_minttl inet_peer_threshold ip_autobind_reuse ip_default_ttl
    ip_dynaddr ip_early_demux ip_forward ip_forward_update_priority ip_forward_use_pmtu
    ip_local_port_range ip_local_reserved_ports ip_no_pmtu_disc ip_nonlocal_bind
    ip_unprivileged_port_start ipfrag_high_thresh ipfrag_low_thresh ipfrag_max_dist
    ipfrag_secret_interval ipfrag_time nexthop_compat_mode ping_group_range raw_l3mdev_accept
    tcp_abort_on_overflow tcp_adv_win_scale tcp_allowed_congestion_control tcp_app_win
    tcp_autocorking tcp_available_congestion_control tcp_available_ulp tcp_base_mss
    tcp_challenge_ack_limit tcp_child_ehash_entries tcp_comp_sack_delay_ns tcp_comp_sack_nr
    tcp_comp_sack_slack_ns tcp_congestion_control tcp_dsack tcp_early_demux tcp_early_retrans
    tcp_ecn tcp_ecn_fallback tcp_ehash_entries tcp_fack tcp_fastopen
    tcp_fastopen_blackhole_timeout_sec tcp_fastopen_key tcp_fin_timeout tcp_frto tcp_fwmark_accept
    tcp_invalid_ratelimit tcp_keepalive_intvl tcp_keepalive_probes tcp_keepalive_time
    tcp_l3mdev_accept tcp_limit_output_bytes tcp_low_latency tcp_max_orphans tcp_max_reordering
    tcp_max_syn_backlog tcp_max_tw_buckets tcp_mem tcp_migrate_req tcp_min_rtt_wlen tcp_min_snd_mss
    tcp_min_tso_segs tcp_moderate_rcvbuf tcp_mtu_probe_floor tcp_mtu_probing tcp_no_metrics_save
    tcp_no_ssthresh_metrics_save tcp_notsent_lowat tcp_orphan_retries tcp_pacing_ca_ratio
    tcp_pacing_ss_ratio tcp_pingpong_thresh tcp_probe_interval tcp_probe_threshold tcp_recovery
    tcp_reflect_tos tcp_reordering tcp_retrans_collapse tcp_retries1 tcp_retries2 tcp_rfc1337
    tcp_rmem tcp_sack tcp_slow_start_after_idle tcp_stdurg tcp_syn_retries tcp_synack_retries
    tcp_syncookies tcp_thin_linear_timeouts tcp_timestamps tcp_tso_win_divisor tcp_tw_reuse
    tcp_window_scaling tcp_wmem tcp_workaround_signed_windows udp_early_demux udp_l3mdev_accept
    udp_mem udp_rmem_min udp_wmem_min xfrm4_gc_thresh
""".split())
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
    return problems + _forwarding(cluster)


FORWARDING = ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding")


def _forwarding(cluster: Cluster) -> list[Problem]:
    """NAT replies pass the director's FORWARD path, where IPVS rewrites them: forwarding stays on."""
    topology = cluster.topology
    if not any(svc.forward == "nat" for vip in topology.vips for svc in vip.services):
        return []
    problems = []
    for director in cluster.directors:
        own = topology.nodes[director].sysctls
        for loc, sysctls in ((("nodes", director, "sysctls"), own), (("defaults", "sysctls"), topology.defaults.sysctls)):
            name = next((n for n in sysctls if ".".join(_parts(n)) in FORWARDING), None)
            if name is not None:
                if _NUMBER.match(sysctls[name].strip()) and int(sysctls[name].strip(), 0) == 0:
                    problems.append(Problem((*loc, name), (
                        f"{name} 0 on {director}, which has NAT services: their replies pass its FORWARD path, where "
                        "IPVS rewrites them, so with forwarding off they are dropped")))
                break  # a node's own setting overrides the defaults'
    return once(problems)


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
    if parts[:2] == ["net", "ipv4"] and len(parts) == 3 and parts[2] not in IPV4_SYSCTLS:
        return [Problem(loc, f"sysctl {name!r} is not one of Linux 6.1's net.ipv4 sysctls that lvscluster knows"
                             f"{_guess(parts[2], IPV4_SYSCTLS, lambda g: 'net.ipv4.' + g)}", warning=True)]
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
