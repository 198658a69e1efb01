"""`lvscluster director|rs drain|undrain|remove`: change one node's part in the cluster without dropping flows.

Each command edits the topology file in place (comments and layout kept), then carries out
the choreography through the deploy pipeline. With the lab in a VM, the file is edited here
and the choreography runs there (`--no-edit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lvscluster.apply.placement import Placement
from lvscluster.cli.common import TopologyFile, err, escape, lab_vm, load_cluster, out, run_in_vm
from lvscluster.errors import LvsClusterError
from lvscluster.model.cluster import Cluster
from lvscluster.model.edit import add_director, drop_node_field, edit_topology, remove_node, set_node_field

director_app = typer.Typer(no_args_is_help=True, help=(
    "Drain, undrain or remove a director while clients keep their connections. drain: the director "
    "announces its VIPs at a high OSPF cost, so the router's ECMP set leaves it out and its flows move to "
    "the others (mh hashing, sloppy_tcp and sync keep them on the same real server); it keeps serving "
    "until then. remove: drain, wait until its traffic stops, tear it down, delete it from the file."))
rs_app = typer.Typer(no_args_is_help=True, help=(
    "Drain, undrain or remove a real server: the seed's 'delete, test, add back' done smoothly. drain: "
    "weight 0 on every director (its mh slots stay, so no other flow moves; with mh-fallback its new "
    "connections go to the next server). remove: drain, wait until no packets go to it, delete it."))

NodeName = Annotated[str, typer.Argument(help="The node's name in the topology.")]
NoEdit = Annotated[bool, typer.Option("--no-edit", help="The file already says so (edited by hand or by an "
                                      "earlier step): only carry out the choreography.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for traffic to leave the node before giving up "
                                        "(remove) or reporting what is left (drain).")]


def _say(message: str) -> None:
    err.print(f"[dim]lifecycle:[/dim] {escape(message)}")


def _check_role(cluster: Cluster, name: str, role: str) -> None:
    nodes = cluster.topology.nodes
    if name not in nodes:
        raise LvsClusterError(f"no node {name!r} in {cluster.name} ({', '.join(n for n in nodes if nodes[n].role == role)} "
                              f"are its {role.replace('_', ' ')}s)")
    if nodes[name].role != role:
        raise LvsClusterError(f"{name} is a {nodes[name].role.replace('_', ' ')}, not a {role.replace('_', ' ')}")


def _edit(file: Path, change, no_edit: bool) -> Cluster:
    if no_edit:
        return load_cluster(file)
    topology, changed = edit_topology(file, change)
    _say(f"{file}: {'updated' if changed else 'already says so'}")
    return Cluster.from_topology(topology)


def _lab(cluster: Cluster) -> dict[str, Placement] | None:
    from lvscluster.cli.deploy import lab_placements

    return lab_placements(cluster)


def _in_vm(cluster: Cluster, file: Path) -> None:
    """When the lab lives in a VM, run the rest of this command there (the file is already edited)."""
    if (vm := lab_vm(cluster.name)) is not None:
        raise typer.Exit(run_in_vm(vm, file, ("--no-edit",)))


def _set_drain(file: Path, name: str, role: str, drained: bool, no_edit: bool) -> tuple[Cluster, dict[str, Placement] | None]:
    """Check the node's role, write `drain` into the file, continue in the lab VM if there is one."""
    cluster = load_cluster(file)
    _check_role(cluster, name, role)
    change = set_node_field(name, "drain", True) if drained else drop_node_field(name, "drain")
    cluster = _edit(file, change, no_edit)
    _in_vm(cluster, file)
    return cluster, _lab(cluster)


def _drain_director(file: Path, name: str, drained: bool, no_edit: bool, timeout: float) -> Cluster:
    from lvscluster.apply import lifecycle
    from lvscluster.apply.change import change_director

    cluster, lab = _set_drain(file, name, "director", drained, no_edit)
    changes = change_director(cluster, lab, name, _say)
    _say(f"{name}: {changes} changes applied ({'drained' if drained else 'undrained'})")
    if lifecycle.router_uses(cluster, lab, name) is not None:
        where = "left" if drained else "joined"
        if lifecycle.wait_for(lambda: lifecycle.router_uses(cluster, lab, name) != drained, timeout, 0.2):
            _say(f"the router's ECMP set has {where} {name}: {lifecycle.router_next_hops(cluster, lab)}")
        else:
            _say(f"the router's ECMP set has not {where} {name} after {timeout:g} s "
                 f"(the last director left serving stays in it)")
    if (load := lifecycle.director_load(cluster, lab, name)) is not None:
        out.print(f"{name}: {load['active']} active and {load['inactive']} inactive IPVS connection entries, "
                  f"{load['inpps']} packets/s in", markup=False)
    return cluster


