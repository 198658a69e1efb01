"""A fast attribute codec compiled from pyroute2 NLA maps.

pyroute2's generic `nla` encoder costs ~300 us per IPVS request and its decoder ~140 us per
dumped dest: far too slow to program 16,000 dests or to re-read them on every apply. This
module compiles the *same* NLA maps (`IpvsMessage` in `ipvs_messages`, which extends
pyroute2's `ipvsmsg`) into small struct-based encoders and decoders, so pyroute2's map stays
the single schema while the hot path is plain `struct` calls. Unit tests check the bytes
against pyroute2's own encoder and decoder.

Values use the same Python types as pyroute2, with one exception: addresses of type
`target` decode to raw bytes (the caller knows the family; the kernel sends 16 bytes).
"""

from __future__ import annotations

import socket
import struct
import sys
from operator import itemgetter
from typing import Any

_HDR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
NLA_F_NESTED = 0x8000

# struct codes for the layout fast path (native order; be16/be32 are byte-swapped after)
_LAYOUT_CODES = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q", "be16": "H", "be32": "I"}
_SCALARS = {
    "uint8": struct.Struct("=B"),
    "uint16": struct.Struct("=H"),
    "uint32": struct.Struct("=I"),
    "uint64": struct.Struct("=Q"),
    "be16": struct.Struct(">H"),
    "be32": struct.Struct(">I"),
}


def _pad(n: int) -> int:
    return (n + 3) & ~3


class Schema:
    """Encoder/decoder for one NLA class: attribute names <-> type ids and value kinds."""

    def __init__(self, nla_class: type):
        self.prefix = getattr(nla_class, "prefix", "") or ""
        if not self.prefix:  # e.g. pyroute2's ipvs `stats`: derive IPVS_STATS_ATTR_ from the names
            first = nla_class.nla_map[0][0]
            self.prefix = first[: first.index("_ATTR_") + 6] if "_ATTR_" in first else ""
        self.by_name: dict[str, tuple[int, str, Any]] = {}
        self.by_id: dict[int, tuple[str, str, Any]] = {}
        for type_id, (name, kind) in enumerate(nla_class.nla_map):
            sub = None
            if kind in ("none",):
                continue
            if kind.startswith("target"):
                kind = "target"
            elif kind not in _SCALARS and kind not in ("asciiz", "ip4addr", "ip6addr", "cdata", "hex"):
                sub_class = getattr(nla_class, kind)
                fields = getattr(sub_class, "fields", None)
                if getattr(sub_class, "nla_map", None):
                    sub = Schema(sub_class)
                    kind = "nested"
                elif fields:
                    sub = struct.Struct("=" + "".join(f for _, f in fields))
                    sub = (sub, tuple(n for n, _ in fields))
                    kind = "struct"
            short = name[len(self.prefix):].lower() if name.startswith(self.prefix) else name
            self.by_name[name] = (type_id, kind, sub)
            self.by_id[type_id] = (short, kind, sub)

    def encode(self, attrs) -> bytes:
        """Attribute list [(full NLA name, value), ...] to bytes (no outer header)."""
        out = []
        for name, value in attrs:
            type_id, kind, sub = self.by_name[name]
            if kind in _SCALARS:
                payload = _SCALARS[kind].pack(value)
            elif kind == "nested":
                payload = sub.encode(value["attrs"] if isinstance(value, dict) else value)
            elif kind == "struct":
                payload = sub[0].pack(*(value[f] for f in sub[1]))
            elif kind == "asciiz":
                payload = value.encode() + b"\0"
            elif kind in ("target", "ip4addr", "ip6addr"):
                payload = socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
            else:  # cdata / hex: raw bytes
                payload = bytes(value)
            n = 4 + len(payload)
            out.append(_HDR.pack(n, type_id))
            out.append(payload)
            if n & 3:
                out.append(b"\0" * (_pad(n) - n))
        return b"".join(out)

    def decode(self, data, offset: int = 0, end: int | None = None, skip: frozenset = frozenset()) -> dict[str, Any]:
        """Bytes to {short lowercase name: value}; unknown attributes and `skip` names are left out.

        `skip` applies at every nesting level: observing state passes {"stats", "stats64"},
        which are most of a dumped dest's attributes.
        """
        end = len(data) if end is None else end
        out: dict[str, Any] = {}
        by_id = self.by_id
        unpack_hdr = _HDR.unpack_from
        while offset + 4 <= end:
            n, type_id = unpack_hdr(data, offset)
            if n < 4:
                break
            entry = by_id.get(type_id & 0x3FFF)
            if entry is not None and entry[0] not in skip:
                short, kind, sub = entry
                start = offset + 4
                scalar = _SCALARS.get(kind)
                if scalar is not None:
                    value = scalar.unpack_from(data, start)[0]
                elif kind == "nested":
                    value = sub.decode(data, start, offset + n, skip)
                elif kind == "struct":
                    value = dict(zip(sub[1], sub[0].unpack_from(data, start)))
                elif kind == "asciiz":
                    value = bytes(data[start:offset + n]).split(b"\0", 1)[0].decode()
                elif kind == "ip4addr":
                    value = socket.inet_ntop(socket.AF_INET, bytes(data[start:start + 4]))
                elif kind == "ip6addr":
                    value = socket.inet_ntop(socket.AF_INET6, bytes(data[start:start + 16]))
                else:  # target, cdata: raw bytes
                    value = bytes(data[start:offset + n])
                out[short] = value
            offset += (n + 3) & ~3
        return out


