"""The Docker lab backend on this machine: containers on Docker networks, addressing, FRR adjacency
and ECMP, with `deploy`'s docker transport (`docker exec ... lvscluster node`) doing the work.

Containers share the host's kernel. This one has no IPVS, so directors get everything but their
IPVS table here, and the last test checks that `deploy` says so; with an IPVS kernel the same lab
deploys whole. dockerd is started here when none runs (scripts/bootstrap installs docker.io); the
lab's skeleton image is made from this machine's /etc in well under a second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvscluster.apply.backends import DockerBackend
from lvscluster.lab.containers import LABEL
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_node
from lvscluster.lab.vm import kernel_has_ipvs

ROOT = Path(__file__).resolve().parents[2]
LAB = "dockerdemo"
VIP = "10.99.0.10"


def lvscluster(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvscluster.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory):
    """A running Docker engine: this machine's, or a dockerd started for these tests."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
        yield client
        return
    except Exception:
        pass
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed: scripts/bootstrap installs docker.io")
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "w")
    daemon = subprocess.Popen(["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none"],
                              stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            client = docker.from_env()
            client.ping()
            break
        except Exception:
            if time.monotonic() > deadline or daemon.poll() is not None:
                pytest.fail(f"dockerd did not start: see {log.name}")
            time.sleep(0.5)
    yield client
    daemon.terminate()
    daemon.wait(60)


@pytest.fixture(scope="module")
def docker_lab(docker_client, tmp_path_factory):
    """The demo topology as a Docker lab (named dockerdemo); removed, and checked gone, afterwards."""
    path = tmp_path_factory.mktemp("dockerlab") / "demo.lvs.yml"
    path.write_text((ROOT / "topology" / "demo.lvs.yml").read_text().replace("name: demo\n", f"name: {LAB}\n", 1))
    lvscluster("lab", "down", "--lab", LAB)
    # what a `lab up` killed after creating its networks leaves: a labelled network and no record
    from docker.types import IPAMConfig, IPAMPool

    docker_client.networks.create(f"{LAB}.net0", driver="bridge", internal=True, labels={LABEL: LAB},
                                  ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="100.64.0.0/28", gateway="100.64.0.1")]))
    down = lvscluster("lab", "down", "--lab", LAB)
    assert "removed 0 containers and 1 Docker networks" in down.stdout, down.stdout + down.stderr
    up = lvscluster("lab", "up", "--backend", "docker", "--no-vm", str(path))
    assert up.returncode == 0, up.stdout + up.stderr
    yield Cluster.from_topology(load_topology(path)), path
    down = lvscluster("lab", "down", str(path))
    assert down.returncode == 0 and "removed 8 containers" in down.stdout, down.stdout + down.stderr  # 7, c1 out and in, d3 grown
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL}={LAB}"}) == []
    assert docker_client.networks.list(filters={"label": f"{LABEL}={LAB}"}) == []
    assert not [n for n in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout.split() if n.startswith(LAB)]


