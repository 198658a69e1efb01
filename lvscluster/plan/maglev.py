"""The lookup tables of the kernel's `mh` (Maglev) and `sh` IPVS schedulers, recomputed from a service.

Pure functions that reproduce Linux 6.1 `net/netfilter/ipvs/ip_vs_mh.c` and `ip_vs_sh.c` on a
64-bit kernel built as Debian builds it (`CONFIG_IP_VS_MH_TAB_INDEX=12`: M = 4093 slots;
`CONFIG_IP_VS_SH_TAB_BITS=8`: 256 buckets). What the kernel does, and so what this does:

- **Dest order.** Both tables are filled by walking `svc->destinations` from its head. A new
  dest is linked at the head (`list_add_rcu`), so the walk sees the newest dest first, and
  `IPVS_CMD_GET_DEST` dumps the very same list head to tail. `IpvsService.dests` as observed
  is therefore exactly the walk order; editing a dest (SET_DEST) keeps its place.
- **mh permutation.** Per dest, `offset = h1 % M` and `skip = h2 % (M - 1) + 1`, where h1/h2 are
  `hsiphash` of the u32 `ntohs(port) + ntohl(addr)` under two fixed keys (so every director
  computes the same permutation). On 64-bit, hsiphash is SipHash-1-3 with 64-bit words and a
  16-byte key (`unsigned long key[2]`), truncated to u32.
- **mh weights.** Turns per round = `(last_weight / gcd) >> rshift`, at least 1 for a non-zero
  weight; `rshift` keeps the largest `weight / gcd` within 6 bits. Each dest in list order takes
  its turns (that many consecutive preferred free slots) before the next dest; rounds repeat
  until all M slots are taken.
- **mh weight 0.** The table uses `last_weight`, the latest non-zero weight (or 0 when the dest
  was *added* at weight 0). Setting a weight to 0 therefore leaves the table as it was; the dest
  only becomes unavailable. Netlink does not report `last_weight`: pass `last_weights` for dests
  observed at weight 0 that once had a weight, otherwise they are taken as added at 0 (no slots).
- **sh table.** 256 buckets tiled in list order, round after round, `weight` consecutive buckets
  per dest using the *current* weight; a weight-0 dest takes one bucket per round, as much as a
  weight-1 dest. No consistent hashing.
- **Lookup.** mh: slot `hsiphash(ntohs(sport) + ntohl(saddr)) % M` with the first key; sh:
  bucket `hash_32(ntohs(sport) + ntohl(saddr), 8)`. The source port counts only with the
  `mh-port` / `sh-port` flag. A dest at weight 0 is unavailable; without `*-fallback` the packet
  is not scheduled, with it the kernel re-hashes with offsets ihash, ihash+1, ... until it finds
  an available dest (stopping at an empty slot). Overload (`u_threshold`) depends on each
  director's live connection counts and is not modelled: dests are taken as not overloaded.
- **IPv6** addresses fold to the XOR of their four 32-bit words, as the kernel does; only IPv4
  has been checked against a running kernel (tests/kernel/test_maglev_kernel.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import reduce
from math import gcd

from lvscluster.state import SERVICE_FLAG_BITS, IpvsDest, IpvsService

MH_TABLE_SIZE = 4093  # primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]
MH_WEIGHT_BITS = 6  # CONFIG_IP_VS_MH_TAB_INDEX / 2
MH_OFFSET_KEY = (2654435761, 2654435761)  # hash1: slot offsets and flow lookups
MH_SKIP_KEY = (2654446892, 2654446892)  # hash2: permutation skips
SH_TABLE_BITS = 8
SH_TABLE_SIZE = 1 << SH_TABLE_BITS
GOLDEN_RATIO_32 = 0x61C88647  # include/linux/hash.h, used by hash_32()

FALLBACK_BIT = SERVICE_FLAG_BITS["mh-fallback"]
PORT_BIT = SERVICE_FLAG_BITS["mh-port"]
TABLE_SCHEDULERS = ("mh", "sh")

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

Table = tuple[str | None, ...]


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash(message: bytes, key: tuple[int, int], c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d of `message` under a key of two little-endian u64 words; a u64."""
    k0, k1 = key
    v0, v1 = 0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1
    v2, v3 = 0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1
    whole = len(message) - len(message) % 8
    for start in range(0, whole, 8):
        word = int.from_bytes(message[start:start + 8], "little")
        v3 ^= word
        for _ in range(c_rounds):
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= word
    last = ((len(message) & 0xFF) << 56) | int.from_bytes(message[whole:], "little")
    v3 ^= last
    for _ in range(c_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(d_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash_u32(value: int, key: tuple[int, int]) -> int:
    """The kernel's `hsiphash(&u32, 4, key)` on 64-bit: SipHash-1-3 of the 4 bytes, low 32 bits."""
    return siphash((value & _MASK32).to_bytes(4, "little"), key, 1, 3) & _MASK32


def hash_32(value: int, bits: int) -> int:
    """The kernel's generic `hash_32()`: multiply by the golden ratio, keep the top `bits`."""
    return ((value * GOLDEN_RATIO_32) & _MASK32) >> (32 - bits)


def address_word(address: str, family: int = 4) -> int:
    """`ntohl(addr_fold)`: an IPv4 address as a u32; an IPv6 one as the XOR of its four words.

    The fold follows the *service's* family, as the kernel's does: an IPv6 dest of an IPv4
    service contributes only its first word.
    """
    packed = ipaddress.ip_address(address).packed.ljust(16, b"\0")
    words = [int.from_bytes(packed[i:i + 4], "big") for i in range(0, 16, 4)]
    return words[0] if family == 4 else words[0] ^ words[1] ^ words[2] ^ words[3]


def mh_hash(address: str, port: int, key: tuple[int, int], offset: int = 0, family: int = 4) -> int:
    """`ip_vs_mh_hashkey()`: hsiphash of `offset + port + address` (u32 arithmetic)."""
    return hsiphash_u32(offset + port + address_word(address, family), key)


def sh_bucket(address: str, port: int, offset: int = 0, family: int = 4) -> int:
    """`ip_vs_sh_hashkey()`: the sh bucket for an address and port, shifted by `offset`."""
    return (offset + hash_32((port + address_word(address, family)) & _MASK32, SH_TABLE_BITS)) % SH_TABLE_SIZE


def last_weight(dest: IpvsDest, last_weights: Mapping[str, int] | None = None) -> int:
    """The kernel's `last_weight`: the weight, or for a dest at 0 the weight it had before (else 0)."""
    if dest.weight != 0:
        return dest.weight
    return (last_weights or {}).get(dest.key, 0)


def mh_turns(service: IpvsService, last_weights: Mapping[str, int] | None = None) -> list[int]:
    """How many slots each dest (list order) takes per round: weight / gcd, shifted to 6 bits."""
    weights = [last_weight(d, last_weights) for d in service.dests]
    positive = [w for w in weights if w > 0]
    if not positive:
        return [0] * len(weights)
    divisor = reduce(gcd, positive)
    shift = max(0, (max(positive) // divisor).bit_length() - MH_WEIGHT_BITS)
    return [((w // divisor) >> shift) or int(w != 0) for w in weights]


def mh_permutation(dest: IpvsDest, family: int = 4) -> tuple[int, int]:
    """A dest's (offset, skip): where its preference list starts and how it steps."""
    offset = mh_hash(dest.address, dest.port, MH_OFFSET_KEY, family=family) % MH_TABLE_SIZE
    skip = mh_hash(dest.address, dest.port, MH_SKIP_KEY, family=family) % (MH_TABLE_SIZE - 1) + 1
    return offset, skip


def mh_table(service: IpvsService, last_weights: Mapping[str, int] | None = None) -> Table:
    """The M = 4093 slots of the service's mh table, each a dest key (None: no dest has weight)."""
    table: list[str | None] = [None] * MH_TABLE_SIZE
    turns = mh_turns(service, last_weights)
    if not any(turns):
        return tuple(table)
    positions = [list(mh_permutation(d, service.family)) for d in service.dests]
    filled = 0
    while True:
        for dest, dest_turns, position in zip(service.dests, turns, positions):
            for _ in range(dest_turns):
                slot, skip = position
                while table[slot] is not None:
                    slot = (slot + skip) % MH_TABLE_SIZE
                position[0] = slot
                table[slot] = dest.key
                filled += 1
                if filled == MH_TABLE_SIZE:
                    return tuple(table)


def sh_table(service: IpvsService) -> Table:
    """The 256 buckets of the service's sh table, tiled in list order by current weight."""
    if not service.dests:
        return (None,) * SH_TABLE_SIZE
    buckets: list[str | None] = []
    index = taken = 0
    while len(buckets) < SH_TABLE_SIZE:
        dest = service.dests[index]
        buckets.append(dest.key)
        taken += 1
        if taken >= dest.weight:
            index, taken = (index + 1) % len(service.dests), 0
    return tuple(buckets)


def table_for(service: IpvsService, last_weights: Mapping[str, int] | None = None) -> Table | None:
    """The service's lookup table, or None when its scheduler keeps none (rr, wlc, ...)."""
    if service.scheduler == "mh":
        return mh_table(service, last_weights)
    if service.scheduler == "sh":
        return sh_table(service)
    return None


def has_flag(service: IpvsService, bit: int) -> bool:
    """Whether a scheduler flag bit (SCHED1 fallback, SCHED2 port) is set, whatever its name."""
    return any(SERVICE_FLAG_BITS.get(name) == bit for name in service.flags)


def _first_available(service: IpvsService, table: Table, slots) -> IpvsDest | None:
    """Walk candidate slots as the kernel's fallback loop does: stop at an empty one."""
    by_key = {d.key: d for d in service.dests}
    for slot in slots:
        key = table[slot]
        if key is None:
            return None
        if by_key[key].weight > 0:
            return by_key[key]
    return None


def first_slot(service: IpvsService, client_ip: str, client_port: int = 0) -> int:
    """The slot (mh) or bucket (sh) a new flow looks up first; the port counts only with *-port."""
    port = client_port if has_flag(service, PORT_BIT) else 0
    if service.scheduler == "mh":
        return mh_hash(client_ip, port, MH_OFFSET_KEY, family=service.family) % MH_TABLE_SIZE
    return sh_bucket(client_ip, port, family=service.family)


def _fallback_slots(service: IpvsService, client_ip: str, port: int, first: int):
    """The slots the kernel's fallback loop tries, in order: re-hashes with offsets first, first+1, ..."""
    family = service.family
    if service.scheduler == "mh":
        for step in range(MH_TABLE_SIZE):
            yield mh_hash(client_ip, port, MH_OFFSET_KEY, (first + step) % MH_TABLE_SIZE, family) % MH_TABLE_SIZE
    else:
        for step in range(SH_TABLE_SIZE):
            yield sh_bucket(client_ip, port, (first + step) % SH_TABLE_SIZE, family)


def choose(service: IpvsService, client_ip: str, client_port: int = 0, table: Table | None = None,
           last_weights: Mapping[str, int] | None = None) -> IpvsDest | None:
    """The dest the kernel schedules a new flow from client_ip:client_port to (None: not scheduled).

    `table` may be passed to reuse one computed by `table_for`. Raises ValueError for
    schedulers without a table.
    """
    if table is None:
        table = table_for(service, last_weights)
        if table is None:
            raise ValueError(f"scheduler {service.scheduler!r} has no lookup table")
    first = first_slot(service, client_ip, client_port)
    if table[first] is None:
        return None
    chosen = _first_available(service, table, [first])
    if chosen is not None or not has_flag(service, FALLBACK_BIT):
        return chosen
    port = client_port if has_flag(service, PORT_BIT) else 0
    return _first_available(service, table, _fallback_slots(service, client_ip, port, first))
