"""`ipvsadm -S -n` rules: read a dump into virtual services, and print a desired IPVS state as one.

The printed rules follow ipvsadm 1.31's save format and order exactly (services sorted by
fwmark, family, protocol, address, port; dests by address, port; its C comparisons included),
so a dump of a director and `lvscluster export ipvsadm` compare with plain `diff`.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
import socket
from pathlib import Path

from lvscluster.migrate.confparse import ConfError
from lvscluster.migrate.services import Dest, Imported, VService
from lvscluster.state import IpvsDest, IpvsService, IpvsState

PROTO_OPTION = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
OPTION_PROTO = {"-t": "tcp", "--tcp-service": "tcp", "-u": "udp", "--udp-service": "udp",
                "--sctp-service": "sctp", "-f": "fwmark", "--fwmark-service": "fwmark"}
PROTO_NUMBER = {"tcp": 6, "udp": 17, "sctp": 132, "fwmark": 0}
FORWARD_OPTION = {"dr": "-g", "tun": "-i", "nat": "-m"}
OPTION_FORWARD = {"-g": "dr", "--gatewaying": "dr", "-i": "tun", "--ipip": "tun", "-m": "nat", "--masquerading": "nat"}
TUN_CSUM = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")
DEFAULT_PERSISTENCE = 300  # ipvsadm's `-p` without a value


def _c_int(value: int) -> int:
    """A C `int` from an unsigned 32-bit difference, as ipvsadm's comparisons compute it."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _addr_cmp(a: str | None, b: str | None) -> int:
    words = lambda s: [int(ipaddress.ip_address(s or "0.0.0.0")) >> (32 * i) & 0xFFFFFFFF  # noqa: E731
                       for i in reversed(range(4 if ":" in (s or "") else 1))]
    for x, y in zip(words(a), words(b)):
        if r := _c_int(x - y):
            return r
    return 0


def _service_cmp(s1: IpvsService, s2: IpvsService) -> int:
    af = {4: 2, 6: 10}
    return (_c_int(s1.fwmark - s2.fwmark) or af[s1.family] - af[s2.family]
            or PROTO_NUMBER[s1.protocol] - PROTO_NUMBER[s2.protocol] or _addr_cmp(s1.address, s2.address)
            or s1.port - s2.port)


def _dest_cmp(d1: IpvsDest, d2: IpvsDest) -> int:
    return _addr_cmp(d1.address, d2.address) or d1.port - d2.port


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_option(svc: IpvsService) -> str:
    """`-t 10.0.0.1:80`, `-u ...`, `--sctp-service ...`, `-f 5` or `-f 5 -6`."""
    if svc.protocol == "fwmark":
        return f"-f {svc.fwmark}" + (" -6" if svc.family == 6 else "")
    return f"{PROTO_OPTION[svc.protocol]} {_hostport(svc.address or '', svc.port)}"


def _sched_flags(svc: IpvsService) -> str:
    fallback = any(f.endswith("-fallback") for f in svc.flags)
    port = any(f.endswith("-port") for f in svc.flags)
    names = (f"{svc.scheduler}-fallback", f"{svc.scheduler}-port") if svc.scheduler in ("sh", "mh") else ("flag-1", "flag-2")
    return ",".join(n for n, on in zip(names, (fallback, port)) if on)


def service_rule(svc: IpvsService) -> str:
    """The `-A` line ipvsadm -S prints for a service."""
    line = f"-A {service_option(svc)} -s {svc.scheduler}"
    if svc.persistence:
        line += f" -p {svc.persistence}"
        full = 128 if svc.family == 6 else 32
        if svc.netmask != full:
            mask = svc.netmask if svc.family == 6 else ipaddress.IPv4Network(f"0.0.0.0/{svc.netmask}").netmask
            line += f" -M {mask}"
    if "one-packet" in svc.flags:
        line += " -o"
    flags = _sched_flags(svc)
    return line + (f" -b {flags}" if flags else "")


