"""Unit tests (no root) for IPVS message encoding: the fast codec against pyroute2's own.

Proves that `codec.Schema` produces the bytes pyroute2's `IpvsMessage` encoder produces and
decodes what it encodes; that the pyroute2 0.9.7 fixes are in the schema (be16 TUN_PORT,
daemon and timeout attributes, per-family NETMASK); and that flags carry a mask.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.generic import ipvs as pr2

from lvscluster.netlink import ipvs_messages as m
from lvscluster.state import IpvsDest, IpvsService, IpvsTimeouts, SyncDaemon

FAMILY_ID = 0x1E


def pyroute2_bytes(cmd, attrs, seq=7):
    """Encode with pyroute2's generic encoder (our extended IpvsMessage class)."""
    msg = m.IpvsMessage()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg["header"]["type"] = FAMILY_ID
    msg["header"]["flags"] = 5
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def ours(cmd, attrs, seq=7):
    return m.encode_request(cmd, m.SCHEMA.encode(attrs), FAMILY_ID, seq)


SVC = IpvsService(protocol="tcp", address="10.99.0.10", port=80, scheduler="mh", flags=("mh-fallback", "mh-port"))


def test_service_request_matches_pyroute2_bytes():
    attrs = [("IPVS_CMD_ATTR_SERVICE", {"attrs": m.service_attrs(SVC)})]
    assert ours(m.CMD_NEW_SERVICE, attrs) == pyroute2_bytes(m.CMD_NEW_SERVICE, attrs)


def test_flags_carry_value_and_mask():
    attrs = dict(m.service_attrs(SVC.model_copy(update={"persistence": 300})))
    assert attrs["IPVS_SVC_ATTR_FLAGS"] == {"flags": 0x1 | 0x8 | 0x10, "mask": 0x3D}
    # the mask never includes HASHED (0x2), which is the kernel's own bit
    assert not attrs["IPVS_SVC_ATTR_FLAGS"]["mask"] & 0x2
    plain = dict(m.service_attrs(SVC.model_copy(update={"flags": ()})))
    assert plain["IPVS_SVC_ATTR_FLAGS"] == {"flags": 0, "mask": 0x3D}  # clearing needs the mask too


def test_tun_port_is_big_endian_on_the_wire():
    dest = IpvsDest(address="10.2.0.5", port=80, forward="tun", tun_type="gue", tun_port=6080)
    body = m.SCHEMA.encode([("IPVS_CMD_ATTR_DEST", {"attrs": m.dest_attrs(dest)})])
    assert struct.pack(">H", 6080) + b"\0\0" in body
    # pyroute2 0.9.7's own map types it uint16 (host order): the bug we fix
    assert dict(pr2.ipvsmsg.dest.nla_map)["IPVS_DEST_ATTR_TUN_PORT"] == "uint16"
    assert dict(m.IpvsMessage.dest.nla_map)["IPVS_DEST_ATTR_TUN_PORT"] == "be16"
    cmd, decoded = m.decode_message(m.encode_request(m.CMD_NEW_DEST, body, FAMILY_ID, 1))
    assert m.dest_from(decoded["dest"]) == dest


def test_netmask_per_family():
    assert m.encode_netmask(4, 24) == bytes([255, 255, 255, 0])
    assert m.encode_netmask(6, 64) == struct.pack("=I", 64)
    assert m.decode_netmask(4, bytes([255, 255, 255, 0])) == 24
    assert m.decode_netmask(6, struct.pack("=I", 64)) == 64


def test_daemon_and_timeouts_are_typed():
    assert dict(pr2.ipvsmsg.nla_map)["IPVS_CMD_ATTR_DAEMON"] == "hex"  # pyroute2's gap
    daemon = SyncDaemon(state="backup", interface="eth1", syncid=9, group="239.1.2.3", port=8900, ttl=2, maxlen=1400)
    attrs = [("IPVS_CMD_ATTR_DAEMON", {"attrs": m.daemon_attrs(daemon)})]
    data = ours(m.CMD_NEW_DAEMON, attrs)
    assert data == pyroute2_bytes(m.CMD_NEW_DAEMON, attrs)
    cmd, decoded = m.decode_message(data)
    assert cmd == m.CMD_NEW_DAEMON and m.daemon_from(decoded["daemon"]) == daemon
    t = [*m.timeout_attrs(IpvsTimeouts(tcp=100, udp=30))]
    assert t == [("IPVS_CMD_ATTR_TIMEOUT_TCP", 100), ("IPVS_CMD_ATTR_TIMEOUT_UDP", 30)]
    assert m.decode_message(ours(m.CMD_SET_CONFIG, t))[1] == {"timeout_tcp": 100, "timeout_udp": 30}


