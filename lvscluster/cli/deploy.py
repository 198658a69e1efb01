"""`lvscluster plan` and `deploy`: observe the nodes, show the diff, apply it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvscluster.apply.deploy import apply_plan, managed, plan_deploy
from lvscluster.cli.common import (JsonFlag, TopologyFile, err, escape, forward_to_vm, lab_vm, load_cluster, out,
                                   print_json, run_in_vm)
from lvscluster.errors import EXIT_FAILURE, LvsClusterError
from lvscluster.lab import netns as lab_provider
from lvscluster.model.cluster import Cluster
from lvscluster.plan.actions import Action
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_cluster
from lvscluster.state import NodeState


def _progress(message: str) -> None:
    err.print(f"[dim]deploy:[/dim] {escape(message)}")


def load_observed(directory: Path, desired: dict[str, NodeState]) -> dict[str, NodeState]:
    """Observed states from `<dir>/<node>/state.json` (missing nodes count as empty)."""
    observed = {}
    for name in desired:
        path = directory / name / "state.json"
        if path.exists():
            try:
                observed[name] = NodeState.model_validate_json(path.read_text())
            except ValueError as exc:
                raise LvsClusterError(f"{path}: not a node state: {str(exc).splitlines()[0]}") from None
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
    nodes = {node: [a.model_dump(mode="json", exclude_none=True) for a in acts] for node, acts in plan.items()}
    return {"changes": sum(map(len, plan.values())), "nodes": nodes}


def lab_namespaces(cluster: Cluster) -> dict[str, str] | None:
    """The namespaces of the lab built from this topology, when it is up on this machine."""
    record = lab_provider.read_record(cluster.name)
    return record["namespaces"] if record else None


def _reachable(cluster: Cluster, lab: dict[str, str] | None) -> bool:
    return bool(lab) or any(node.access for node in cluster.topology.nodes.values())


def _confirm_here(total: int | None = None) -> None:
    """Ask before applying; without a terminal, refuse unless --yes was given."""
    if not sys.stdin.isatty():
        err.print("deploy: not applying without confirmation; pass --yes", markup=False)
        raise typer.Exit(EXIT_FAILURE)
    typer.confirm(f"apply {total} changes?" if total else "apply these changes?", abort=True)


def register(app: typer.Typer) -> None:
    """Add `plan` and `deploy` to the main app."""

    @app.command()
    def plan(
        file: TopologyFile,
        against: Annotated[Optional[Path], typer.Option(
            help="Compare with node states saved in DIR/<node>/state.json (e.g. an earlier `render`) "
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
        lab = lab_namespaces(cluster)
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

    @app.command()
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
        if (vm := lab_vm(cluster.name)) is not None:
            if not (yes or dry_run or as_json):  # the VM has no terminal: show the plan there, ask here
                code = run_in_vm(vm, file, ("--dry-run",))
                if code:
                    raise typer.Exit(code)
                _confirm_here()
                raise typer.Exit(run_in_vm(vm, file, ("--yes",)))
            forward_to_vm(vm, file)
        lab = lab_namespaces(cluster)
        plan_ = plan_deploy(cluster, lab, progress=_progress)
        if as_json and (dry_run or plan_.total == 0):
            print_json({**plan_json(plan_.actions), "applied": []})
            return
        if not as_json:
            print_plan(plan_.actions)
        if plan_.total == 0 or dry_run:
            return
        if not yes:
            _confirm_here(plan_.total)
        changed = apply_plan(plan_, progress=_progress)
        if as_json:
            print_json({**plan_json(plan_.actions), "applied": changed})
        else:
            out.print(f"applied {plan_.total} changes to {len(changed)} nodes", markup=False)
