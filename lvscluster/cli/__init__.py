"""The `lvscluster` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success, 1 a failure (invalid topology, failed apply), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from lvscluster import __version__
from lvscluster.errors import EXIT_FAILURE, LvsClusterError, TopologyError
from lvscluster.cli.common import JsonFlag, TopologyFile, err, escape, load_cluster, out, print_json
from lvscluster.model.loader import load_topology
from lvscluster.model.topology import Topology
from lvscluster.plan.actions import Action
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_cluster
from lvscluster.plan.render import render_cluster
from lvscluster.state import NodeState

app = typer.Typer(
    name="lvscluster",
    help=(
        "Build and run all-active, ECMP-scaled LVS (IPVS) clusters from one topology file.\n\n"
        "Every director announces the VIP over OSPF and the upstream router spreads flows over "
        "them by equal-cost multipath. Start with `lvscluster validate topology/demo.lvs.yml`, "
        "then `render` to see each node's configuration and `plan` to see what would change."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="One or more topology files.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Check topology files and print every problem as FILE:LINE: path: message.

    Exits 0 when every file is valid, 1 otherwise. Nothing on any machine is touched.
    """
    results = {}
    for path in files:
        try:
            load_topology(path)
            results[str(path)] = []
        except TopologyError as exc:
            results[str(path)] = exc.problems
    if as_json:
        print_json({"valid": not any(results.values()), "problems": results})
    else:
        for path, problems in results.items():
            for line in problems:
                err.print(line, markup=False)
            if not problems:
                out.print(f"{path}: valid", markup=False)
    if any(results.values()):
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the topology file (for editors and linters)."""
    document = Topology.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "lvscluster topology (*.lvs.yml)"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
def render(
    file: TopologyFile,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write <node>/{frr.conf,daemons,state.json} into.")] = Path("out"),
) -> None:
    """Write each node's FRR config, FRR daemons file and desired state (state.json).

    Rendering is pure: it reads only the topology and writes only into OUTPUT.
    """
    cluster = load_cluster(file)
    written = render_cluster(cluster, plan_cluster(cluster), output)
    nodes = sorted({p.parent.name for p in written})
    out.print(f"rendered {len(written)} files for {len(nodes)} nodes into {output}/", markup=False)


def _load_observed(directory: Path | None, desired: dict[str, NodeState]) -> dict[str, NodeState]:
    """Observed states from `<dir>/<node>/state.json` (missing nodes count as empty)."""
    if directory is None:
        return {}
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


@app.command()
def plan(
    file: TopologyFile,
    against: Annotated[Optional[Path], typer.Option(
        help="Compare with node states saved in DIR/<node>/state.json (e.g. an earlier `render`) "
             "instead of empty nodes.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the ordered actions, each with its reason, that would bring the nodes to the topology.

    Changes nothing. A node with nothing to change prints no lines; "no changes" means done.
    """
    cluster = load_cluster(file)
    desired = plan_cluster(cluster)
    actions = diff_cluster(desired, _load_observed(against, desired))
    if as_json:
        payload = {node: [a.model_dump(mode="json", exclude_none=True) for a in acts] for node, acts in actions.items()}
        print_json({"changes": sum(map(len, actions.values())), "nodes": payload})
    else:
        print_plan(actions)


from lvscluster.cli.lab import lab_app  # noqa: E402  (sub-commands register after the app exists)

app.add_typer(lab_app, name="lab")


def _version(value: bool) -> None:
    if value:
        out.print(f"lvscluster {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False) -> None:
    pass


def main() -> None:
    """Console-script entry: run the app, turning lvscluster errors into messages and exit codes."""
    try:
        app()
    except LvsClusterError as exc:
        err.print(str(exc), markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)

