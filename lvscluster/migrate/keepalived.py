"""keepalived.conf -> virtual services: `virtual_server`, `virtual_server_group`, real servers, checkers.

Every statement is either used, or noted with its FILE:LINE (`Imported.notes`): VRRP, notify
scripts, alerting and every other keyword without a topology equivalent.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from lvscluster.migrate.confparse import ConfError, Statement, block_of, read_config
from lvscluster.migrate.keepalived_checks import CHECKERS, HealthDefaults, checker_health
from lvscluster.migrate.services import Dest, Imported, VService
from lvscluster.model.topology import SCHEDULERS

FORWARD = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
FLAG_WORDS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback")
FLAG_BITS = {"flag-1": 1, "flag-2": 2, "sh-fallback": 1, "sh-port": 2, "mh-fallback": 1, "mh-port": 2}
BIT_NAMES = {1: "fallback", 2: "port"}  # IP_VS_SVC_F_SCHED1/2 are sh's and mh's fallback/port
DEFAULT_PERSISTENCE = 360  # keepalived's and ipvsadm's `-p` without a value: 6 minutes
VRRP_KEYWORDS = ("vrrp_instance", "vrrp_sync_group", "vrrp_script", "vrrp_track_file", "vrrp_track_process",
                 "static_ipaddress", "static_routes", "static_rules", "garp_group", "linkbeat_interfaces")
WHY_VRRP = "VRRP has no place in all-active: every director announces the VIPs over OSPF/BGP (docs/migration.md)"
IGNORED_VS = {
    "ha_suspend": "lvscluster keeps services whether or not a VIP is local",
    "smtp_alert": "lvscluster sends no mail: watch `lvscluster status` or the agent's metrics",
    "snmp_name": "lvscluster has no SNMP agent",
    "quorum_up": "no notify scripts: a VIP that loses quorum is withdrawn from the routers",
    "quorum_down": "no notify scripts: a VIP that loses quorum is withdrawn from the routers",
    "omega": "no quorum scripts to run at shutdown",
    "persistence_engine": "persistence engines (sip) are not supported",
    "hysteresis": "the quorum has no hysteresis: health `rise`/`fall` damp flapping instead",
    "sorry_server_inhibit": "a sorry server is added only while no real server is healthy",
    "hashed": "IP_VS_SVC_F_HASHED is the kernel's own bookkeeping flag",
    "flag-3": "IP_VS_SVC_F_SCHED3 has no meaning for any scheduler lvscluster knows",
    "warmup": "checks start at once; the first `rise` successes bring a server in",
}
IGNORED_RS = {
    "notify_up": "no notify scripts: the agent logs each change and `lvscluster status` shows it",
    "notify_down": "no notify scripts: the agent logs each change and `lvscluster status` shows it",
    "uthreshold": "connection thresholds are not in the topology (ipvsadm -S does not save them either)",
    "lthreshold": "connection thresholds are not in the topology (ipvsadm -S does not save them either)",
    "smtp_alert": "lvscluster sends no mail",
    "snmp_name": "lvscluster has no SNMP agent",
    "warmup": "checks start at once; the first `rise` successes bring a server in",
}


def _int(stmt: Statement, index: int = 1, low: int = 0, high: int = 2**32 - 1) -> int:
    """The statement's argument `index` as a number in range; FILE:LINE error otherwise."""
    if len(stmt.words) <= index:
        raise ConfError(f"{stmt.where}: {stmt.keyword} needs a number")
    token = stmt.words[index]
    try:
        value = int(float(token)) if "." in token else int(token)
    except ValueError:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: {token!r} is not a number") from None
    if not low <= value <= high:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: {token} is outside {low}-{high}")
    return value


def _seconds(stmt: Statement) -> float:
    """A keepalived time (seconds, may have decimals)."""
    try:
        value = float(stmt.words[1])
    except (IndexError, ValueError):
        raise ConfError(f"{stmt.where}: {stmt.keyword} needs a time in seconds") from None
    if value < 0:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: {stmt.words[1]} is negative")
    return value