@director_app.command("drain")
def director_drain(file: TopologyFile, name: NodeName, no_edit: NoEdit = False, timeout: Timeout = 30) -> None:
    """Stop attracting new traffic to a director without dropping flows; report what it still carries.

    Sets `drain: true` on the node and applies the change (OSPF cost 1000 on its VIPs, or a
    longer BGP AS path; IPVS and sync keep running): from the topology deploy last applied to
    the director, in one vtysh run (~1 s under emulation), or as a whole deploy of the node when
    there is no such record. Waits for the router's ECMP set to leave it out, and prints its
    remaining IPVS connection entries and packet rate (entries linger until their timeout; the
    rate falls to 0).
    """
    _drain_director(file, name, True, no_edit, timeout)


@director_app.command("undrain")
def director_undrain(file: TopologyFile, name: NodeName, no_edit: NoEdit = False, timeout: Timeout = 30) -> None:
    """Bring a drained director back into the router's ECMP set (removes `drain` from the node)."""
    _drain_director(file, name, False, no_edit, timeout)


@director_app.command("add")
def director_add(
    file: TopologyFile,
    name: NodeName,
    router_id: Annotated[str, typer.Option(help="The new director's OSPF router id (unique IPv4 address).")],
    router: Annotated[Optional[str], typer.Option(help="The router its uplink goes to (default: the first router).")] = None,
    subnet: Annotated[Optional[str], typer.Option(help="The uplink's subnet (default: the next free subnet the size of "
                                                  "the last director's uplink).")] = None,
    no_edit: NoEdit = False,
    timeout: Timeout = 60,
) -> None:
    """Add a director and let ECMP send it traffic only once it knows the existing connections.

    Adds the node to FILE, wired like the others: an uplink to the router, and an endpoint on
    every link all directors share (the real-server LAN, where sync runs). Grows the lab if one
    is up. Deploys the router, then the director drained: VIPs, IPVS services, sync backup and
    master, and FRR announcing at OSPF cost 1000, so ECMP leaves it out. Waits until its
    connection table, filled by sync, holds as many entries as the other directors' (or
    --timeout), then undrains it and waits until the router's ECMP set includes it.
    """
    from lvscluster.apply import lifecycle

    cluster = load_cluster(file)
    if not no_edit:
        _edit(file, add_director(cluster, name, router_id, router, subnet), False)
    cluster = load_cluster(file)
    _check_role(cluster, name, "director")
    _in_vm(cluster, file)
    lab = _lab(cluster)
    if lab is not None:
        from lvscluster.lab.provider import provider_of

        added = provider_of(cluster.name).grow(cluster, file, _say)
        _say(f"lab {cluster.name} grown by {', '.join(added) or 'nothing'}")
        lab = _lab(cluster)
    joining = cluster.with_node(name, drain=True)
    lifecycle.deploy_nodes(joining, lab, [*cluster.routers, name], _say)
    if lifecycle.wait_for(lambda: lifecycle.sync_caught_up(cluster, lab, name), timeout, 1.0):
        _say(f"{name}: its connection table has caught up ({lifecycle.connection_entries(cluster, lab, name)} entries)")
    else:
        _say(f"{name}: its connection table has not caught up after {timeout:g} s; flows it takes over rely "
             "on mh and sloppy_tcp alone")
    lifecycle.hold_reannouncement(cluster, name, _say)  # a director removed moments ago
    lifecycle.deploy_nodes(cluster, lab, [name], _say)
    joined = lifecycle.wait_for(lambda: lifecycle.router_uses(cluster, lab, name) is not False, timeout, 0.2)
    out.print(f"{name} added" + ("" if joined else f"; the router's ECMP set does not include it after {timeout:g} s"),
              markup=False)
    if not joined:
        raise typer.Exit(1)


@director_app.command("remove")
def director_remove(file: TopologyFile, name: NodeName, no_edit: NoEdit = False, timeout: Timeout = 120) -> None:
    """Drain a director, wait until no packets reach it, tear it down and delete it from the file.

    The wait ends when its IPVS packet counter stood still for 4 s (its flows moved to the other
    directors), or after --timeout seconds, which stops here and changes nothing more.
    Then its VIPs, services, sync daemons and FRR config go, its sysctls go back, and the node
    and its own links leave the file (the other endpoints keep their addresses).
    """
    from lvscluster.apply import lifecycle

    cluster = load_cluster(file)
    _check_role(cluster, name, "director")
    if len(cluster.directors) == 1:
        raise LvsClusterError(f"{name} is the only director of {cluster.name}: removing it takes every VIP down; "
                              "use `lvscluster destroy` for that")

    def drain_and_wait() -> Cluster:
        drained = _drain_director(file, name, True, no_edit, min(timeout, 30))
        lab = _lab(drained)
        _wait_until_idle(name, lambda: (lifecycle.director_load(drained, lab, name) or {}).get("inpkts", 0),
                         timeout, "director remove")
        return drained

    _remove_node(file, name, no_edit, drain_and_wait)


