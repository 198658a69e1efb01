"""`lvscluster plan` and `deploy`: observe the nodes, show the diff, apply it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvscluster.apply.deploy import apply_plan, managed, plan_deploy
from lvscluster.apply.placement import Placement
from lvscluster.cli.common import (JsonFlag, TopologyFile, err, escape, forward_to_vm, lab_vm, load_cluster, out,
                                   print_json, run_in_vm)
from lvscluster.errors import EXIT_FAILURE, LvsClusterError
from lvscluster.lab import provider as lab_provider
from lvscluster.model.cluster import Cluster
from lvscluster.model.secrets import redact_frr
from lvscluster.plan.actions import Action
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_cluster
from lvscluster.state import NodeState


def _progress(message: str) -> None:
    err.print(f"[dim]deploy:[/dim] {escape(message)}")


def _state_directory(value: str | Path) -> Path:
    """`plan --against`: an existing directory (a typo must not silently plan from empty nodes)."""
    path = Path(str(value))
    if not str(value).strip():
        raise typer.BadParameter("is empty; name a directory an earlier `lvscluster render -o DIR` wrote")
    if not path.is_dir():
        raise typer.BadParameter(f"{value} {'is not a directory' if path.exists() else 'does not exist'}; "
                                 "name a directory an earlier `lvscluster render -o DIR` wrote")
    return path


def load_observed(directory: Path, desired: dict[str, NodeState]) -> dict[str, NodeState]:
    """Observed states from `<dir>/<node>/state.json`; nodes without one count as empty, and are
    named; a directory holding none of the nodes is an error (the wrong directory, surely)."""
    observed = {}
    for name in desired:
        path = directory / name / "state.json"
        if path.exists():
            try:
                observed[name] = NodeState.model_validate_json(path.read_text())
            except ValueError as exc:
                raise LvsClusterError(f"{path}: not a node state: {str(exc).splitlines()[0]}") from None
    missing = [name for name in desired if name not in observed]
    if desired and not observed:
        raise LvsClusterError(f"{directory} holds no node state (<node>/state.json) for any node of this topology "
                              f"({', '.join(desired)}); was it written by `lvscluster render -o {directory}`?")
    if missing:
        err.print(f"plan: {directory} has no state.json for {', '.join(missing)}: planned from empty nodes",
                  markup=False)
    return observed


def print_plan(plan: dict[str, list[Action]]) -> None:
    """Print a plan for a person: one line per action with its reason, grouped by node."""
    total = sum(len(actions) for actions in plan.values())
    if total == 0:
        out.print("no changes", markup=False)
        return
    colour = {"add": "green", "set": "yellow", "del": "red"}
    for node, actions in plan.items():
        if not actions:
            continue
        out.print(f"[bold]{node}[/bold] ({len(actions)} changes)")
        for action in actions:
            verb = action.kind.split("_")[0]
            mark = {"add": "+", "set": "~", "del": "-"}[verb]
            out.print(f"  [{colour[verb]}]{mark} {escape(action.summary)}[/] [dim]: {escape(action.reason)}[/]")
    changed = sum(1 for actions in plan.values() if actions)
    out.print(f"{total} changes on {changed} of {len(plan)} nodes", markup=False)


def plan_json(plan: dict[str, list[Action]]) -> dict:
    """A plan as JSON-ready data."""
    nodes = {node: [_redacted(a.model_dump(mode="json", exclude_none=True)) for a in acts] for node, acts in plan.items()}
    return {"changes": sum(map(len, plan.values())), "nodes": nodes}


def _redacted(action: dict) -> dict:
    """An action as printed: FRR text without its keys and passwords."""
    if "frr" in action:
        action["frr"] = redact_frr(action["frr"])
    return action


def lab_placements(cluster: Cluster) -> dict[str, Placement] | None:
    """Where each node of the lab built from this topology lives, when one is up on this machine."""
    return lab_provider.lab_placements(cluster.name)


def _reachable(cluster: Cluster, lab: dict[str, Placement] | None) -> bool:
    return bool(lab) or any(node.access for node in cluster.topology.nodes.values())


def _confirm_here(total: int | None = None) -> None:
    """Ask before applying; without a terminal, refuse unless --yes was given."""
    if not sys.stdin.isatty():
        err.print("deploy: not applying without confirmation; pass --yes", markup=False)
        raise typer.Exit(EXIT_FAILURE)
    typer.confirm(f"apply {total} changes?" if total else "apply these changes?", abort=True)


def _show_confirm_apply(plan, *, yes: bool, dry_run: bool, show: bool = True) -> list[str] | None:
    """Print the plan, ask unless --yes, apply it; None when there was nothing (or nothing asked) to apply."""
    if show:
        print_plan(plan.actions)
    if plan.total == 0 or dry_run:
        return None
    if not yes:
        _confirm_here(plan.total)
    return apply_plan(plan, progress=_progress)


def _forward_changes_to_vm(cluster: Cluster, file: Path, ask: bool) -> None:
    """When the lab lives in a VM, run this changing command there (it has no terminal, so a
    confirmation is asked here between a --dry-run and a --yes run); returns only if no VM."""
    vm = lab_vm(cluster.name)
    if vm is None:
        return
    if ask:
        code = run_in_vm(vm, file, ("--dry-run",))
        if code:
            raise typer.Exit(code)
        _confirm_here()
        raise typer.Exit(run_in_vm(vm, file, ("--yes",)))
    forward_to_vm(vm, file)


def plan(
    file: TopologyFile,
    against: Annotated[Optional[Path], typer.Option(
        parser=_state_directory, metavar="DIR", help="Compare with node states saved in `DIR/<node>/state.json` (e.g. an earlier `render`) "
             "instead of observing the nodes.")] = None,
    offline: Annotated[bool, typer.Option(help="Plan against empty nodes, without observing anything.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show the ordered actions, each with its reason, that would bring the nodes to the topology.

    Changes nothing (it is `deploy --dry-run`). The nodes are observed when a lab built from
    FILE is up or the nodes have `access:`; otherwise, or with --offline, the plan starts from
    empty nodes. "no changes" means every node already matches.
    """
    cluster = load_cluster(file)
    if against is None and not offline and (vm := lab_vm(cluster.name)):
        forward_to_vm(vm, file)
    lab = lab_placements(cluster)
    if against is not None or offline or not _reachable(cluster, lab):
        if against is None and not offline:
            err.print("plan: no lab is up for this topology and no node has access:, so this plan starts "
                      "from empty nodes", markup=False)
        desired = {n: s for n, s in plan_cluster(cluster).items() if managed(s)}
        actions = diff_cluster(desired, load_observed(against, desired) if against else {})
    else:
        actions = plan_deploy(cluster, lab, progress=_progress).actions
    if as_json:
        print_json(plan_json(actions))
    else:
        print_plan(actions)

