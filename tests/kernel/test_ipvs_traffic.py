"""Real traffic through a DR service programmed by lvscluster.netlink.

Namespaces client / director / rs1 / rs2 hang off a bridge in a `lan` namespace. The
library puts the VIP on the director's lo, programs the service and dests, and on each
real server puts the VIP on lo and sets arp_ignore=1 / arp_announce=2. A tiny Python TCP
server on each real server answers its name; the client connects to VIP:port and must get
an answer from a real server (the director never answers by itself: it has no listener).
Only addresses inside these namespaces are used.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from lvscluster.apply.kernel import apply_to_kernel
from lvscluster.netlink import IpvsSocket, observe
from lvscluster.plan.actions import Action
from lvscluster.state import InterfaceAddress, IpvsDest, IpvsService

pytestmark = pytest.mark.kernel

VIP, PORT = "10.99.0.10", 8080
LAN = {"client": "10.0.0.1", "director": "10.0.0.2", "rs1": "10.0.0.11", "rs2": "10.0.0.12"}

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode() + b"\\n"); c.close()
""" % PORT

CLIENT = """
import socket, sys
for attempt in range(50):
    try:
        c = socket.create_connection((sys.argv[1], %d), timeout=2)
        print(c.recv(100).decode().strip()); break
    except OSError:
        import time; time.sleep(0.2)
else:
    sys.exit("no answer")
""" % PORT


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def lab():
    tag = uuid.uuid4().hex[:4]
    names = {role: f"lvst-{role}-{tag}" for role in (*LAN, "lan")}
    servers = []
    try:
        for ns in names.values():
            sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
        sh(f"ip -n {names['lan']} link add br0 type bridge && ip -n {names['lan']} link set br0 up")
        for role, addr in LAN.items():
            ns = names[role]
            sh(f"ip -n {names['lan']} link add p-{role} type veth peer name eth0 netns {ns}")
            sh(f"ip -n {names['lan']} link set p-{role} master br0 up")
            sh(f"ip -n {ns} addr add {addr}/24 dev eth0 && ip -n {ns} link set eth0 up")
        sh(f"ip -n {names['client']} route add {VIP}/32 via {LAN['director']}")
        for rs in ("rs1", "rs2"):
            servers.append(subprocess.Popen(["ip", "netns", "exec", names[rs], sys.executable, "-c", SERVER, rs]))
        yield names
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns])


def test_dr_service_answers_through_the_director(lab):
    vip = InterfaceAddress(interface="lo", address=f"{VIP}/32")
    svc = IpvsService(protocol="tcp", address=VIP, port=PORT, scheduler="mh", flags=("mh-port",))
    dests = (IpvsDest(address=LAN["rs1"], port=PORT), IpvsDest(address=LAN["rs2"], port=PORT))
    for rs in ("rs1", "rs2"):
        apply_to_kernel(lab[rs], [
            Action(node=rs, kind="set_sysctl", reason="DR", sysctl="net.ipv4.conf.all.arp_ignore", value="1"),
            Action(node=rs, kind="set_sysctl", reason="DR", sysctl="net.ipv4.conf.all.arp_announce", value="2"),
            Action(node=rs, kind="add_address", reason="VIP", address=vip),
        ])
    actions = [Action(node="d1", kind="add_address", reason="VIP", address=vip),
               Action(node="d1", kind="add_service", reason="t", service=svc)]
    actions += [Action(node="d1", kind="add_dest", reason="t", service=svc, dest=d) for d in reversed(dests)]
    apply_to_kernel(lab["director"], actions)
    assert observe(lab["director"]).ipvs.services[0].dests == dests

    answers = []
    for _ in range(6):
        out = sh(f"ip netns exec {lab['client']} {sys.executable} -c '{CLIENT}' {VIP}")
        answers.append(out.strip())
    assert set(answers) <= {"rs1", "rs2"} and answers, answers

    # the real servers kept ARP for the VIP to themselves: the client resolved the director
    neigh = sh(f"ip -n {lab['client']} neigh show")
    assert LAN["director"] in neigh and VIP not in neigh
    # the director counted the connections (the library's counters, then ipvsadm's)
    time.sleep(2.5)  # the kernel publishes counters from its 2 s rate estimator
    with IpvsSocket(lab["director"]) as sock:
        stats = sock.service_stats()[svc.key]
        per_dest = sock.dest_stats(svc)
    assert stats.conns >= len(answers)
    assert sum(d.conns for d in per_dest.values()) == stats.conns
    assert per_dest[f"{LAN['rs1']}:{PORT}"].conns == answers.count("rs1")
    text = sh(f"ip netns exec {lab['director']} ipvsadm -Ln --stats --exact")
    line = next(x for x in text.splitlines() if f"{VIP}:{PORT}" in x)
    assert int(line.split()[2]) == stats.conns

    # quiesce rs1 (weight 0 with mh-fallback would re-hash; without it mh keeps the slots)
    apply_to_kernel(lab["director"], [Action(node="d1", kind="set_service", reason="t", service=svc.model_copy(update={"flags": ("mh-fallback", "mh-port")})),
                            Action(node="d1", kind="set_dest", reason="t", service=svc, dest=dests[0].model_copy(update={"weight": 0}))])
    time.sleep(0.1)
    for _ in range(4):
        assert sh(f"ip netns exec {lab['client']} {sys.executable} -c '{CLIENT}' {VIP}").strip() == "rs2"
