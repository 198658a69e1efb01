"""The kernel's own mh and sh choices, flow by flow, against lvscluster.plan.maglev.choose().

A client namespace and a director namespace share a veth pair (static neighbours both ways,
so no packet waits for ARP). The director holds a VIP on lo and ten services on it: mh and sh,
with and without the port flag, with mixed and with large weights (the rshift path), with a
dest quiesced to weight 0 (table kept) or added at weight 0 (no slots), with and without
fallback. From the client a raw socket sends one TCP SYN per flow, each from its own source
address and port (300 random flows per service plus flows picked to land where a prediction
is most likely wrong). The kernel schedules each SYN and records the real server it chose in
its connection table (/proc/net/ip_vs_conn_sync); the DR-forwarded SYNs then die in the client
namespace. Every flow's recorded dest (or its absence) must equal choose() on the services as
netlink dumps them.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import subprocess
import time
import uuid
from contextlib import contextmanager
from collections import Counter

import pytest

from lvscluster.netlink import IpvsSocket
from lvscluster.netlink.connections import connections
from lvscluster.netlink.netns import socket_in_netns
from lvscluster.plan import maglev
from lvscluster.state import IpvsDest, IpvsService
from maglev_pinned import PINNED

pytestmark = pytest.mark.kernel

VIP = "10.99.0.10"
CLIENT_MAC, DIRECTOR_MAC = "02:00:00:77:00:01", "02:00:00:77:00:02"
CLIENT_ADDR, DIRECTOR_ADDR = "10.77.0.1", "10.77.0.2"
REAL_SERVERS = [f"10.77.2.{i}" for i in range(11, 18)]
FLOWS_PER_SERVICE = 300

# port: (scheduler, flags, weights in insertion order, {dest index: weight set to after adding})
SERVICES = {
    80: ("mh", ("mh-port",), (1, 2, 3, 1, 5, 2, 1), {}),
    81: ("mh", (), (1, 2, 3, 1, 5, 2, 1), {}),
    82: ("mh", ("mh-port",), (100, 300, 1000, 70, 250), {}),
    83: ("mh", ("mh-port",), (1, 2, 3, 1, 5, 2), {1: 0}),
    84: ("mh", ("mh-fallback", "mh-port"), (1, 2, 3, 1, 5, 2), {1: 0}),
    85: ("mh", ("mh-fallback", "mh-port"), (1, 0, 3, 1, 5, 2), {}),
    86: ("sh", ("sh-port",), (1, 2, 3, 1, 5, 2), {}),
    87: ("sh", (), (1, 2, 3, 1, 5, 2), {}),
    88: ("sh", ("sh-fallback", "sh-port"), (1, 2, 0, 1, 5, 2), {}),
    89: ("sh", ("sh-port",), (1, 2, 0, 1, 5, 2), {}),
}


def run(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True)


def batch(netns: str | None, commands: list[str]) -> None:
    """Run `ip` commands in one process (in a namespace when given)."""
    where = ["-n", netns] if netns else []
    subprocess.run(["ip", *where, "-batch", "-"], input="\n".join(commands) + "\n", check=True,
                   capture_output=True, text=True)


@contextmanager
def client_and_director():
    """Two fresh namespaces joined by a veth pair, names `mgv-c-*` and `mgv-d-*`; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    client, director = f"mgv-c-{tag}", f"mgv-d-{tag}"
    try:
        run(f"ip netns add {client} && ip netns add {director}")
        batch(None, [f"link add veth{tag} address {CLIENT_MAC} netns {client} type veth peer name eth0 "
                     f"address {DIRECTOR_MAC} netns {director}"])
        batch(client, [
            f"link set veth{tag} name eth0", "link set lo up", "link set eth0 up",
            f"addr add {CLIENT_ADDR}/16 dev eth0", f"route add {VIP}/32 via {DIRECTOR_ADDR}",
            f"neigh replace {DIRECTOR_ADDR} lladdr {DIRECTOR_MAC} dev eth0 nud permanent"])
        batch(director, [
            "link set lo up", "link set eth0 up", f"addr add {DIRECTOR_ADDR}/16 dev eth0", f"addr add {VIP}/32 dev lo",
            *(f"neigh replace {rs} lladdr {CLIENT_MAC} dev eth0 nud permanent" for rs in REAL_SERVERS)])
        yield client, director
    finally:
        for name in (client, director):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def namespaces():
    with client_and_director() as names:
        yield names


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_packet(src: str, sport: int, dst: str, dport: int) -> bytes:
    """An IPv4 TCP SYN (the kernel fills the IP checksum, length and id of a raw IP_HDRINCL send)."""
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0, saddr, daddr)
    return ip + tcp