def test_pyroute2_decodes_our_bytes():
    dest = IpvsDest(address="2001:db8::5", port=443, forward="nat", weight=7, u_threshold=10, l_threshold=2)
    svc6 = IpvsService(protocol="udp", address="2001:db8::1", port=53, family=6, scheduler="sh", persistence=60, netmask=64)
    data = m.encode_request(m.CMD_NEW_DEST, m.payload(service=m.service_attrs(svc6), dest=m.dest_attrs(dest)), FAMILY_ID, 3)
    msg = m.IpvsMessage(data)
    msg.decode()
    assert msg.get_nested("IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_WEIGHT") == 7
    assert msg.get_nested("IPVS_CMD_ATTR_SERVICE", "IPVS_SVC_ATTR_SCHED_NAME") == "sh"
    assert msg.get_nested("IPVS_CMD_ATTR_SERVICE", "IPVS_SVC_ATTR_NETMASK") == struct.pack("=I", 64)


def test_fwmark_service_key():
    fw = IpvsService(protocol="fwmark", fwmark=5, family=6, scheduler="wlc")
    assert m.service_key_attrs(fw) == [("IPVS_SVC_ATTR_AF", 10), ("IPVS_SVC_ATTR_FWMARK", 5)]
    assert fw.key == "fwmark6/5"


def test_flag_names_follow_scheduler():
    assert m.flag_names(0x18, "sh") == ("sh-fallback", "sh-port")
    assert m.flag_names(0x18 | 0x2, "mh") == ("mh-fallback", "mh-port")
    assert m.flag_names(0x4, "wlc") == ("one-packet",)


octet = st.integers(1, 254)
ipv4 = st.builds(lambda a, b, c: f"10.{a}.{b}.{c}", octet, octet, octet)


@given(
    address=ipv4,
    port=st.integers(0, 65535),
    weight=st.integers(0, 65535),
    forward=st.sampled_from(["dr", "nat", "tun"]),
    tun=st.sampled_from(["ipip", "gue", "gre"]),
    tun_port=st.integers(1, 65535),
    u=st.integers(0, 1000),
)
def test_dest_roundtrip_and_pyroute2_equality(address, port, weight, forward, tun, tun_port, u):
    kw = {}
    if forward == "tun" and tun != "ipip":
        kw["tun_type"] = tun
        if tun == "gue":
            kw["tun_port"] = tun_port
    dest = IpvsDest(address=address, port=port, weight=weight, forward=forward, u_threshold=u, **kw)
    attrs = [
        ("IPVS_CMD_ATTR_SERVICE", {"attrs": m.service_key_attrs(SVC)}),
        ("IPVS_CMD_ATTR_DEST", {"attrs": m.dest_attrs(dest)}),
    ]
    data = ours(m.CMD_NEW_DEST, attrs)
    assert data == pyroute2_bytes(m.CMD_NEW_DEST, attrs)
    assert m.dest_from(m.decode_message(data)[1]["dest"]) == dest


@pytest.mark.parametrize("seq", [1, 2**32 - 1])
def test_header_fields(seq):
    data = m.encode_request(m.CMD_FLUSH, b"", FAMILY_ID, seq, flags=1, pid=0)
    assert struct.unpack("=IHHII", data[:16]) == (20, FAMILY_ID, 1, seq, 0)
    assert data[16:18] == bytes([m.CMD_FLUSH, 1])


def test_layout_decoder_matches_walking_decoder():
    """The memoised-layout fast path gives the generic decoder's result, and falls back on change."""
    from lvscluster.netlink.codec import LayoutDecoder

    svc = m.service_key_attrs(SVC)
    stats = {"attrs": [(f"IPVS_STATS_ATTR_{n.upper()}", i) for i, n in enumerate(m.STAT_FIELDS, 1)]}
    decoder = LayoutDecoder(m.SCHEMA, m.NO_STATS)
    for i, dest in enumerate([
        IpvsDest(address="10.2.0.1", port=80, weight=3),
        IpvsDest(address="10.2.0.2", port=8080, weight=70000),  # same layout, other values
        IpvsDest(address="10.2.0.3", port=80, forward="tun", tun_type="gue", tun_port=6080),  # other layout
        IpvsDest(address="10.2.0.4", port=443, forward="nat"),
    ]):
        dest_attrs = m.dest_attrs(dest) + [("IPVS_DEST_ATTR_ACTIVE_CONNS", i), ("IPVS_DEST_ATTR_STATS", stats)]
        data = m.encode_request(m.CMD_NEW_DEST, m.payload(service=svc, dest=dest_attrs), FAMILY_ID, i)
        fast = m.decode_message(data, decoder=decoder)[1]
        slow = m.decode_message(data, skip=m.NO_STATS)[1]
        assert fast == slow
        assert "stats" not in fast["dest"] and fast["dest"]["active_conns"] == i
        assert m.dest_from(fast["dest"]) == dest
    full = m.decode_message(data)[1]
    assert full["dest"]["stats"]["outbps"] == 10
    # same length, different attribute types: the header check refuses the cached layout
    a = m.SCHEMA.encode([("IPVS_CMD_ATTR_TIMEOUT_TCP", 5)])
    b = m.SCHEMA.encode([("IPVS_CMD_ATTR_TIMEOUT_UDP", 5)])
    top = LayoutDecoder(m.SCHEMA)
    assert top.decode(a, 0, len(a)) == {"timeout_tcp": 5}
    assert top.decode(b, 0, len(b)) == {"timeout_udp": 5}