def _wait_until_idle(name: str, packets, timeout: float, command: str) -> None:
    """Wait until the packet counter `packets()` stood still for 4 s; raise after `timeout`."""
    from lvscluster.apply import lifecycle

    if not lifecycle.wait_for(lifecycle.settled(packets), timeout, 2.0):
        raise LvsClusterError(f"{name} still receives packets after {timeout:g} s: not removing it "
                              f"(it stays drained; run `{command}` again, or raise --timeout)")
    _say(f"{name}: no packets for 4 s; tearing it down")


def _remove_node(file: Path, name: str, no_edit: bool, drain_and_wait) -> None:
    """Drain and wait (`drain_and_wait`), tear the node down (and out of the lab, if it is in one),
    delete it from the file, deploy the rest."""
    from lvscluster.apply import lifecycle
    from lvscluster.lab import provider as lab_provider

    vm = lab_vm(load_cluster(file).name)
    if vm is not None:  # the choreography runs in the VM; the file is edited here
        _edit(file, set_node_field(name, "drain", True), no_edit)
        if code := run_in_vm(vm, file, ("--no-edit",)):
            raise typer.Exit(code)
    else:
        cluster = drain_and_wait()
        lifecycle.teardown_node(cluster, _lab(cluster), name, _say)
        if cluster.role(name) == "director":
            lifecycle.note_withdrawal(cluster, name)
        lab_provider.shrink(cluster.name, name, _say)  # a lab node leaves the lab too (its addresses are free)
        if no_edit:
            return  # the file is left to whoever runs us (the host side of a lab VM)
    cluster = load_cluster(file)
    _edit(file, remove_node(name, {(i.node, i.name): i.ip for i in cluster.interfaces}), False)
    out.print(f"{name} removed from {file}; deploying the rest", markup=False)
    if vm is not None:
        raise typer.Exit(vm.run(["deploy", "--yes", vm.stage(file)], cli=True))
    rest = load_cluster(file)
    lifecycle.deploy_nodes(rest, _lab(rest), list(rest.topology.nodes), _say)


def _drain_real_server(file: Path, name: str, drained: bool, no_edit: bool) -> Cluster:
    from lvscluster.apply import lifecycle

    cluster, lab = _set_drain(file, name, "real_server", drained, no_edit)
    changes = lifecycle.deploy_nodes(cluster, lab, list(cluster.directors), _say)
    _say(f"{name}: weight {'0' if drained else 'restored'} on {len(cluster.directors)} directors ({changes} changes)")
    if (traffic := lifecycle.real_server_traffic(cluster, lab, name)) is not None:
        out.print(f"{name}: {traffic['active']} active connection entries on the directors", markup=False)
    return cluster


@rs_app.command("drain")
def rs_drain(file: TopologyFile, name: NodeName, no_edit: NoEdit = False) -> None:
    """Quiesce a real server: weight 0 on every director; established connections carry on."""
    _drain_real_server(file, name, True, no_edit)


@rs_app.command("undrain")
def rs_undrain(file: TopologyFile, name: NodeName, no_edit: NoEdit = False) -> None:
    """Give a drained real server its weight back on every director."""
    _drain_real_server(file, name, False, no_edit)


@rs_app.command("remove")
def rs_remove(file: TopologyFile, name: NodeName, no_edit: NoEdit = False, timeout: Timeout = 120) -> None:
    """Drain a real server, wait until no packets go to it, then delete it everywhere.

    The wait ends when the directors' packet counters towards it stood still for 4 s (its
    connections ended; IPVS entries of moved flows may linger until their timeout and are not
    waited for), or after --timeout seconds, which stops here and changes nothing more. Then the
    VIP and ARP settings on the server go, it leaves every director's services and the file.
    """
    from lvscluster.apply import lifecycle

    cluster = load_cluster(file)
    _check_role(cluster, name, "real_server")

    def drain_and_wait() -> Cluster:
        drained = _drain_real_server(file, name, True, no_edit)
        lab = _lab(drained)
        _wait_until_idle(name, lambda: (lifecycle.real_server_traffic(drained, lab, name) or {}).get("inpkts", 0),
                         timeout, "rs remove")
        return drained

    _remove_node(file, name, no_edit, drain_and_wait)
