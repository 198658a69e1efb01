"""The network-namespace lab provider: builds a `LabLayout` on this kernel and tears it down.

Cabling goes through pyroute2 in-process (no `ip` process per step: under a VM's software
emulation every process start costs ~0.15 s). Daemons are started through the command
chokepoint. `down` finds its objects by name (`<lab>.`) and by namespace identity, so it
works after a crash, a half-finished `up`, or twice in a row.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from lvscluster.apply import exabgp, frr
from lvscluster.apply.commands import DEFAULT_RUNNER, Runner
from lvscluster.apply.placement import Placement, in_namespaces
from lvscluster.apply.processes import fork_daemon, terminate
from lvscluster.errors import ApplyError, EnvironmentProblem, LvsClusterError
from lvscluster.lab.faults import NetnsFaults
from lvscluster.lab.common import Progress, add_addresses, add_default_routes, lab_namespaces, not_up, processes_in, quiet, wait_listening
from lvscluster.lab.layout import LabLayout, Veth, namespace_name, plan_lab
from lvscluster.lab.record import LabRecord, read_record, remove_state_dir, state_dir, write_record
from lvscluster.model.cluster import Cluster
from lvscluster.netlink.sysctl import write_sysctls
from lvscluster.runfiles import forget_namespace


# Set in every new namespace before its cables: a fresh lab has no duplicate addresses, and
# duplicate address detection would hold each IPv6 address, link-local ones too (OSPFv3 speaks
# from those), tentative for ~1-2 s after the link comes up.
NAMESPACE_SYSCTLS = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}


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
        add_addresses(ipr, index, veth.address, veth.address6)
        ipr.link("set", index=index, state="up")
    with IPRoute(netns=veth.peer_netns) as ipr:
        index = _link_index(ipr, veth.peer)
        if veth.mtu:
            ipr.link("set", index=index, mtu=veth.mtu)
        if veth.bridge:
            ipr.link("set", index=index, master=_link_index(ipr, veth.bridge))
        add_addresses(ipr, index, veth.peer_address, veth.peer_address6)
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
        raise not_up(layout.name, topology_path)
    if agents is None:  # as the lab was built
        record = read_record(layout.name)
        agents = record.agents if record is not None else True
    return _build(layout, topology_path, progress, runner, agents)


def _forget(space: str) -> None:
    """What dies with a lab node: deploy's sysctl journal, its ExaBGP, its agent's records."""
    exabgp.stop(space)
    forget_namespace(space)


def shrink(record: LabRecord, node: str, progress: Progress = quiet) -> None:
    """Take one node out of a running namespace lab (its namespace, processes, FRR, cables, record
    entries); the rest carries on."""
    space = record.namespaces[node]
    progress(f"{node}: removing its lab namespace {space}")
    terminate(processes_in(space))  # its agent first, which would start a stopped FRR daemon again
    frr.stop(frr.pathspace_for(space))
    try:
        netns.remove(space)  # its veth ends go with it; so do their peers in the router and the switch
    except OSError:
        pass
    _forget(space)
    record.forget(node)
    write_record(record)


def _build(layout: LabLayout, topology_path: Path, progress: Progress, runner: Runner, agents: bool) -> list[str]:
    """Create whatever of the layout does not exist yet; returns the nodes whose namespace was new."""
    step = "start"
    try:
        write_record(LabRecord(
            name=layout.name, topology=str(Path(topology_path).resolve()), provider=NetnsLab.name, agents=agents,
            namespaces=layout.namespaces, veths=[asdict(v) for v in layout.veths], bridges=layout.bridges,
            frr_nodes=layout.frr_nodes, frr_daemons={n: list(d) for n, d in layout.frr_daemons.items()},
            test_servers=[asdict(s) for s in layout.test_servers]))
        step = "namespaces"
        existing = set(netns.listnetns())
        new_nodes = [node for node, name in layout.namespaces.items() if name not in existing]
        progress(f"creating {len(new_nodes)} network namespaces")
        for node in new_nodes:
            netns.create(layout.netns(node))
            write_sysctls(layout.netns(node), NAMESPACE_SYSCTLS)
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
        for node, gateways in layout.default_routes.items():
            if node in new_nodes:
                step = f"default route of {node} via {' and '.join(gateways)}"
                add_default_routes(layout.netns(node), gateways)
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


def _has_link(namespace: str, name: str) -> bool:
    with IPRoute(netns=namespace) as ipr:
        return bool(ipr.link_lookup(ifname=name))


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
    if record is None or node not in record.namespaces:
        raise ApplyError(f"lab {lab} is not up or has no node {node}")
    layout = LabLayout(name=lab, namespaces=record.namespaces)
    return _start_agent(layout, node, Path(record.topology))


def down(lab: str, progress: Progress = quiet) -> int:
    """Remove every namespace, process, FRR pathspace and file of the lab; returns namespaces removed."""
    spaces = lab_namespaces(lab)
    if spaces:
        progress(f"stopping processes and FRR in {len(spaces)} namespaces")
    for name in spaces:  # agents first: one that sees a daemon of its FRR gone starts it again
        terminate(processes_in(name))
    for name in spaces:
        frr.stop(frr.pathspace_for(name))
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


class NetnsLab:
    """The namespace lab as a `LabProvider`: one network namespace per node, veth cables, bridges."""

    name = "netns"

    def up(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet, agents: bool = True) -> str:
        """Build the lab's namespaces, cables, FRR, test servers (and agents); returns what was built."""
        layout = plan_lab(cluster)
        up(layout, topology_path, progress=progress, agents=agents)
        return f"{len(layout.namespaces)} namespaces, {len(layout.veths)} cables"

    def grow(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet) -> list[str]:
        """Add the nodes the topology gained (see `grow`)."""
        return grow(plan_lab(cluster), topology_path, progress)

    def shrink(self, record: LabRecord, node: str, progress: Progress = quiet) -> None:
        """Take one node's namespace out of the lab (see `shrink`)."""
        shrink(record, node, progress)

    def down(self, lab: str, progress: Progress = quiet) -> str:
        """Remove the lab's namespaces, processes, FRR and files."""
        removed = down(lab, progress)
        return f"removed {removed} namespaces" if removed else ""

    def record(self, lab: str) -> LabRecord | None:
        """The lab's record, when it is a namespace lab."""
        found = read_record(lab)
        return found if found is not None and found.provider == self.name else None

    def exec(self, lab: str, node: str, command: list[str], tty: bool = False) -> list[str]:
        """`ip netns exec` into the node's namespace."""
        return ["ip", "netns", "exec", namespace_name(lab, node), *command]

    def placements(self, record: LabRecord) -> dict[str, Placement]:
        """Each node in its namespace."""
        return in_namespaces(record.namespaces)

    def faults(self, record: LabRecord) -> NetnsFaults:
        """The scaletest's faults on the lab's directors, by node."""
        return NetnsFaults(record.namespaces, lambda node: start_agent(record.name, node))

    def frr_daemons(self, record: LabRecord, node: str) -> list[str]:
        """The FRR daemons running in the node's pathspace."""
        pathspace = frr.pathspace_for(record.namespaces[node])
        return [d for d in ("zebra", "ospfd", "bfdd") if frr.running(pathspace, d)]

    def leftovers(self, lab: str) -> bool:
        """Whether namespaces of the lab exist."""
        return bool(lab_namespaces(lab))

    def prepare_vm(self, why: str, progress: Progress = quiet) -> None:
        """Nothing: the lab VM builds a namespace lab from the topology alone."""
