"""lvscluster.netlink against a real IPVS, with ipvsadm as the independent oracle.

Every test runs in its own throwaway namespace (lo up: the kernel refuses a DR/TUN dest
whose address is not unicast there, and a namespace with lo down has no local table).
ipvsadm output is parsed here, in tests only, never by the library.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from lvscluster.apply.kernel import apply_to_kernel
from lvscluster.errors import EnvironmentProblem, NetlinkOperationError
from lvscluster.netlink import IpvsSocket, observe, observe_node, read_sysctl
from lvscluster.plan.actions import Action
from lvscluster.state import IpvsDest, IpvsService, IpvsState, IpvsTimeouts, NodeState, SyncDaemon

pytestmark = pytest.mark.kernel

SVC = IpvsService(protocol="tcp", address="10.99.0.10", port=80, scheduler="mh", flags=("mh-port",))


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def new_netns() -> str:
    name = f"lvst-ipvs-{uuid.uuid4().hex[:8]}"
    sh(f"ip netns add {name} && ip -n {name} link set lo up")
    return name


@pytest.fixture
def ns():
    name = new_netns()
    yield name
    subprocess.run(["ip", "netns", "del", name])


@pytest.fixture
def ipvs(ns):
    with IpvsSocket(ns) as sock:
        yield sock


def adm(ns: str, *args: str) -> str:
    return sh(f"ip netns exec {ns} ipvsadm " + " ".join(args))


def adm_services(ns: str) -> dict[str, dict]:
    """`ipvsadm -Ln --nosort` parsed: {"TCP 10.99.0.10:80": {"sched", "flags", "dests": [...]}}."""
    out: dict[str, dict] = {}
    current = None
    for line in adm(ns, "-Ln", "--nosort").splitlines()[3:]:
        if line.startswith("  ->"):
            addr, fwd, weight, active, inact = line[4:].split()
            current["dests"].append({"addr": addr, "fwd": fwd, "weight": int(weight)})
        else:
            proto, addr, sched, *rest = line.split()
            current = out[f"{proto} {addr}"] = {"sched": sched, "rest": " ".join(rest), "dests": []}
    return out


def test_service_flags_persistence_netmask_and_set(ns, ipvs):
    ipvs.add_service(SVC)
    assert adm_services(ns)["TCP 10.99.0.10:80"]["sched"] == "mh"
    assert adm_services(ns)["TCP 10.99.0.10:80"]["rest"] == "(mh-port)"
    changed = SVC.model_copy(update={"scheduler": "sh", "flags": ("sh-fallback",), "persistence": 300, "netmask": 24})
    ipvs.set_service(changed)  # SET_SERVICE, not pyroute2's DEL-sending "update"
    entry = adm_services(ns)["TCP 10.99.0.10:80"]
    assert entry["sched"] == "sh"
    assert "persistent 300 mask 255.255.255.0" in entry["rest"] and "sh-fallback" in entry["rest"]
    assert "sh-port" not in entry["rest"]  # the mask clears flags that are no longer wanted
    assert ipvs.services() == (changed,)
    ipvs.del_service(changed)
    assert adm_services(ns) == {}


def test_protocols_families_and_fwmark(ns, ipvs):
    services = [
        IpvsService(protocol="udp", address="10.99.0.11", port=53, scheduler="wlc"),
        IpvsService(protocol="sctp", address="10.99.0.12", port=3868, scheduler="wlc"),
        IpvsService(protocol="tcp", address="2001:db8::10", port=443, family=6, scheduler="sh", persistence=60, netmask=64),
        IpvsService(protocol="fwmark", fwmark=7, scheduler="mh"),
        IpvsService(protocol="fwmark", fwmark=8, family=6, scheduler="wlc"),
    ]
    for svc in services:
        ipvs.add_service(svc)
    keys = set(adm_services(ns))
    assert keys == {"UDP 10.99.0.11:53", "SCTP 10.99.0.12:3868", "TCP [2001:db8::10]:443", "FWM 7", "FWM 8"}
    assert "persistent 60 mask 64" in adm_services(ns)["TCP [2001:db8::10]:443"]["rest"]  # IPv6 prefix-length netmask
    assert sorted(ipvs.services(), key=lambda s: s.key) == sorted(services, key=lambda s: s.key)


def test_dests_all_forward_methods_and_set(ns, ipvs):
    ipvs.add_service(SVC.model_copy(update={"scheduler": "wlc", "flags": ()}))
    svc = ipvs.services()[0]
    dests = [
        IpvsDest(address="10.2.0.1", port=80, forward="dr", weight=3),
        IpvsDest(address="10.2.0.2", port=8080, forward="nat", weight=2, u_threshold=100, l_threshold=10),
        IpvsDest(address="10.2.0.3", port=80, forward="tun"),
        IpvsDest(address="10.2.0.4", port=80, forward="tun", tun_type="gre"),
    ]
    ipvs.set_dests_in_order(svc, dests)
    got = adm_services(ns)["TCP 10.99.0.10:80"]["dests"]
    assert [(d["addr"], d["fwd"], d["weight"]) for d in got] == [
        ("10.2.0.1:80", "Route", 3), ("10.2.0.2:8080", "Masq", 2), ("10.2.0.3:80", "Tunnel", 1), ("10.2.0.4:80", "Tunnel", 1)
    ]
    assert re.search(r"10.2.0.2:8080\s+100\s+10\s", adm(ns, "-Ln", "--thresholds"))
    assert ipvs.dests(svc) == tuple(dests)
    ipvs.set_dest(svc, dests[0].model_copy(update={"weight": 0}))
    ipvs.del_dest(svc, dests[1])
    assert [d["weight"] for d in adm_services(ns)["TCP 10.99.0.10:80"]["dests"]] == [0, 1, 1]


def test_gue_tun_port_reaches_the_kernel_big_endian(ns, ipvs):
    """pyroute2 0.9.7 sends TUN_PORT host-order: 6080 would arrive as 49175."""
    ipvs.add_service(SVC)
    dest = IpvsDest(address="10.2.0.5", port=80, forward="tun", tun_type="gue", tun_port=6080, tun_flags=0x1)
    ipvs.add_dest(SVC, dest)
    saved = adm(ns, "-Sn")
    assert "--tun-type gue --tun-port 6080" in saved, saved
    assert "--tun-nocsum" not in saved and "--tun-csum" in saved  # flag 0x1 = csum
    assert ipvs.dests(SVC) == (dest,)


def test_set_service_is_not_a_delete(ns, ipvs):
    """pyroute2's service("update") sends DEL_SERVICE: our set keeps the service and its dests."""
    ipvs.add_service(SVC)
    ipvs.add_dest(SVC, IpvsDest(address="10.2.0.1", port=80))
    ipvs.set_service(SVC.model_copy(update={"flags": ("mh-fallback", "mh-port")}))
    entry = adm_services(ns)["TCP 10.99.0.10:80"]
    assert entry["rest"] == "(mh-fallback,mh-port)" and len(entry["dests"]) == 1


