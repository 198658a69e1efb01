"""Scaletest report: the traffic engine's JSON lines plus the orchestrator's data, as one report dict.

Pure functions, no I/O. The orchestrator calls

    report = build_report(traffic_lines, events, director_counters, sync_lag=..., real_servers=...)

and writes `to_json(report)` to report.json and `summary_text(report)` to the terminal. Times
are seconds since the traffic engine's start (its `start` record holds the wall clock of t=0;
an event given with `wall` instead of `at` is placed with it).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

from lvscluster.scaletest.labhealth import judge, summary_lines

REPORT_VERSION = 1
DEFAULT_ATTRIBUTION_WINDOW = 10.0  # seconds after an event's ECMP change in which a break is blamed on it


def _from_record(cls, record: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class Tick:
    """One `tick` record: counts over the second ending at `t`, live flows at `t`."""

    t: float
    alive: int = 0
    msgs_ok: int = 0
    new_started: int = 0
    new_ok: int = 0
    new_failed: int = 0
    broken: int = 0
    new_by_node: dict[str, int] = field(default_factory=dict)
    flows_by_node: dict[str, int] = field(default_factory=dict)
    rtt_ms_max: float | None = None
    rtt_ms_mean: float | None = None
    loop_lag_ms: float | None = None
    stall_ms: float | None = None
    probe_ms_max: dict[str, float | None] = field(default_factory=dict)
    final: bool = False


@dataclass
class BrokenFlow:
    """One `broken` record."""

    t: float
    flow: int
    reason: str
    node: str | None = None
    last_ok: int | None = None
    port: int | None = None
    detail: str = ""


@dataclass
class FailedConnection:
    """One `conn_failed` record."""

    t: float
    reason: str
    port: int | None = None
    detail: str = ""


@dataclass
class TrafficRun:
    """Everything the traffic engine printed, parsed."""

    start: dict[str, Any] = field(default_factory=dict)
    flows_up: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    broken: list[BrokenFlow] = field(default_factory=list)
    conn_failed: list[FailedConnection] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    unparsed_lines: int = 0


@dataclass
class ChurnEvent:
    """One churn event as the orchestrator ran it."""

    at: float
    action: str
    node: str
    ecmp_changed_after: float | None = None

    @property
    def label(self) -> str:
        return f"{self.action} {self.node}@{self.at:g}s"


def parse_traffic(lines: Iterable[str | bytes]) -> TrafficRun:
    """Parse the traffic engine's JSON lines; lines that are not records are counted, not fatal."""
    run = TrafficRun()
    for line in lines:
        try:
            record = json.loads(line)
            kind = record["type"]
        except (ValueError, TypeError, KeyError):
            run.unparsed_lines += 1 if str(line).strip() else 0
            continue
        if kind == "start":
            run.start = record
        elif kind == "up":
            run.flows_up.append(record)
        elif kind == "tick":
            run.ticks.append(_from_record(Tick, record))
        elif kind == "broken":
            run.broken.append(_from_record(BrokenFlow, record))
        elif kind == "conn_failed":
            run.conn_failed.append(_from_record(FailedConnection, record))
        elif kind == "summary":
            run.summary = record
        else:
            run.unparsed_lines += 1
    return run


def parse_events(events: Iterable[Mapping[str, Any] | ChurnEvent], start_wall: float | None = None) -> list[ChurnEvent]:
    """Churn events in time order; `{"wall": epoch}` instead of `{"at": s}` is placed by `start_wall`."""
    parsed = []
    for event in events:
        if isinstance(event, ChurnEvent):
            parsed.append(event)
            continue
        data = dict(event)
        if "at" not in data:
            if "wall" not in data or start_wall is None:
                raise ValueError(f"event {data} has no 'at' (and no 'wall' with a known start time)")
            data["at"] = float(data["wall"]) - start_wall
        parsed.append(_from_record(ChurnEvent, data))
    return sorted(parsed, key=lambda e: e.at)


