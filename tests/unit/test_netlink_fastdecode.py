"""The observe fast path (`netlink.fastdecode`) equals the general, validated path.

Dumps are built here the way the 6.1 kernel writes them (ip_vs_genl_fill_dest/_service:
16-byte addresses, every attribute, STATS and STATS64, several replies per datagram), then
decoded both ways: `DestDumpDecoder` / `service_from_kernel` against `LayoutDecoder` +
`dest_from` / `service_from` (pydantic validation). Equal values, and equal models down to
`model_fields_set`, `repr` and JSON. No root or IPVS needed.
"""

from __future__ import annotations

import socket
import struct

import pytest

from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.codec import LayoutDecoder
from lvscluster.netlink.fastdecode import DestDumpDecoder, service_from_kernel, service_with_dests, trusted_model
from lvscluster.state import IpvsDest, IpvsService

FAMILY = 0x1A
_A = struct.Struct("=HH")
DEST = m.SCHEMA.by_name["IPVS_CMD_ATTR_DEST"][2]
SERVICE = m.SCHEMA.by_name["IPVS_CMD_ATTR_SERVICE"][2]


def addr16(text: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    return raw + b"\0" * (16 - len(raw))


def dest_reply(d: IpvsDest, seq: int, conns=(3, 4, 5), fwd: int | None = None, tun_port: int | None = None) -> bytes:
    """One GET_DEST reply as the kernel fills it (attribute order of ip_vs_genl_fill_dest)."""
    stats32 = DEST.by_name["IPVS_DEST_ATTR_STATS"][2].encode([(f"IPVS_STATS_ATTR_{n.upper()}", i + 7) for i, n in enumerate(m.STAT_FIELDS)])
    stats64 = b"".join(_A.pack(12, i + 1) + struct.pack("=Q", 2**40 + i) for i in range(len(m.STAT_FIELDS)))
    body = _A.pack(20, DEST.by_name["IPVS_DEST_ATTR_ADDR"][0]) + addr16(d.address) + DEST.encode([
        ("IPVS_DEST_ATTR_PORT", d.port),
        ("IPVS_DEST_ATTR_FWD_METHOD", m.FORWARD[d.forward] if fwd is None else fwd),
        ("IPVS_DEST_ATTR_WEIGHT", d.weight),
        ("IPVS_DEST_ATTR_TUN_TYPE", m.TUN_TYPES[d.tun_type or "ipip"]),
        ("IPVS_DEST_ATTR_TUN_PORT", d.tun_port or tun_port or 0),
        ("IPVS_DEST_ATTR_TUN_FLAGS", d.tun_flags or 0),
        ("IPVS_DEST_ATTR_U_THRESH", d.u_threshold),
        ("IPVS_DEST_ATTR_L_THRESH", d.l_threshold),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", conns[0]),
        ("IPVS_DEST_ATTR_INACT_CONNS", conns[1]),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", conns[2]),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET6 if ":" in d.address else socket.AF_INET),
    ])
    body += _A.pack(4 + len(stats32), DEST.by_name["IPVS_DEST_ATTR_STATS"][0]) + stats32
    body += _A.pack(4 + len(stats64), DEST.by_name["IPVS_DEST_ATTR_STATS64"][0]) + stats64
    return m.encode_request(m.CMD_NEW_DEST, _A.pack(4 + len(body), 2) + body, FAMILY, seq, 2)


def runs_of(datagram: bytes, grouped: bool = True):
    """(datagram, offset, count, stride) runs as GenlSocket.dump_runs returns them."""
    offsets, off = [], 0
    while off < len(datagram):
        offsets.append(off)
        off += (struct.unpack_from("=I", datagram, off)[0] + 3) & ~3
    length = struct.unpack_from("=I", datagram, 0)[0]
    if grouped and len(datagram) == len(offsets) * ((length + 3) & ~3):
        return [(datagram, 0, len(offsets), (length + 3) & ~3)]
    return [(datagram, o, 1, (struct.unpack_from("=I", datagram, o)[0] + 3) & ~3) for o in offsets]


def validated(datagram: bytes, af: int) -> list[IpvsDest]:
    decoder = LayoutDecoder(m.SCHEMA, m.NO_STATS)
    return [m.dest_from(m.decode_message(d, o, decoder=decoder)[1]["dest"], af) for d, o, _n, _s in runs_of(datagram, grouped=False)]


def same_models(fast, slow) -> None:
    assert fast == slow
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b)
        assert list(a.__dict__.items()) == list(b.__dict__.items())
        assert a.model_fields_set == b.model_fields_set and type(a.__pydantic_fields_set__) is set
        assert (a.__pydantic_extra__, a.__pydantic_private__) == (b.__pydantic_extra__, b.__pydantic_private__)
        assert repr(a) == repr(b) and a.model_dump_json() == b.model_dump_json() and hash(a) == hash(b)
        assert a.model_copy(update={"weight": 9}) == b.model_copy(update={"weight": 9})


