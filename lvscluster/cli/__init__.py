"""The `lvscluster` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success, 1 a failure (invalid topology, failed apply), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from lvscluster import __version__
from lvscluster.errors import EXIT_FAILURE, LvsClusterError, TopologyError
from lvscluster.cli.common import JsonFlag, TopologyFile, err, load_cluster, out, print_json
from lvscluster.model.loader import load_topology_with_warnings
from lvscluster.model.topology import Topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.files import write_tree
from lvscluster.model.secrets import holds_secret
from lvscluster.plan.render import render_files

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
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal; `code` shows as code
    pretty_exceptions_enable=False,
)
@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="One or more topology files.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Check topology files and print every problem as FILE:LINE: path: message.

    Exits 0 when every file is valid (warnings, `FILE:LINE: path: warning: ...`, do not count),
    1 otherwise. Nothing on any machine is touched.
    """
    results, warnings = {}, {}
    for path in files:
        try:
            warnings[str(path)] = load_topology_with_warnings(path)[1]
            results[str(path)] = []
        except TopologyError as exc:
            results[str(path)] = exc.problems
            warnings[str(path)] = []
    if as_json:
        print_json({"valid": not any(results.values()), "problems": results, "warnings": warnings})
    else:
        for path, problems in results.items():
            for line in problems or warnings[path]:
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


def _output_directory(value: str | Path) -> Path:
    """`render -o`: a directory (made if missing), never "" (the current directory by accident)
    nor an existing file."""
    value = str(value)
    if not value.strip():
        raise typer.BadParameter("is empty; name a directory, e.g. -o out (use -o . for the current directory)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{value} exists and is not a directory; render writes one directory per node into it")
    return path


@app.command()
def render(
    file: TopologyFile,
    output: Annotated[Path, typer.Option("-o", "--output", parser=_output_directory, metavar="DIR",
                                         help="Directory to write `<node>/{frr.conf,daemons,state.json}` into (made if missing).")] = Path("out"),
) -> None:
    """Write each node's FRR config, FRR daemons file and desired state (state.json).

    Rendering is pure: it reads only the topology and writes only into OUTPUT. A directory in
    OUTPUT that is not a node of this topology (an earlier render's) is named, not removed.
    """
    cluster = load_cluster(file)
    states = plan_cluster(cluster)
    secret = any(holds_secret(s.frr or "") for s in states.values())  # keys and passwords: owner only
    try:
        written = write_tree(output, render_files(cluster, states), mode=0o600 if secret else 0o644)
    except OSError as exc:
        raise LvsClusterError(f"render: cannot write into {output}: {exc.strerror or exc}"
                              + (f" ({exc.filename})" if exc.filename else "")) from None
    nodes = sorted({p.parent.name for p in written})
    out.print(f"rendered {len(written)} files for {len(nodes)} nodes into {output}/"
              + (" (mode 0600: they hold secrets)" if secret else ""), markup=False)
    stale = sorted(p.name for p in output.iterdir() if p.is_dir() and p.name not in nodes and (p / "state.json").exists())
    if stale:
        err.print(f"note: {output}/ also holds {', '.join(stale)}: not nodes of {file.name} (an earlier render?); left as they are",
                  markup=False)


@app.command("exabgp-bridge", hidden=True)
def exabgp_bridge(directory: Annotated[Path, typer.Argument(help="The director's ExaBGP directory.")]) -> None:
    """The API process ExaBGP runs for a director (`announcer: exabgp`): turns the routes deploy
    and the agent write into announce/withdraw commands. Not for interactive use."""
    from lvscluster.apply.exabgp_bridge import run_bridge

    run_bridge(directory)


from lvscluster.cli.deploy import register as register_deploy  # noqa: E402  (commands register on the app)
from lvscluster.cli.deploy import register_status  # noqa: E402
from lvscluster.cli.lab import lab_app  # noqa: E402
from lvscluster.cli.node import node_app  # noqa: E402

register_deploy(app)
register_status(app)
from lvscluster.cli.verify import register as register_verify  # noqa: E402
register_verify(app)
from lvscluster.cli.scaletest import register as register_scaletest  # noqa: E402
register_scaletest(app)
from lvscluster.cli.lifecycle import register_lifecycle  # noqa: E402
register_lifecycle(app)
from lvscluster.cli.agent import register as register_agent  # noqa: E402
register_agent(app)

app.add_typer(lab_app, name="lab")
app.add_typer(node_app, name="node")
from lvscluster.cli.migrate import export_app, import_app  # noqa: E402
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


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