def imbalance(counts: Mapping[str, float], weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Shares of `counts` and how far they are from fair (equal, or proportional to `weights`).

    max_over_mean: the busiest member's count over its fair share (1.0 = perfectly even);
    min_over_mean: the same for the idlest; mean_deviation: mean of |count / fair - 1|.
    Members in `weights` but not in `counts` count as 0.
    """
    members = sorted(set(counts) | set(weights or ()))
    values = {m: counts.get(m, 0) for m in members}
    total = sum(values.values())
    result: dict[str, Any] = {"counts": values, "total": total,
                              "shares": {m: (v / total if total else 0.0) for m, v in values.items()},
                              "max_over_mean": None, "min_over_mean": None, "mean_deviation": None}
    weight = {m: (weights or {}).get(m, 1.0 if weights is None else 0.0) for m in members}
    weighted = [m for m in members if weight[m] > 0]
    if not total or not weighted:
        return result
    weight_sum = sum(weight[m] for m in weighted)
    ratios = [values[m] / (total * weight[m] / weight_sum) for m in weighted]
    result["max_over_mean"] = round(max(ratios), 4)
    result["min_over_mean"] = round(min(ratios), 4)
    result["mean_deviation"] = round(sum(abs(r - 1) for r in ratios) / len(ratios), 4)
    return result


def attribute(t: float, events: Sequence[ChurnEvent], window: float) -> int | None:
    """Index of the latest event at or before `t` whose effect is at most `window` seconds before
    it, else None. The effect is the router's ECMP change when one was seen (a drain's deploy can
    take many seconds before flows move), else the event itself."""
    chosen = None
    for index, event in enumerate(events):
        if event.at <= t:
            chosen = index
        else:
            break
    if chosen is None:
        return None
    event = events[chosen]
    if t - (event.at + (event.ecmp_changed_after or 0.0)) > window:
        return None
    return chosen


def _stats(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"samples": 0, "mean": None, "p50": None, "p95": None, "max": None}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"samples": len(ordered), "mean": round(sum(ordered) / len(ordered), 4),
            "p50": pick(0.5), "p95": pick(0.95), "max": ordered[-1]}


def _sync_lag(samples: Iterable[float | Mapping[str, Any]] | None) -> dict[str, Any] | None:
    if samples is None:
        return None
    overall, by_director = [], {}
    for sample in samples:
        if isinstance(sample, Mapping):
            lag = float(sample["lag"])
            by_director.setdefault(sample.get("director") or "?", []).append(lag)
        else:
            lag = float(sample)
        overall.append(lag)
    return {**_stats(overall), "by_director": {d: _stats(v) for d, v in sorted(by_director.items())}}


def _note_failure(entry: dict[str, Any], t: float) -> float:
    """Widen an event's first/last failure times with a failure at `t`; returns t - event time."""
    after = round(t - entry["at"], 4)
    first, last = entry["first_failure_after"], entry["last_failure_after"]
    entry["first_failure_after"] = after if first is None else min(first, after)
    entry["last_failure_after"] = after if last is None else max(last, after)
    return after


def _traffic_totals(run: TrafficRun) -> dict[str, Any]:
    """Totals from the summary record, or rebuilt from the other records when it is missing."""
    s = run.summary or {}
    new_by_node = s.get("new_by_node") or dict(sum((Counter(t.new_by_node) for t in run.ticks), Counter()))
    flows_by_node = s.get("flows_by_node") or dict(Counter(u["node"] for u in run.flows_up))
    return {
        "complete": run.summary is not None,
        "stopped_by": s.get("stopped_by"),
        "duration": s.get("t", run.ticks[-1].t if run.ticks else 0.0),
        "flows": s.get("flows", run.start.get("flows")),
        "flows_established": s.get("flows_established", len(run.flows_up)),
        "flows_broken": len(run.broken),
        "flows_alive": s.get("flows_alive", run.ticks[-1].alive if run.ticks else None),
        "broken_by_reason": dict(Counter(b.reason for b in run.broken)),
        "messages_ok": s.get("messages_ok", sum(t.msgs_ok for t in run.ticks)),
        "new_started": s.get("new_started", sum(t.new_started for t in run.ticks)),
        "new_ok": s.get("new_ok", sum(t.new_ok for t in run.ticks)),
        "new_failed": len(run.conn_failed),
        "new_failed_by_reason": dict(Counter(c.reason for c in run.conn_failed)),
        "new_skipped": s.get("new_skipped", 0),
        "new_by_node": new_by_node,
        "flows_by_node": flows_by_node,
        "rtt_ms_mean": s.get("rtt_ms_mean"),
        "rtt_ms_max": s.get("rtt_ms_max"),
        "loop_lag_ms_max": s.get("loop_lag_ms_max", max((t.loop_lag_ms or 0 for t in run.ticks), default=None)),
        "unparsed_lines": run.unparsed_lines,
    }


