"""The observe hot path: GET_DEST dump replies straight to `IpvsDest`, many per `struct` call.

Observing 1000 services x 16 dests turns 16,000 dumped dests into models. The general path
(`LayoutDecoder` to a dict, then `ipvs_messages.dest_from`, which validates with pydantic)
costs ~20 us per dest natively and 50-80x that under the test VM's software emulation.
`DestDumpDecoder` gives the same `IpvsDest` values for a fraction of that:

* a run of equal-length replies (one datagram of a dump, see `GenlSocket.dump_runs`) is
  unpacked with ONE `struct` call compiled for that (length, count), then every attribute
  header (length and type, in every message) is checked against the compiled layout in
  one tuple comparison, and the dest fields of all messages are picked with one
  `itemgetter`;
* the models are built with `trusted_model` (no validation): for kernel-produced values
  of the shapes checked here, validation cannot change or reject anything (ints stay ints,
  forward and tunnel names come from fixed tables), so the result equals
  `IpvsDest.model_validate` of the same fields, down to `model_fields_set`.

Anything unusual takes the general, validated path for that message: a layout that lacks
one of the key attributes or has an unexpected size, a header mismatch, a TUN dest (its
optional tunnel fields), an unknown pydantic internals shape. Unit tests compare both paths
on kernel-shaped dumps.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from itertools import repeat
from operator import itemgetter
from typing import Any

from pydantic import BaseModel

from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.codec import LayoutDecoder, _Layout, address_from_bytes
from lvscluster.state import IpvsDest, IpvsService

_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_ntop = socket.inet_ntop
_LITTLE = struct.pack("=H", 1) == b"\x01\x00"


def _slot_setters():
    """Setters of BaseModel's four instance slots, or None if pydantic changed its layout."""
    try:
        slots = BaseModel.__dict__
        names = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
        return tuple(slots[name].__set__ for name in names)
    except (KeyError, AttributeError):
        return None


_SETTERS = _slot_setters()
_new = object.__new__


def trusted_model(cls: type[BaseModel], values: dict[str, Any], fields_set: set[str]):
    """An instance of `cls` from already-valid values, without validation.

    `values` must hold every field, in the model's field order, each value exactly what
    validation would produce; `fields_set` the names validation would record as set. The
    result is then indistinguishable from `cls.model_validate(...)` (same `__dict__`,
    `model_fields_set`, no extra, no private state): `==`, `hash`, `repr` and JSON agree.
    Models with private attributes or extra fields are not supported (validated instead).
    """
    if _SETTERS is None or cls.__private_attributes__ or cls.model_config.get("extra") == "allow":
        return cls.model_validate({k: values[k] for k in fields_set})
    obj = _new(cls)
    set_dict, set_fields, set_extra, set_private = _SETTERS
    set_dict(obj, values)
    set_fields(obj, fields_set)
    set_extra(obj, None)
    set_private(obj, None)
    return obj


def service_with_dests(svc: IpvsService, dests: tuple[IpvsDest, ...]) -> IpvsService:
    """`svc.model_copy(update={"dests": dests})` without pydantic's Python-level copy."""
    if _SETTERS is None:
        return svc.model_copy(update={"dests": dests})
    values = dict(svc.__dict__)
    values["dests"] = dests
    return trusted_model(IpvsService, values, svc.__pydantic_fields_set__ | {"dests"})


_SERVICE_FIELDS = ("protocol", "address", "port", "fwmark", "family", "scheduler", "flags", "persistence", "netmask", "dests")
_SERVICE_OK = _SETTERS is not None and tuple(IpvsService.model_fields) == _SERVICE_FIELDS and not IpvsService.__private_attributes__


