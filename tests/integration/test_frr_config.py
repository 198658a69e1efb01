"""Rendered FRR configs load into real FRR daemons (Debian `frr`), and the demo's OSPF works.

Each director and router of every shipped topology gets a throwaway namespace with its
interfaces, zebra/ospfd/bfdd under its own `-N` pathspace, and its rendered frr.conf applied
through vtysh: any rejected line fails the test. The demo's router and directors are then
wired together to prove the configs make the router install the VIP with one next hop per
director (ECMP).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lvscluster.apply import frr
from lvscluster.apply.commands import Runner
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.destroy import emptied_frr
from lvscluster.plan.render import frr_daemons

ROOT = Path(__file__).parent.parent.parent
TOPOLOGIES = sorted((ROOT / "topology").glob("*.lvs.yml"))
PREFIX = "lvst-frr"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path("/usr/lib/frr/zebra").exists(), reason="FRR is not installed (apt-get install frr)"),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Namespaces:
    """Throwaway namespaces and FRR pathspaces, removed even when a test fails."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> str:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            frr.stop(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def namespaces():
    spaces = Namespaces()
    yield spaces
    spaces.cleanup()


def frr_nodes() -> list[tuple[Path, str]]:
    cases = []
    for topology in TOPOLOGIES:
        cluster = Cluster.from_topology(load_topology(topology))
        cases += [(topology, node) for node in cluster.directors + cluster.routers]
    return cases


@pytest.mark.parametrize("topology,node", frr_nodes(), ids=[f"{t.stem}-{n}" for t, n in frr_nodes()])
def test_rendered_config_loads_into_real_frr(topology: Path, node: str, namespaces: Namespaces) -> None:
    cluster = Cluster.from_topology(load_topology(topology))
    state = plan_cluster(cluster)[node]
    ns = namespaces.add(f"{PREFIX}-{os.getpid() % 10000}-{node}")
    for i, iface in enumerate(cluster.interfaces_of(node)):
        ip("-n", ns, "link", "add", iface.name, "type", "veth", "peer", "name", f"peer{i}")
        for address in iface.addresses:
            ip("-n", ns, "addr", "add", str(address), "dev", iface.name, *(["nodad"] if address.version == 6 else []))
        ip("-n", ns, "link", "set", iface.name, "up")
    frr.start(ns, ns, daemons=frr_daemons(cluster, node))
    frr.load_config(ns, state.frr)  # raises on any line FRR rejects
    frr.reload(ns, state.frr)  # zebra's forwarding follows the config (deploy also sets the sysctl first)
    assert frr.config_delta(ns, state.frr) == []  # frr-reload sees nothing left to change: deploy is idempotent
    running = frr.running_config(ns)
    # the running config has the rendered one's shape, so observing needs no frr-reload run
    assert frr.config_shape(running) == frr.config_shape(state.frr)
    spec = cluster.topology.nodes[node]
    bgp = (cluster.announce(node) if spec.role == "director" else min(cluster.router_protocols(node))) == "bgp"
    if spec.role == "director" and cluster.announcer(node) == "exabgp":
        # ExaBGP announces; FRR holds a default route per uplink router, nothing else
        assert "router " not in running
        for uplink in cluster.uplinks(node):
            assert f"ip route 0.0.0.0/0 {uplink.router.address.ip}" in running
        return
    if bgp:
        assert f"router bgp {cluster.asn(node)}" in running and f"bgp router-id {spec.router_id}" in running
        for uplink in cluster.uplinks(node):
            peer = uplink.router if spec.role == "director" else uplink.director
            assert f"neighbor {peer.address.ip} remote-as {cluster.asn(peer.node)}" in running
    else:
        assert f"ospf router-id {spec.router_id}" in running
        for uplink in cluster.uplinks(node):
            assert f"network {uplink.director.address.network} area 0.0.0.0" in running
    if spec.role == "director":
        for vip in cluster.topology.vips:
            if vip.address.version == 6 and not bgp:  # OSPFv3: redistributed through the VIP prefix list
                assert f" permit {vip.address}/128" in running and "redistribute connected route-map" in running
                continue
            prefix = f"{vip.address}/{vip.address.max_prefixlen}"  # BGP: in its address family's block
            assert (f"network {prefix}" + ("" if bgp else " area 0.0.0.0")) in running
    else:
        assert f"maximum-paths {spec.max_paths or 8}" in running