def deploy(
    file: TopologyFile,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan (same as `plan`).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Observe every node, show the plan, ask, and apply it node by node.

    Order: real servers, routers, then directors one at a time (each fully set up before it
    announces the VIP). The first failure stops the rollout and names the node and action;
    nodes not reached are left as they were. Running deploy again continues from there, and
    on a converged cluster prints "no changes".
    """
    cluster = load_cluster(file)
    _forward_changes_to_vm(cluster, file, ask=not (yes or dry_run or as_json))
    lab = lab_placements(cluster)
    plan_ = plan_deploy(cluster, lab, progress=_progress)
    if as_json and (dry_run or plan_.total == 0):
        print_json({**plan_json(plan_.actions), "applied": []})
        return
    changed = _show_confirm_apply(plan_, yes=yes, dry_run=dry_run, show=not as_json)
    if changed is None:
        return
    if as_json:
        print_json({**plan_json(plan_.actions), "applied": changed})
    else:
        out.print(f"applied {plan_.total} changes to {len(changed)} nodes", markup=False)


def _print_status(report: dict) -> None:
    from rich.table import Table

    state = "[green]in sync[/green]" if report["in_sync"] else "[yellow]changes pending[/yellow]"
    mh = "[green]same on every director[/green]" if report["mh_tables_consistent"] else "[red]DIFFER between directors[/red]"
    out.print(f"[bold]{report['cluster']}[/bold]: {state}; dest order (mh/sh tables): {mh}")
    nodes = Table(title="nodes", title_justify="left")
    for column in ("node", "role", "state", "OSPF", "VIP announced / ECMP next hops"):
        nodes.add_column(column)
    for name, node in report["nodes"].items():
        ospf = ", ".join(f"{n['router_id']} {n['state']}" for n in node.get("ospf_neighbors", ())) or "-"
        if node["role"] == "director":
            detail = ", ".join(f"{vip} {'yes' if v['announced'] else '[red]no[/red]'}" for vip, v in node["vips"].items())
        elif node["role"] == "router":
            detail = "; ".join(f"{vip} via {', '.join(hops) or '[red]none[/red]'}" for vip, hops in node["ecmp"].items())
        else:
            detail = "-"
        pending = "in sync" if node["in_sync"] else f"[yellow]{len(node['pending'])} pending[/yellow]"
        nodes.add_row(name, node["role"], pending, ospf, detail)
    out.print(nodes)
    ipvs = Table(title="IPVS", title_justify="left")
    for column in ("director", "service", "dest", "weight", "health", "active", "inactive", "conns", "sync"):
        ipvs.add_column(column)
    for name, node in report["nodes"].items():
        sync = ", ".join(f"{d['state']}@{d['interface']}" for d in node.get("sync", ())) or "-"
        for svc in node.get("services", ()):
            order = "" if svc["order_matches_other_directors"] else " [red](order differs)[/red]"
            for dest in svc["dests"]:
                health = dest.get("health", "-")
                health = f"[red]{escape(health)}[/red]" if health.startswith("down") else health
                ipvs.add_row(name, f"{svc['service']} {svc['scheduler']}{order}", dest["dest"], str(dest["weight"]),
                             health, str(dest["active"]), str(dest["inactive"]), str(dest["conns"]), sync)
    out.print(ipvs)
    for name, node in report["nodes"].items():
        for line in node["pending"]:
            out.print(f"  [yellow]{name}: {escape(line)}[/yellow]")


def status(
    file: TopologyFile,
    connections: Annotated[bool, typer.Option("--connections", help="List every IPVS connection entry of every "
                                              "director (client, VIP, real server, state, expiry, local or sync), "
                                              "as `ipvsadm -lnc` does.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show the cluster: per director OSPF, VIP announcement, IPVS services and dests with connections,
    sync daemons and whether its dest order (so its mh table) matches the others; per router the
    ECMP next hops of each VIP; per node whether it matches the topology. Changes nothing."""
    from lvscluster.apply.status import cluster_status

    cluster = load_cluster(file)
    if (vm := lab_vm(cluster.name)) is not None:
        forward_to_vm(vm, file)
    observed = plan_deploy(cluster, lab_placements(cluster))
    report = cluster_status(observed)
    if connections:
        from lvscluster.netlink.connections import connections as read_connections

        report["connections"] = {
            name: [c.as_dict() for c in read_connections(backend.placement.netns)]
            for name, backend in observed.backends.items()
            if cluster.role(name) == "director" and backend.placement.on_this_machine}
    if as_json:
        print_json(report)
        return
    _print_status(report)
    for name, entries in report.get("connections", {}).items():
        out.print(f"[bold]{name}[/bold] connections ({len(entries)})")
        for c in entries:
            out.print(f"  {c['protocol']} {c['client']} -> {c['vip']} -> {c['dest']} {c['state']} "
                      f"{c['expires']}s {c['origin']}", markup=False)


def destroy(
    file: TopologyFile,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be removed.")] = False,
) -> None:
    """Remove what deploy added and nothing else: withdraw the VIPs (FRR config emptied), remove
    the VIP addresses, the topology's IPVS services and sync daemons, and set the sysctls deploy
    changed back to their earlier values. Directors first, then routers, then real servers."""
    from lvscluster.apply.deploy import plan_teardown

    cluster = load_cluster(file)
    _forward_changes_to_vm(cluster, file, ask=not (yes or dry_run))
    teardown = plan_teardown(plan_deploy(cluster, lab_placements(cluster), progress=_progress))
    changed = _show_confirm_apply(teardown, yes=yes, dry_run=dry_run)
    if changed is None:
        return
    out.print(f"removed: {teardown.total} changes on {len(changed)} nodes", markup=False)

