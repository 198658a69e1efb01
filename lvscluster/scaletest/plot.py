"""Scaletest timeline picture (report.png): live flows, new connections, churn events and breakages."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from lvscluster.scaletest.report import Tick


def _as_ticks(ticks: Iterable[Tick | Mapping[str, Any]]) -> list[Tick]:
    result = []
    for tick in ticks:
        if isinstance(tick, Tick):
            result.append(tick)
        else:
            result.append(Tick(**{k: v for k, v in tick.items() if k in Tick.__dataclass_fields__}))
    return sorted(result, key=lambda tick: tick.t)


def _alive_at(ticks: list[Tick], t: float) -> int:
    alive = ticks[0].alive if ticks else 0
    for tick in ticks:
        if tick.t > t:
            break
        alive = tick.alive
    return alive


def _shade_stalls(ticks: list[Tick], axes) -> None:
    """Grey bands over the seconds the lab itself stalled (engine late, a test server slow to answer its probe)."""
    labelled = False
    for tick in ticks:
        if (tick.stall_ms or 0) >= 200:
            for axis in axes:
                axis.axvspan(tick.t - 1, tick.t, color="gray", alpha=min(0.5, 0.1 + tick.stall_ms / 2000),
                             linewidth=0, label=None if labelled or axis is not axes[1] else "lab stalled")
            labelled = True


def matplotlib_config_dir() -> str:
    """A writable config dir for matplotlib (a lab VM's home is read-only), seeded with the font
    cache bootstrap built on the host: the VM sees the same fonts under the same root, and
    building the cache again took tens of seconds of every scaletest there."""
    target = Path(tempfile.gettempdir()) / "lvscluster-matplotlib"
    target.mkdir(exist_ok=True)
    if not any(target.glob("fontlist-*.json")):
        for cached in (Path.home() / ".cache" / "matplotlib").glob("fontlist-*.json"):
            try:
                shutil.copy(cached, target)
            except OSError:
                pass  # matplotlib builds its own
    return str(target)


def plot_report(report: Mapping[str, Any], traffic_ticks: Iterable[Tick | Mapping[str, Any]],
                path: str | Path) -> Path:
    """Draw the run's timeline to `path` (PNG) and return the path.

    Top: live flows per real server, their total, per director when the report has a
    director flow timeline, red crosses for broken flows. Bottom: new connections per second
    (ok and failed). Both: a dashed line per churn event, labelled; grey bands where the lab
    stalled; a red title when the lab was overloaded (the result is not valid).
    """
    os.environ.setdefault("MPLCONFIGDIR", matplotlib_config_dir())
    import matplotlib  # slow to import: only here

    matplotlib.use("Agg")
    from matplotlib import pyplot

    ticks = [Tick(t=0.0)] + [tick for tick in _as_ticks(traffic_ticks) if not tick.final]
    times = [tick.t for tick in ticks]
    figure, (flows_axis, conns_axis) = pyplot.subplots(2, 1, sharex=True, figsize=(11, 7),
                                                       gridspec_kw={"height_ratios": [3, 2]})
    try:
        servers = sorted({node for tick in ticks for node in tick.flows_by_node})
        for node in servers:
            flows_axis.plot(times, [tick.flows_by_node.get(node, 0) for tick in ticks], label=f"{node} flows")
        flows_axis.plot(times, [tick.alive for tick in ticks], color="black", linewidth=1.5, label="flows alive")
        for director, samples in sorted((report.get("directors") or {}).get("flow_timeline", {}).items()):
            if samples:
                flows_axis.plot([s[0] for s in samples], [s[1] for s in samples], linestyle=":",
                                label=f"{director} (director)")
        broken = report.get("broken_flows") or []
        if broken:
            flows_axis.scatter([b["t"] for b in broken], [_alive_at(ticks, b["t"]) for b in broken],
                               marker="x", color="red", zorder=5, label=f"broken flows ({len(broken)})")
        flows_axis.set_ylabel("live flows")
        basis = (report.get("directors") or {}).get("flow_timeline_basis")
        if basis:  # the dotted director lines are estimates: say from what
            flows_axis.set_title(f"director lines: estimated from {basis}", loc="left", fontsize="small", color="dimgray")
        flows_axis.set_ylim(bottom=0)
        flows_axis.legend(loc="best", fontsize="small", ncol=2)
        flows_axis.grid(alpha=0.3)

        per_second = {"drawstyle": "steps-pre"}  # a tick counts the second that ends at its time
        conns_axis.plot(times, [tick.new_ok for tick in ticks], color="tab:green", label="new connections ok / s",
                        **per_second)
        conns_axis.plot(times, [tick.new_failed for tick in ticks], color="red", label="failed / s", **per_second)
        conns_axis.set_ylabel("new connections / s")
        conns_axis.set_xlabel("seconds since start")
        conns_axis.set_ylim(bottom=0)
        conns_axis.legend(loc="best", fontsize="small")
        conns_axis.grid(alpha=0.3)

        for event in report.get("events") or []:
            for axis in (flows_axis, conns_axis):
                axis.axvline(event["at"], color="tab:purple", linestyle="--", linewidth=1)
                if event.get("ecmp_changed_after") is not None:
                    axis.axvline(event["at"] + event["ecmp_changed_after"], color="tab:purple", linestyle=":",
                                 linewidth=0.8)
            flows_axis.annotate(event.get("label") or f"{event['action']} {event['node']}", (event["at"], 0.02),
                                xycoords=("data", "axes fraction"), rotation=90, va="bottom", ha="right",
                                fontsize="small", color="tab:purple")
        _shade_stalls(ticks, (flows_axis, conns_axis))
        run, lab = report.get("run") or {}, report.get("lab") or {}
        title = (f"scaletest {run.get('target', '')}: {run.get('flows')} flows, "
                 f"{run.get('rate') or 0:g} new connections/s")
        if lab.get("verdict") not in (None, "valid"):  # say it where nobody can miss it
            figure.suptitle(f"{lab['verdict_text'].upper()}\n{title}", color="red", fontweight="bold")
        else:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=100)
    finally:
        pyplot.close(figure)
    return path