def test_reload_changes_only_the_difference(namespaces: Namespaces) -> None:
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / "demo.lvs.yml"))
    text = plan_cluster(cluster)["d1"].frr
    ns = namespaces.add(f"{PREFIX}-{os.getpid() % 10000}-reload")
    ip("-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "peer0")
    frr.start(ns, ns)
    assert frr.config_delta(ns, text)  # empty daemons: everything to add
    frr.reload(ns, text)
    zebra_pid = (frr.run_dir(ns) / "zebra.pid").read_text()
    changed = text.replace("hello-interval 1", "hello-interval 2")
    assert frr.config_delta(ns, changed) == ["- interface up0", "-  no ip ospf hello-interval 1",
                                             "+ interface up0", "+  ip ospf hello-interval 2"]
    # deploy's plan names the same change by shape, without running frr-reload
    assert frr.shape_delta(frr.running_config(ns), changed) == [
        "- interface up0", "-  ip ospf hello-interval 1", "+ interface up0", "+  ip ospf hello-interval 2"]
    assert frr.shape_delta(frr.running_config(ns), text) == []
    runner = Runner()
    frr.reload(ns, changed, runner)
    assert frr.config_delta(ns, changed) == []
    assert (frr.run_dir(ns) / "zebra.pid").read_text() == zebra_pid  # no daemon restarted
    assert frr.config_delta("lvst-frr-not-running", text) is None

    emptied = emptied_frr(changed)  # what destroy applies
    frr.reload(ns, emptied, runner)
    # both changes went through vtysh alone (frr-reload costs ~6-40 s of Python under emulation)
    assert not [argv for argv in runner.recorded if str(frr.RELOAD) in argv], runner.recorded
    assert frr.config_delta(ns, emptied) == []
    running = frr.running_config(ns)
    assert frr.config_shape(running) == frr.config_shape(emptied)
    assert "router ospf" not in running and "interface up0" not in running and "no ip forwarding" in running


@pytest.mark.parametrize("topology", ["demo", "bgp8"])
def test_router_spreads_the_vip_over_every_director(topology: str, namespaces: Namespaces) -> None:
    """OSPF (demo, 2 directors) and BGP (bgp8, 8 directors): one ECMP next hop per director;
    draining moves the router off a director, and never black-holes the VIP."""
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / f"{topology}.lvs.yml"))
    ns = wire_routers_and_directors(cluster, namespaces)
    router = ns[cluster.routers[0]]
    vip = f"{cluster.topology.vips[0].address}/32"
    address = {u.director.node: str(u.director.address.ip) for u in cluster.uplinks(cluster.routers[0])}
    assert wait_for_hops(router, vip, sorted(address.values())) == sorted(address.values())
    kernel = subprocess.run(["ip", "-n", router, "-j", "route", "show", vip], capture_output=True, text=True).stdout
    assert len(json.loads(kernel)[0]["nexthops"]) == len(cluster.directors)

    # drain d1 (deploy reloads its FRR): the router keeps d2 only; d2 drained too: both again
    def deploy_drained(*drained: str) -> None:
        variant = cluster
        for name in drained:
            variant = variant.with_node(name, drain=True)
        drained_states = plan_cluster(variant)
        for director in cluster.directors:
            frr.reload(ns[director], drained_states[director].frr)

    others = sorted(a for d, a in address.items() if d != "d1")
    deploy_drained("d1")
    assert wait_for_hops(router, vip, others) == others
    deploy_drained(*cluster.directors)  # never black-hole: with every director drained, all serve again
    assert wait_for_hops(router, vip, sorted(address.values())) == sorted(address.values())
    deploy_drained()
    assert wait_for_hops(router, vip, sorted(address.values())) == sorted(address.values())