def in_container(node: str, *argv: str) -> str:
    done = subprocess.run(["docker", "exec", f"{LAB}.{node}", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_node_is_a_container_with_the_topology_addresses(docker_lab) -> None:
    cluster, _ = docker_lab
    for node in cluster.topology.nodes:
        links = json.loads(in_container(node, "ip", "-j", "addr", "show"))
        have = {(link["ifname"], f"{a['local']}/{a['prefixlen']}") for link in links for a in link["addr_info"]
                if a["family"] == "inet" and link["ifname"] != "lo"}
        assert have == {(i.name, str(i.address)) for i in cluster.interfaces_of(node)}, node  # Docker's own are gone
    # a real server's test server answers a router across the LAN network
    fetch = "import urllib.request; print(urllib.request.urlopen('http://10.2.0.4/', timeout=5).read().decode(), end='')"
    assert in_container("r1", "python3", "-c", fetch) == "rs1\n"
    # `lab exec` runs in the container itself: its own hostname and filesystem
    assert lvscluster("lab", "exec", "--lab", LAB, "d2", "--", "hostname").stdout == "d2\n"
    status = json.loads(lvscluster("lab", "status", "--json", "--lab", LAB).stdout)["nodes"]
    assert status["d1"]["container"] == f"{LAB}.d1" and {"zebra", "ospfd", "bfdd"} <= set(status["d1"]["frr"])
    assert status["rs1"]["frr"] == [] and all(info["present"] for info in status.values())


def _deploy_through_docker(cluster: Cluster, node: str) -> int:
    """Observe, diff and apply one node through `docker exec ... lvscluster node`; returns the actions applied.
    Directors skip IPVS (this kernel has none): their VIP on lo, sysctls and FRR still go."""
    desired = plan_cluster(cluster)[node]
    if desired.ipvs is not None:
        sysctls = {k: v for k, v in desired.sysctls.items() if not k.startswith("net.ipv4.vs.")}
        desired = desired.model_copy(update={"ipvs": None, "sysctls": sysctls})
    backend = DockerBackend(f"{LAB}.{node}")
    actions = diff_node(desired, backend.observe(desired))
    backend.apply(actions)
    return len(actions)


def test_the_docker_transport_configures_nodes_and_the_router_spreads_the_vip(docker_lab) -> None:
    cluster, _ = docker_lab
    nodes = [*cluster.real_servers, *cluster.routers, *cluster.directors]
    assert all(_deploy_through_docker(cluster, node) > 0 for node in nodes)
    hops = _ecmp_hops(["10.1.1.2", "10.1.2.2"])  # OSPF adjacency in each container, then ECMP in r1's kernel
    assert hops == ["10.1.1.2", "10.1.2.2"], in_container("r1", "vtysh", "-c", "show ip ospf neighbor")
    assert VIP in in_container("rs1", "ip", "addr", "show", "lo")  # DR real server: the VIP on lo
    assert in_container("rs1", "cat", "/proc/sys/net/ipv4/conf/all/arp_ignore").strip() == "1"
    assert [_deploy_through_docker(cluster, node) for node in nodes] == [0] * len(nodes)  # nothing left to change


@pytest.mark.skipif(kernel_has_ipvs(), reason="this kernel has IPVS: the Docker lab deploys whole here")
def test_deploy_to_a_docker_lab_names_the_missing_ipvs(docker_lab) -> None:
    _, path = docker_lab
    done = lvscluster("deploy", "--yes", str(path))
    assert done.returncode != 0
    output = done.stderr + done.stdout
    assert "cannot observe d1: docker:dockerdemo.d1: " in output, output  # the container named once
    assert output.count("docker:dockerdemo.d1") == 1, output
    assert "no IPVS" in done.stderr + done.stdout


def _ecmp_hops(wanted: list[str], timeout: float = 90) -> list[str]:
    """r1's next hops for the VIP once they are `wanted` (else what they were at the end)."""
    hops, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        routes = json.loads(in_container("r1", "ip", "-j", "route", "show", f"{VIP}/32") or "[]")
        hops = sorted(h.get("gateway", r.get("gateway")) for r in routes for h in r.get("nexthops", [r]) if r)
        if hops == wanted:
            break
        time.sleep(0.5)
    return hops


def test_each_director_container_runs_its_agent_and_takes_the_scaletests_faults(docker_lab, docker_client) -> None:
    """`lab up` started `lvscluster agent --local` in each director's container (the topology has
    checks), and no other. The scaletest's faults on a director container: crash-frr kills
    ospfd and the container's watchfrr starts it again (empty); restart-agent gives a new agent; kill is
    a power cut (links down, every process but init gone, r1 drops d2 from ECMP) and revive
    brings FRR and the agent back, and with d2's FRR config deployed again r1 takes it back."""
    from lvscluster.lab import dockerfaults
    from lvscluster.lab.provider import lab_faults

    cluster, _ = docker_lab
    container = {node: docker_client.containers.get(f"{LAB}.{node}") for node in cluster.topology.nodes}
    agents = {node: dockerfaults.agent_pids(c) for node, c in container.items()}
    assert {node for node, pids in agents.items() if pids} == {"d1", "d2"}, agents
    assert "--node d1 --local" in dict(dockerfaults.processes(container["d1"]))[agents["d1"][0]]
    faults = lab_faults(LAB)
    both = ["10.1.1.2", "10.1.2.2"]  # d1's and d2's uplinks
    assert _ecmp_hops(both) == both  # deployed by the transport test above

    ospfd = [pid for pid, args in dockerfaults.processes(container["d1"]) if args.startswith("/usr/lib/frr/ospfd")]
    assert faults.crash_frr("d1") == ["ospfd"]
    dockerfaults.wait_for_frr(container["d1"], ("zebra", "ospfd"), timeout=60)  # watchfrr's restart
    assert [pid for pid, args in dockerfaults.processes(container["d1"]) if args.startswith("/usr/lib/frr/ospfd")] != ospfd
    # started empty, as on a machine: the agent puts the config back (here, with no IPVS to
    # observe, it cannot: the transport does, as the scaletest's repair does where no agent runs)
    assert _deploy_through_docker(cluster, "d1") > 0
    assert _ecmp_hops(both) == both

    faults.restart_agent("d1")
    assert dockerfaults.agent_pids(container["d1"]) not in ([], agents["d1"])
    assert faults.agent_runs("d1")

    links = faults.kill("d2")
    assert sorted(links) == ["lan0", "up0"], links
    left = [args for pid, args in dockerfaults.processes(container["d2"]) if pid != container["d2"].attrs["State"]["Pid"]]
    assert left == ["sleep infinity"], left  # a power cut: FRR, watchfrr and the agent gone
    assert not faults.agent_runs("d2")
    assert _ecmp_hops(["10.1.1.2"]) == ["10.1.1.2"]
    faults.revive("d2", links, ("zebra", "bfdd", "ospfd"))
    assert faults.agent_runs("d2")  # it ran before the kill: back, as a boot starts it
    _deploy_through_docker(cluster, "d2")  # what the scaletest's revive does next: the node's FRR config again
    assert _ecmp_hops(both) == both


def test_a_node_leaves_the_lab_and_the_lab_grows_by_a_director(docker_lab, docker_client, monkeypatch) -> None:
    """`director/rs remove` take the node's container out (the shrink a namespace lab does too);
    `lab grow` (what `director add` does) puts a removed node back and adds a new director: its
    container on its networks, and the router, already there, gains the new uplink's interface,
    named and addressed as the topology says, while its other interfaces stay as they were. Before
    that, two grows fail and leave the lab as it was (`_grows_that_fail_leave_the_lab_as_it_was`)."""
    from lvscluster.lab.common import lab_namespaces
    from lvscluster.lab.provider import provider_of, shrink

    cluster, path = docker_lab
    assert shrink(LAB, "c1")
    assert [c.name for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL}={LAB}"})
            if c.name == f"{LAB}.c1"] == []
    assert f"{LAB}.c1" not in lab_namespaces(LAB)
    assert "c1" not in json.loads(lvscluster("lab", "status", "--json", "--lab", LAB).stdout)["nodes"]
    assert "eth0" not in in_container("r1", "ip", "-br", "link")  # the c1 - r1 cable went with c1

    grown = path.with_name("grown.lvs.yml")
    grown.write_text(path.read_text()
                     .replace("  d2:  {role: director, router_id: 10.255.0.12}\n",
                              "  d2:  {role: director, router_id: 10.255.0.12}\n  d3:  {role: director, router_id: 10.255.0.13}\n")
                     .replace("rs3:eth0]", "rs3:eth0, d3:lan0]")  # appended, as `director add` does: nothing renumbered
                     + "  - {endpoints: [r1:d3, d3:up0], subnet: 10.1.3.0/30}\n")
    bigger = Cluster.from_topology(load_topology(grown))
    router_before = in_container("r1", "ip", "-br", "addr")
    _grows_that_fail_leave_the_lab_as_it_was(docker_client, bigger, grown, router_before, monkeypatch)
    assert sorted(provider_of(LAB).grow(bigger, grown)) == ["c1", "d3"]
    assert in_container("d3", "ip", "-br", "-4", "addr", "show", "up0").split()[2] == "10.1.3.2/30"
    assert in_container("r1", "ip", "-br", "-4", "addr", "show", "d3").split()[2] == "10.1.3.1/30"
    assert all(line in in_container("r1", "ip", "-br", "addr") for line in router_before.splitlines() if "d3" not in line)
    assert in_container("d3", "ip", "-br", "-4", "addr", "show", "lan0").split()[2] == "10.2.0.7/24"
    assert in_container("d3", "curl", "-s", "-m", "5", "http://10.2.0.4/") == "rs1\n"  # across the LAN
    assert "ospfd" in in_container("d3", "vtysh", "-c", "show daemons")
    assert in_container("c1", "ip", "-br", "-4", "addr", "show", "eth0").split()[2] == "172.16.0.1/24"
    # c1's cable to the router went with c1 (as a veth pair with its namespace) and came back with it
    assert in_container("r1", "ip", "-br", "-4", "addr", "show", "eth0").split()[2] == "172.16.0.2/24"
    assert provider_of(LAB).grow(bigger, grown) == []  # nothing left to add


def _grows_that_fail_leave_the_lab_as_it_was(docker_client, bigger: Cluster, grown: Path, router_before: str,
                                             monkeypatch) -> None:
    """A grow that fails removes what it made: the new nodes' containers and namespaces, the
    networks it created, and the interfaces it gave a node already there (r1's new uplinks);
    the record is the one from before, and the error names the step."""
    from lvscluster.errors import ApplyError
    from lvscluster.lab import containers
    from lvscluster.lab.common import lab_namespaces
    from lvscluster.lab.provider import provider_of
    from lvscluster.lab.record import read_record

    labelled = {"label": f"{LABEL}={LAB}"}

    def lab_now():
        return (sorted(n.name for n in docker_client.networks.list(filters=labelled)),
                sorted(c.name for c in docker_client.containers.list(all=True, filters=labelled)),
                sorted(lab_namespaces(LAB)), read_record(LAB), in_container("r1", "ip", "-br", "addr"),
                sorted(docker_client.containers.get(f"{LAB}.r1").attrs["NetworkSettings"]["Networks"]))

    before = lab_now()
    assert before[4] == router_before
    # a real failure: a container of d3's name that is not the lab's stands in the way (c1's
    # container and both new networks are made by then)
    squatter = docker_client.containers.create(docker_client.containers.get(f"{LAB}.r1").image, ["true"], name=f"{LAB}.d3")
    try:
        with pytest.raises(ApplyError, match="lab grow failed at container d3: .*Conflict"):
            provider_of(LAB).grow(bigger, grown)
    finally:
        squatter.remove(force=True)
    assert lab_now() == before
    # a failure after r1 was connected to the new networks and its interfaces named: mocked,
    # since nothing in a healthy lab fails at that step (c1's default route)
    def refuse(space, gateways):
        raise ApplyError(f"default route in {space} refused (mocked)")

    monkeypatch.setattr(containers, "add_default_routes", refuse)
    with pytest.raises(ApplyError, match="lab grow failed at default route of c1 via 172.16.0.2: .*mocked"):
        provider_of(LAB).grow(bigger, grown)
    monkeypatch.undo()
    assert lab_now() == before  # r1's new interfaces (eth0 to c1, d3 to d3) deleted, Docker's endpoints gone
