"""The `lvscluster` command line: parse, call the library, print, map errors to exit codes.

Every command is a plain function in its own module (`topology`, `deploy`, `verify`,
`scaletest`, `agent`, `health`, `lifecycle`, `lab`, `node`, `migrate`); this module makes the
app, registers them in the order `--help` lists them, and maps errors to exit codes.
Exit codes: 0 success, 1 a failure (invalid topology, failed apply), 2 usage error, 3 a
scaletest whose lab could not keep up.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lvscluster import __version__
from lvscluster.cli.agent import agent
from lvscluster.cli.common import err, out
from lvscluster.cli.deploy import deploy, destroy, plan, status
from lvscluster.cli.health import genhash
from lvscluster.cli.lab import lab_app
from lvscluster.cli.lifecycle import director_app, rs_app
from lvscluster.cli.migrate import export_app, import_app
from lvscluster.cli.node import node_app
from lvscluster.cli.scaletest import scaletest
from lvscluster.cli.topology import exabgp_bridge, render, schema, validate
from lvscluster.cli.verify import verify
from lvscluster.errors import LvsClusterError

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

for command in (validate, schema, render, plan, deploy, status, destroy, verify, scaletest, agent, genhash):
    app.command()(command)
app.command("exabgp-bridge", hidden=True)(exabgp_bridge)
for group, name in ((director_app, "director"), (rs_app, "rs"), (lab_app, "lab"), (node_app, "node"),
                    (import_app, "import"), (export_app, "export")):
    app.add_typer(group, name=name)


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