REALISTIC = [IpvsDest(address=f"10.{2 + s}.{d}.{s + 1}", port=80 + d % 3, weight=d % 5, u_threshold=d, l_threshold=d // 2) for s in range(3) for d in range(16)]
MIXED = [
    IpvsDest(address="10.2.0.1", port=80, weight=3),
    IpvsDest(address="10.2.0.2", port=8080, weight=70000, forward="nat"),
    IpvsDest(address="10.2.0.3", port=443, forward="tun", tun_type="gue", tun_port=6080, tun_flags=1),
    IpvsDest(address="10.2.0.4", port=65535, forward="tun"),
    IpvsDest(address="10.2.0.5", port=1, forward="tun", tun_type="gre"),
    IpvsDest(address="2001:db8::5", port=80, weight=0),
    IpvsDest(address="10.2.0.6", port=0),
]


@pytest.mark.parametrize("dests", [REALISTIC, MIXED, [MIXED[-2]] * 3, MIXED[:1]], ids=["realistic", "mixed", "ipv6", "single"])
@pytest.mark.parametrize("grouped", [True, False])
def test_fast_dests_equal_validated_path(dests, grouped):
    datagram = b"".join(dest_reply(d, 11) for d in dests)
    fast = DestDumpDecoder().decode(runs_of(datagram, grouped), socket.AF_INET)
    same_models(fast, validated(datagram, socket.AF_INET))
    assert fast == dests


def test_fast_dests_match_kernel_oddities():
    """fwd_method 1 (local) reads as dr, unknown bits are masked; a decoder is reused across dumps."""
    decoder = DestDumpDecoder()
    odd = b"".join(dest_reply(IpvsDest(address=f"10.2.0.{i}"), 1, fwd=f) for i, f in enumerate((1, 3, 0, 8 + 3, 7), 1))
    same_models(decoder.decode(runs_of(odd), socket.AF_INET), validated(odd, socket.AF_INET))
    again = b"".join(dest_reply(d, 2) for d in REALISTIC[:5])  # same (length, count): compiled run reused
    same_models(decoder.decode(runs_of(again), socket.AF_INET), validated(again, socket.AF_INET))


def test_layout_change_at_same_length_falls_back():
    """Same reply length, different attribute types: the header check refuses the compiled run."""
    decoder = DestDumpDecoder()
    first = b"".join(dest_reply(d, 1) for d in REALISTIC[:4])
    decoder.decode(runs_of(first), socket.AF_INET)
    swapped = bytearray(first)
    # turn the first reply's INACT_CONNS attribute into an unknown type: still decodable, other layout
    at = bytes(swapped).index(_A.pack(8, DEST.by_name["IPVS_DEST_ATTR_INACT_CONNS"][0]))
    swapped[at:at + 4] = _A.pack(8, 0x3FF0)
    swapped = bytes(swapped)
    same_models(decoder.decode(runs_of(swapped), socket.AF_INET), validated(swapped, socket.AF_INET))


def service_reply(svc: IpvsService) -> bytes:
    body = b""
    for name, value in m.service_attrs(svc):
        if name == "IPVS_SVC_ATTR_ADDR":
            body += _A.pack(20, SERVICE.by_name[name][0]) + addr16(value)
        else:
            body += SERVICE.encode([(name, value)])
    return m.encode_request(m.CMD_NEW_SERVICE, _A.pack(4 + len(body), 1) + body, FAMILY, 1, 2)


@pytest.mark.parametrize("svc", [
    IpvsService(protocol="tcp", address="10.99.0.10", port=80, scheduler="mh", flags=("mh-port",)),
    IpvsService(protocol="udp", address="2001:db8::10", port=53, family=6, scheduler="sh", flags=("sh-fallback",), persistence=300, netmask=64),
    IpvsService(protocol="sctp", address="10.99.0.11", port=9, scheduler="wlc", persistence=60, netmask=24),
    IpvsService(protocol="fwmark", fwmark=5, scheduler="mh"),
    IpvsService(protocol="fwmark", fwmark=6, family=6, scheduler="rr", flags=("one-packet",)),
])
def test_fast_service_equals_validated_path(svc):
    raw = m.decode_message(service_reply(svc), skip=m.NO_STATS)[1]["service"]
    dests = tuple(REALISTIC[:3])
    same_models([service_from_kernel(raw, None)], [m.service_from(raw)])
    same_models([service_from_kernel(raw, dests)], [m.service_from(raw).model_copy(update={"dests": dests})])
    same_models([service_with_dests(m.service_from(raw), dests)], [m.service_from(raw).model_copy(update={"dests": dests})])
    assert service_from_kernel(raw, dests) == svc.model_copy(update={"dests": dests})


def test_trusted_model_equals_validation():
    fields = {"address": "10.2.0.1", "port": 80, "forward": "dr", "weight": 2, "u_threshold": 0, "l_threshold": 0}
    full = dict(fields, tun_type=None, tun_port=None, tun_flags=None)
    same_models([trusted_model(IpvsDest, full, set(fields))], [IpvsDest.model_validate(fields)])
