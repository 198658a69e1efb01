"""Was the lab able to run the test? The verdict on a scaletest's own health, from the engine's records.

Pure. A run is **valid** when the lab kept up: the engine's loop never stalled for long, it
started every new connection it was asked for, and every real server's test server answered
its direct probe (no IPVS on the way) promptly. Otherwise the run is **overloaded** and its
numbers are not evidence about the cluster: the report and the summary say "lab overloaded:
result not valid", the plot shows it, and the CLI exits with EXIT_LAB_OVERLOADED. Resets and
wrong echoes are still listed: starvation delays packets, it does not reset a flow or send it
to another real server.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

STALL_SHARE = 0.10  # more of the run than this stalled: overloaded
STARTED_SHARE = 0.90  # fewer new connections started than this share of rate x duration: overloaded
VALID, OVERLOADED = "valid", "overloaded"
VERDICT_TEXT = {VALID: "lab kept up: result valid", OVERLOADED: "lab overloaded: result not valid"}


def judge(summary: Mapping[str, Any] | None, run: Mapping[str, Any], ticks: Sequence[Any] = ()) -> dict[str, Any]:
    """The `lab` section of the report: verdict, its reasons, and the figures they rest on.

    summary: the engine's summary record (None when it died: not valid); run: its start settings
    (duration, rate, echo_timeout); ticks: the parsed ticks, for the stalled seconds on the timeline."""
    if summary is None:
        return {"verdict": OVERLOADED, "verdict_text": VERDICT_TEXT[OVERLOADED],
                "reasons": ["the traffic engine printed no summary (it died or was killed)"], "stalled_seconds": []}
    timeout = float(run.get("echo_timeout") or 5.0)
    duration = float(summary.get("t") or run.get("duration") or 0.0) or 1.0
    lab = summary.get("lab") or {}
    reasons = []
    lag = (summary.get("loop_lag_ms_max") or 0.0) / 1000
    if lag >= timeout / 2:
        reasons.append(f"the traffic engine's loop stalled {lag:.1f} s at once (half the echo timeout is {timeout / 2:g} s)")
    stalled = float(lab.get("stalled_s") or 0.0)
    if stalled > STALL_SHARE * duration:
        reasons.append(f"the lab was stalled {stalled:.1f} s of {duration:.0f} s ({stalled / duration:.0%}; "
                       f"the limit is {STALL_SHARE:.0%})")
    if summary.get("new_skipped"):
        reasons.append(f"{summary['new_skipped']} new connections skipped: the engine had too many in flight")
    rate = float(run.get("rate") or 0.0)
    wanted = rate * float(run.get("duration") or 0.0)
    if wanted and (summary.get("new_started") or 0) < STARTED_SHARE * wanted:
        reasons.append(f"the engine started {summary.get('new_started') or 0} of {wanted:.0f} new connections")
    # shown, not judged: a flow silent across an ECMP change or a black hole lowers it as much as a slow lab
    pace = flow_pace(ticks, float(run.get("interval") or 0.0))
    for node, probe in sorted((lab.get("probes") or {}).items()):
        if probe.get("error"):
            reasons.append(f"{node}'s test server, probed without IPVS: {probe['error']}")
        elif probe.get("rtt_ms_max", 0) / 1000 >= timeout / 2:
            reasons.append(f"{node}'s test server, probed without IPVS, took {probe['rtt_ms_max'] / 1000:.1f} s "
                           f"to answer (half the echo timeout is {timeout / 2:g} s)")
    verdict = OVERLOADED if reasons else VALID
    return {"verdict": verdict, "verdict_text": VERDICT_TEXT[verdict], "reasons": reasons, "flow_pace": pace,
            "loop_lag_ms_max": summary.get("loop_lag_ms_max"), "stalled_s": round(stalled, 2),
            "engine_stalled_s": lab.get("engine_stalled_s"), "probes": lab.get("probes") or {},
            "unjudged": lab.get("unjudged") or {},
            "stalled_seconds": [round(t.t, 2) for t in ticks if (getattr(t, "stall_ms", 0) or 0) >= 200]}


def flow_pace(ticks: Sequence[Any], interval: float) -> float | None:
    """Echoes received over those the live flows should have had (one per flow and interval), from
    the ticks after the first full second; None without flows or ticks."""
    counted = [t for t in ticks[1:] if not getattr(t, "final", False) and t.alive]
    expected = sum(t.alive for t in counted) / interval if interval else 0.0
    return round(sum(t.msgs_ok for t in counted) / expected, 3) if expected >= 10 else None


def summary_lines(lab: Mapping[str, Any]) -> list[str]:
    """The verdict first, then why (for summary.txt and the terminal)."""
    lines = [lab["verdict_text"] + ("" if lab["verdict"] == VALID else ":")]
    lines += [f"  - {reason}" for reason in lab["reasons"]]
    if lab["verdict"] != VALID:
        lines.append("  broken flows and failed connections below are not evidence about the cluster; free the CPU "
                     "(or lower --flows/--rate, or use --rate auto) and run again")
    probes = lab.get("probes") or {}
    if probes:
        worst = max((p.get("rtt_ms_max") or 0) for p in probes.values())
        lines.append(f"lab: engine loop lag max {(lab.get('loop_lag_ms_max') or 0) / 1000:.2f} s, stalled "
                     f"{lab.get('stalled_s') or 0:.1f} s in all; test servers probed without IPVS: slowest answer "
                     f"{worst / 1000:.2f} s")
    if cpu := lab.get("cpu"):
        lines.append(cpu_line(cpu))
    return lines


def cpu_line(cpu: Mapping[str, Any]) -> str:
    """One line for the summary: where the lab's CPU went, biggest part first (`lab.cpu`, from
    `scaletest.labcpu.cpu_use`)."""
    parts = sorted(((p, s) for p, s in cpu["shares"].items() if p != "idle" and s >= 0.005), key=lambda x: -x[1])
    outside = ", ".join(f"{command} {share:.0%}" for command, share in cpu.get("outside", {}).items())
    return (f"lab CPU ({cpu['cpus']} CPU{'s' if cpu['cpus'] != 1 else ''}, {cpu['seconds']:g} s): {cpu['busy']:.0%} busy: "
            + ", ".join(f"{part} {share:.0%}" + (f" ({outside})" if part == "outside the lab" and outside else "")
                        for part, share in parts))