def test_dest_order_is_what_was_asked_and_reproducible():
    canonical = tuple(IpvsDest(address=f"10.2.0.{i}", port=80) for i in (7, 3, 9, 1, 5, 2, 8))
    lists = []
    names = [new_netns(), new_netns()]
    try:
        for name in names:
            with IpvsSocket(name) as sock:
                sock.add_service(SVC)
                sock.set_dests_in_order(SVC, canonical)
                assert sock.dests(SVC) == canonical
                lists.append(sock.services())
            adm_order = [d["addr"] for d in adm_services(name)["TCP 10.99.0.10:80"]["dests"]]
            assert adm_order == [d.key for d in canonical]
        assert lists[0] == lists[1]
        # a plain add goes to the head: the kernel list is newest-first
        with IpvsSocket(names[0]) as sock:
            sock.add_dest(SVC, IpvsDest(address="10.2.0.100", port=80))
            assert sock.dests(SVC)[0].address == "10.2.0.100"
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name])


def test_sync_daemons(ns, ipvs):
    master = SyncDaemon(state="master", interface="lo", syncid=5, group="239.0.0.5", port=8900, ttl=3, maxlen=1200)
    backup = SyncDaemon(state="backup", interface="lo", syncid=5)
    ipvs.add_daemon(master)
    ipvs.add_daemon(backup)
    text = adm(ns, "-L", "--daemon")
    assert "master sync daemon (mcast=lo, syncid=5, maxlen=1200, group=239.0.0.5, port=8900, ttl=3)" in text
    assert "backup sync daemon (mcast=lo, syncid=5" in text
    got = ipvs.daemons()
    assert got[0] == master
    assert got[1].model_copy(update={"maxlen": 0}) == backup  # the kernel reports the maxlen it chose
    with pytest.raises(NetlinkOperationError, match="a sync master daemon is already running"):
        ipvs.add_daemon(master)
    ipvs.del_daemon(master)
    assert "master" not in adm(ns, "-L", "--daemon")
    ipvs.del_daemon(backup)
    assert ipvs.daemons() == ()
    with pytest.raises(NetlinkOperationError, match="no sync backup daemon is running"):
        ipvs.del_daemon(backup)