def wire_routers_and_directors(cluster: Cluster, namespaces: Namespaces, configs: dict[str, str] | None = None,
                               prefix: str = PREFIX) -> dict[str, str]:
    """A namespace per router and director, their uplinks as veth pairs (both addresses of a
    dual-stack link), the VIPs on the directors' lo, FRR started and each node's config (`configs`,
    else its rendered one) loaded; returns the namespaces."""
    states = plan_cluster(cluster)
    tag = f"{prefix}-{os.getpid() % 10000}"
    ns = {node: namespaces.add(f"{tag}-e{node}") for node in cluster.routers + cluster.directors}
    for node in cluster.routers:
        for uplink in cluster.uplinks(node):
            r, d = uplink.router, uplink.director
            ip("link", "add", "lvstmp-r", "type", "veth", "peer", "name", "lvstmp-d")
            ip("link", "set", "lvstmp-r", "netns", ns[r.node], "name", r.name)
            ip("link", "set", "lvstmp-d", "netns", ns[d.node], "name", d.name)
            for end in (r, d):
                for address in end.addresses:
                    ip("-n", ns[end.node], "addr", "add", str(address), "dev", end.name, *(["nodad"] if address.version == 6 else []))
                ip("-n", ns[end.node], "link", "set", end.name, "up")
    for director in cluster.directors:
        for address in states[director].addresses:
            ip("-n", ns[director], "addr", "add", address.address, "dev", address.interface,
               *(["nodad"] if ":" in address.address else []))
    for node, space in ns.items():
        frr.start(space, space, daemons=frr_daemons(cluster, node), wait=False)
    for node, space in ns.items():
        frr.wait_ready(space, frr_daemons(cluster, node))
        frr.load_config(space, (configs or {}).get(node, states[node].frr))
    return ns


@pytest.mark.parametrize("announce", ["ospf", "bgp"])
def test_keys_authenticate_the_peering(announce: str, namespaces: Namespaces, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """OSPF MD5 keys / BGP TCP-MD5 passwords are real: the demo with a key on every node gives the
    router both directors; a director holding another key never peers, until it gets the right one."""
    demo = (ROOT / "topology" / "demo.lvs.yml").read_text()
    if announce == "ospf":
        secret = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true, auth: {key: {env: LVS_TEST_KEY}}}\n"
    else:
        secret = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n  announce: bgp\n  bgp: {password: {env: LVS_TEST_KEY}}\n"
    (tmp_path / "demo.lvs.yml").write_text(demo.replace("  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n", secret, 1))
    monkeypatch.setenv("LVS_TEST_KEY", "right-key")
    cluster = Cluster.from_topology(load_topology(tmp_path / "demo.lvs.yml"))
    monkeypatch.setenv("LVS_TEST_KEY", "wrong-key")
    wrong = plan_cluster(Cluster.from_topology(load_topology(tmp_path / "demo.lvs.yml")))["d2"].frr
    right = plan_cluster(cluster)["d2"].frr
    assert "wrong-key" in wrong and "right-key" in right

    ns = wire_routers_and_directors(cluster, namespaces, configs={"d2": wrong})
    router, vip = ns["r1"], f"{cluster.topology.vips[0].address}/32"
    address = {u.director.node: str(u.director.address.ip) for u in cluster.uplinks("r1")}
    assert wait_for_hops(router, vip, [address["d1"]]) == [address["d1"]]
    time.sleep(5)  # longer than OSPF's dead interval (3 s) and BGP's hold time (3 s): d2 never came up
    assert wait_for_hops(router, vip, [address["d1"]], timeout=1) == [address["d1"]]
    frr.reload(ns["d2"], right)
    assert wait_for_hops(router, vip, sorted(address.values())) == sorted(address.values())


