"""`lvscluster import keepalived|ipvsadm` and `lvscluster export ipvsadm`: moving from keepalived."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lvscluster.cli.common import err, load_cluster, out
from lvscluster.errors import EXIT_FAILURE, EXIT_USAGE, LvsClusterError, TopologyError
from lvscluster.migrate.ipvsadm import import_ipvsadm, save_rules
from lvscluster.migrate.keepalived import import_keepalived
from lvscluster.migrate.services import Imported
from lvscluster.migrate.to_topology import write_topology
from lvscluster.model.loader import parse_topology_with_warnings
from lvscluster.plan.desired import plan_cluster

import_app = typer.Typer(help="Turn a keepalived.conf or an `ipvsadm -S -n` dump into a topology file "
                              "(docs/migration.md).", no_args_is_help=True)
export_app = typer.Typer(help="Print what a topology means in another tool's terms.", no_args_is_help=True)

Source = Annotated[Path, typer.Argument(help="The file to import.", show_default=False)]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the topology here instead of stdout.")]
Name = Annotated[Optional[str], typer.Option("--name", help="The topology's name (default: from the file name).")]
Directors = Annotated[Optional[int], typer.Option("--directors", min=1, max=256, help="How many directors the skeleton "
                                                  "has (default: one per VRRP peer found, else 2).")]


def _finish(imported: Imported, output: Path | None, name: str | None, directors: int | None) -> None:
    """Write the topology, list the notes on stderr, and check that it validates."""
    if directors is not None:
        imported.directors, imported.directors_why = directors, "--directors"
    text = write_topology(imported, name)
    for note in imported.notes:
        err.print(note.line, markup=False)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise LvsClusterError(f"import: cannot write {output}: {exc.strerror or exc}") from None
    else:
        out.file.write(text)
    try:
        parse_topology_with_warnings(text, output or "<imported>")
    except TopologyError as exc:
        err.print("the imported topology does not validate yet; fix these by hand:", markup=False)
        for problem in exc.problems:
            err.print(problem, markup=False)
        raise typer.Exit(EXIT_FAILURE) from None
    if output is not None:
        err.print(f"wrote {output}: valid; fill in the lines marked FILL IN, then `lvscluster validate {output}`",
                  markup=False)


@import_app.command("keepalived")
def import_keepalived_command(
    file: Source, output: Output = None, name: Name = None, directors: Directors = None,
    config_id: Annotated[Optional[str], typer.Option("--config-id", help="keepalived's -i: which `@ID` lines "
                                                     "apply (default: none of them, as keepalived without -i).")] = None,
) -> None:
    """Turn a keepalived.conf (and its includes) into a topology file.

    `virtual_server` and `virtual_server_group` blocks (addresses, ranges, fwmarks), `real_server`,
    `lb_algo`, `lb_kind`, persistence, scheduler flags, `quorum`, `sorry_server` and the checkers
    TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK and UDP_CHECK become VIPs, services, real
    servers and `health`. Everything else (VRRP, notify scripts, alerting, ...) is listed on stderr
    and at the top of the output with its FILE:LINE, never dropped silently. The client, router,
    directors and links are a skeleton marked FILL IN. Exits 1 when the result does not validate.
    """
    _finish(import_keepalived(file, config_id), output, name, directors)


@import_app.command("ipvsadm")
def import_ipvsadm_command(file: Source, output: Output = None, name: Name = None, directors: Directors = None) -> None:
    """Turn an `ipvsadm -S -n` dump into a topology file.

    Reads -A and -a lines (`ipvsadm-save` output too, with or without a leading `ipvsadm`). Port
    names are read from /etc/services; host names are refused (save with -n: nothing is looked
    up). Real servers are listed in the reverse of the dump's order (a `--nosort` dump is the
    kernel's order, newest first). A dump has no health checks: add them.
    """
    _finish(import_ipvsadm(file), output, name, directors)


@export_app.command("ipvsadm")
def export_ipvsadm_command(
    file: Annotated[Path, typer.Argument(help="The topology file (*.lvs.yml).", show_default=False)],
    node: Annotated[Optional[str], typer.Option("--node", help="The director (default: the first one).")] = None,
    nosort: Annotated[bool, typer.Option("--nosort", help="Print services in file order and real servers in "
                                         "kernel order, as `ipvsadm -S -n --nosort`.")] = False,
) -> None:
    """Print the `ipvsadm -R` rules a director holds, exactly as `ipvsadm -S -n` prints them.

    The desired state with every real server healthy (no agent verdict): diff it against
    `ipvsadm -S -n` on the director. Timeouts and sync daemons, which -S does not save, follow
    as `#` comments (ipvsadm -R skips them).
    """
    cluster = load_cluster(file)
    directors = cluster.topology.nodes_with_role("director")
    node = node or (directors[0] if directors else None)
    if node not in directors:
        err.print(f"export: {node!r} is not a director of {file} (directors: {', '.join(directors) or 'none'})",
                  markup=False)
        raise typer.Exit(EXIT_USAGE)
    state = plan_cluster(cluster, only=[node])[node]
    for line in save_rules(state.ipvs, sort=not nosort):
        out.file.write(line + "\n")