class _Layout:
    """A compiled decoder for one exact attribute layout (same types, same lengths)."""

    def __init__(self, schema: "Schema", data, start: int, end: int, skip: frozenset):
        fmt: list[str] = []
        self.headers: list[int] = []  # value indexes of every (len, type) header field
        self.expected: list[int] = []
        self.leaves: list[tuple[tuple[str, ...], int, str, Any]] = []  # (path, index, kind, sub)
        # leaf path -> (value index, struct code, byte offset from `start`); a repeated leaf: the last
        self.codes: dict[tuple[str, ...], tuple[int, str, int]] = {}
        self._origin = start  # byte offsets in `codes` and `header_at` are relative to it
        self.header_at: list[tuple[int, int]] = []  # (byte offset, header as one native u32)
        self.count = 0  # values the format produces so far
        self._walk(schema, data, start, end, skip, (), fmt)
        self.format = "".join(fmt)
        self.struct = struct.Struct("=" + self.format)
        self.size = end - start
        self.get_headers = _getter(self.headers)
        self.expected_t = tuple(self.expected)
        # group leaves by their parent path: each group becomes one dict(zip(...)) in C
        groups: dict[tuple[str, ...], list] = {}
        for path, index, kind, sub in self.leaves:
            groups.setdefault(path[:-1], []).append((path[-1], index, kind, sub))
        self.groups = [
            (parent, tuple(n for n, _, _, _ in items), _getter([i for _, i, _, _ in items]),
             [(n, k, sub) for n, _, k, sub in items if k not in _PLAIN])
            for parent, items in sorted(groups.items(), key=lambda kv: len(kv[0]))
        ]

    def _walk(self, schema, data, offset, end, skip, path, fmt) -> None:
        while offset + 4 <= end:
            n, type_id = _HDR.unpack_from(data, offset)
            if n < 4:
                raise ValueError("bad attribute length")
            index = self.count
            self.header_at.append((offset - self._origin, _U32.unpack_from(data, offset)[0]))
            self.headers += [index, index + 1]
            self.expected += [n, type_id]
            fmt.append("HH")
            self.count += 2
            entry = schema.by_id.get(type_id & 0x3FFF)
            size, padded = n - 4, ((n + 3) & ~3) - n
            if entry is not None and entry[0] not in skip and entry[1] == "nested":
                self._walk(entry[2], data, offset + 4, offset + n, skip, path + (entry[0],), fmt)
            elif entry is not None and entry[0] not in skip:
                code = _LAYOUT_CODES.get(entry[1])
                if code is None or struct.calcsize(code) != size:
                    code = f"{size}s"
                fmt.append(code)
                self.codes[path + (entry[0],)] = (index + 2, code, offset + 4 - self._origin)
                self.leaves.append((path + (entry[0],), index + 2, entry[1], entry[2]))
                self.count += 1
            elif size:
                fmt.append(f"{size}x")
            if padded:
                fmt.append(f"{padded}x")
            offset += n + padded

    def decode(self, data, start: int) -> dict[str, Any] | None:
        values = self.struct.unpack_from(data, start)
        if self.get_headers(values) != self.expected_t:
            return None
        out: dict[str, Any] = {}
        for parent, names, getter, conversions in self.groups:
            node = dict(zip(names, getter(values)))
            for name, kind, sub in conversions:
                node[name] = _convert(kind, sub, node[name])
            target = out
            for part in parent:
                target = target.setdefault(part, {})
            target.update(node)
        return out


def _getter(indexes):
    """itemgetter that always returns a tuple."""
    if len(indexes) == 1:
        i = indexes[0]
        return lambda v: (v[i],)
    return itemgetter(*indexes)


_PLAIN = {"uint8", "uint16", "uint32", "uint64", "target", "cdata", "hex"}


def _convert(kind: str, sub, raw):
    if kind == "be16":
        return int.from_bytes(raw.to_bytes(2, sys.byteorder), "big")
    if kind == "be32":
        return int.from_bytes(raw.to_bytes(4, sys.byteorder), "big")
    if kind == "struct":
        return dict(zip(sub[1], sub[0].unpack(raw[: sub[0].size])))
    if kind == "asciiz":
        return raw.split(b"\0", 1)[0].decode()
    if kind == "ip4addr":
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if kind == "ip6addr":
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return raw


class LayoutDecoder:
    """Schema.decode with memoised layouts: dumps repeat one layout thousands of times.

    The first message of a given length is decoded by walking it, which also compiles
    one `struct` format for that layout; later messages of that length are decoded with
    one `unpack_from`, after checking that every attribute header (length and type) is
    the same. A message that differs falls back to the walking decoder.
    """

    def __init__(self, schema: Schema, skip: frozenset = frozenset()):
        self.schema = schema
        self.skip = skip
        self.layouts: dict[int, _Layout | None] = {}

    def decode(self, data, start: int, end: int) -> dict[str, Any]:
        """Like `Schema.decode(data, start, end, skip)`, usually much faster."""
        size = end - start
        layout = self.layouts.get(size, False)
        if layout is False:
            try:
                layout = self.layouts[size] = _Layout(self.schema, data, start, end, self.skip)
            except (ValueError, struct.error):
                layout = self.layouts[size] = None
        if layout is not None:
            out = layout.decode(data, start)
            if out is not None:
                return out
        return self.schema.decode(data, start, end, self.skip)


def address_from_bytes(raw: bytes, family: int) -> str:
    """Text address from a `target` payload (IPv4 uses the first 4 of 16 bytes)."""
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])