def service_from_kernel(raw: dict[str, Any], dests: tuple[IpvsDest, ...] | None) -> IpvsService:
    """`service_from(raw)`, with `dests` as by `model_copy(update=...)` when given, unvalidated.

    Every value is produced exactly as `ipvs_messages.service_from` produces it (same
    helpers, same defaults), so validation could not change it.
    """
    if not _SERVICE_OK:
        svc = m.service_from(raw)
        return svc if dests is None else svc.model_copy(update={"dests": dests})
    af = raw.get("af", socket.AF_INET)
    family = 6 if af == socket.AF_INET6 else 4
    sched = raw.get("sched_name", "")
    flags = raw.get("flags", {}).get("flags", 0)
    raw_mask = raw.get("netmask")
    values = {
        "protocol": "fwmark",
        "address": None,
        "port": 0,
        "fwmark": 0,
        "family": family,
        "scheduler": sched,
        "flags": m.flag_names(flags, sched),
        "persistence": raw.get("timeout", 0) if flags & m.FLAG_PERSISTENT else 0,
        "netmask": m.decode_netmask(family, raw_mask) if raw_mask else (128 if family == 6 else 32),
        "dests": (),
    }
    if raw.get("fwmark"):
        values["fwmark"] = raw["fwmark"]
        fields_set = {"protocol", "fwmark", "family", "scheduler", "flags", "persistence", "netmask"}
    else:
        values["protocol"] = m.PROTOCOL_NAMES.get(raw.get("protocol"), "tcp")
        values["address"] = address_from_bytes(raw["addr"], af)
        values["port"] = raw.get("port", 0)
        fields_set = {"protocol", "address", "port", "family", "scheduler", "flags", "persistence", "netmask"}
    if dests is not None:
        values["dests"] = dests
        fields_set.add("dests")
    return trusted_model(IpvsService, values, fields_set)