def _address(stmt: Statement, token: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(token)
    except ValueError:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: {token!r} is not an IP address") from None


def _forward(stmt: Statement, imported: Imported) -> tuple[str, str | None, int | None]:
    """`lb_kind NAT|DR|TUN [type ipip|gue|gre] [port N] [csum...]`."""
    if len(stmt.words) < 2 or stmt.words[1] not in FORWARD:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: expected NAT, DR or TUN, got {' '.join(stmt.args)!r}")
    tunnel, port, rest = None, None, stmt.words[2:]
    while rest:
        word = rest.pop(0)
        if word == "type" and rest:
            tunnel = rest.pop(0)
            if tunnel not in ("ipip", "gue", "gre"):
                raise ConfError(f"{stmt.where}: {stmt.keyword}: unknown tunnel type {tunnel!r}")
        elif word == "port" and rest:
            port = _int(Statement([stmt.keyword, rest.pop(0)], stmt.where), 1, 1, 65535)
        elif word in ("nocsum",):
            continue
        else:
            imported.note(stmt.where, stmt.text, f"tunnel option {word!r}: lvscluster's tunnels run without checksums")
    return FORWARD[stmt.words[1]], tunnel, port


def _vsg_entries(stmt: Statement, imported: Imported) -> list[tuple[str, str | None, int]]:
    """A `virtual_server_group`'s entries as (kind, address, port-or-mark): ranges expanded."""
    entries = []
    for entry in block_of(stmt):
        if entry.keyword == "fwmark":
            if len(entry.words) > 2:
                imported.note(entry.where, entry.text, "IPv6 fwmark services need IPv6 VIPs, which lvscluster refuses")
                continue
            entries.append(("fwmark", None, _int(entry, 1, 1)))
            continue
        port = _int(entry, 1, 0, 65535) if len(entry.words) > 1 else 0
        first, dash, last = entry.keyword.partition("-")
        start = _address(entry, first)
        if start.version == 6:
            imported.note(entry.where, entry.text, "IPv6 VIPs are refused for now (they need OSPFv3)")
            continue
        end = start
        if dash:
            if not last.isdigit() or not int(str(start).rsplit(".", 1)[1]) <= int(last) <= 255:
                raise ConfError(f"{entry.where}: {entry.keyword}: a range ends in a last octet above the first")
            end = ipaddress.ip_address(str(start).rsplit(".", 1)[0] + "." + last)
        for value in range(int(start), int(end) + 1):
            entries.append(("address", str(ipaddress.ip_address(value)), port))
    return entries


def _real_server(stmt: Statement, service: dict, defaults: HealthDefaults, imported: Imported) -> Dest | None:
    """A `real_server ADDR [PORT] { ... }` block."""
    address = _address(stmt, stmt.words[1]) if len(stmt.words) > 1 else None
    if address is None:
        raise ConfError(f"{stmt.where}: real_server needs an address")
    if address.version == 6:
        imported.note(stmt.where, stmt.text, "IPv6 real servers are not supported")
        return None
    port = _int(stmt, 2, 0, 65535) if len(stmt.words) > 2 else 0
    weight, checks, rs_defaults = service["weight"], [], defaults.child()
    for sub in block_of(stmt):
        key = sub.keyword
        if key == "weight":
            weight = _int(sub, 1, 0, 65535)
        elif key == "lvs_method":
            if _forward(sub, imported)[0] != service["forward"]:
                imported.note(sub.where, sub.text, "one forwarding method per service: the virtual server's is used")
        elif key == "inhibit_on_failure":
            continue  # lvscluster always quiesces (weight 0) a failed real server
        elif key in CHECKERS:
            block_of(sub)  # a checker without braces breaks keepalived's reading even when unused here
            checks.append(sub)
        elif rs_defaults.take(sub):
            continue
        elif key in IGNORED_RS:
            imported.note(sub.where, sub.text, IGNORED_RS[key])
        else:
            imported.note(sub.where, sub.text, "no equivalent in a topology file")
    health = None
    for index, check in enumerate(checks):
        if index:
            imported.note(check.where, check.keyword, "one check per real server: the first one is used")
            continue
        health = checker_health(check, rs_defaults, service, imported)
    return Dest(address=str(address), port=port, weight=weight, health=health, where=str(stmt.where))


def _dest_port(dest: Dest, forward: str, kind: str, port: int, grouped: bool = False) -> int:
    """The port keepalived programs (check_data.c, ipvswrapper.c): DR/TUN real servers take the
    service's port (0 with a fwmark), whatever port they were given; NAT keeps its own, and one
    without a port takes the service's, except in a group, where it stays 0."""
    if forward != "nat":
        return 0 if kind == "fwmark" else port
    if kind == "fwmark" or grouped:
        return dest.port
    return dest.port or port


def _programmed(kind: str, number: int, forward: str, dests: list[Dest], grouped: bool,
                imported: Imported) -> list[Dest]:
    """The destinations keepalived adds for one service: ports fixed up as keepalived does, and of
    two that become the same destination only the first (the second ADDDEST fails)."""
    own: dict[tuple[str, int], Dest] = {}
    for dest in dests:
        port = _dest_port(dest, forward, kind, number, grouped)
        text = f"real_server {dest.address} {dest.port or ''}".rstrip()
        if dest.port and port != dest.port and forward != "nat":
            said = "" if grouped else (' ("port specified - clearing")' if kind == "fwmark" else
                                       ' ("ports don\'t match - resetting")')
            imported.note(dest.where, text, f"{forward.upper()} forwards to the service's port: keepalived "
                          f"programs {port if port else 'port 0'}{said}")
        if grouped and forward == "nat" and kind == "address" and not port:
            imported.note(dest.where, text, "keepalived programs port 0 in a NAT group (the kernel then uses "
                          "the packet's own port); the service's port is used", approximated=True)
            port = number
        first = own.setdefault((dest.address, port), Dest(dest.address, port, dest.weight, dest.health, dest.where))
        if first.where != dest.where:
            imported.note(dest.where, text, f"becomes {dest.address}:{port}, the destination of {first.where}: "
                          f"keepalived's ADDDEST for it fails (\"Destination already exists\"), so only that one "
                          f"(weight {first.weight}) is programmed, and both checkers drive it")
    return list(own.values())


def _virtual_server(stmt: Statement, groups: dict, imported: Imported) -> None:
    """One `virtual_server` block: its settings, then one VService per address/mark it names."""
    args = stmt.args
    if not args:
        raise ConfError(f"{stmt.where}: virtual_server needs an address and port, `fwmark N` or `group NAME`")
    if args[0] == "group":
        if len(args) < 2 or args[1] not in groups:
            raise ConfError(f"{stmt.where}: virtual_server group {' '.join(args[1:])!r}: no such virtual_server_group")
        entries = groups[args[1]]
    elif args[0] == "fwmark":
        entries = [("fwmark", None, _int(stmt, 2, 1))]
    else:
        address = _address(stmt, args[0])
        if address.version == 6:
            imported.note(stmt.where, stmt.text, "IPv6 VIPs are refused for now (they need OSPFv3); skipped")
            return
        entries = [("address", str(address), _int(stmt, 2, 0, 65535) if len(args) > 1 else 0)]
    service = {"scheduler": "wlc", "flags": {}, "persistence": 0, "netmask": None, "forward": None,
               "tunnel": None, "tunnel_port": None, "protocol": None, "weight": 1, "quorum": None,
               "sorry": None, "virtualhost": None, "ops": None}
    defaults, servers = HealthDefaults(), []
    for sub in block_of(stmt):
        key = sub.keyword
        if key in ("lb_algo", "lvs_sched"):
            if len(sub.words) < 2 or sub.words[1] not in SCHEDULERS:
                raise ConfError(f"{sub.where}: {key}: unknown scheduler {' '.join(sub.args)!r} (one of {', '.join(SCHEDULERS)})")
            service["scheduler"] = sub.words[1]
        elif key in ("lb_kind", "lvs_method"):
            service["forward"], service["tunnel"], service["tunnel_port"] = _forward(sub, imported)
        elif key == "protocol":
            if len(sub.words) < 2 or sub.words[1] not in PROTOCOLS:
                raise ConfError(f"{sub.where}: protocol: expected TCP, UDP or SCTP, got {' '.join(sub.args)!r}")
            service["protocol"] = PROTOCOLS[sub.words[1]]
        elif key == "persistence_timeout":
            service["persistence"] = _int(sub, 1, 1, 86400 * 31) if len(sub.words) > 1 else DEFAULT_PERSISTENCE
        elif key == "persistence_granularity":
            netmask = _granularity(sub)
            if args[0] == "group":  # ipvswrapper.c programs every group entry with a full netmask
                imported.note(sub.where, sub.text, "keepalived ignores persistence_granularity in a virtual "
                              "server group: it programs each entry with the full netmask")
            else:
                service["netmask"] = netmask
            if not service["persistence"]:  # pgr_handler: granularity implies persistence
                service["persistence"] = DEFAULT_PERSISTENCE
        elif key == "ops":
            service["ops"] = sub
        elif key in FLAG_WORDS and not service["scheduler"] == key.split("-")[0]:
            imported.note(sub.where, sub.text, f"keepalived ignores {key} unless `lb_algo {key.split('-')[0]}` "
                          f"comes before it (here the scheduler is still {service['scheduler']})")
        elif key in FLAG_BITS:
            service["flags"][FLAG_BITS[key]] = sub  # keepalived sets the bit; the scheduler may change later
        elif key == "weight":
            service["weight"] = _int(sub, 1, 0, 65535)
        elif key == "quorum":
            service["quorum"] = (_int(sub, 1, 1), sub)
        elif key == "sorry_server":
            service["sorry"] = (sub, str(_address(sub, sub.words[1])) if len(sub.words) > 1 else "",
                                _int(sub, 2, 0, 65535) if len(sub.words) > 2 else 0)
        elif key == "sorry_server_lvs_method":
            imported.note(sub.where, sub.text, "the sorry server is forwarded like the real servers")
        elif key == "inhibit_on_failure":
            continue  # lvscluster always quiesces (weight 0) a failed real server
        elif key == "alpha":
            imported.note(sub.where, sub.text, "real servers start healthy and are checked at once", approximated=True)
        elif key == "virtualhost":
            service["virtualhost"] = sub.words[1] if len(sub.words) > 1 else None
        elif key == "ip_family":
            if sub.args and sub.args[0] == "inet6":
                imported.note(sub.where, sub.text, "IPv6 services are not supported")
        elif key == "real_server":
            servers.append(sub)
        elif defaults.take(sub):
            continue
        elif key in IGNORED_VS:
            imported.note(sub.where, sub.text, IGNORED_VS[key])
        else:
            imported.note(sub.where, sub.text, "no equivalent in a topology file")
    if not servers:
        imported.note(stmt.where, stmt.text, "keepalived ignores a virtual server without real servers "
                      "(\"has no real servers - ignoring\"); skipped")
        return
    if service["forward"] is None:
        imported.note(stmt.where, stmt.text, "no lb_kind: keepalived's default, NAT, is used", approximated=True)
        service["forward"] = "nat"
    if service["protocol"] is None and any(kind == "address" for kind, _, _ in entries):
        imported.note(stmt.where, stmt.text, "no protocol: keepalived's default, UDP, is used", approximated=True)
        service["protocol"] = "udp"
    # keepalived drops `ops` unless UDP, whenever the virtual server has addresses (its fwmarks too)
    service["ops_ok"] = service["protocol"] == "udp" or all(kind == "fwmark" for kind, _, _ in entries)
    dests = _unique((d for d in (_real_server(s, service, defaults, imported) for s in servers) if d is not None),
                    imported)
    grouped = args[0] == "group"
    for kind, address, number in entries:
        _emit(stmt, kind, address, number, service, dests, imported, grouped)


def _unique(dests, imported: Imported) -> list[Dest]:
    """keepalived drops a real server that repeats an earlier one's address and port, as written."""
    kept: dict[tuple[str, int], Dest] = {}
    for dest in dests:
        first = kept.setdefault((dest.address, dest.port), dest)
        if first is not dest:
            imported.note(dest.where, f"real_server {dest.address} {dest.port or ''}".rstrip(),
                          f"repeats {first.where}: keepalived removes the second real server and its checker")
    return list(kept.values())


def _granularity(stmt: Statement) -> int:
    """`persistence_granularity 255.255.255.0` (or a prefix length) as a prefix length."""
    token = stmt.words[1] if len(stmt.words) > 1 else ""
    try:
        return int(token) if token.isdigit() else ipaddress.IPv4Network(f"0.0.0.0/{token}").prefixlen
    except ValueError:
        raise ConfError(f"{stmt.where}: persistence_granularity: {token!r} is not a netmask") from None


def _flags(service: dict, imported: Imported) -> list[str]:
    scheduler, flags = service["scheduler"], []
    for bit, sub in sorted(service["flags"].items()):
        if scheduler in ("sh", "mh"):
            flags.append(f"{scheduler}-{BIT_NAMES[bit]}")
        else:
            imported.note(sub.where, sub.text, f"keepalived sets the flag-{bit} bit anyway (ipvsadm shows it), but "
                          f"it means nothing to scheduler {scheduler}")
    ops = service["ops"]
    if ops is not None:
        if service["ops_ok"]:
            flags.append("one-packet")
        else:
            imported.note(ops.where, ops.text, "keepalived itself drops one-packet scheduling unless the "
                          "virtual server is UDP or fwmarks only (\"one packet scheduling requires UDP\")")
    return sorted(set(flags))


def _emit(stmt: Statement, kind: str, address: str | None, number: int, service: dict, dests: list[Dest],
          imported: Imported, grouped: bool) -> None:
    """One IPVS service of a virtual_server, as keepalived would program it."""
    protocol = "fwmark" if kind == "fwmark" else service["protocol"]
    if kind != "fwmark" and number == 0:
        imported.note(stmt.where, stmt.text, f"{address} has no port: a topology service needs one; skipped")
        return
    forward = service["forward"]
    own = _programmed(kind, number, forward, dests, grouped, imported)
    sorry = None
    if service["sorry"] is not None:
        sub, sorry_address, sorry_port = service["sorry"]
        sorry = (sorry_address, _dest_port(Dest(sorry_address, sorry_port), forward, kind, number, grouped) or None)
    quorum = None
    if service["quorum"] is not None:
        quorum, sub = service["quorum"]
        if any(d.weight != 1 for d in own):
            imported.note(sub.where, sub.text, "keepalived sums weights; lvscluster counts healthy real servers",
                          approximated=True)
    imported.services.append(VService(
        protocol=protocol, address=address, port=number if kind != "fwmark" else 0,
        fwmark=number if kind == "fwmark" else 0, scheduler=service["scheduler"],
        flags=_flags(service, imported), persistence=service["persistence"],
        netmask=service["netmask"], forward=forward, tunnel=service["tunnel"], tunnel_port=service["tunnel_port"],
        dests=own, quorum=quorum, sorry=sorry, where=str(stmt.where), origin=stmt.text))


def _global_defs(stmt: Statement, imported: Imported) -> None:
    for sub in block_of(stmt):
        if sub.keyword == "lvs_timeouts":
            words, timeouts = sub.args, {}
            names = {"tcp": "tcp", "tcpfin": "tcp_fin", "udp": "udp"}
            for name, value in zip(words[::2], words[1::2]):
                if name not in names:
                    raise ConfError(f"{sub.where}: lvs_timeouts: unknown option {name!r} (tcp, tcpfin, udp)")
                timeouts[names[name]] = _int(Statement([name, value], sub.where), 1, 0, 86400 * 31)
            imported.timeouts = timeouts
        elif sub.keyword == "lvs_sync_daemon":
            _sync(sub, imported)
        else:
            imported.note(sub.where, sub.text, "global_defs: no equivalent (alerting, process and VRRP settings)")


def _sync(stmt: Statement, imported: Imported) -> None:
    """`lvs_sync_daemon IFACE [inst VRRP] [id N] [maxlen N] [port N] [ttl N] [group ADDR]`."""
    words, sync, i = stmt.args[1:], {"interface": "lan0"}, 0
    while i < len(words):
        name, value = words[i], words[i + 1] if i + 1 < len(words) else ""
        if name == "id":
            sync["syncid"] = _int(Statement([name, value], stmt.where), 1, 0, 255)
        elif name in ("maxlen", "port", "ttl"):
            sync[name] = _int(Statement([name, value], stmt.where), 1, 0, 65535)
        elif name == "group":
            sync["group"] = value
        elif name != "inst":
            i += 1  # the VRRP instance, named without `inst` (keepalived's older form)
            continue
        i += 2
    imported.sync = sync
    imported.note(stmt.where, stmt.text, f"sync runs on every director's LAN link (lan0), not on "
                  f"{stmt.args[0] if stmt.args else '?'}, as master and backup at once", approximated=True)


def import_keepalived(path: Path | str, config_id: str | None = None) -> Imported:
    """Read a keepalived.conf (and its includes) into virtual services and notes."""
    config = read_config(path, config_id)
    imported = Imported(source=str(path), kind="keepalived")
    for skipped in config.skipped:
        imported.note(skipped.where, skipped.text, skipped.reason)
    groups: dict[str, list] = {}  # keepalived resolves group names after reading everything
    for stmt in config.statements:
        if stmt.keyword == "virtual_server_group":
            if not stmt.args:
                raise ConfError(f"{stmt.where}: virtual_server_group needs a name")
            groups[stmt.args[0]] = _vsg_entries(stmt, imported)
    peers = 0
    for stmt in config.statements:
        if stmt.keyword == "virtual_server_group":
            continue
        if stmt.keyword == "virtual_server":
            _virtual_server(stmt, groups, imported)
        elif stmt.keyword == "global_defs":
            _global_defs(stmt, imported)
        elif stmt.keyword in VRRP_KEYWORDS:
            imported.note(stmt.where, stmt.text, WHY_VRRP)
            for sub in stmt.block or []:
                if sub.keyword == "unicast_peer":
                    peers = max(peers, len(sub.block or []))
        else:
            imported.note(stmt.where, stmt.text, "not an IPVS setting lvscluster knows")
    if peers:
        imported.directors, imported.directors_why = peers + 1, "one per VRRP peer (unicast_peer) and this one"
    return imported
