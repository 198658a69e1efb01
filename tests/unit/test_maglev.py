"""lvscluster.plan.maglev: properties of the mh and sh tables, and values the real kernel confirmed.

The only independent oracle for the kernel's tables is the kernel itself:
tests/kernel/test_maglev_kernel.py sends ~3,100 flows through Linux 6.1's IPVS and requires the
kernel's choice for every one to equal choose(). The pinned flows below are sent there too,
with the same expected real servers. SipHash itself is checked against the published
SipHash-2-4 vectors (the kernel's hsiphash is the same function with 1 and 3 rounds).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvscluster.plan import maglev
from lvscluster.state import IpvsDest, IpvsService
from maglev_pinned import PINNED

M = maglev.MH_TABLE_SIZE
VIP = "10.77.255.254"
RS = [f"10.77.2.{i}" for i in range(11, 18)]


def service(weights, port=80, scheduler="mh", flags=(), addresses=RS) -> IpvsService:
    """A service whose dests are listed (kernel order) as given."""
    dests = tuple(IpvsDest(address=a, port=port, weight=w) for a, w in zip(addresses, weights))
    return IpvsService(protocol="tcp", address=VIP, port=port, scheduler=scheduler, flags=flags, dests=dests)


def kernel_test_service(port: int, scheduler: str, flags, weights, changes=None) -> IpvsService:
    """A service of the kernel test as the kernel lists it: inserted in RS order, dumped newest first."""
    changes = changes or {}
    dests = [IpvsDest(address=rs, port=port, weight=changes.get(i, w)) for i, (rs, w) in enumerate(zip(RS, weights))]
    return IpvsService(protocol="tcp", address="10.99.0.10", port=port, scheduler=scheduler, flags=flags,
                       dests=tuple(reversed(dests)))


# -------------------------------------------------------------------------- hashes

SIPHASH_KEY = (int.from_bytes(bytes(range(8)), "little"), int.from_bytes(bytes(range(8, 16)), "little"))


@pytest.mark.parametrize("length, expected", [(0, 0x726FDB47DD0E0E31), (1, 0x74F839C593DC67FD),
                                              (15, 0xA129CA6149BE45E5)])
def test_siphash_2_4_matches_the_reference_vectors(length: int, expected: int) -> None:
    assert maglev.siphash(bytes(range(length)), SIPHASH_KEY) == expected


def test_hash_32_is_the_golden_ratio_multiply() -> None:
    assert maglev.hash_32(1, 8) == 0x61
    assert maglev.hash_32(0, 8) == 0
    assert all(0 <= maglev.hash_32(v, 8) < 256 for v in (1, 2**31, 2**32 - 1))


def test_ipv6_addresses_fold_to_the_xor_of_their_words() -> None:
    assert maglev.address_word("10.0.0.1") == 0x0A000001
    assert maglev.address_word("2001:db8::1", family=6) == 0x20010DB8 ^ 1
    assert maglev.address_word("2001:db8::1", family=4) == 0x20010DB8  # IPv6 dest of an IPv4 service


# -------------------------------------------------------------------------- kernel-confirmed values

KERNEL_TEST_SERVICES = {
    80: kernel_test_service(80, "mh", ("mh-port",), (1, 2, 3, 1, 5, 2, 1)),
    81: kernel_test_service(81, "mh", (), (1, 2, 3, 1, 5, 2, 1)),
    82: kernel_test_service(82, "mh", ("mh-port",), (100, 300, 1000, 70, 250)),
    84: kernel_test_service(84, "mh", ("mh-fallback", "mh-port"), (1, 2, 3, 1, 5, 2), {1: 0}),
    86: kernel_test_service(86, "sh", ("sh-port",), (1, 2, 3, 1, 5, 2)),
    88: kernel_test_service(88, "sh", ("sh-fallback", "sh-port"), (1, 2, 0, 1, 5, 2)),
}


@pytest.mark.parametrize("port, client, sport, dest", PINNED)
def test_choices_the_kernel_made(port: int, client: str, sport: int, dest: str) -> None:
    svc = KERNEL_TEST_SERVICES[port]
    last_weights = {"10.77.2.12:84": 2} if port == 84 else None  # quiesced from weight 2
    assert maglev.choose(svc, client, sport, last_weights=last_weights).key == dest


def test_large_weights_are_shifted_to_six_bits() -> None:
    # dump order 250, 70, 1000, 300, 100: gcd 10, largest 100 needs 7 bits, so shift by 1
    assert maglev.mh_turns(KERNEL_TEST_SERVICES[82]) == [12, 3, 50, 15, 5]


# -------------------------------------------------------------------------- mh properties

addresses = st.lists(st.integers(1, 2**24 - 2), min_size=1, max_size=16, unique=True).map(
    lambda ints: [str(ipaddress.IPv4Address((10 << 24) + i)) for i in ints])


@settings(deadline=None, max_examples=40)
@given(addresses, st.data())
def test_every_slot_is_filled_when_any_dest_has_weight(addrs, data) -> None:
    weights = data.draw(st.lists(st.integers(0, 5), min_size=len(addrs), max_size=len(addrs)))
    svc = service(weights, addresses=addrs)
    table = maglev.mh_table(svc)
    if any(weights):
        assert None not in table
        assert {k for k in table} == {d.key for d in svc.dests if d.weight > 0}
    else:
        assert set(table) == {None}


@settings(deadline=None, max_examples=40)
@given(addresses, st.data())
def test_shares_follow_the_weights_within_one_round(addrs, data) -> None:
    # every full round gives each dest exactly its turns; only the last, partial round is uneven
    weights = data.draw(st.lists(st.integers(1, 60), min_size=len(addrs), max_size=len(addrs)))
    svc = service(weights, addresses=addrs)
    turns = maglev.mh_turns(svc)
    rounds = M // sum(turns)
    counts = Counter(maglev.mh_table(svc))
    for dest, dest_turns in zip(svc.dests, turns):
        assert rounds * dest_turns <= counts[dest.key] <= (rounds + 1) * dest_turns


@settings(deadline=None, max_examples=30)
@given(st.lists(st.integers(1, 2**24 - 2), min_size=2, max_size=16, unique=True), st.randoms(use_true_random=False))
def test_permuting_the_dest_order_moves_few_slots(ints, rng) -> None:
    addrs = [str(ipaddress.IPv4Address((10 << 24) + i)) for i in ints]
    svc = service([1] * len(addrs), addresses=addrs)
    shuffled = list(svc.dests)
    rng.shuffle(shuffled)
    before, after = maglev.mh_table(svc), maglev.mh_table(svc.model_copy(update={"dests": tuple(shuffled)}))
    # the order only breaks ties in the round-robin fill: measured over 750 random sets of 2-16,
    # at most 14.4 % of the slots moved (hypothesis found 6.7 % for 2), 0.4 % on average (below)
    assert sum(a != b for a, b in zip(before, after)) / M < 0.25


def test_permuting_the_dest_order_moves_under_two_percent_on_average() -> None:
    """Why every director must use one order: any other moves some slots, though few on average."""
    rng = random.Random(7)
    moved = []
    for size in (2, 3, 4, 8, 16):
        for _ in range(40):
            addrs = [str(ipaddress.IPv4Address((10 << 24) + i)) for i in rng.sample(range(1, 2**24 - 2), size)]
            svc = service([1] * size, addresses=addrs)
            shuffled = list(svc.dests)
            rng.shuffle(shuffled)
            after = maglev.mh_table(svc.model_copy(update={"dests": tuple(shuffled)}))
            moved.append(sum(a != b for a, b in zip(maglev.mh_table(svc), after)) / M)
    assert 0 < sum(moved) / len(moved) < 0.02


@settings(deadline=None, max_examples=30)
@given(st.lists(st.integers(1, 2**24 - 2), min_size=8, max_size=8, unique=True), st.integers(0, 7))
def test_removing_one_of_eight_moves_its_slots_and_few_others(ints, removed) -> None:
    addrs = [str(ipaddress.IPv4Address((10 << 24) + i)) for i in ints]
    svc = service([1] * 8, addresses=addrs)
    gone = svc.dests[removed].key
    before = maglev.mh_table(svc)
    after = maglev.mh_table(svc.model_copy(update={"dests": svc.dests[:removed] + svc.dests[removed + 1:]}))
    own = sum(1 for k in before if k == gone) / M
    moved = sum(a != b for a, b in zip(before, after)) / M
    # Maglev moves little besides the removed server's own slots: 1 % of the table on average over
    # 2,000 random sets, but a rare set moves up to 7.4 % (hypothesis found 6.1 % with 10.0.0.1-6);
    # the bound is that tail with a margin, the mean is asserted below
    assert own <= moved < own + 0.10
    assert 0.11 < own < 0.14


def test_removing_one_of_eight_moves_about_one_percent_besides_its_own_slots_on_average() -> None:
    rng = random.Random(2026)
    extra = []
    for _ in range(100):
        addrs = [str(ipaddress.IPv4Address((10 << 24) + i)) for i in rng.sample(range(1, 2**24 - 2), 8)]
        svc = service([1] * 8, addresses=addrs)
        removed = rng.randrange(8)
        before = maglev.mh_table(svc)
        after = maglev.mh_table(svc.model_copy(update={"dests": svc.dests[:removed] + svc.dests[removed + 1:]}))
        own = sum(1 for k in before if k == svc.dests[removed].key)
        extra.append((sum(a != b for a, b in zip(before, after)) - own) / M)
    assert sum(extra) / len(extra) < 0.02


def test_the_order_matters_and_is_the_dump_order() -> None:
    svc = KERNEL_TEST_SERVICES[80]
    reversed_svc = svc.model_copy(update={"dests": svc.dests[::-1]})
    assert maglev.mh_table(svc) != maglev.mh_table(reversed_svc)


# -------------------------------------------------------------------------- weight 0

def test_a_quiesced_mh_dest_keeps_its_slots_and_drops_its_flows() -> None:
    quiesced = service((1, 0, 3), flags=("mh-port",))
    active = service((1, 2, 3), flags=("mh-port",))
    lost = quiesced.dests[1].key
    assert maglev.mh_table(quiesced, {lost: 2}) == maglev.mh_table(active)
    assert lost not in maglev.mh_table(quiesced)  # added at weight 0: no slots
    flows = [(f"192.0.2.{i}", 1000 + i) for i in range(200)]
    table = maglev.mh_table(active)
    mine = [f for f in flows if table[maglev.first_slot(active, *f)] == lost]
    assert mine and all(maglev.choose(quiesced, *f, last_weights={lost: 2}) is None for f in mine)
    falling_back = quiesced.model_copy(update={"flags": ("mh-fallback", "mh-port")})
    moved = [maglev.choose(falling_back, *f, last_weights={lost: 2}) for f in mine]
    assert all(d is not None and d.key != lost for d in moved)
    others = [f for f in flows if f not in mine]
    assert all(maglev.choose(falling_back, *f, last_weights={lost: 2}).key
               == maglev.choose(active, *f).key for f in others)


def test_nothing_is_scheduled_when_every_dest_is_at_weight_zero() -> None:
    svc = service((0, 0), flags=("mh-fallback",))
    assert maglev.choose(svc, "192.0.2.1") is None
    assert maglev.choose(svc, "192.0.2.1", last_weights={svc.dests[0].key: 1}) is None


# -------------------------------------------------------------------------- sh

def test_sh_tiles_buckets_by_current_weight_in_list_order() -> None:
    svc = service((2, 0, 1), scheduler="sh")
    table = maglev.sh_table(svc)
    a, b, c = (d.key for d in svc.dests)
    assert table[:8] == (a, a, b, c, a, a, b, c)  # weight 0 still takes one bucket per round
    assert len(table) == 256


def test_sh_port_flag_decides_whether_the_port_counts() -> None:
    plain, with_port = service((1,) * 7, scheduler="sh"), service((1,) * 7, scheduler="sh", flags=("sh-port",))
    assert len({maglev.choose(plain, "192.0.2.7", p).key for p in range(1000, 1100)}) == 1
    assert len({maglev.choose(with_port, "192.0.2.7", p).key for p in range(1000, 1100)}) > 1


def test_schedulers_without_a_table() -> None:
    svc = service((1, 1), scheduler="rr")
    assert maglev.table_for(svc) is None
    with pytest.raises(ValueError):
        maglev.choose(svc, "192.0.2.1")
