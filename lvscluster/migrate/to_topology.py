"""An `Imported` as topology YAML: VIPs and real servers from the source, the network as a skeleton.

Virtual services on one address become one VIP when their real servers are the same (a VIP has
one list of real servers); a fwmark service joins a VIP with the same real servers, or gets a
placeholder VIP. The text is written by hand, not dumped, so its comments and order are stable.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from lvscluster.migrate.services import Dest, Imported, VService
from lvscluster.migrate.skeleton import Skeleton, build_skeleton

HEALTH_ORDER = ("type", "port", "path", "host", "expect_status", "digest", "command", "query", "record", "send",
                "expect", "interval", "timeout", "rise", "fall")
PLACEHOLDER_VIPS = ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1: clearly not a real address
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@-]*$|^\d+\.\d+\.\d+\.\d+$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def scalar(value: Any) -> str:
    """A YAML scalar: plain when unambiguous, else a JSON (double-quoted) string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {scalar(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if _PLAIN.match(text) and text.lower() not in _RESERVED else json.dumps(text)


def node_name(address: str) -> str:
    """`10.0.0.5` -> `rs-10-0-0-5`."""
    return "rs-" + address.replace(".", "-").replace(":", "-")


def _ordered(health: dict) -> dict:
    return {k: health[k] for k in HEALTH_ORDER if k in health}


class _Vip:
    def __init__(self, name: str, address: str, first: VService, placeholder: bool = False):
        self.name, self.address, self.placeholder = name, address, placeholder
        self.services: list[VService] = [first]

    @property
    def dests(self) -> list[Dest]:
        return self.services[0].dests


def _signature(service: VService) -> tuple:
    """What must match for two services to share a VIP: real servers (order, weight, remapped
    port), quorum, sorry server, and the checks when they differ between real servers (a check
    common to all real servers of a service goes on the service)."""
    own_port = lambda d: d.port if service.forward == "nat" and d.port != service.port else None  # noqa: E731
    dests = tuple((d.address, d.weight, own_port(d)) for d in service.dests)
    healths = tuple(json.dumps(d.health, sort_keys=True) for d in service.dests)
    return dests, service.quorum, service.sorry and service.sorry[0], healths if len(set(healths)) > 1 else None


def group_vips(imported: Imported) -> list[_Vip]:
    """Services as VIPs (see the module docstring); what cannot share a VIP is noted and skipped."""
    vips: dict[str, _Vip] = {}
    for service in [s for s in imported.services if s.protocol != "fwmark"]:
        vip = vips.get(service.address)
        if vip is None:
            vips[service.address] = _Vip("vs-" + service.address.replace(".", "-"), service.address, service)
        elif _signature(vip.services[0]) != _signature(service):
            imported.note(service.where, service.origin, f"{service.label}: a VIP has one list of real servers, quorum "
                          f"and sorry server, and {vip.address}'s differ from this one's; not imported")
        else:
            vip.services.append(service)
    marks = 0
    for service in [s for s in imported.services if s.protocol == "fwmark"]:
        match = next((v for v in vips.values() if _signature(v.services[0]) == _signature(service)), None)
        if match is not None:
            match.services.append(service)
            continue
        marks += 1
        address = str(PLACEHOLDER_VIPS.network_address + marks)
        vips[address] = _Vip(f"fwmark-{service.fwmark}", address, service, placeholder=True)
    for vip in vips.values():
        for service in vip.services:
            if service.protocol == "fwmark" and any(d.port for d in service.dests):
                imported.note(service.where, service.origin, "a fwmark service's real servers have no port "
                              "in a topology (they get the packet's own port)")
    return list(vips.values())


def _health_places(vip: _Vip, imported: Imported) -> tuple[dict | None, dict[int, dict | None], bool]:
    """Where checks go: the VIP's (all alike), per service, or per real server (`per_ref`)."""
    per_service: dict[int, dict | None] = {}
    per_ref = False
    for i, service in enumerate(vip.services):
        healths = {json.dumps(d.health, sort_keys=True) for d in service.dests}
        if len(healths) > 1:
            per_ref = True
        per_service[i] = service.dests[0].health if service.dests and len(healths) == 1 else None
        if service.protocol == "fwmark":
            for dest in service.dests:
                if dest.health and dest.health["type"] != "exec" and "port" not in dest.health:
                    imported.note(dest.where, f"checker of {dest.address}", "a fwmark service's check needs "
                                  "connect_port; no check imported")
                    dest.health = None
                    per_service[i] = None
    if per_ref:
        return None, {}, True
    values = {json.dumps(h, sort_keys=True) for h in per_service.values()}
    if len(values) == 1 and len(vip.services) > 1:
        return next(iter(per_service.values())), {}, False
    return None, per_service, False


def _service_line(service: VService, health: dict | None, directors: int) -> str:
    fields: dict[str, Any] = {"protocol": service.protocol}
    if service.protocol == "fwmark":
        fields["fwmark"] = service.fwmark
    else:
        fields["port"] = service.port
    fields["scheduler"] = service.scheduler
    fields["flags"] = service.flags
    if service.persistence:
        fields["persistence"] = service.persistence
        if service.netmask is not None and service.netmask != 32:
            fields["netmask"] = service.netmask
    fields["forward"] = service.forward
    if service.forward == "tun" and service.tunnel:
        fields["tunnel"] = service.tunnel
        if service.tunnel_port:
            fields["tunnel_port"] = service.tunnel_port
    if service.forward == "nat" and directors > 1:
        fields["allow_multiple_directors"] = True
    if health:
        fields["health"] = _ordered(health)
    line = f"      - {scalar(fields)}"
    if service.forward == "nat" and directors > 1:
        line += "   # FILL IN: NAT on several directors needs replies pinned to each one (docs/topology.md)"
    return line


def _vip_lines(vip: _Vip, imported: Imported, directors: int) -> list[str]:
    lines = [f"  - name: {vip.name}"]
    where = ", ".join(sorted({s.where for s in vip.services}))
    if vip.placeholder:
        lines.append(f"    address: {vip.address}   # FILL IN: the VIP your fwmark rules match ({where})")
    else:
        lines.append(f"    address: {vip.address}   # {where}")
    vip_health, per_service, per_ref = _health_places(vip, imported)
    lines.append("    services:")
    for i, service in enumerate(vip.services):
        lines.append(f"      # {service.where}: {service.origin}")
        lines.append(_service_line(service, per_service.get(i), directors))
    first = vip.services[0]
    lines.append("    real_servers:" + (" []" if not first.dests else ""))
    for dest in first.dests:
        ref: dict[str, Any] = {"node": node_name(dest.address), "address": dest.address, "weight": dest.weight}
        if first.forward == "nat" and first.protocol != "fwmark" and dest.port != first.port:
            ref["port"] = dest.port
        if per_ref and dest.health:
            ref["health"] = _ordered(dest.health)
        lines.append(f"      - {scalar(ref)}   # {dest.where}")
    if vip_health:
        lines.append(f"    health: {scalar(_ordered(vip_health))}")
    if first.quorum is not None:
        quorum = first.quorum
        if quorum > len(first.dests):
            imported.note(first.where, f"quorum {quorum}", f"more than the {len(first.dests)} real servers; "
                          f"{max(1, len(first.dests))} used", approximated=True)
            quorum = max(1, len(first.dests))
        lines.append(f"    quorum: {quorum}")
    if first.sorry:
        sorry = {"address": first.sorry[0]}
        if first.sorry[1]:
            sorry["port"] = first.sorry[1]
        lines.append(f"    sorry_server: {scalar(sorry)}")
    return lines


def _network_lines(skeleton: Skeleton, real_servers: list[str]) -> list[str]:
    lines = ["nodes:", "  # FILL IN: the client, router and directors are a skeleton: name and address them as "
             "your network is", "  c1: {role: client}",
             f"  r1: {{role: router, router_id: {skeleton.router_id(0)}, max_paths: 8}}   # FILL IN"]
    for i, name in enumerate(skeleton.directors):
        lines.append(f"  {name}: {{role: director, router_id: {skeleton.router_id(10 + i)}}}   # FILL IN")
    lines += [f"  {name}: {{role: real_server}}" for name in real_servers]
    lines += ["links:", "  # FILL IN: uplinks and the client link are placeholders (100.64.0.0/10); the LANs hold "
              "the real servers' own addresses",
              f"  - {{endpoints: [c1:eth0, r1:eth0], subnet: {skeleton.client_subnet}}}"]
    for i, name in enumerate(skeleton.directors):
        lines.append(f"  - {{endpoints: [r1:{name}, {name}:up0], subnet: {skeleton.uplink(i)}}}")
    for lan in skeleton.lans:
        ends = [f"{{node: {n}, interface: {lan.name}, address: {a}}}" for n, a in lan.infra.items()]
        ends += [f"{{node: {n}, interface: eth0, address: {a}}}" for n, a in sorted(lan.members.items())]
        lines.append(f"  - name: {lan.name}")
        lines.append(f"    subnet: {lan.subnet}   # FILL IN: the real servers' LAN")
        lines.append("    endpoints:")
        lines += [f"      - {e}" for e in ends]
    return lines


def _header(imported: Imported, skeleton: Skeleton) -> list[str]:
    lines = [f"# Imported by `lvscluster import {imported.kind}` from {imported.source}.",
             f"# {imported.kind} describes the IPVS services only: the client, router, directors and links below",
             "# are a SKELETON (lines marked FILL IN); replace them with your network before `lvscluster deploy`.",
             f"# Directors: {len(skeleton.directors)} ({imported.directors_why}).",
             "# Failed real servers are quiesced (weight 0), never removed: established connections live on,",
             "# as with keepalived's inhibit_on_failure."]
    for kind, title in (("unsupported", "Not imported (no equivalent in a topology file):"),
                        ("approximated", "Imported with a different meaning:")):
        notes = [n for n in imported.notes if n.kind == kind]
        if notes:
            lines += ["#", f"# {title}"]
            lines += [f"#   {n.where}: {n.text}: {n.reason}" for n in notes]
    return lines


def topology_name(source: str) -> str:
    """A topology name from a file name: lowercase, at most 12 characters, starting with a letter."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(source).name.lower().removesuffix(".conf")).strip("-_")
    stem = stem.removeprefix("keepalived-").removeprefix("keepalived") or "imported"
    stem = stem.strip("-_") or "imported"
    return (stem if stem[0].isalpha() else "m-" + stem)[:12].rstrip("-_")


def write_topology(imported: Imported, name: str | None = None) -> str:
    """The topology text for `imported` (notes about the layout are added to it first)."""
    vips = group_vips(imported)
    bodies = [_vip_lines(v, imported, imported.directors) for v in vips]
    real_servers: dict[str, str] = {}
    nat: set[str] = set()
    for vip in vips:
        for service in vip.services:
            for dest in service.dests:
                real_servers[node_name(dest.address)] = dest.address
                if service.forward == "nat":
                    nat.add(node_name(dest.address))
    sorry = [v.services[0].sorry[0] for v in vips if v.services[0].sorry]
    skeleton = build_skeleton(real_servers, nat, [v.address for v in vips], sorry, imported.directors)
    for problem in skeleton.problems:
        imported.note(imported.source, "(real server addresses)", problem)
    lines = _header(imported, skeleton) + [f"name: {name or topology_name(imported.source)}"]
    defaults = []
    if imported.sync and skeleton.lans:
        defaults.append(f"  sync: {scalar(imported.sync)}")
    if imported.timeouts:
        defaults.append(f"  timeouts: {scalar(imported.timeouts)}")
    if defaults:
        lines += ["defaults:", *defaults]
    lines.append("vips:" + ("" if vips else " []"))
    for body in bodies:
        lines += body
    lines += _network_lines(skeleton, sorted(real_servers))
    return "\n".join(lines) + "\n"
