"""The network-namespace lab provider: builds a `LabLayout` on this kernel and tears it down.

Cabling goes through pyroute2 in-process (no `ip` process per step: under a VM's software
emulation every process start costs ~0.15 s). Daemons are started through the command
chokepoint. `down` finds its objects by name (`<lab>.`) and by namespace identity, so it
works after a crash, a half-finished `up`, or twice in a row.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from lvscluster.apply import exabgp, frr
from lvscluster.apply.commands import DEFAULT_RUNNER, Runner
from lvscluster.apply.placement import Placement, in_namespaces
from lvscluster.apply.processes import fork_daemon, terminate
from lvscluster.errors import ApplyError, EnvironmentProblem, LvsClusterError
from lvscluster.files import write_atomic
from lvscluster.lab.layout import LabLayout, Veth
from lvscluster.netlink.netns import socket_in_netns
from lvscluster.runfiles import LABS_DIR, forget_namespace

STATE_ROOT = LABS_DIR
Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""
    pass


def state_dir(lab: str) -> Path:
    """Where a lab keeps its record and logs."""
    return STATE_ROOT / lab


def lab_namespaces(lab: str) -> list[str]:
    """Every namespace on this machine that belongs to the lab (named `<lab>.<node>`)."""
    return sorted(n for n in netns.listnetns() if n.startswith(f"{lab}."))


def _link_index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise ApplyError(f"interface {name} not found")
    return found[0]


def _create_veth(veth: Veth) -> None:
    with IPRoute(netns=veth.netns) as ipr:
        ipr.link("add", ifname=veth.name, kind="veth", peer={"ifname": veth.peer, "net_ns_fd": veth.peer_netns})
        index = _link_index(ipr, veth.name)
        if veth.mtu:
            ipr.link("set", index=index, mtu=veth.mtu)
        if veth.address:
            address, prefix = veth.address.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
    with IPRoute(netns=veth.peer_netns) as ipr:
        index = _link_index(ipr, veth.peer)
        if veth.mtu:
            ipr.link("set", index=index, mtu=veth.mtu)
        if veth.bridge:
            ipr.link("set", index=index, master=_link_index(ipr, veth.bridge))
        if veth.peer_address:
            address, prefix = veth.peer_address.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")


def up(layout: LabLayout, topology_path: Path, progress: Progress = quiet, runner: Runner = DEFAULT_RUNNER,
       agents: bool = True) -> None:
    """Build the lab; on any failure remove everything built so far and raise naming the step.

    `agents`: start `lvscluster agent` on each director when the topology has health checks
    (they wait for `deploy`, then keep the directors healthy)."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("lab up needs root (network namespaces): run it with sudo")
    if lab_namespaces(layout.name):
        raise ApplyError(f"lab {layout.name!r} is already up ({len(lab_namespaces(layout.name))} namespaces); "
                         f"run `lvscluster lab down {topology_path}` first")
    try:
        _build(layout, topology_path, progress, runner, agents)
    except ApplyError:
        progress("lab up failed; removing what was built")
        down(layout.name)
        raise


def grow(layout: LabLayout, topology_path: Path, progress: Progress = quiet, runner: Runner = DEFAULT_RUNNER,
         agents: bool | None = None) -> list[str]:
    """Add to a running lab what the topology gained (new nodes and their cables); returns the new nodes.

    Existing namespaces, cables and processes are left alone: traffic through the lab carries on.
    A failure leaves what was added (`lab down` removes all of it) and names the step.
    """
    if not lab_namespaces(layout.name):
        raise ApplyError(f"lab {layout.name!r} is not up: run `lvscluster lab up {topology_path}`")
    if (read_record(layout.name) or {}).get("provider") == "docker":
        raise ApplyError(f"lab {layout.name!r} is a Docker lab: it cannot grow yet; `lvscluster lab down`, then "
                         f"`lvscluster lab up --backend docker {topology_path}` with the new node")
    if agents is None:  # as the lab was built
        agents = bool((read_record(layout.name) or {}).get("agents", True))
    return _build(layout, topology_path, progress, runner, agents)


def _forget(space: str) -> None:
    """What dies with a lab node: deploy's sysctl journal, its ExaBGP, its agent's records."""
    exabgp.stop(space)
    forget_namespace(space)


