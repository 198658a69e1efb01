"""Commands on topology files alone: `validate`, `schema`, `render` (and the hidden `exabgp-bridge`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lvscluster.cli.common import JsonFlag, TopologyFile, err, load_cluster, out, print_json
from lvscluster.errors import EXIT_FAILURE, LvsClusterError, TopologyError
from lvscluster.files import write_tree
from lvscluster.model.loader import load_topology_with_warnings
from lvscluster.model.secrets import holds_secret
from lvscluster.model.topology import Topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.render import render_files


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


def exabgp_bridge(directory: Annotated[Path, typer.Argument(help="The director's ExaBGP directory.")]) -> None:
    """The API process ExaBGP runs for a director (`announcer: exabgp`): turns the routes deploy
    and the agent write into announce/withdraw commands. Not for interactive use."""
    from lvscluster.apply.exabgp_bridge import run_bridge

    run_bridge(directory)