def random_flows(rng: random.Random, count: int, addresses: int) -> list[tuple[str, int]]:
    """`count` distinct (client address, source port) pairs from `addresses` addresses in 10.77.128.0/17."""
    base = int(ipaddress.IPv4Address("10.77.128.1"))
    pool = [str(ipaddress.IPv4Address(base + rng.randrange(32000))) for _ in range(addresses)]
    flows: set[tuple[str, int]] = set()
    while len(flows) < count:
        flows.add((rng.choice(pool), rng.randrange(1024, 65536)))
    return sorted(flows)


def pick_flows(rng: random.Random, wanted: int, predicate, tries: int = 30000) -> list[tuple[str, int]]:
    """Up to `wanted` random flows (each from its own address) for which predicate(ip, port) holds."""
    base = int(ipaddress.IPv4Address("10.77.128.1"))
    picked = []
    for _ in range(tries):
        ip, port = str(ipaddress.IPv4Address(base + rng.randrange(32000))), rng.randrange(1024, 65536)
        if predicate(ip, port) and (ip, port) not in picked:
            picked.append((ip, port))
            if len(picked) == wanted:
                break
    return picked


def build_services(director: str) -> list[IpvsService]:
    """Program every service (dests added in insertion order, then the weight changes); return the dump."""
    with IpvsSocket(director) as sock:
        for port, (scheduler, flags, weights, changes) in SERVICES.items():
            svc = IpvsService(protocol="tcp", address=VIP, port=port, scheduler=scheduler, flags=flags)
            sock.add_service(svc)
            dests = [IpvsDest(address=rs, port=port, weight=w) for rs, w in zip(REAL_SERVERS, weights)]
            for dest in dests:
                sock.add_dest(svc, dest)
            for index, weight in changes.items():
                sock.set_dest(svc, dests[index].model_copy(update={"weight": weight}))
        return sorted(sock.services(), key=lambda s: s.port)


def kernel_choices(director: str) -> dict[tuple[int, str], str]:
    """{(VIP port, "client:port"): "dest:port"} from the director's connection table."""
    return {(int(c.vip.rsplit(":", 1)[1]), c.client): c.dest for c in connections(director) if c.protocol == "tcp"}