def dest_rule(svc: IpvsService, dest: IpvsDest) -> str:
    """The `-a` line ipvsadm -S prints for a dest (1.31 adds the tunnel type of every tun dest)."""
    line = f"-a {service_option(svc)} -r {_hostport(dest.address, dest.port)} {FORWARD_OPTION[dest.forward]} -w {dest.weight}"
    if dest.forward != "tun":
        return line
    kind, csum = dest.tun_type or "ipip", TUN_CSUM[dest.tun_flags or 0]
    if kind == "gue":
        return f"{line} --tun-type gue --tun-port {dest.tun_port} {csum}"
    return f"{line} --tun-type gre {csum}" if kind == "gre" else f"{line} --tun-type ipip"


def save_rules(state: IpvsState, sort: bool = True) -> list[str]:
    """`ipvsadm -S -n` (or with `sort=False`, `-S -n --nosort`) of this state, plus what -S leaves out
    (timeouts, sync daemons) as `#` comments, which `ipvsadm -R` skips."""
    services = sorted(state.services, key=functools.cmp_to_key(_service_cmp)) if sort else list(state.services)
    lines = []
    for svc in services:
        lines.append(service_rule(svc))
        dests = sorted(svc.dests, key=functools.cmp_to_key(_dest_cmp)) if sort else svc.dests
        lines += [dest_rule(svc, d) for d in dests]
    t = state.timeouts
    if t.tcp or t.tcp_fin or t.udp:
        lines.append(f"# --set {t.tcp} {t.tcp_fin} {t.udp}   (not saved by ipvsadm -S; 0 keeps the kernel's value)")
    for daemon in state.daemons:
        lines.append(f"# --start-daemon {daemon.state} --mcast-interface {daemon.interface} --syncid {daemon.syncid}"
                     f" --mcast-group {daemon.group} --mcast-port {daemon.port} --mcast-ttl {daemon.ttl}"
                     + (f" --sync-maxlen {daemon.maxlen}" if daemon.maxlen else "") + "   (not saved by ipvsadm -S)")
    return lines


