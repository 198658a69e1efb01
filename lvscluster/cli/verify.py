"""`lvscluster verify`: would every director send each new flow to the same real server?"""

from __future__ import annotations

import typer

from lvscluster.cli.common import JsonFlag, TopologyFile, escape, forward_to_vm, lab_vm, load_cluster, out, print_json
from lvscluster.errors import EXIT_FAILURE
from lvscluster.plan.verify import VerifyReport, verify_directors


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.1%}"


def print_report(report: VerifyReport) -> None:
    """One row per service and director: agrees, or what differs and how much; then example flows."""
    from rich.table import Table

    verdict = "[green]consistent[/green]" if report.consistent else "[red]DIVERGENT[/red]"
    diverging = sum(1 for s in report.services if not s.consistent)
    out.print(f"{len(report.services)} services on {len(report.directors)} directors: {verdict}"
              + (f" ({diverging} services differ)" if diverging else ""))
    if not report.services:
        return
    table = Table(title_justify="left")
    for column in ("service", "director", "verdict", "slots differing", "flows differing", "why"):
        table.add_column(column)
    for check in report.services:
        scheduler = check.scheduler or "-"
        for name in check.agreeing:
            mark = "majority" if check.diverging else "agrees"
            table.add_row(f"{check.service} {scheduler}", name, f"[green]{mark}[/green]", "0.0%", "0.0%", "")
        for div in check.diverging:
            table.add_row(f"{check.service} {scheduler}", div.director, "[red]DIFFERS[/red]",
                          _percent(div.slots_differing), _percent(div.flows_differing), escape("; ".join(div.reasons)))
    out.print(table)
    for check in report.services:
        for div in check.diverging:
            for ex in div.examples:
                out.print(f"  {check.service}: client {ex.client} -> {ex.majority or 'dropped'} on {check.reference}, "
                          f"{ex.director or 'dropped'} on {div.director}", markup=False)
        for note in check.notes:
            out.print(f"  [dim]note: {escape(note)}[/dim]")


def verify(file: TopologyFile, as_json: JsonFlag = False) -> None:
    """Check that every director would send each new flow to the same real server.

    Reads every director's IPVS services as the kernel holds them (dest order and weights, as `status` observes them) and recomputes, per service, the lookup table the kernel's mh (Maglev, 4093 slots) or sh (256 buckets) scheduler builds from them, exactly as Linux 6.1 does.

    Directors whose tables, available dests or hash flags (mh-port, mh-fallback) differ from the majority would send some flows to another real server when ECMP moves them: each is listed with the reasons, the share of table slots and of 1000 sample flows that differ, and example flows. A service missing on a director counts as a difference.

    Exits 0 when all directors agree, 1 when any differs. Changes nothing.
    """
    from lvscluster.apply.deploy import plan_deploy
    from lvscluster.cli.deploy import lab_placements

    cluster = load_cluster(file)
    if (vm := lab_vm(cluster.name)) is not None:
        forward_to_vm(vm, file)
    observed = plan_deploy(cluster, lab_placements(cluster)).observed
    directors = {name: state for name, state in observed.items() if cluster.role(name) == "director"}
    report = verify_directors(directors)
    if as_json:
        print_json(report.to_json())
    else:
        print_report(report)
    if not report.consistent:
        raise typer.Exit(EXIT_FAILURE)