def build_report(traffic_lines: Iterable[str | bytes] | TrafficRun,
                 events: Iterable[Mapping[str, Any] | ChurnEvent] = (),
                 director_counters: Mapping[str, Mapping[str, float]] | None = None, *,
                 sync_lag: Iterable[float | Mapping[str, Any]] | None = None,
                 real_servers: Sequence[str] | Mapping[str, float] | None = None,
                 director_flow_samples: Mapping[str, Sequence[Sequence[float]]] | None = None,
                 attribution_window: float = DEFAULT_ATTRIBUTION_WINDOW) -> dict[str, Any]:
    """The scaletest report as a JSON-ready dict.

    traffic_lines: the traffic engine's stdout lines (or an already parsed TrafficRun).
    events: `{"at": s, "action": "drain", "node": "d3", "ecmp_changed_after": s or None}`.
    director_counters: per director, counter deltas over the run; `conns` (connections it
        scheduled) gives the directors' share of connections, `active` (flows it holds), if
        every director has it, their share of flows; all counters are kept in the report.
    sync_lag: seconds, or `{"director": "d2", "lag": s}` samples.
    real_servers: the expected real servers (a list, or a mapping to weights), so one that got
        nothing counts as 0 and shares are judged against weights.
    director_flow_samples: `{"d1": [[t, flows], ...]}` for the plot's per-director timeline.
    """
    run = traffic_lines if isinstance(traffic_lines, TrafficRun) else parse_traffic(traffic_lines)
    churn = parse_events(events, run.start.get("wall"))
    totals = _traffic_totals(run)
    rs_weights = (dict(real_servers) if isinstance(real_servers, Mapping)
                  else {name: 1.0 for name in real_servers} if real_servers is not None else None)

    counters = {d: dict(c) for d, c in sorted((director_counters or {}).items())}
    directors: dict[str, Any] = {"counters": counters, "new_connections": None, "flows": None,
                                 "flow_timeline": {d: [list(p) for p in s] for d, s in (director_flow_samples or {}).items()}}
    if counters and all("conns" in c for c in counters.values()):
        directors["new_connections"] = imbalance({d: c["conns"] for d, c in counters.items()})
    if counters and all("active" in c for c in counters.values()):
        directors["flows"] = imbalance({d: c["active"] for d, c in counters.items()})

    per_event = [{"at": e.at, "action": e.action, "node": e.node, "label": e.label,
                  "ecmp_changed_after": e.ecmp_changed_after, "broken_flows": 0, "broken_by_reason": {},
                  "new_failed": 0, "first_failure_after": None, "last_failure_after": None} for e in churn]
    broken_rows = []
    for broken in sorted(run.broken, key=lambda b: b.t):
        index = attribute(broken.t, churn, attribution_window)
        row = {**asdict(broken), "event": "none", "after_event": None}
        if index is not None:
            entry = per_event[index]
            row["event"], row["after_event"] = entry["label"], _note_failure(entry, broken.t)
            entry["broken_flows"] += 1
            entry["broken_by_reason"][broken.reason] = entry["broken_by_reason"].get(broken.reason, 0) + 1
        broken_rows.append(row)
    failed_unattributed = 0
    for failed in run.conn_failed:
        index = attribute(failed.t, churn, attribution_window)
        if index is None:
            failed_unattributed += 1
        else:
            per_event[index]["new_failed"] += 1
            _note_failure(per_event[index], failed.t)

    return {
        "version": REPORT_VERSION,
        "run": {k: run.start.get(k) for k in ("wall", "target", "echo_port", "http_port", "flows", "rate",
                                              "duration", "interval", "echo_timeout")},
        "traffic": totals,
        "lab": judge(run.summary, run.start, run.ticks),
        "real_servers": {"new_connections": imbalance(totals["new_by_node"], rs_weights),
                         "flows": imbalance(totals["flows_by_node"], rs_weights)},
        "directors": directors,
        "events": per_event,
        "attribution_window": attribution_window,
        "broken_flows": broken_rows,
        "unattributed": {"broken_flows": sum(1 for r in broken_rows if r["event"] == "none"),
                         "new_failed": failed_unattributed},
        "sync_lag": _sync_lag(sync_lag),
    }