def test_exabgp_announces_drains_and_withdraws_through_its_api(namespaces: Namespaces, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`announcer: exabgp` against real ExaBGP and FRR: both directors' ExaBGP (with a BGP
    password) give the router two next hops; a drain (a longer AS path, sent over the old route)
    leaves d2 only; d2's VIP withdrawn (its agent's verdict) falls back to the drained d1; observing
    reads back what ExaBGP confirmed; stopping ExaBGP takes its route away at once."""
    from lvscluster.apply import exabgp
    from lvscluster.plan.health import HealthVerdict
    from lvscluster.plan.desired import plan_director

    demo = (ROOT / "topology" / "demo.lvs.yml").read_text()
    line = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n"
    (tmp_path / "demo.lvs.yml").write_text(demo.replace(
        line, line + "  announce: bgp\n  bgp: {announcer: exabgp, password: {env: LVS_TEST_KEY}}\n", 1))
    monkeypatch.setenv("LVS_TEST_KEY", "exa-pw")
    cluster = Cluster.from_topology(load_topology(tmp_path / "demo.lvs.yml"))
    ns = wire_routers_and_directors(cluster, namespaces)
    router, vip = ns["r1"], f"{cluster.topology.vips[0].address}/32"
    address = {u.director.node: str(u.director.address.ip) for u in cluster.uplinks("r1")}
    try:
        for director in cluster.directors:
            exabgp.apply(ns[director], plan_director(cluster, director).exabgp)
        assert wait_for_hops(router, vip, sorted(address.values())) == sorted(address.values())
        assert (exabgp.directory(ns["d1"]) / exabgp.CONFIG).stat().st_mode & 0o777 == 0o600  # it holds the password
        desired = plan_director(cluster, "d1").exabgp
        assert exabgp.observe(ns["d1"], desired) == desired
        assert frr.config_delta(ns["d1"], plan_director(cluster, "d1").frr) == []  # FRR: a static default route only

        drained = plan_director(cluster.with_node("d1", drain=True), "d1").exabgp
        exabgp.apply(ns["d1"], drained)
        assert wait_for_hops(router, vip, [address["d2"]]) == [address["d2"]]
        exabgp.apply(ns["d2"], plan_director(cluster, "d2", HealthVerdict(withdrawn=frozenset({"web"}))).exabgp)
        assert wait_for_hops(router, vip, [address["d1"]]) == [address["d1"]]  # the drained one, as a last resort
        assert exabgp.observe(ns["d2"], plan_director(cluster, "d2").exabgp).routes == ()

        # a changed config (here the hold time) restarts ExaBGP, which announces its routes again
        before = exabgp.pid(ns["d1"])
        (tmp_path / "demo.lvs.yml").write_text((tmp_path / "demo.lvs.yml").read_text().replace(
            "announcer: exabgp,", "announcer: exabgp, hold: 9,"))
        slower = Cluster.from_topology(load_topology(tmp_path / "demo.lvs.yml")).with_node("d1", drain=True)
        exabgp.apply(ns["d1"], plan_director(slower, "d1").exabgp)
        assert exabgp.pid(ns["d1"]) not in (None, before) and "hold-time 9;" in (exabgp.directory(ns["d1"]) / exabgp.CONFIG).read_text()
        assert wait_for_hops(router, vip, [address["d1"]]) == [address["d1"]]

        exabgp.stop(ns["d1"])
        assert wait_for_hops(router, vip, [], timeout=10) == []
        assert exabgp.pid(ns["d1"]) is None and not exabgp.directory(ns["d1"]).exists()
    finally:
        for director in cluster.directors:
            exabgp.stop(ns[director])


def wait_for_hops(router: str, vip: str, expected: list[str], timeout: float = 60) -> list[str]:
    """The router's selected, active next hops for the VIP once they equal `expected` (or at the
    timeout): addresses for an IPv4 VIP, interfaces for an IPv6 one (its next hops are the
    directors' link-local addresses, so the router's interface names the director)."""
    family, key = ("ipv6", "interfaceName") if ":" in vip else ("ip", "ip")
    deadline, hops = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        routes = json.loads(subprocess.run(["vtysh", "-N", router, "-c", f"show {family} route {vip} json"],
                                           capture_output=True, text=True).stdout or "{}")
        hops = sorted(h[key] for r in routes.get(vip, []) if r.get("selected") for h in r["nexthops"] if h.get("active"))
        if hops == expected:
            break
        time.sleep(0.2)
    return hops


@pytest.mark.parametrize("topology", ["demo", "bgp8", "dualbgp"])
def test_a_planned_drain_changes_ecmp_from_the_record_alone(topology: str, namespaces: Namespaces, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`change_director` (the scaletest's and `director drain`'s step) drains and undrains from
    deploy's record, with no observing: one daemon's vty socket per change, the record rewritten, and the
    router's ECMP set follows (the VM's figures: bench/README.md)."""
    from lvscluster import runfiles
    from lvscluster.apply import change, commands, deploy
    from lvscluster.apply.placement import in_namespaces

    monkeypatch.setattr(runfiles, "DEPLOYED_DIR", tmp_path)
    cluster = Cluster.from_topology(load_topology(ROOT / "topology" / f"{topology}.lvs.yml"))
    ns = wire_routers_and_directors(cluster, namespaces)
    router, vip = ns[cluster.routers[0]], f"{cluster.topology.vips[0].address}/32"
    address = {u.director.node: str(u.director.address.ip) for u in cluster.uplinks(cluster.routers[0])}
    every = sorted(address.values())
    assert wait_for_hops(router, vip, every) == every
    runfiles.deployed_path("d1", ns["d1"]).write_text(deploy.topology_snapshot(cluster))  # as deploy leaves it

    ran: list[list[str]] = []
    real_run = commands.Runner.run

    def counting(self, argv, *args, **kwargs):
        ran.append(list(argv))
        return real_run(self, argv, *args, **kwargs)

    real_vty = commands.Runner.vty

    def counting_vty(self, path, lines):
        ran.append(["vty", str(path), *lines])
        return real_vty(self, path, lines)

    monkeypatch.setattr(commands.Runner, "run", counting)
    monkeypatch.setattr(commands.Runner, "vty", counting_vty)
    said: list[str] = []
    drained = cluster.with_node("d1", drain=True)
    started = time.monotonic()
    assert change.change_director(drained, in_namespaces(ns), "d1", said.append) == 1, said
    applied = time.monotonic() - started
    others = sorted(a for d, a in address.items() if d != "d1")
    assert wait_for_hops(router, vip, others) == others
    print(f"measured: {topology} drain applied in {applied:.2f} s, router's ECMP changed {time.monotonic() - started:.2f} s after")
    vip6 = next((f"{v.address}/128" for v in cluster.topology.vips if v.address.version == 6), None)
    if vip6:  # the same one vtysh run prepends on the IPv6 session too (dualbgp)
        face = {u.director.node: u.router.name for u in cluster.uplinks(cluster.routers[0])}
        assert wait_for_hops(router, vip6, [face["d2"]]) == [face["d2"]]
    # one daemon's lines, straight to its vty socket (no vtysh process: ~1.4 s of CPU under emulation)
    changes = [argv for argv in ran if (argv[0] == "vty" or "-c" in argv) and "show running-config" not in argv]
    assert not [argv for argv in ran if argv[0] == "vtysh" and "show running-config" in argv] or topology != "demo", ran
    assert len(changes) == 1 and "-f" not in changes[0] and str(frr.RELOAD) not in " ".join(map(str, ran)), ran
    if topology == "demo":  # an OSPF cost: ospfd's alone (an AS-path prepend is a route-map every daemon holds)
        assert changes[0][:2] == ["vty", str(frr.run_dir(ns["d1"]) / "ospfd.vty")], changes
    assert frr.config_shape(frr.running_config(ns["d1"])) == frr.config_shape(plan_cluster(drained)["d1"].frr)
    assert deploy.read_deployed("d1", ns["d1"]).topology.nodes["d1"].drain

    ran.clear()
    assert change.change_director(cluster, in_namespaces(ns), "d1", said.append) == 1, said
    assert wait_for_hops(router, vip, every) == every
    if vip6:
        assert wait_for_hops(router, vip6, sorted(face.values())) == sorted(face.values())
    assert len([argv for argv in ran if (argv[0] == "vty" or "-c" in argv) and "show running-config" not in argv]) == 1, ran
    assert not deploy.read_deployed("d1", ns["d1"]).topology.nodes["d1"].drain
    assert not [line for line in said if "not possible" in line], said


