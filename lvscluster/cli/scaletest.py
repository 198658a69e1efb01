"""`lvscluster scaletest`: flows and new connections through a lab while directors churn; a report."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from lvscluster.cli.common import TopologyFile, err, escape, lab_vm, load_cluster, out, print_json, run_in_vm
from lvscluster.errors import EXIT_FAILURE, EXIT_LAB_OVERLOADED, LvsClusterError


def _progress(message: str) -> None:
    err.print(f"[dim]scaletest:[/dim] {escape(message)}")


def _parse_rate(text: str) -> float | None:
    """--rate: a number of new connections per second (>= 0), or 'auto' (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise typer.BadParameter(f"{text!r} is not a number of new connections per second (>= 0) or 'auto'",
                                 param_hint="'--rate'")
    return value


def scaletest(
    file: TopologyFile,
    flows: Annotated[int, typer.Option(min=1, help="Long-lived TCP flows to the echo service, each sending a "
                                       "numbered message every --interval and checking the echo.")] = 200,
    rate: Annotated[str, typer.Option(help="New HTTP connections per second, each a new 5-tuple; 'auto': first "
                                      "measure how many the lab carries beside the flows (12 s), then run at "
                                      "30% of that (what scripts/demo does: a busy laptop carries less).")] = "100",
    duration: Annotated[float, typer.Option(min=1, help="Seconds of traffic.")] = 30,
    churn: Annotated[str, typer.Option(help="Events during the run, comma-separated ACTION NODE@TIME. Directors: "
                                       "drain / undrain (leave / rejoin ECMP, serving on), kill (every link down, FRR "
                                       "killed) / revive, crash-frr (kill -9 of ospfd/bgpd), cut-sync / restore-sync "
                                       "(IPVS sync dropped), restart-agent. Real servers: link-down / link-up. "
                                       "E.g. 'drain d3@5s,undrain d3@15s,kill d4@20s,revive d4@30s'.")] = "",
    report: Annotated[Path, typer.Option(help="Directory for report.json, report.png and summary.txt.")] = Path("scaletest-report"),
    control: Annotated[bool, typer.Option(help="Control run: deploy the cluster with wlc, no connection sync and "
                                          "sloppy_tcp=0 first (what lvscluster's defaults avoid), run, then deploy "
                                          "the topology again. Churn should break flows here; if it does not, the "
                                          "test cannot tell.")] = False,
    echo_port: Annotated[int, typer.Option(help="TCP port of the VIP's echo service (long-lived flows).")] = 7,
    http_port: Annotated[int, typer.Option(help="TCP port of the VIP's HTTP service (new connections).")] = 80,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between a flow's messages.")] = 0.2,
    echo_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a flow may wait for an echo before it counts "
                                                "as broken. A shorter stall is TCP retransmitting across an ECMP "
                                                "change (BFD detection takes ~1 s), which the application survives.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json instead of the summary.")] = False,
    vip: Annotated[str | None, typer.Option(help="The VIP (by name) the traffic goes to, IPv4 or IPv6; its "
                                            "services need the echo and HTTP ports. Default: the topology's first.")] = None,
) -> None:
    """Measure the cluster under churn: a lab built from FILE must be up and deployed.

    From the lab's client: FLOWS long-lived echo flows (a broken flow is a reset, a timeout or
    a wrong echo) plus RATE new connections per second, for DURATION seconds, while the CHURN
    events happen. Reports each director's and real server's share of flows and new
    connections (max/mean imbalance), every broken flow with the event that broke it, how
    long the router's ECMP set took to change after each event, and connection-sync lag.

    The lab's own health is measured beside it (the engine's loop lag, skipped connections,
    each test server probed straight from its namespace, without IPVS): seconds the lab could
    not run do not count towards a flow's echo timeout, and a run the lab could not keep up
    with is reported as "lab overloaded: result not valid".
    Exit 0 when nothing broke, 1 when a flow broke, 3 when the lab was overloaded.
    """
    from lvscluster.cli.deploy import lab_placements
    from lvscluster.scaletest.churn import chosen_vip, parse_churn

    cluster = load_cluster(file)
    chosen_vip(cluster, vip)  # a wrong name is answered here, not after a VM boots
    events = parse_churn(churn, cluster, duration)
    new_rate = _parse_rate(rate)
    if (vm := lab_vm(cluster.name)) is not None:
        staged = vm.directory / f"report-{time.time_ns()}"
        code = run_in_vm(vm, file, ("--report", str(staged)))
        if staged.exists():
            if report.exists():
                shutil.rmtree(report)
            shutil.copytree(staged, report)
            shutil.rmtree(staged, ignore_errors=True)
            if not as_json:
                out.print(f"report: {report}/report.json, {report}/report.png", markup=False)
        raise typer.Exit(code)
    lab = lab_placements(cluster)
    if not lab:
        raise LvsClusterError(f"no lab is up for topology {cluster.name!r}: run `lvscluster lab up {file}` "
                              f"and `lvscluster deploy {file}` first")
    from lvscluster.apply.deploy import apply_plan, plan_deploy
    from lvscluster.scaletest.report import summary_text
    from lvscluster.scaletest.run import Orchestrator, ScaleTest, control_cluster, write_report

    test = ScaleTest(flows=flows, rate=new_rate, duration=duration, churn=events, echo_port=echo_port,
                     http_port=http_port, interval=interval, echo_timeout=echo_timeout, vip=vip)
    subject = control_cluster(cluster) if control else cluster
    if control:
        _progress("control run: deploying wlc, no sync, sloppy_tcp=0")
        apply_plan(plan_deploy(subject, lab), progress=_progress)
    try:
        result, ticks = Orchestrator(subject, lab, test, _progress).run()
    finally:
        if control:
            _progress("control run done: deploying the topology again")
            apply_plan(plan_deploy(cluster, lab), progress=_progress)
    result["control"] = control
    written = write_report(result, ticks, report)
    if as_json:
        print_json(result)
    else:
        out.print(summary_text(result), markup=False)
        out.print(f"report: {', '.join(str(p) for p in written)}", markup=False)
    if result["lab"]["verdict"] != "valid":
        raise typer.Exit(EXIT_LAB_OVERLOADED)
    if result["traffic"]["flows_broken"]:
        raise typer.Exit(EXIT_FAILURE)
