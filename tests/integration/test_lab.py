"""The netns lab on this machine: built from a topology, answering, and removed completely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvscluster.apply import frr
from lvscluster.lab import netns as provider
from lvscluster.lab.common import lab_namespaces, processes_in
from lvscluster.lab.provider import shrink
from lvscluster.lab.record import read_record, state_dir

ROOT = Path(__file__).parent.parent.parent
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path("/usr/lib/frr/zebra").exists(), reason="FRR is not installed (apt-get install frr)"),
]

TOPOLOGY = """
name: {name}
vips:
  - name: web
    address: 10.99.0.10
    services: [{{protocol: tcp, port: 80}}, {{protocol: udp, port: 53}}]
    real_servers: [{{node: rs1}}, {{node: rs2}}]
nodes:
  c1: {{role: client}}
  r1: {{role: router, router_id: 10.255.0.1}}
  d1: {{role: director, router_id: 10.255.0.11}}
  rs1: {{role: real_server}}
  rs2: {{role: real_server}}
links:
  - {{endpoints: [c1:eth0, r1:eth0], subnet: 172.16.0.0/24}}
  - {{endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}}
  - {{name: lan0, endpoints: [r1:lan0, d1:lan0, rs1:eth0, rs2:eth0], subnet: 10.2.0.0/24}}
"""


def lvscluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvscluster.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def topology(tmp_path: Path):
    name = f"lvst{os.getpid() % 100000}"
    path = tmp_path / "lab.lvs.yml"
    path.write_text(TOPOLOGY.format(name=name))
    yield name, path
    provider.down(name)


def in_node(lab: str, node: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", f"{lab}.{node}", *argv], capture_output=True, text=True, timeout=30)


def assert_test_servers_answer(lab: str, node: str, rs1: str, rs2: str) -> None:
    """From `node`: rs1's HTTP answer, rs2's line echo and rs1's UDP echo, each naming its server."""
    host = f"[{rs1}]" if ":" in rs1 else rs1
    assert in_node(lab, node, "curl", "-s", "-m", "5", f"http://{host}/").stdout == "rs1\n"
    family = "AF_INET6" if ":" in rs1 else "AF_INET"
    echo = in_node(lab, node, sys.executable, "-c",
                   f"import socket; s=socket.create_connection(('{rs2}', 80), 5); s.sendall(b'hello\\n');"
                   "print(s.recv(100).decode(), end='');"
                   f"u=socket.socket(socket.{family}, socket.SOCK_DGRAM); u.settimeout(5);"
                   f"u.sendto(b'ping', ('{rs1}', 53)); print(u.recv(100).decode())")
    assert echo.stdout == "rs2 hello\nrs1 ping\n", echo.stderr