def shrink(lab: str, node: str, progress: Progress = quiet) -> bool:
    """Take one node out of a running lab (its namespace, processes, FRR, cables, records), as
    decommissioning the machine would; the rest carries on. False when the lab has no such node.

    `director remove` and `rs remove` call it after tearing the node down, so a node added later
    can take the freed addresses without meeting the old one on the LAN.
    """
    record = read_record(lab)
    space = (record or {}).get("namespaces", {}).get(node)
    if record is None or space is None:
        return False
    if record.get("provider") == "docker":
        from lvscluster.lab import containers

        progress(f"{node}: removing its container {record['containers'][node]}")
        containers.shrink(lab, node)
        return True
    progress(f"{node}: removing its lab namespace {space}")
    frr.stop(frr.pathspace_for(space))
    terminate(processes_in(space))
    try:
        netns.remove(space)  # its veth ends go with it; so do their peers in the router and the switch
    except OSError:
        pass
    _forget(space)
    record["namespaces"].pop(node)
    record["veths"] = [v for v in record.get("veths", []) if space not in (v["netns"], v["peer_netns"])]
    record["frr_nodes"] = [n for n in record.get("frr_nodes", []) if n != node]
    record.get("frr_daemons", {}).pop(node, None)
    record["test_servers"] = [t for t in record.get("test_servers", []) if t["node"] != node]
    write_atomic(state_dir(lab) / "lab.json", json.dumps(record, indent=2) + "\n")
    return True


def _build(layout: LabLayout, topology_path: Path, progress: Progress, runner: Runner, agents: bool) -> list[str]:
    """Create whatever of the layout does not exist yet; returns the nodes whose namespace was new."""
    step = "start"
    try:
        directory = state_dir(layout.name)
        directory.mkdir(parents=True, exist_ok=True)
        _write_record(layout, topology_path, agents)
        step = "namespaces"
        existing = set(netns.listnetns())
        new_nodes = [node for node, name in layout.namespaces.items() if name not in existing]
        progress(f"creating {len(new_nodes)} network namespaces")
        for node in new_nodes:
            netns.create(layout.netns(node))
            with IPRoute(netns=layout.netns(node)) as ipr:
                ipr.link("set", index=_link_index(ipr, "lo"), state="up")
        step = "bridges"
        if layout.bridges:
            with IPRoute(netns=layout.switch) as ipr:
                bridges = [b for b in layout.bridges if not ipr.link_lookup(ifname=b)]
                if bridges:
                    progress(f"creating {len(bridges)} bridges in {layout.switch}")
                for bridge in bridges:
                    ipr.link("add", ifname=bridge, kind="bridge")
                    ipr.link("set", index=_link_index(ipr, bridge), state="up")
        step = "cables"
        veths = [v for v in layout.veths if not _has_link(v.netns, v.name)]
        progress(f"cabling {len(veths)} veth pairs")
        for veth in veths:
            step = f"cable {veth.netns}:{veth.name} <-> {veth.peer_netns}:{veth.peer}"
            _create_veth(veth)
        step = "routes"
        for node, gateway in layout.default_routes.items():
            if node in new_nodes:
                step = f"default route of {node} via {gateway}"
                with IPRoute(netns=layout.netns(node)) as ipr:
                    ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
        frr_nodes = [n for n in layout.frr_nodes if n in new_nodes]
        names = sorted({d for n in frr_nodes for d in layout.frr_daemons[n]}, key=frr.ALL_DAEMONS.index)
        progress(f"starting FRR ({', '.join(names)}) on {len(frr_nodes)} nodes")
        started = []
        for node in frr_nodes:  # start every node's daemons, then wait for all of them
            step = f"FRR on {node}"
            daemons = layout.frr_daemons[node]
            frr.start(frr.pathspace_for(layout.netns(node)), layout.netns(node), daemons=daemons, runner=runner,
                      wait=False)
            started.append((node, daemons))
        for node, daemons in started:
            step = f"FRR on {node}"
            if not runner.dry_run:
                frr.wait_ready(frr.pathspace_for(layout.netns(node)), daemons, timeout=60)
        servers = [s for s in layout.test_servers if s.node in new_nodes]
        progress(f"starting test servers on {len(servers)} real servers")
        for server in servers:
            step = f"test server on {server.node}"
            start_test_server(layout.name, server)
        for server in servers:
            step = f"test server on {server.node}"
            wait_listening(server.netns, server.tcp_ports, timeout=60)
        agent_nodes = [n for n in layout.agent_nodes if n in new_nodes] if agents else []
        if agent_nodes:
            progress(f"starting the health-check agent on {len(agent_nodes)} directors (it acts once deployed)")
        for node in agent_nodes:
            step = f"agent on {node}"
            _start_agent(layout, node, topology_path)
    except Exception as exc:
        if isinstance(exc, NetlinkError):
            raise ApplyError(f"lab up failed at {step}: {exc.args[-1] if exc.args else exc}") from None
        raise ApplyError(f"lab up failed at {step}: {exc}") from None
    return new_nodes