# The fast path builds non-TUN dests; the fields it fills are exactly `dest_from`'s.
_DEST_FIELDS = ("address", "port", "forward", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")
_NON_TUN_SET = set(_DEST_FIELDS[:6])  # copied per dest (pydantic may update a model's own set)
_FAST_OK = _SETTERS is not None and tuple(IpvsDest.model_fields) == _DEST_FIELDS and not IpvsDest.__private_attributes__
# fwd_method & 7 -> forward name; None = TUN (general path). Same mapping as `dest_from`:
# FORWARD_NAMES 0 nat, 1 local (shown as dr), 2 tun, 3 dr; unknown values -> dr.
_FORWARD = tuple(
    None if m.FORWARD_NAMES.get(i, "dr") == "tun" else ("dr" if m.FORWARD_NAMES.get(i, "dr") == "local" else m.FORWARD_NAMES.get(i, "dr"))
    for i in range(8)
)
# (leaf path, struct code) the fast path reads: anything else -> general path for that layout
_KEYS = (
    (("dest", "addr"), None),  # raw bytes ("Ns"), any size the general path accepts
    (("dest", "port"), "H"),  # be16 read as native: swapped below
    (("dest", "fwd_method"), "I"),
    (("dest", "weight"), "I"),
    (("dest", "u_thresh"), "I"),
    (("dest", "l_thresh"), "I"),
)
_AF_KEY = (("dest", "addr_family"), "H")
# Everything a no-stats observe does not read: skipped as padding in the compiled format.
SKIP = m.NO_STATS | {"active_conns", "inact_conns", "persist_conns"}


def _picks(count: int, stride: int, fields) -> str:
    """struct format reading `fields` [(byte offset in a message, code)] of `count` messages."""
    one, pos = [], 0
    for at, code in sorted(fields):
        if at < pos:
            raise ValueError("overlapping fields")
        one.append(f"{at - pos}x{code}")
        pos = at + struct.calcsize("=" + code)
    one.append(f"{stride - pos}x")
    return "".join(one) * count


class _Run:
    """Compiled decoder for `count` dest replies of one length, `stride` bytes apart.

    Three `struct` reads per run: every attribute header (length and type as one u32) to
    compare with the layout's; the key fields (address, forward method, weight, thresholds,
    address family) in message order, split into columns by slicing; the big-endian ports.
    """

    def __init__(self, layout: _Layout, length: int, stride: int, count: int):
        self.count = count
        self.headers = struct.Struct("=" + _picks(count, stride, [(20 + at, "I") for at, _w in layout.header_at])).unpack_from
        self.expected = tuple(word for _at, word in layout.header_at) * count
        keys = [layout.codes[path] for path, _code in _KEYS]
        af = layout.codes.get(_AF_KEY[0])
        self.with_af = af is not None and af[1] == _AF_KEY[1]
        picks = [keys[0], *keys[2:]] + ([af] if self.with_af else [])
        self.width = len(picks)
        self.fields = struct.Struct("=" + _picks(count, stride, [(20 + at, code) for _i, code, at in picks])).unpack_from
        # `fields` yields them in byte order: the column of each (addr, fwd, weight, u, l[, af])
        order = sorted(range(len(picks)), key=lambda k: picks[k][2])
        self.column = tuple(order.index(k) for k in range(len(picks)))
        self.ports = struct.Struct(">" + _picks(count, stride, [(20 + keys[1][2], "H")])).unpack_from


_FIRST4 = itemgetter(slice(0, 4))
_FIRST16 = itemgetter(slice(0, 16))


class DestDumpDecoder:
    """GET_DEST dump runs -> `IpvsDest`s, equal to `dest_from(LayoutDecoder(...).decode(...))`.

    One instance is reused for every service of an observe (layouts are memoised by reply
    length, compiled runs by (length, count)).
    """

    def __init__(self):
        self.general = LayoutDecoder(m.SCHEMA, m.NO_STATS)
        self.layouts: dict[int, _Layout | None] = {}
        self.runs: dict[tuple[int, int], _Run | None] = {}

    def _layout(self, data, start: int, length: int) -> _Layout | None:
        layout = self.layouts.get(length, False)
        if layout is False:
            layout = None
            if _FAST_OK:
                try:
                    layout = _Layout(m.SCHEMA, data, start + 20, start + length, SKIP)
                except (ValueError, struct.error):
                    layout = None
                if layout is not None and struct.calcsize("=" + layout.format) != length - 20:
                    layout = None
                if layout is not None:
                    for path, code in _KEYS:
                        got = layout.codes.get(path)
                        if got is None or (code is not None and got[1] != code) or (code is None and not got[1].endswith("s")):
                            layout = None
                            break
            self.layouts[length] = layout
        return layout

    def _run(self, data, start: int, count: int, stride: int) -> _Run | None:
        length = struct.unpack_from("=I", data, start)[0]
        run = self.runs.get((length, count), False)
        if run is False:
            if len(self.runs) > 1024:
                self.runs.clear()
            layout = self._layout(data, start, length)
            try:
                run = _Run(layout, length, stride, count) if layout is not None else None
            except (ValueError, struct.error):
                run = None
            self.runs[(length, count)] = run
        return run

    def slow(self, data, start: int, service_af: int) -> IpvsDest | None:
        """One reply through the general, validated path (None: the reply has no dest)."""
        raw = m.decode_message(data, start, decoder=self.general)[1]
        return m.dest_from(raw["dest"], service_af) if "dest" in raw else None

    def decode(self, runs, service_af: int) -> list[IpvsDest]:
        """Dests of the (datagram, offset, count, stride) runs of one GET_DEST dump, in order."""
        out: list[IpvsDest] = []
        for data, start, count, stride in runs:
            run = self._run(data, start, count, stride)
            if run is None or run.headers(data, start) != run.expected:
                for k in range(count):
                    dest = self.slow(data, start + k * stride, service_af)
                    if dest is not None:
                        out.append(dest)
                continue
            out += self._build(run, run.fields(data, start), run.ports(data, start), data, start, stride, service_af)
        return out

    def _build(self, run: _Run, values, ports, data, start: int, stride: int, service_af: int) -> list[IpvsDest]:
        """The run's dests, column by column: the per-dest work is C loops (map), no bytecode."""
        n, w = run.count, run.width
        c = run.column
        addrs, fwds, weights, u_ths, l_ths = values[c[0]::w], values[c[1]::w], values[c[2]::w], values[c[3]::w], values[c[4]::w]
        afs = values[c[5]::w] if run.with_af else (service_af,) * n
        if afs.count(_AF_INET6) == 0:
            addresses = list(map(_ntop, repeat(_AF_INET, n), map(_FIRST4, addrs)))
        elif afs.count(_AF_INET6) == n:
            addresses = list(map(_ntop, repeat(_AF_INET6, n), map(_FIRST16, addrs)))
        else:
            addresses = [_ntop(_AF_INET6, a[:16]) if f == _AF_INET6 else _ntop(_AF_INET, a[:4]) for a, f in zip(addrs, afs)]
        forwards = list(map(_FORWARD.__getitem__, map(_AND7, fwds)))
        dicts = [
            {"address": a, "port": p, "forward": f, "weight": w, "u_threshold": u, "l_threshold": lt,
             "tun_type": None, "tun_port": None, "tun_flags": None}
            for a, p, f, w, u, lt in zip(addresses, ports, forwards, weights, u_ths, l_ths)
        ]
        objs = list(map(_new, repeat(IpvsDest, n)))
        set_dict, set_fields, set_extra, set_private = _SETTERS
        _consume(map(set_dict, objs, dicts))
        _consume(map(set_fields, objs, map(set.copy, repeat(_NON_TUN_SET, n))))
        _consume(map(set_extra, objs, repeat(None, n)))
        _consume(map(set_private, objs, repeat(None, n)))
        if None in forwards:  # TUN dests: tunnel type/port/flags rules live in dest_from
            for k, forward in enumerate(forwards):
                if forward is None:
                    objs[k] = self.slow(data, start + k * stride, service_af)
        return objs


_AND7 = (7).__and__
_consume = deque(maxlen=0).extend
