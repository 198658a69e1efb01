"""The Docker lab provider: a topology as containers on Docker networks (`lab up --backend docker`).

- one container per node (`demo.d1`, hostname `d1`, with the capabilities FRR, sysctls and IPVS need),
  from the skeleton image made here (`dockerimage`), with this machine's `/usr`, this checkout and
  its Python bind-mounted read-only, so FRR, iproute2 and `lvscluster` are this machine's;
- one internal Docker network per link (no NAT, no address on the host's bridge), each
  interface given the topology's name and address (`dockernet`);
- each container's network namespace is attached as `/run/netns/<lab>.<node>`, so everything
  that works in a namespace lab (`ip netns exec`, netlink from the host) works here too;
- FRR runs inside the routers' and directors' containers (this machine's frrinit), and `deploy`
  reaches each node with `docker exec -i <container> lvscluster node ...` (`DockerBackend`);
- a running lab grows (`director add`, `rs add`: a container per new node, and a node already
  there connected to a new link's network, as the router is for a new director's uplink) and
  shrinks (`director remove`: the node's container removed, and a network it shared with one
  other node, as a veth pair dies with its namespace). Networks are named from their link's
  subnet, so adding or removing a link renames none of the others.

Containers share the kernel they run on: IPVS, ipip and sysctls behave as that kernel does.
Where this kernel has no IPVS, `lab up --backend docker` runs the whole Docker lab in a lab VM
(`vmhost`), whose own dockerd (`vmdocker`, started here on first use) makes the same skeleton
image from the files the VM sees. With `--no-vm` on such a kernel the lab builds, routes and runs FRR, but
directors cannot be deployed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pyroute2 import netns

from lvscluster.apply.placement import Placement
from lvscluster.errors import ApplyError, EnvironmentProblem
from lvscluster.lab import dockerimage, vmdocker
from lvscluster.lab.dockerfaults import DockerFaults, start_agent
from lvscluster.lab.dockernet import LABEL, create_network, detach, network_name, wire
from lvscluster.lab.common import Progress, add_default_routes, lab_namespaces, not_up, quiet, wait_listening
from lvscluster.lab.layout import LabLayout, namespace_name, plan_lab
from lvscluster.lab.record import LabRecord, read_record, remove_state_dir, write_record
from lvscluster.model.cluster import Cluster

CHECKOUT = Path(__file__).resolve().parents[2]
# what FRR, IPVS and sysctls need; `--privileged` asks for every capability, which fails where the
# host itself lacks one (as in a sandbox); systempaths=unconfined makes /proc/sys writable
CAPABILITIES = ("NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "SYS_ADMIN", "SYS_MODULE")
FRR_SETUP = """set -e
for d in $DAEMONS; do sed -i "s/^$d=no/$d=yes/" /etc/frr/daemons; done
printf 'frr defaults traditional\\nservice integrated-vtysh-config\\n' > /etc/frr/frr.conf
printf 'service integrated-vtysh-config\\n' > /etc/frr/vtysh.conf
chown frr:frr /etc/frr/frr.conf /etc/frr/vtysh.conf
/usr/lib/frr/frrinit.sh start
"""


def connect(progress: Progress = quiet, start: bool = False):
    """A Docker client, or EnvironmentProblem naming what to start. With `start`, inside a VM
    lvscluster booted, a missing dockerd is started there (`vmdocker`)."""
    try:
        import docker
    except ImportError:
        raise EnvironmentProblem("the Docker lab needs the docker Python package: pip install docker") from None

    def ping() -> bool:
        try:
            return docker.from_env().ping()
        except Exception:
            return False

    if start and vmdocker.in_vm() and not ping():
        vmdocker.start_dockerd(ping, progress)
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise EnvironmentProblem(f"Docker is not running ({exc}): start dockerd "
                                 "(e.g. `dockerd --iptables=false --bridge=none &`)") from None
    return client


def leftovers(lab: str) -> bool:
    """True when a running Docker holds containers or networks of the lab (even with no record
    left: a killed `lab up`, a Docker restarted with its networks kept). False without Docker."""
    try:
        client = connect()
    except EnvironmentProblem:
        return False
    labelled = {"label": f"{LABEL}={lab}"}
    return bool(client.containers.list(all=True, filters=labelled) or client.networks.list(filters=labelled))


def _mounts() -> list[str]:
    """This machine's programs (`/usr`), this checkout and the Python running it (a venv and its
    base), read-only at the same paths: the image is a skeleton (`dockerimage`)."""
    paths = {*(Path(p) for p in dockerimage.PROGRAM_MOUNTS), CHECKOUT, Path(sys.prefix).resolve(),
             Path(sys.base_prefix).resolve()}
    keep = [p for p in sorted(paths) if not any(o != p and o in p.parents for o in paths)]
    return [f"{p}:{p}:ro" for p in keep]


def up(cluster: Cluster, topology_path: Path, progress: Progress = quiet, agents: bool = True) -> LabLayout:
    """Build the lab as containers (with `agents`, a health-check agent in each director's
    container when the topology has checks); on any failure remove everything built so far
    and raise naming the step."""
    client = connect(progress, start=True)
    lab = cluster.name
    if leftovers(lab) or lab_namespaces(lab):
        raise ApplyError(f"lab {lab!r} is already up (or left over); run `lvscluster lab down {topology_path}` first")
    image = dockerimage.ensure_image(client, progress)
    layout, step = plan_lab(cluster), ["start"]
    try:
        _build(client, image, cluster, layout, topology_path, list(cluster.topology.nodes), {}, progress, step, agents)
    except Exception as exc:
        progress("lab up failed; removing what was built")
        down(lab)
        raise ApplyError(f"lab up failed at {step[0]}: {exc}") from None
    return layout


def grow(cluster: Cluster, record: LabRecord, topology_path: Path, progress: Progress = quiet) -> list[str]:
    """Add the topology's nodes the running lab lacks (a container each, on its networks; a node
    already there that gains a link, as the router does for a new director, is connected to the
    new network and that interface named and addressed). On a failure what it made goes (the
    new nodes' containers, the networks it created, the interfaces it gave nodes already there)
    and the rest is left as it was; returns the new nodes."""
    containers = dict(record.containers)
    new = [node for node in cluster.topology.nodes if node not in containers]
    if not new:
        return []
    client = connect(progress, start=True)
    image, layout, step = dockerimage.ensure_image(client, progress), plan_lab(cluster), ["start"]
    labelled = {"label": f"{LABEL}={cluster.name}"}
    networks_before = {n.name for n in client.networks.list(filters=labelled)}
    try:
        _build(client, image, cluster, layout, topology_path, new, containers, progress, step, record.agents)
    except Exception as exc:
        progress("lab grow failed; removing what it made")
        made = {namespace_name(cluster.name, node) for node in new}
        for container in client.containers.list(all=True, filters=labelled):  # the lab's only: not one in its way
            if container.name in made:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
        for node in new:
            with contextlib.suppress(OSError):
                netns.remove(layout.netns(node))
        spaces = {name: record.namespaces[node] for node, name in record.containers.items()}
        for network in client.networks.list(filters=labelled):
            if network.name not in networks_before:  # made by this grow: nodes already there leave it, then it goes
                with contextlib.suppress(Exception):
                    detach(network, spaces)
                    network.remove()
        write_record(record)
        raise ApplyError(f"lab grow failed at {step[0]}: {exc}") from None
    return new


def _build(client, image: str, cluster: Cluster, layout: LabLayout, topology_path: Path, nodes: list[str],
           containers: dict[str, str], progress: Progress, step: list[str], agents: bool) -> None:
    """Create what the lab lacks for `nodes` (every node on `up`, the new ones on `grow`):
    networks, containers, interfaces (and the new interfaces of nodes already there), default
    routes, FRR, test servers, and with `agents` the directors' health-check agents.
    `containers` (node -> container of the lab so far) gains the new ones; `step[0]` names the
    step under way, for the caller's error."""
    lab = cluster.name
    have = {n.name for n in client.networks.list(filters={"label": f"{LABEL}={lab}"})}
    new_links = [i for i in range(len(cluster.topology.links)) if network_name(cluster, i) not in have]
    step[0] = "networks"
    progress(f"creating {len(new_links)} Docker networks")
    for index in new_links:
        create_network(client, cluster, index, cluster.topology.links[index].mtu)
    progress(f"starting {len(nodes)} containers from {image}")
    for node in nodes:
        step[0] = f"container {node}"
        containers[node] = _start_container(client, image, cluster, node)
    _write_record(layout, topology_path, containers, agents)
    widened: dict[str, list[int]] = {}  # a node already there -> its links that are new
    for index in new_links:
        for member in cluster.link_members(index):
            if member.node not in nodes:
                step[0] = f"{member.node} on link {index}"
                client.api.connect_container_to_network(containers[member.node], network_name(cluster, index))
                widened.setdefault(member.node, []).append(index)
    for node in [*nodes, *widened]:
        step[0] = f"interfaces of {node}"
        wire(client.containers.get(containers[node]), cluster, node, layout.netns(node), widened.get(node))
    for node, gateways in layout.default_routes.items():
        if node in nodes:
            step[0] = f"default route of {node} via {' and '.join(gateways)}"
            add_default_routes(layout.netns(node), gateways)
    frr_nodes = [n for n in layout.frr_nodes if n in nodes]
    progress(f"starting FRR on {len(frr_nodes)} nodes")
    for node in frr_nodes:
        step[0] = f"FRR on {node}"
        _exec(client, containers[node], ["sh", "-c", FRR_SETUP],
              environment={"DAEMONS": " ".join(d for d in layout.frr_daemons[node] if d != "zebra")})
    for node in frr_nodes:
        step[0] = f"FRR on {node}"
        _wait_for(lambda n=node: _exec(client, containers[n], ["vtysh", "-c", "show version"], check=False)[0] == 0,
                  f"FRR on {node} did not answer vtysh", 60)
    servers = [s for s in layout.test_servers if s.node in nodes]
    progress(f"starting test servers on {len(servers)} real servers")
    for server in servers:
        step[0] = f"test server on {server.node}"
        argv = ["python3", "-m", "lvscluster.lab.testserver", "--node", server.node]
        argv += [x for port in server.tcp_ports for x in ("--tcp", str(port))]
        argv += [x for port in server.udp_ports for x in ("--udp", str(port))]
        client.containers.get(containers[server.node]).exec_run(
            argv, detach=True, environment={"PYTHONPATH": str(CHECKOUT)}, workdir="/")
    for server in servers:
        step[0] = f"test server on {server.node}"
        wait_listening(server.netns, server.tcp_ports, timeout=60)
    agent_nodes = [n for n in layout.agent_nodes if n in nodes] if agents else []
    if agent_nodes:
        progress(f"starting the health-check agent in {len(agent_nodes)} directors' containers (it acts once deployed)")
    for node in agent_nodes:
        step[0] = f"agent on {node}"
        start_agent(client.containers.get(containers[node]), node, topology_path)


def _start_container(client, image: str, cluster: Cluster, node: str) -> str:
    """Create the node's container on its first link's network, connect the others, start it."""
    lab, name = cluster.name, namespace_name(cluster.name, node)
    links = [iface.link_index for iface in cluster.interfaces_of(node)]
    first = network_name(cluster, links[0])
    api = client.api
    host_config = api.create_host_config(network_mode=first, binds=_mounts(), init=True, cap_add=list(CAPABILITIES),
                                         security_opt=["apparmor=unconfined"],
                                         tmpfs={dockerimage.OWN_COMMANDS: "mode=755,exec"})  # its own `lvscluster`
    host_config.update(MaskedPaths=[], ReadonlyPaths=[])  # the API form of --security-opt systempaths=unconfined
    api.create_container(image, command=["sleep", "infinity"], name=name, hostname=node, labels={LABEL: lab},
                         host_config=host_config,
                         networking_config=api.create_networking_config({first: api.create_endpoint_config()}))
    for index in links[1:]:
        api.connect_container_to_network(name, network_name(cluster, index))
    api.start(name)
    # PYTHONPATH: this checkout, even when the venv's editable install points at another one
    lvscluster = f"#!/bin/sh\nPYTHONPATH={CHECKOUT} exec {sys.executable} -m lvscluster.cli \"$@\"\n"
    command = f"{dockerimage.OWN_COMMANDS}/lvscluster"
    _exec(client, name, ["sh", "-c", f'printf "%s" "$SCRIPT" > {command} && chmod 755 {command}'],
          environment={"SCRIPT": lvscluster})
    return name


def _exec(client, container: str, argv: list[str], environment: dict | None = None,
          check: bool = True) -> tuple[int, str]:
    code, output = client.containers.get(container).exec_run(argv, environment=environment)
    text = output.decode(errors="replace") if output else ""
    if check and code != 0:
        raise ApplyError(f"{container}: {' '.join(argv[:3])} exited {code}: {text.strip()[-800:]}")
    return code, text


def frr_daemons_in(container: str) -> list[str]:
    """The FRR daemons running in a lab container (empty when it or FRR is down)."""
    done = subprocess.run(["docker", "exec", container, "vtysh", "-c", "show daemons"],
                          capture_output=True, text=True, timeout=30)
    return [d for d in done.stdout.split() if d != "watchfrr"] if done.returncode == 0 else []


def _wait_for(ready, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ApplyError(f"{what} within {timeout:g} s")
        time.sleep(0.5)


def _write_record(layout: LabLayout, topology_path: Path, containers: dict[str, str], agents: bool) -> None:
    write_record(LabRecord(
        name=layout.name, topology=str(Path(topology_path).resolve()), provider=DockerLab.name, agents=agents,
        namespaces={n: layout.netns(n) for n in containers}, containers=containers, frr_nodes=layout.frr_nodes,
        frr_daemons={n: list(d) for n, d in layout.frr_daemons.items()},
        test_servers=[{"node": s.node, "tcp_ports": s.tcp_ports, "udp_ports": s.udp_ports} for s in layout.test_servers]))


def shrink(record: LabRecord, node: str, progress: Progress = quiet) -> None:
    """Take one node's container (and its namespace attachment) out of a running Docker lab."""
    progress(f"{node}: removing its container {record.containers[node]}")
    client = connect()
    container = client.containers.get(record.containers[node])
    spaces = {name: record.namespaces[n] for n, name in record.containers.items()}
    cables = []  # its networks shared with one other node at most: they go with it, as a veth pair does
    for network in (client.networks.get(n) for n in container.attrs["NetworkSettings"]["Networks"]):
        if len([cid for cid in network.attrs["Containers"] if cid != container.id]) > 1:
            continue
        detach(network, spaces, keep=container.id)
        cables.append(network)
    container.remove(force=True)
    for network in cables:
        network.remove()
    try:
        netns.remove(record.namespaces[node])
    except OSError:
        pass
    record.forget(node)
    write_record(record)


def down(lab: str) -> tuple[int, int]:
    """Remove the lab's containers, networks, namespace attachments and record (found by label, so
    also what a killed `lab up` left); returns the containers and networks removed."""
    client = connect()
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"})
    for container in containers:
        container.remove(force=True)
    networks = client.networks.list(filters={"label": f"{LABEL}={lab}"})
    for network in networks:
        network.remove()
    for space in lab_namespaces(lab):
        try:
            netns.remove(space)
        except OSError:
            pass
    remove_state_dir(lab)
    return len(containers), len(networks)


class DockerLab:
    """The Docker lab as a `LabProvider`: one container per node on Docker networks."""

    name = "docker"

    def up(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet, agents: bool = True) -> str:
        """Build the lab as containers (and the directors' agents); returns what was built."""
        layout = up(cluster, topology_path, progress, agents)
        return (f"{len(layout.namespaces) - (1 if layout.bridges else 0)} containers, "
                f"{len(cluster.topology.links)} Docker networks")

    def grow(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet) -> list[str]:
        """Add the topology's nodes the running lab lacks (see `grow`)."""
        record = read_record(cluster.name)
        if record is None or not lab_namespaces(cluster.name):
            raise not_up(cluster.name, topology_path)
        return grow(cluster, record, topology_path, progress)

    def shrink(self, record: LabRecord, node: str, progress: Progress = quiet) -> None:
        """Take one node's container out of the lab (see `shrink`)."""
        shrink(record, node, progress)

    def down(self, lab: str, progress: Progress = quiet) -> str:
        """Remove the lab's containers, networks, namespace attachments and record."""
        progress("removing the lab's containers and Docker networks")
        removed, networks = down(lab)
        return f"removed {removed} containers and {networks} Docker networks" if removed or networks else ""

    def record(self, lab: str) -> LabRecord | None:
        """The lab's record, when it is a Docker lab."""
        found = read_record(lab)
        return found if found is not None and found.provider == self.name else None

    def exec(self, lab: str, node: str, command: list[str], tty: bool = False) -> list[str]:
        """`docker exec` into the node's container: its own filesystem too."""
        return ["docker", "exec", "-it" if tty else "-i", namespace_name(lab, node), *command]

    def placements(self, record: LabRecord) -> dict[str, Placement]:
        """Each node in its container, reached with `docker exec`."""
        return {node: Placement("docker", name, lab=True) for node, name in record.containers.items()}

    def faults(self, record: LabRecord) -> DockerFaults:
        """The scaletest's faults on the lab's directors (containers), by node."""
        return DockerFaults(connect(), record.containers, record.namespaces, Path(record.topology))

    def frr_daemons(self, record: LabRecord, node: str) -> list[str]:
        """The FRR daemons running in the node's container (FRR runs only on routers and directors)."""
        return frr_daemons_in(record.containers[node]) if node in record.frr_nodes else []

    def leftovers(self, lab: str) -> bool:
        """Whether a running Docker holds containers or networks of the lab."""
        return bool(shutil.which("docker")) and leftovers(lab)

    def prepare_vm(self, why: str, progress: Progress = quiet) -> None:
        """Nothing to prepare: the VM's dockerd makes the skeleton image from the files it sees."""
        progress(f"{why}: running the Docker lab in a VM")