def _port(token: str, protocol: str, where: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 65535:
        return int(token)
    try:
        return socket.getservbyname(token, "udp" if protocol == "udp" else "tcp")
    except OSError:
        raise ConfError(f"{where}: port {token!r} is neither a number nor a service in /etc/services") from None


def _split(token: str, protocol: str, where: str) -> tuple[str, int]:
    """`10.0.0.1:80`, `[2001:db8::1]:80` or `host:http` as (address, port); host names are refused."""
    if token.startswith("["):
        host, _, port = token[1:].partition("]:")
    else:
        host, _, port = token.rpartition(":") if ":" in token else (token, "", "0")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfError(f"{where}: {host!r} is a host name: save with `ipvsadm -S -n` so addresses are numeric "
                        "(names are not looked up)") from None
    return address, _port(port or "0", protocol, where)


def _parse_line(words: list[str], where: str, imported: Imported, services: dict) -> None:
    command, opts, i = words[0], {}, 1
    while i < len(words):
        word = words[i]
        takes_value = word not in ("-g", "-i", "-m", "-o", "-6", "--ops", "--tun-nocsum", "--tun-csum",
                                   "--tun-remcsum", "--gatewaying", "--ipip", "--masquerading", "--ipv6")
        if word in ("-p", "--persistent") and (i + 1 == len(words) or not words[i + 1].isdigit()):
            takes_value, opts[word] = False, str(DEFAULT_PERSISTENCE)
        if takes_value:
            if i + 1 == len(words):
                raise ConfError(f"{where}: {word} needs a value")
            opts[word] = words[i + 1]
            i += 2
        else:
            opts.setdefault(word, "")
            i += 1
    kinds = [o for o in opts if o in OPTION_PROTO]
    if len(kinds) != 1:
        raise ConfError(f"{where}: {' '.join(words)}: expected one of -t, -u, --sctp-service, -f")
    protocol = OPTION_PROTO[kinds[0]]
    if protocol == "fwmark":
        if "-6" in opts or "--ipv6" in opts:
            imported.note(where, " ".join(words), "IPv6 fwmark services need IPv6 VIPs, which lvscluster refuses")
            return
        key: tuple = ("fwmark", int(opts[kinds[0]]))
    else:
        key = (protocol, *_split(opts[kinds[0]], protocol, where))
    if command == "-A":
        _add_service(key, opts, where, words, imported, services)
    elif key not in services:
        raise ConfError(f"{where}: -a before its service's -A line")
    elif services[key] is not None:
        _add_dest(services[key], opts, where, words, imported)


def _add_service(key: tuple, opts: dict, where: str, words: list[str], imported: Imported, services: dict) -> None:
    protocol = key[0]
    if protocol != "fwmark" and ipaddress.ip_address(key[1]).version == 6:
        imported.note(where, " ".join(words), "IPv6 VIPs are refused for now (they need OSPFv3)")
        services[key] = None
        return
    scheduler = opts.get("-s", opts.get("--scheduler", "wlc"))
    flags = []
    for flag in filter(None, opts.get("-b", opts.get("--sched-flags", "")).split(",")):
        name = {"flag-1": f"{scheduler}-fallback", "flag-2": f"{scheduler}-port"}.get(flag, flag)
        if name not in (f"{scheduler}-fallback", f"{scheduler}-port"):
            imported.note(where, " ".join(words), f"scheduler flag {flag} means nothing to {scheduler}")
        else:
            flags.append(name)
    if "-o" in opts or "--ops" in opts:
        flags.append("one-packet")
    for option in ("--pe",):
        if option in opts:
            imported.note(where, " ".join(words), "persistence engines are not supported")
    persistence = int(opts.get("-p", opts.get("--persistent", "0")))
    mask = opts.get("-M", opts.get("--netmask"))
    netmask = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen if mask else None
    service = VService(protocol=protocol, address=None if protocol == "fwmark" else key[1],
                       port=0 if protocol == "fwmark" else key[2], fwmark=key[1] if protocol == "fwmark" else 0,
                       scheduler=scheduler, flags=sorted(flags), persistence=persistence, netmask=netmask,
                       forward="", where=where, origin=" ".join(words))
    imported.services.append(service)
    services[key] = service


def _add_dest(service: VService, opts: dict, where: str, words: list[str], imported: Imported) -> None:
    address, port = _split(opts.get("-r", opts.get("--real-server", "")), service.protocol, where)
    forward = next((OPTION_FORWARD[o] for o in opts if o in OPTION_FORWARD), "dr")
    if not service.forward:
        service.forward = forward
        service.tunnel = opts.get("--tun-type") if forward == "tun" else None
        service.tunnel_port = int(opts["--tun-port"]) if "--tun-port" in opts else None
    elif forward != service.forward:
        imported.note(where, " ".join(words), f"one forwarding method per service: {service.forward} is used")
    for option in ("-x", "--u-threshold", "-y", "--l-threshold", "--tun-csum", "--tun-remcsum"):
        if option in opts:
            imported.note(where, " ".join(words), f"{option} is not in the topology")
    service.dests.append(Dest(address, port, int(opts.get("-w", opts.get("--weight", "1"))), where=where))


def import_ipvsadm(path: Path | str) -> Imported:
    """Read an `ipvsadm -S -n` dump (or `ipvsadm-save`, with `ipvsadm` at the start of lines)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfError(f"{path}: cannot read: {exc.strerror or exc}") from None
    imported = Imported(source=str(path), kind="ipvsadm", directors_why="an ipvsadm dump does not name its directors")
    services: dict = {}
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        line = raw.split("#", 1)[0].strip()
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfError(f"{where}: {exc}") from None
        if words and words[0] == "ipvsadm":
            words = words[1:]
        if not words or words[0] in ("-C", "--clear"):
            continue
        if words[0] not in ("-A", "-a", "--add-service", "--add-server"):
            imported.note(where, line, "only -A and -a lines are imported")
            continue
        words[0] = {"--add-service": "-A", "--add-server": "-a"}.get(words[0], words[0])
        _parse_line(words, where, imported, services)
    for service in imported.services:
        service.forward = service.forward or "dr"
        service.dests.reverse()  # kernel order is newest first; the topology lists insertion order
    imported.note(str(path), "(whole dump)", "an ipvsadm dump has no health checks: add `health` to each VIP",
                  approximated=True)
    return imported