def test_timeouts(ns, ipvs):
    assert ipvs.timeouts() == IpvsTimeouts(tcp=900, tcp_fin=120, udp=300)
    ipvs.set_timeouts(IpvsTimeouts(tcp=7200, tcp_fin=60, udp=30))
    assert adm(ns, "-L", "--timeout").strip() == "Timeout (tcp tcpfin udp): 7200 60 30"
    ipvs.set_timeouts(IpvsTimeouts(udp=45))  # 0 = unchanged
    assert ipvs.timeouts() == IpvsTimeouts(tcp=7200, tcp_fin=60, udp=45)


def stats_line(ns: str, key: str) -> list[int]:
    lines = adm(ns, "-Ln", "--stats", "--exact").splitlines()
    for line in lines:
        if key in line:
            return [int(x) for x in line.split()[2:]]
    raise AssertionError(key)


def test_counters_zero_and_flush(ns, ipvs):
    """Real traffic: a UDP datagram to the VIP is scheduled, counted, and zeroed."""
    udp = IpvsService(protocol="udp", address="127.0.0.1", port=5353, scheduler="wlc")
    ipvs.add_service(udp)
    ipvs.add_dest(udp, IpvsDest(address="127.0.0.2", port=5353, forward="nat"))
    sh(f"ip netns exec {ns} python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
       f"[s.sendto(b'x'*100, ('127.0.0.1', 5353)) for _ in range(3)]\"")
    time.sleep(2.5)  # the kernel publishes counters from its 2 s rate estimator
    svc_stats = ipvs.service_stats()["udp/127.0.0.1:5353"]
    dest_stats = ipvs.dest_stats(udp)["127.0.0.2:5353"]
    conns, inpkts, outpkts, inbytes, outbytes = stats_line(ns, "127.0.0.1:5353")
    assert (svc_stats.conns, svc_stats.inpkts, svc_stats.inbytes) == (conns, inpkts, inbytes)
    assert svc_stats.conns >= 1 and svc_stats.inpkts >= 3
    assert dest_stats.conns == svc_stats.conns and dest_stats.inact_conns + dest_stats.active_conns >= 1
    ipvs.zero(udp)
    assert stats_line(ns, "127.0.0.1:5353")[:2] == [0, 0]
    assert ipvs.service_stats()["udp/127.0.0.1:5353"].conns == 0
    ipvs.add_service(SVC)
    ipvs.zero()
    ipvs.flush()
    assert adm_services(ns) == {} and ipvs.services() == ()


def test_error_messages_name_the_object(ns, ipvs):
    with pytest.raises(NetlinkOperationError) as err:
        ipvs.add_service(SVC.model_copy(update={"scheduler": "nosuch"}))
    assert str(err.value) == 'cannot add service tcp/10.99.0.10:80: scheduler "nosuch" not available (modprobe ip_vs_nosuch)'
    with pytest.raises(NetlinkOperationError, match=r"^cannot add dest 10.2.0.5:80 to tcp/10.99.0.10:80: service tcp/10.99.0.10:80 does not exist$"):
        ipvs.add_dest(SVC, IpvsDest(address="10.2.0.5", port=80))
    ipvs.add_service(SVC)
    with pytest.raises(NetlinkOperationError, match="the service already exists"):
        ipvs.add_service(SVC)
    ipvs.add_dest(SVC, IpvsDest(address="10.2.0.5", port=80))
    with pytest.raises(NetlinkOperationError, match="^cannot add dest 10.2.0.5:80 to tcp/10.99.0.10:80: the dest already exists$"):
        ipvs.add_dest(SVC, IpvsDest(address="10.2.0.5", port=80))
    with pytest.raises(NetlinkOperationError, match="^cannot delete dest 10.2.0.6:80 from tcp/10.99.0.10:80: the dest does not exist$"):
        ipvs.del_dest(SVC, IpvsDest(address="10.2.0.6", port=80))
    with pytest.raises(NetlinkOperationError, match='interface "eth9" does not exist'):
        ipvs.add_daemon(SyncDaemon(state="master", interface="eth9"))
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        IpvsSocket("lvst-ipvs-no-such-netns")


def test_apply_pipeline_stops_at_first_error_and_names_it(ns):
    bad = SVC.model_copy(update={"address": "10.99.0.11", "scheduler": "nosuch"})
    actions = [Action(node="d1", kind="add_service", reason="t", service=SVC)]
    actions += [Action(node="d1", kind="add_dest", reason="t", service=SVC, dest=IpvsDest(address=f"10.2.0.{i}")) for i in range(1, 4)]
    actions += [Action(node="d1", kind="add_service", reason="t", service=bad)]
    with pytest.raises(NetlinkOperationError, match='^cannot add service tcp/10.99.0.11:80: scheduler "nosuch"'):
        apply_to_kernel(ns, actions)
    assert len(adm_services(ns)["TCP 10.99.0.10:80"]["dests"]) == 3


