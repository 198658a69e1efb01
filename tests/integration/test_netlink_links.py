"""Links, addresses, routes and sysctls through lvscluster.netlink on the host, per namespace.

Runs as root on the host (netns and veth work here; IPVS does not). Every test uses a
throwaway namespace named `lvst-nl-*`. `ip` is used only as an independent oracle.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import pytest

from lvscluster.apply.kernel import apply_to_kernel
from lvscluster.errors import EnvironmentProblem, NetlinkOperationError
from lvscluster.netlink import Links, observe, read_sysctl, read_sysctls, write_sysctl, write_sysctls
from lvscluster.plan.actions import Action
from lvscluster.state import InterfaceAddress

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns():
    name = f"lvst-nl-{uuid.uuid4().hex[:8]}"
    sh(f"ip netns add {name}")
    yield name
    subprocess.run(["ip", "netns", "del", name])


def test_vip_on_lo_added_and_removed(ns):
    vip = InterfaceAddress(interface="lo", address="10.99.0.10/32")
    with Links(ns) as links:
        links.set_up("lo")
        assert links.is_up("lo")
        links.add_address(vip)
        links.add_address(vip)  # idempotent
        assert links.addresses(["lo"]) == (vip,)  # 127.0.0.1/8 and ::1 are not managed
        assert "inet 10.99.0.10/32" in sh(f"ip -n {ns} -4 addr show dev lo")
        links.del_address(vip)
        links.del_address(vip)  # absent already: fine
        assert links.addresses(["lo"]) == ()
    assert "10.99.0.10" not in sh(f"ip -n {ns} addr show dev lo")
    assert "10.99.0.10" not in sh("ip addr show dev lo"), "the host namespace must be untouched"


def test_ipv6_vip(ns):
    vip = InterfaceAddress(interface="lo", address="2001:db8::10/128")
    with Links(ns) as links:
        links.set_up("lo")
        links.add_address(vip)
        assert vip in links.addresses(["lo"])
    assert "2001:db8::10/128" in sh(f"ip -n {ns} -6 addr show dev lo")


def test_missing_interface_and_tunnel_are_clear_errors(ns):
    with Links(ns) as links:
        with pytest.raises(NetlinkOperationError, match=f'interface "eth9" does not exist in netns {ns}'):
            links.add_address(InterfaceAddress(interface="eth9", address="10.0.0.1/32"))
        # the host kernel has no ipip: tunl0 never appears
        if links.index("tunl0") is None:
            with pytest.raises(EnvironmentProblem, match="modprobe ipip"):
                links.ensure_tunnel("tunl0")


def test_missing_namespace_is_not_created():
    name = f"lvst-nl-missing-{uuid.uuid4().hex[:6]}"
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        Links(name)
    assert not os.path.exists(f"/run/netns/{name}")


def test_routes_on_a_veth(ns):
    peer = f"lvst-nl-v{uuid.uuid4().hex[:4]}"
    sh(f"ip link add {peer} type veth peer name eth1 netns {ns}")
    try:
        with Links(ns) as links:
            links.set_up("eth1")
            links.add_address(InterfaceAddress(interface="eth1", address="192.0.2.2/24"))
            links.add_route("default", gateway="192.0.2.1")
            links.add_route("198.51.100.0/24", dev="eth1")
            routes = {r["dst"]: r for r in links.routes()}
            assert routes["default"]["gateway"] == "192.0.2.1"
            assert routes["198.51.100.0/24"]["dev"] == "eth1"
            out = sh(f"ip -n {ns} route show")
            assert "default via 192.0.2.1 dev eth1" in out and "198.51.100.0/24 dev eth1" in out
            links.del_route("198.51.100.0/24")
            links.del_route("198.51.100.0/24")
            assert "198.51.100.0/24" not in sh(f"ip -n {ns} route show")
    finally:
        subprocess.run(["ip", "link", "del", peer], stderr=subprocess.DEVNULL)


def test_sysctls_are_per_namespace(ns):
    my_netns = os.readlink("/proc/thread-self/ns/net")
    host_before = read_sysctls(None, ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"])
    write_sysctls(ns, {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})
    write_sysctl(ns, "net.ipv4.conf.lo.rp_filter", "2")
    assert read_sysctl(ns, "net.ipv4.conf.all.arp_ignore") == "1"
    assert read_sysctl(ns, "net.ipv4.conf.lo.rp_filter") == "2"
    # oracle: sysctl(8) run inside the namespace
    assert sh(f"ip netns exec {ns} sysctl -n net.ipv4.conf.all.arp_announce").strip() == "2"
    assert sh(f"ip netns exec {ns} sysctl -n net.ipv4.conf.lo.rp_filter").strip() == "2"
    # the host's values did not move, and the calling thread is still in the host namespace
    assert read_sysctls(None, list(host_before)) == host_before
    assert os.readlink("/proc/thread-self/ns/net") == my_netns


def test_sysctl_whitespace_and_missing(ns):
    assert read_sysctl(ns, "net.ipv4.ip_local_port_range").count(" ") == 1  # kernel prints a tab
    assert read_sysctl(ns, "net.ipv4.vs.sloppy_tcp") is None  # no IPVS on this kernel
    with pytest.raises(EnvironmentProblem, match="is ip_vs loaded"):
        write_sysctl(ns, "net.ipv4.vs.sloppy_tcp", "1")


def test_sysctls_from_concurrent_threads(ns):
    """Each call enters the namespace in its own helper thread: concurrent callers never mix."""
    write_sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1")
    host = read_sysctl(None, "net.ipv4.conf.all.arp_ignore")
    seen: list[tuple[str, str]] = []

    def worker(name):
        for _ in range(20):
            seen.append((name, read_sysctl(name, "net.ipv4.conf.all.arp_ignore")))

    threads = [threading.Thread(target=worker, args=(n,)) for n in (ns, None, ns, None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {v for n, v in seen if n == ns} == {"1"}
    assert {v for n, v in seen if n is None} == {host}


def test_apply_and_observe_real_server_side(ns):
    vip = InterfaceAddress(interface="lo", address="10.99.0.10/32")
    actions = [
        Action(node="rs1", kind="set_sysctl", reason="DR", sysctl="net.ipv4.conf.all.arp_ignore", value="1"),
        Action(node="rs1", kind="set_sysctl", reason="DR", sysctl="net.ipv4.conf.all.arp_announce", value="2"),
        Action(node="rs1", kind="add_address", reason="VIP", address=vip),
    ]
    with Links(ns) as links:
        links.set_up("lo")
    result = apply_to_kernel(ns, actions)
    assert result.actions == 3 and result.ipvs_writes == 0
    seen = observe(ns, sysctls=["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"], ipvs=False)
    assert seen.addresses == (vip,)
    assert seen.sysctls == {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
    apply_to_kernel(ns, [Action(node="rs1", kind="del_address", reason="VIP gone", address=vip)])
    assert observe(ns, ipvs=False).addresses == ()
    with pytest.raises(ValueError, match="not a netlink action"):
        apply_to_kernel(ns, [Action(node="rs1", kind="set_frr", reason="x", frr="")])