def test_a_daemon_vty_socket_takes_commands_and_names_the_one_it_refuses(namespaces: Namespaces) -> None:
    """`apply.frrvty` speaks vtysh's protocol to one daemon: the change lands as vtysh would land
    it, and a refused line stops the rest with the daemon's own message and status."""
    from lvscluster.apply.commands import CommandFailed
    from lvscluster.apply.frrvty import run_commands

    ns = namespaces.add(f"{PREFIX}-{os.getpid() % 10000}-vty")
    frr.start(ns, ns)
    socket = frr.run_dir(ns) / "ospfd.vty"
    run_commands(socket, ["configure terminal", "router ospf", "ospf router-id 10.255.9.9", "end",
                          "configure terminal", "interface lo", "ip ospf cost 1000", "end"])
    running = frr.running_config(ns)
    assert "ospf router-id 10.255.9.9" in running and " ip ospf cost 1000" in running, running
    (answer,) = run_commands(socket, ["show running-config"])
    assert "ip ospf cost 1000" in answer
    with pytest.raises(CommandFailed) as refused:
        run_commands(socket, ["configure terminal", "interface lo", "ip ospf bogus 7", "no ip ospf cost 1000", "end"])
    assert refused.value.argv[-1] == "ip ospf bogus 7" and refused.value.returncode != 0
    assert "Unknown command" in refused.value.output, refused.value.output
    assert " ip ospf cost 1000" in frr.running_config(ns)  # nothing after the refused line was sent
    with pytest.raises(CommandFailed, match="vty"):
        run_commands(frr.run_dir(ns) / "bgpd.vty", ["show version"])  # no such daemon: a clear error