def send_syns(client: str, flows: list[tuple[int, str, int]]) -> None:
    raw = socket_in_netns(client, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for count, (vport, ip, sport) in enumerate(flows, 1):
            raw.sendto(syn_packet(ip, sport, VIP, vport), (VIP, 0))
            if count % 200 == 0:
                time.sleep(0.02)  # let the director's backlog drain
    finally:
        raw.close()


def learned_last_weights(services: list[IpvsService]) -> dict[int, dict[str, int]]:
    """What the dump cannot show: a dest set to 0 keeps its earlier weight as the kernel's last_weight."""
    return {svc.port: {f"{REAL_SERVERS[i]}:{svc.port}": SERVICES[svc.port][2][i] for i in SERVICES[svc.port][3]}
            for svc in services}


def plan_flows(services: list[IpvsService], tables: dict, rng: random.Random) -> list[tuple[int, str, int]]:
    """(VIP port, client, source port) for every flow to send: random ones, then the telling ones."""
    by_port = {svc.port: svc for svc in services}
    flows: list[tuple[int, str, int]] = []
    for svc in services:
        with_port = maglev.has_flag(svc, maglev.PORT_BIT)
        flows += [(svc.port, ip, sp) for ip, sp in random_flows(rng, FLOWS_PER_SERVICE, 60 if with_port else 3000)]
    # flows whose prediction hinges on the list order: the insertion-order table would differ
    mh_port = by_port[80]
    reordered = mh_port.model_copy(update={"dests": mh_port.dests[::-1]})
    reordered_table = maglev.mh_table(reordered)
    order_flows = pick_flows(rng, 25, lambda ip, p: maglev.choose(mh_port, ip, p, tables[80]).key
                             != maglev.choose(reordered, ip, p, reordered_table).key)
    assert len(order_flows) == 25
    flows += [(80, ip, p) for ip, p in order_flows]
    # flows that land on the weight-0 dest first, so each weight-0 case is exercised 20 times at least
    for port in (83, 84, 88, 89):
        svc, table = by_port[port], tables[port]
        zero = next(d.key for d in svc.dests if d.weight == 0)
        hits = pick_flows(rng, 20, lambda ip, p, svc=svc, table=table, zero=zero:
                          table[maglev.first_slot(svc, ip, p)] == zero)
        assert len(hits) == 20, port
        flows += [(port, ip, p) for ip, p in hits]
    return flows + [(vport, ip, sp) for vport, ip, sp, _ in PINNED]


def predictions(services: list[IpvsService]) -> dict[tuple[int, str], str | None]:
    """{(VIP port, "client:port"): dest key or None} for every planned flow, by choose()."""
    last_weights = learned_last_weights(services)
    tables = {svc.port: maglev.table_for(svc, last_weights[svc.port]) for svc in services}
    by_port = {svc.port: svc for svc in services}
    predicted = {}
    for vport, ip, sp in plan_flows(services, tables, random.Random(61)):
        dest = maglev.choose(by_port[vport], ip, sp, tables[vport], last_weights[vport])
        predicted[(vport, f"{ip}:{sp}")] = dest.key if dest else None
    return predicted


def test_kernel_schedules_every_flow_where_choose_predicts(namespaces):
    client, director = namespaces
    services = build_services(director)

    # the dump is the kernel list: newest dest first
    for svc in services:
        inserted = [rs for rs, _ in zip(REAL_SERVERS, SERVICES[svc.port][2])]
        assert [d.address for d in svc.dests] == inserted[::-1], svc.key

    predicted = predictions(services)
    flows = [(v, c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) for v, c in predicted]
    send_syns(client, flows)
    time.sleep(0.5)
    seen = kernel_choices(director)
    missing = [(v, c) for (v, c), key in predicted.items() if key is not None and (v, c) not in seen]
    if missing:  # a SYN dropped on the way gets one more chance; an unscheduled one gets none
        send_syns(client, [(v, c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) for v, c in missing])
        time.sleep(0.5)
        seen = kernel_choices(director)

    wrong = {flow: (key, seen.get(flow)) for flow, key in predicted.items() if seen.get(flow) != key}
    assert not wrong, f"{len(wrong)} of {len(predicted)} flows differ (predicted, kernel): {list(wrong.items())[:10]}"
    assert {(v, ip, sp): seen.get((v, f"{ip}:{sp}")) for v, ip, sp, _ in PINNED} == {
        (v, ip, sp): dest for v, ip, sp, dest in PINNED}

    # the weight-0 cases did what the model says: quiesced without fallback drops its flows,
    # with fallback they go elsewhere, and a dest added at 0 owns no slot at all
    unscheduled = Counter(v for (v, _), key in predicted.items() if key is None)
    assert unscheduled[83] >= 20 and unscheduled[89] >= 20
    assert unscheduled[84] == unscheduled[85] == unscheduled[88] == 0
    assert sum(unscheduled.values()) == unscheduled[83] + unscheduled[89]
    assert Counter(seen[f] for f in predicted if f[0] == 85 and f in seen)[f"{REAL_SERVERS[1]}:85"] == 0