def wait_listening(namespace: str, ports: tuple[int, ...], timeout: float) -> None:
    """Wait until something accepts on each TCP port inside the namespace (a Python start is slow in a VM)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            probe = socket_in_netns(namespace, socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.settimeout(1)
                probe.connect(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ApplyError(f"nothing listens on port {port} after {timeout:g} s") from None
                time.sleep(0.2)
            finally:
                probe.close()


def _has_link(namespace: str, name: str) -> bool:
    with IPRoute(netns=namespace) as ipr:
        return bool(ipr.link_lookup(ifname=name))


def _write_record(layout: LabLayout, topology_path: Path, agents: bool) -> None:
    record = {"name": layout.name, "topology": str(Path(topology_path).resolve()), "provider": "netns", "agents": agents,
              "namespaces": layout.namespaces, "veths": [asdict(v) for v in layout.veths],
              "bridges": layout.bridges, "frr_nodes": layout.frr_nodes, "frr_daemons": layout.frr_daemons,
              "test_servers": [asdict(s) for s in layout.test_servers]}
    write_atomic(state_dir(layout.name) / "lab.json", json.dumps(record, indent=2) + "\n")


def read_record(lab: str) -> dict | None:
    """The record `up` wrote, or None when the lab is not up."""
    try:
        return json.loads((state_dir(lab) / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def lab_placements(lab: str) -> dict[str, Placement] | None:
    """Where each node of lab `lab` lives when it is up on this machine (None when it is not):
    its namespace, or its container in a Docker lab."""
    record = read_record(lab)
    if record is None:
        return None
    if record.get("provider") == "docker":
        return {node: Placement("docker", name, lab=True) for node, name in record["containers"].items()}
    return in_namespaces(record["namespaces"])


def start_test_server(lab: str, server) -> int:
    """The lab's test server on a real server (a `TestServer`), in its namespace, logging to the
    lab's state directory; forked from this process (see `fork_daemon`). Returns its pid."""
    def run() -> None:
        from lvscluster.lab import testserver

        netns.setns(server.netns, flags=0)
        testserver.main(["--node", server.node, *[x for port in server.tcp_ports for x in ("--tcp", str(port))],
                         *[x for port in server.udp_ports for x in ("--udp", str(port))]])

    return fork_daemon(run, state_dir(lab) / f"testserver-{server.node}.log")


def _start_agent(layout: LabLayout, node: str, topology_path: Path) -> int:
    """The director's agent, as `lvscluster agent` runs it (`health.service.run_agent`: it enters
    the node's namespace itself), logging to the lab's state directory; forked from this process
    (see `fork_daemon`). Returns its pid."""
    topology = Path(topology_path).resolve()

    def run() -> None:
        from lvscluster.apply.reach import backend_for
        from lvscluster.health.service import DEFAULT_METRICS, parse_listen, run_agent

        try:
            run_agent(topology, node, backend_for(Placement("netns", layout.namespaces[node])), parse_listen(DEFAULT_METRICS))
        except LvsClusterError as exc:  # as the CLI says it: one line, its exit code
            print(exc, file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        print(f"agent {node}: stopped", flush=True)

    return fork_daemon(run, state_dir(layout.name) / f"agent-{node}.log")


def start_agent(lab: str, node: str) -> int:
    """Start a director's health-check agent again, as `lab up` did (e.g. after it was killed)."""
    record = read_record(lab)
    if record is None or node not in record.get("namespaces", {}):
        raise ApplyError(f"lab {lab} is not up or has no node {node}")
    layout = LabLayout(name=lab, namespaces=record["namespaces"])
    return _start_agent(layout, node, Path(record["topology"]))


def processes_in(namespace: str) -> list[int]:
    """PIDs of the processes whose network namespace is `namespace` (read from /proc)."""
    try:
        target = os.stat(f"/run/netns/{namespace}")
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev) and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


def down(lab: str, progress: Progress = quiet) -> int:
    """Remove every namespace, process, FRR pathspace and file of the lab; returns namespaces removed."""
    spaces = lab_namespaces(lab)
    if spaces:
        progress(f"stopping processes and FRR in {len(spaces)} namespaces")
    for name in spaces:
        frr.stop(frr.pathspace_for(name))
    for name in spaces:
        terminate(processes_in(name))
    for name in spaces:
        try:
            netns.remove(name)
        except OSError:
            pass
    for leftover in frr.RUN.glob(f"{frr.pathspace_for(lab + '.')}*") if frr.RUN.exists() else ():
        frr.stop(leftover.name)
    for space in spaces:
        _forget(space)
    remove_state_dir(lab)
    return len(spaces)


def remove_state_dir(lab: str) -> None:
    """Remove the lab's record and logs (any provider's)."""
    directory = state_dir(lab)
    if directory.exists():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
