"""`lvscluster lab up|down|status|exec`: a topology as network namespaces on this machine."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvscluster.cli.common import JsonFlag, TopologyFile, err, forward_to_vm, lab_vm, load_cluster, out, print_json
from lvscluster.errors import EXIT_USAGE, LvsClusterError
from lvscluster.lab import vmhost
from lvscluster.lab.common import lab_namespaces, processes_in
from lvscluster.lab.layout import namespace_name
from lvscluster.lab.provider import LabProvider, provider_for, provider_of
from lvscluster.lab.record import read_record, recorded_labs

lab_app = typer.Typer(
    help=(
        "Build a topology as a lab on this machine: one network namespace per node (named "
        "`<lab>.<node>`), veth cables, bridges for shared LANs, FRR daemons on routers and "
        "directors, and test servers on real servers that answer with their own name. "
        "The lab is bare machines: `lvscluster deploy` configures them."
    ),
    no_args_is_help=True,
)


class LabBackend(str, Enum):
    """Where `lab up` builds the nodes."""

    netns = "netns"
    docker = "docker"


def _progress(message: str) -> None:
    err.print(f"[dim]lab:[/dim] {message}")


@lab_app.command("up")
def lab_up(
    file: TopologyFile,
    vm: Annotated[Optional[bool], typer.Option(
        "--vm/--no-vm", help="Build the lab inside a VM with Debian's kernel (--vm), or on this kernel (--no-vm). "
        "Default: a VM only when this kernel has no IPVS. --no-vm on such a kernel still gives cabling, "
        "FRR and test servers, but directors cannot be deployed.", show_default=False)] = None,
    agents: Annotated[bool, typer.Option(
        "--agents/--no-agents", help="Start `lvscluster agent` on each director when the topology has `health:` "
        "checks (logs in /run/lvscluster/labs/NAME/agent-NODE.log; in a Docker lab, "
        "/var/log/lvscluster-agent.log inside the director's container).")] = True,
    backend: Annotated[LabBackend, typer.Option(
        "--backend", help="netns: network namespaces and veth cables (default). docker: one container per node "
        "on Docker networks, from a skeleton image made here (this machine's /usr, FRR and lvscluster are mounted "
        "into each container); needs a running dockerd. "
        "Containers share the kernel: without IPVS here the whole Docker lab runs in a VM with its own dockerd "
        "(as --vm decides for the namespace lab).",
        case_sensitive=False)] = LabBackend.netns,
) -> None:
    """Create the lab's namespaces, cables, routes, FRR daemons and test servers.

    A failure half way removes everything built so far and names the step that failed.
    """
    cluster = load_cluster(file)
    inside_vm = bool(os.environ.get("LVSCLUSTER_IN_VM"))  # a forwarded `lab up --vm` must not nest
    in_a_vm = not inside_vm and (vm if vm is not None else vmhost.needs_vm())
    provider = provider_for(backend.value)
    if in_a_vm:
        provider.prepare_vm("--vm given" if vm else "this kernel has no IPVS", _progress)
        _lab_up_in_vm(cluster.name, file, backend)  # exits with the VM's answer
    built = provider.up(cluster, file, progress=_progress, agents=agents)
    out.print(f"lab {cluster.name} is up: {built}; next: `lvscluster deploy` with the same topology file", markup=False)


def _lab_up_in_vm(name: str, file: Path, backend: LabBackend) -> None:
    """This kernel has no IPVS: boot a VM for the lab and build the lab inside it."""
    if lab_vm(name) or read_record(name):
        raise LvsClusterError(f"lab {name!r} is already up; run `lvscluster lab down {file}` first")
    vm = vmhost.LabVm(name)
    vm.start(progress=_progress)
    (vm.directory / BACKEND_FILE).write_text(backend.value)  # `lab exec` asks this provider in the VM
    try:
        forward_to_vm(vm, file)
    except BaseException as exc:  # a failed build, or the VM refused: never leave an empty VM behind
        if not isinstance(exc, typer.Exit) or exc.exit_code:
            _progress("lab up failed inside the VM; stopping the VM")
            vm.stop()
        raise


BACKEND_FILE = "backend"  # in the lab VM's directory: the provider of the lab inside it


def _vm_provider(vm: vmhost.LabVm) -> LabProvider:
    """The provider of the lab inside a lab VM (as `lab up` wrote it; netns before there was a choice)."""
    path = vm.directory / BACKEND_FILE
    return provider_for(path.read_text() if path.exists() else LabBackend.netns.value)


def _lab_name(file: Optional[Path], lab: Optional[str]) -> str:
    if lab:
        return lab
    if file is not None:
        return load_cluster(file).name
    running = sorted(set(recorded_labs()) | set(vmhost.running_vm_labs()))
    if len(running) == 1:
        return running[0]
    raise LvsClusterError("no lab given and " + (f"{len(running)} labs are up ({', '.join(running)}): name one with --lab"
                                                 if running else "no lab is up"))


LabOption = Annotated[Optional[str], typer.Option("--lab", help="The lab's name (default: the only lab that is up).")]


@lab_app.command("down")
def lab_down(
    file: Annotated[Optional[Path], typer.Argument(help="The topology file the lab was built from.", show_default=False)] = None,
    lab: LabOption = None,
) -> None:
    """Remove every namespace, process, FRR instance and file of the lab. Safe to run twice."""
    name = _lab_name(file, lab)
    # Namespaces here mean the lab is here, even if a VM of that name shares this filesystem
    # (a kernel-test VM sees the host's files, and must never stop the host's lab VM).
    if not lab_namespaces(name) and vmhost.vm_dir(name).exists():
        _progress("stopping the lab VM")  # everything of the lab lives and dies with its VM
        vmhost.LabVm(name).stop()
        out.print(f"lab {name}: VM stopped", markup=False)
        return
    removed = provider_of(name).down(name, progress=_progress)
    out.print(f"lab {name}: {removed or 'nothing to remove'}", markup=False)


@lab_app.command("status")
def lab_status(
    file: Annotated[Optional[Path], typer.Argument(help="The topology file the lab was built from.", show_default=False)] = None,
    lab: LabOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List the lab's nodes with their namespaces, cables and running daemons."""
    name = _lab_name(file, lab)
    if (vm := lab_vm(name)) is not None:
        forward_to_vm(vm, file)
    record = read_record(name)
    present = set(lab_namespaces(name))
    if record is None and not present:
        raise LvsClusterError(f"lab {name} is not up")
    nodes = {}
    for node, space in record.namespaces.items() if record else ():
        nodes[node] = {"namespace": space, "present": space in present,
                       "frr": provider_for(record).frr_daemons(record, node), "processes": len(processes_in(space))}
        if node in record.containers:
            nodes[node]["container"] = record.containers[node]
    topology, cables = (record.topology, record.veths) if record else (None, [])
    if as_json:
        print_json({"lab": name, "topology": topology, "nodes": nodes, "cables": cables})
        return
    from rich.table import Table

    table = Table(title=f"lab {name}", title_justify="left")
    for column in ("node", "namespace", "up", "FRR", "processes"):
        table.add_column(column)
    for node, info in nodes.items():
        table.add_row(node, info["namespace"], "yes" if info["present"] else "[red]missing[/red]",
                      ", ".join(info["frr"]) or "-", str(info["processes"]))
    out.print(table)
    out.print(f"{len(cables)} cables; topology {topology}", markup=False)


@lab_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_exec(
    node: Annotated[str, typer.Argument(help="The node to run the command in.", show_default=False)],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).", show_default=False)],
    lab: LabOption = None,
) -> None:
    """Run a command inside a node's namespace, e.g. `lvscluster lab exec c1 -- curl http://10.99.0.10/`."""
    name = _lab_name(None, lab)
    if (vm := lab_vm(name)) is not None:  # straight to the node: no lvscluster start-up in the VM
        if vm.run(["test", "-e", f"/run/netns/{namespace_name(name, node)}"]) != 0:  # any provider's node has one
            err.print(f"lab {name} has no node {node!r}", markup=False)
            raise typer.Exit(EXIT_USAGE)
        raise typer.Exit(vm.run(_vm_provider(vm).exec(name, node, command)))
    record = read_record(name)
    if record is None or node not in record.namespaces:
        known = ", ".join(record.namespaces if record else ()) or "none"
        err.print(f"lab {name} has no node {node!r} (nodes: {known})", markup=False)
        raise typer.Exit(EXIT_USAGE)
    sys.stdout.flush()
    argv = provider_for(record).exec(name, node, command, tty=sys.stdin.isatty())
    os.execvp(argv[0], argv)