def test_observe_and_apply_a_director(ns):
    svc = SVC.model_copy(update={"dests": tuple(IpvsDest(address=f"10.2.0.{i}", port=80) for i in (4, 1, 3))})
    daemon = SyncDaemon(state="backup", interface="lo", syncid=3)
    desired = NodeState(
        name="d1", role="director",
        sysctls={"net.ipv4.vs.sloppy_tcp": "1", "net.ipv4.vs.sync_threshold": "3 50"},
        ipvs=IpvsState(services=(svc,), daemons=(daemon,), timeouts=IpvsTimeouts(tcp=900, tcp_fin=120, udp=300)),
    )
    actions = [Action(node="d1", kind="set_sysctl", reason="t", sysctl=k, value=v) for k, v in desired.sysctls.items()]
    actions.append(Action(node="d1", kind="add_service", reason="t", service=svc.without_dests()))
    actions += [Action(node="d1", kind="add_dest", reason="t", service=svc.without_dests(), dest=d) for d in reversed(svc.dests)]
    actions.append(Action(node="d1", kind="add_daemon", reason="t", daemon=daemon))
    actions.append(Action(node="d1", kind="set_timeouts", reason="t", timeouts=IpvsTimeouts(tcp=900)))
    result = apply_to_kernel(ns, actions)
    assert result.ipvs_writes == 6
    assert read_sysctl(ns, "net.ipv4.vs.sloppy_tcp") == "1"
    assert sh(f"ip netns exec {ns} sysctl -n net.ipv4.vs.sync_threshold").split() == ["3", "50"]
    current = observe_node(ns, desired)
    assert current.sysctls == desired.sysctls
    assert current.ipvs.services == desired.ipvs.services  # dest order included
    assert current.ipvs.daemons[0].model_copy(update={"maxlen": 0}) == daemon
    assert [d["addr"] for d in adm_services(ns)["TCP 10.99.0.10:80"]["dests"]] == ["10.2.0.4:80", "10.2.0.1:80", "10.2.0.3:80"]
    assert observe(ns).ipvs.services == current.ipvs.services


def test_tunl0_for_tun_real_servers(ns):
    subprocess.run(["modprobe", "ipip"])  # `modprobe a b` loads only a: ipip may be missing
    if subprocess.run(["ip", "-n", ns, "link", "show", "tunl0"], capture_output=True).returncode:
        # a namespace made before ipip was loaded has no tunl0: use a fresh one
        sh(f"ip netns del {ns} && ip netns add {ns} && ip -n {ns} link set lo up")
    apply_to_kernel(ns, [Action(node="rs", kind="add_tunnel", reason="TUN", tunnel="tunl0"),
               Action(node="rs", kind="add_address", reason="VIP", address={"interface": "tunl0", "address": "10.99.0.10/32"}),
               Action(node="rs", kind="set_sysctl", reason="TUN", sysctl="net.ipv4.conf.tunl0.rp_filter", value="0")])
    assert "UP" in sh(f"ip -n {ns} link show tunl0").split(">")[0]
    assert "10.99.0.10/32" in sh(f"ip -n {ns} addr show dev tunl0")
    seen = observe(ns, tunnels=("tunl0",), sysctls=["net.ipv4.conf.tunl0.rp_filter"], ipvs=False)
    assert seen.tunnels == ("tunl0",) and seen.sysctls["net.ipv4.conf.tunl0.rp_filter"] == "0"
    assert [a.key for a in seen.addresses] == ["10.99.0.10/32 on tunl0"]


def test_many_dests_pipeline_matches_ipvsadm(ns):
    services = [SVC.model_copy(update={"address": f"10.99.1.{i}"}) for i in range(1, 21)]
    dests = tuple(IpvsDest(address=f"10.2.1.{j}", port=80, weight=j % 5) for j in range(1, 31))
    with IpvsSocket(ns) as sock:
        t = time.perf_counter()
        for svc in services:
            sock.add_service(svc)
        sock.execute([op for svc in services for op in __import__("lvscluster.netlink.ipvs", fromlist=["x"]).ops_add_dests_in_order(svc, dests)], window=64)
        got = sock.services()
    assert len(re.findall(r"^  -> 10\.2\.1\.", adm(ns, "-Ln"), re.M)) == 600
    assert all(s.dests == dests for s in got), time.perf_counter() - t