def test_lab_up_status_exec_down(topology) -> None:
    name, path = topology
    done = lvscluster("lab", "up", "--no-vm", str(path))
    assert done.returncode == 0, done.stderr
    assert "cabling" in done.stderr  # progress is shown
    assert lab_namespaces(name) == sorted(f"{name}.{n}" for n in ("c1", "r1", "d1", "rs1", "rs2", "_switch"))

    # addresses as the model assigns them, default routes via the router on the LAN
    addrs = json.loads(in_node(name, "rs2", "ip", "-j", "addr", "show", "eth0").stdout)
    assert [a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet"] == ["10.2.0.4"]
    route = json.loads(in_node(name, "rs1", "ip", "-j", "route", "show", "default").stdout)
    assert route[0]["gateway"] == "10.2.0.1"

    # the test servers answer with their own name: HTTP, line echo and UDP echo, across the bridge
    assert_test_servers_answer(name, "d1", rs1="10.2.0.3", rs2="10.2.0.4")

    status = json.loads(lvscluster("lab", "status", str(path), "--json").stdout)
    assert status["nodes"]["d1"]["frr"] == ["zebra", "ospfd", "bfdd"] and status["nodes"]["rs1"]["processes"] == 1
    assert lvscluster("lab", "exec", "--lab", name, "c1", "--", "ip", "-j", "addr").returncode == 0

    again = lvscluster("lab", "up", "--no-vm", str(path))
    assert again.returncode == 1 and "already up" in again.stderr

    assert lvscluster("lab", "down", str(path)).returncode == 0
    assert lab_namespaces(name) == []
    assert not state_dir(name).exists()
    assert not list(frr.RUN.glob(f"{name}+*"))
    second = lvscluster("lab", "down", str(path))
    assert second.returncode == 0 and "nothing to remove" in second.stdout


def test_failed_lab_up_cleans_up_and_names_the_step(topology) -> None:
    name, path = topology
    blocker = frr.RUN / f"{name}+d1"  # a stale file where d1's FRR run directory must go
    frr.RUN.mkdir(parents=True, exist_ok=True)
    blocker.write_text("stale")
    try:
        done = lvscluster("lab", "up", "--no-vm", str(path))
    finally:
        blocker.unlink(missing_ok=True)
    assert done.returncode == 1
    assert "lab up failed at FRR on d1" in done.stderr
    assert "Traceback" not in done.stderr
    assert lab_namespaces(name) == []
    assert not list(frr.RUN.glob(f"{name}+*"))


def test_a_running_lab_grows_by_a_new_director_without_touching_the_rest(topology) -> None:
    from lvscluster.lab.layout import plan_lab
    from lvscluster.model.cluster import Cluster
    from lvscluster.model.edit import add_director, edit_topology
    from lvscluster.model.loader import load_topology

    name, path = topology
    assert lvscluster("lab", "up", "--no-vm", str(path)).returncode == 0
    servers_before = processes_in(f"{name}.rs1")
    edit_topology(path, add_director(Cluster.from_topology(load_topology(path)), "d2", "10.255.0.12"))
    added = provider.grow(plan_lab(Cluster.from_topology(load_topology(path))), path)
    assert added == ["d2"]
    assert processes_in(f"{name}.rs1") == servers_before  # the test server kept running
    assert in_node(name, "d2", "curl", "-s", "-m", "5", "http://10.2.0.3/").stdout == "rs1\n"  # on the shared LAN
    uplink = json.loads(in_node(name, "r1", "ip", "-j", "addr", "show", "d2").stdout)  # its own cable to r1
    assert uplink[0]["operstate"] == "UP" and uplink[0]["addr_info"][0]["local"] == "10.1.1.5"
    assert frr.is_running(frr.pathspace_for(f"{name}.d2"))
    assert provider.grow(plan_lab(Cluster.from_topology(load_topology(path))), path) == []  # nothing more to add

    # and shrinks by it again (`director remove`): namespace, cable, FRR and record go; the rest runs on
    assert shrink(name, "d2")
    assert f"{name}.d2" not in lab_namespaces(name) and not frr.is_running(frr.pathspace_for(f"{name}.d2"))
    assert "d2" not in {i["ifname"] for i in json.loads(in_node(name, "r1", "ip", "-j", "link", "show").stdout)}
    record = read_record(name)
    assert "d2" not in record.namespaces and "d2" not in record.frr_nodes and "d2" not in record.frr_daemons
    assert not [v for v in record.veths if f"{name}.d2" in (v["netns"], v["peer_netns"])]
    assert processes_in(f"{name}.rs1") == servers_before
    assert in_node(name, "d1", "curl", "-s", "-m", "5", "http://10.2.0.3/").stdout == "rs1\n"
    assert shrink(name, "d2") is False  # already gone


def test_the_scaletest_fault_events_act_on_a_lab_and_are_undone(topology) -> None:
    """crash-frr, cut-sync and link-down on a host lab (no IPVS needed), each checked on the node,
    and undone by their counterparts or by the scaletest's repair after the traffic."""
    from lvscluster.lab.layout import plan_lab
    from lvscluster.model.cluster import Cluster
    from lvscluster.model.loader import load_topology
    from lvscluster.apply.placement import in_namespaces
    from lvscluster.lab.provider import lab_faults
    from lvscluster.scaletest.faultevents import FaultEvents
    from lvscluster.scaletest.report import ChurnEvent

    name, path = topology
    cluster = Cluster.from_topology(load_topology(path))
    layout = plan_lab(cluster)
    provider.up(layout, path, agents=False)
    events = FaultEvents(cluster, in_namespaces(layout.namespaces), lab_faults(name), lambda _: None)
    pathspace = frr.pathspace_for(f"{name}.d1")

    events.carry_out(ChurnEvent(0, "crash-frr", "d1"))
    assert not frr.running(pathspace, "ospfd") and frr.running(pathspace, "zebra")

    events.carry_out(ChurnEvent(0, "cut-sync", "d1"))
    rules = in_node(name, "d1", "nft", "list", "table", "inet", "lvscluster_cut_sync").stdout
    assert "udp dport 8848 drop" in rules and "hook input" in rules and "hook output" in rules
    events.carry_out(ChurnEvent(1, "restore-sync", "d1"))
    assert in_node(name, "d1", "nft", "list", "table", "inet", "lvscluster_cut_sync").returncode != 0

    events.carry_out(ChurnEvent(2, "link-down", "rs1"))
    assert json.loads(in_node(name, "rs1", "ip", "-j", "link", "show", "eth0").stdout)[0]["operstate"] == "DOWN"
    assert in_node(name, "rs1", "ip", "route", "show", "default").stdout == ""  # it went with the link
    events.carry_out(ChurnEvent(3, "link-up", "rs1"))
    assert "via 10.2.0.1" in in_node(name, "rs1", "ip", "route", "show", "default").stdout
    assert in_node(name, "d1", "curl", "-s", "-m", "5", "http://10.2.0.3/").stdout == "rs1\n"  # answering again

    events.carry_out(ChurnEvent(4, "cut-sync", "d1"))  # left in place by the run: the repair undoes it
    events.carry_out(ChurnEvent(4, "link-down", "rs2"))
    events.crashed.clear()  # d1 has no agent and this kernel no IPVS: the repair's redeploy is the VM tests'
    events.repair(cluster)
    assert in_node(name, "d1", "nft", "list", "table", "inet", "lvscluster_cut_sync").returncode != 0
    assert "via 10.2.0.1" in in_node(name, "rs2", "ip", "route", "show", "default").stdout


def test_a_dual_stack_lab_numbers_and_routes_both_families(tmp_path: Path) -> None:
    """Links with `subnet6:` get IPv6 addresses at once (no DAD wait) beside the IPv4 ones, clients
    and real servers a default route per family via the router, and the test servers answer both."""
    name = f"lvs6{os.getpid() % 100000}"
    text = TOPOLOGY.format(name=name)
    vips, rest = text.split("nodes:", 1)
    vips += ("  - name: web6\n    address: 2001:db8:99::10\n"
             "    services: [{protocol: tcp, port: 80}, {protocol: udp, port: 53}]\n"
             "    real_servers: [{node: rs1}, {node: rs2}]\n")
    rest = (rest.replace("subnet: 172.16.0.0/24}", 'subnet: 172.16.0.0/24, subnet6: "2001:db8:16::/64"}')
            .replace("subnet: 10.1.1.0/30}", 'subnet: 10.1.1.0/30, subnet6: "2001:db8:1:1::/64"}')
            .replace("subnet: 10.2.0.0/24}", 'subnet: 10.2.0.0/24, subnet6: "2001:db8:2::/64"}'))
    path = tmp_path / "dual.lvs.yml"
    path.write_text(vips + "nodes:" + rest)
    try:
        done = lvscluster("lab", "up", "--no-vm", "--no-agents", str(path))
        assert done.returncode == 0, done.stderr
        addrs = json.loads(in_node(name, "rs2", "ip", "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
        assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet6" and a["scope"] == "global"] == \
            [("2001:db8:2::4", 64)]
        assert not [a for a in addrs if a.get("tentative")], addrs  # usable at once
        for node, gateways in {"rs1": ("10.2.0.1", "2001:db8:2::1"), "c1": ("172.16.0.2", "2001:db8:16::2")}.items():
            for family, gateway in zip(("-4", "-6"), gateways):
                route = json.loads(in_node(name, node, "ip", "-j", family, "route", "show", "default").stdout)
                assert [r["gateway"] for r in route] == [gateway], (node, route)
        # across the bridge over IPv6: HTTP, line echo and UDP echo from the test servers
        assert_test_servers_answer(name, "d1", rs1="2001:db8:2::3", rs2="2001:db8:2::4")
        # both ends of the point-to-point uplink are numbered in subnet6
        for node, iface, address in (("r1", "d1", "2001:db8:1:1::1"), ("d1", "up0", "2001:db8:1:1::2")):
            addrs = json.loads(in_node(name, node, "ip", "-j", "-6", "addr", "show", iface).stdout)[0]["addr_info"]
            assert address in [a["local"] for a in addrs], (node, addrs)
    finally:
        provider.down(name)