def to_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON text (what report.json holds)."""
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def load_report(text: str) -> dict[str, Any]:
    """A report read back from `to_json` text."""
    report = json.loads(text)
    if report.get("version") != REPORT_VERSION:
        raise ValueError(f"report version {report.get('version')!r}, this code reads {REPORT_VERSION}")
    return report


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _share_line(title: str, share: Mapping[str, Any] | None) -> str | None:
    if not share or not share["total"]:
        return None
    parts = " ".join(f"{m} {s * 100:.1f}%" for m, s in share["shares"].items())
    return (f"{title}: {parts}  (max/mean {share['max_over_mean']:.2f}, "
            f"mean deviation {share['mean_deviation'] * 100:.1f}%)")


def summary_text(report: Mapping[str, Any]) -> str:
    """A few readable lines: what ran, what broke and why, how even the spread was."""
    run, traffic = report["run"], report["traffic"]
    duration = traffic["duration"] or 0.0
    lines = summary_lines(report["lab"]) if "lab" in report else []
    lines += [f"scaletest {run.get('target')}: {traffic['flows']} flows, {run.get('rate') or 0:g} new conn/s, "
             f"{duration:.1f} s" + ("" if traffic["complete"] else " (no summary record: the traffic engine died?)")]
    if calibration := report.get("calibration"):
        lines.append(f"paced at {calibration['rate']:g} new conn/s (--rate auto): the lab carried "
                     f"{calibration['carried_per_s']:.1f}/s beside the flows when measured, {calibration['share']:.0%} of that")
    broken = traffic["flows_broken"]
    lines.append(f"flows: {traffic['flows_established']} established, {broken} broken"
                 + (f" ({_reasons(traffic['broken_by_reason'])})" if broken else "")
                 + f", {traffic['flows_alive']} alive at the end; {traffic['messages_ok']} echoes ok")
    rate = traffic["new_ok"] / duration if duration else 0.0
    lines.append(f"new connections: {traffic['new_ok']} ok ({rate:.1f}/s), {traffic['new_failed']} failed"
                 + (f" ({_reasons(traffic['new_failed_by_reason'])})" if traffic["new_failed"] else "")
                 + (f", {traffic['new_skipped']} skipped (engine overloaded)" if traffic["new_skipped"] else ""))
    for title, share in (("real servers, new connections", report["real_servers"]["new_connections"]),
                         ("real servers, flows", report["real_servers"]["flows"]),
                         ("directors, connections", report["directors"]["new_connections"]),
                         ("directors, flows", report["directors"]["flows"])):
        if (line := _share_line(title, share)) is not None:
            lines.append(line)
    for event in report["events"]:
        ecmp = (f"ECMP changed after {event['ecmp_changed_after']:.1f} s" if event["ecmp_changed_after"] is not None
                else "ECMP change not seen")
        what = (f"{event['broken_flows']} flows broken" + (f" ({_reasons(event['broken_by_reason'])})"
                                                           if event["broken_flows"] else ""))
        lines.append(f"  {event['label']}: {ecmp}; {what}, {event['new_failed']} new connections failed")
    unattributed = report["unattributed"]
    if unattributed["broken_flows"] or unattributed["new_failed"]:
        lines.append(f"not near any event: {unattributed['broken_flows']} flows broken, "
                     f"{unattributed['new_failed']} new connections failed")
    if (lag := report.get("sync_lag")) and lag["samples"]:
        lines.append(f"sync lag: mean {lag['mean']:.2f} s, p95 {lag['p95']:.2f} s, max {lag['max']:.2f} s "
                     f"({lag['samples']} samples)")
    return "\n".join(lines)
