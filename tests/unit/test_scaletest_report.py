"""Scaletest report: imbalance maths, blaming breaks on churn events, the summary, JSON, the picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvscluster.scaletest import report as scaletest_report
from lvscluster.scaletest.plot import plot_report
from lvscluster.scaletest.report import (ChurnEvent, attribute, build_report, imbalance, load_report, parse_traffic,
                                         summary_text, to_json)

START_WALL = 1_800_000_000.0
EVENTS = [{"at": 5.0, "action": "drain", "node": "d3", "ecmp_changed_after": 0.8},
          {"at": 15.0, "action": "undrain", "node": "d3", "ecmp_changed_after": 1.1},
          {"wall": START_WALL + 20.0, "action": "kill", "node": "d4", "ecmp_changed_after": None}]


def _lines(*, summary: bool = True) -> list[str]:
    """A small run as the traffic engine would print it: 4 flows on 2 real servers, 3 breaks."""
    records = [{"type": "start", "t": 0.0, "wall": START_WALL, "mono": 100.0, "target": "10.99.0.10",
                "echo_port": 7, "http_port": 80, "flows": 4, "rate": 10.0, "duration": 30.0, "interval": 0.2,
                "echo_timeout": 2.0}]
    records += [{"type": "up", "t": 0.1 * i, "flow": i, "port": 40000 + i, "node": node, "connect_ms": 1.0}
                for i, node in enumerate(["rs1", "rs2", "rs1", "rs2"])]
    for second in range(1, 31):
        alive = 4 if second <= 20 else 2
        records.append({"type": "tick", "t": float(second), "alive": alive, "msgs_ok": 5 * alive,
                        "new_started": 10, "new_ok": 10, "new_failed": 0, "broken": 0,
                        "new_by_node": {"rs1": 6, "rs2": 4}, "flows_by_node": {"rs1": alive // 2, "rs2": alive // 2},
                        "rtt_ms_max": 1.0, "rtt_ms_mean": 0.5, "loop_lag_ms": 0.0, "final": False})
    records += [
        {"type": "broken", "t": 21.5, "flow": 1, "reason": "reset", "node": "rs2", "last_ok": 104, "port": 40001,
         "detail": "closed by the server"},
        {"type": "broken", "t": 22.9, "flow": 3, "reason": "timeout", "node": "rs2", "last_ok": 110,
         "port": 40003, "detail": "no echo"},
        {"type": "broken", "t": 2.0, "flow": 0, "reason": "wrong_echo", "node": "rs1", "last_ok": 8,
         "port": 40000, "detail": "answered by rs2"},
        {"type": "conn_failed", "t": 20.3, "reason": "refused", "port": None, "detail": "connection refused"},
        {"type": "conn_failed", "t": 40.0, "reason": "timeout", "port": 50000, "detail": "no response"},
    ]
    if summary:
        records.append({"type": "summary", "t": 30.0, "stopped_by": "duration", "flows": 4, "flows_established": 4,
                        "flows_alive": 1, "flows_broken": 3, "messages_ok": 500, "new_started": 300, "new_ok": 298,
                        "new_failed": 2, "new_skipped": 0, "new_by_node": {"rs1": 180, "rs2": 118},
                        "flows_by_node": {"rs1": 2, "rs2": 2}, "rtt_ms_mean": 0.5, "rtt_ms_max": 1.0,
                        "loop_lag_ms_max": 0.3})
    return [json.dumps(r) for r in records] + ["Traceback: not a record", ""]


def _report(**kwargs):
    defaults = dict(director_counters={"d1": {"conns": 120, "active": 1}, "d2": {"conns": 90, "active": 2},
                                       "d3": {"conns": 90, "active": 1}},
                    sync_lag=[0.1, {"director": "d2", "lag": 0.4}, {"director": "d2", "lag": 0.2}],
                    real_servers=["rs1", "rs2", "rs3"])
    defaults.update(kwargs)
    return build_report(_lines(), EVENTS, **defaults)


def test_even_counts_are_balanced():
    share = imbalance({"a": 10, "b": 10, "c": 10})
    assert share["max_over_mean"] == 1.0 and share["min_over_mean"] == 1.0 and share["mean_deviation"] == 0.0
    assert share["shares"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_imbalance_is_max_over_mean_and_mean_relative_deviation():
    share = imbalance({"a": 30, "b": 10})
    assert share["total"] == 40
    assert share["max_over_mean"] == 1.5 and share["min_over_mean"] == 0.5
    assert share["mean_deviation"] == 0.5


def test_weights_set_the_fair_share_and_add_members_that_got_nothing():
    assert imbalance({"a": 30, "b": 10}, {"a": 3, "b": 1})["max_over_mean"] == 1.0
    share = imbalance({"a": 20, "b": 20}, {"a": 1, "b": 1, "c": 1})
    assert share["counts"]["c"] == 0
    assert share["max_over_mean"] == 1.5 and share["min_over_mean"] == 0.0


def test_nothing_counted_has_no_imbalance():
    assert imbalance({"a": 0, "b": 0})["max_over_mean"] is None
    assert imbalance({})["total"] == 0


def test_a_break_is_blamed_on_the_latest_event_before_it_within_the_window():
    events = [ChurnEvent(5.0, "drain", "d3"), ChurnEvent(15.0, "undrain", "d3"), ChurnEvent(20.0, "kill", "d4")]
    assert attribute(21.0, events, 10.0) == 2
    assert attribute(20.0, events, 10.0) == 2
    assert attribute(19.9, events, 10.0) == 1
    assert attribute(4.9, events, 10.0) is None
    assert attribute(31.0, events, 10.0) is None
    assert attribute(31.0, events, 12.0) == 2
    assert attribute(3.0, [], 10.0) is None


def test_the_window_starts_when_the_event_moved_ecmp():
    """A drain whose deploy took 12 s breaks flows after the router moved them, not at the command."""
    drain = ChurnEvent(5.0, "drain", "d3", ecmp_changed_after=12.1)
    assert attribute(18.0, [drain], 10.0) == 0
    assert attribute(27.0, [drain], 10.0) == 0
    assert attribute(27.2, [drain], 10.0) is None


def test_report_attributes_breaks_and_failed_connections_to_events():
    report = _report()
    by_flow = {row["flow"]: row for row in report["broken_flows"]}
    assert by_flow[1]["event"] == "kill d4@20s" and by_flow[1]["after_event"] == 1.5
    assert by_flow[3]["event"] == "kill d4@20s" and by_flow[3]["reason"] == "timeout"
    assert by_flow[0]["event"] == "none" and by_flow[0]["after_event"] is None
    assert [row["t"] for row in report["broken_flows"]] == [2.0, 21.5, 22.9]
    drain, undrain, kill = report["events"]
    assert drain["broken_flows"] == 0 and drain["ecmp_changed_after"] == 0.8 and drain["first_failure_after"] is None
    assert undrain["broken_flows"] == 0
    assert kill["at"] == 20.0  # placed from its wall clock time
    assert kill["broken_flows"] == 2 and kill["broken_by_reason"] == {"reset": 1, "timeout": 1}
    assert kill["new_failed"] == 1
    assert kill["first_failure_after"] == pytest.approx(0.3) and kill["last_failure_after"] == pytest.approx(2.9)
    assert report["unattributed"] == {"broken_flows": 1, "new_failed": 1}


def test_a_narrower_window_leaves_late_breaks_unattributed():
    report = _report(attribution_window=2.0)
    assert [row["event"] for row in report["broken_flows"]] == ["none", "kill d4@20s", "none"]


def test_report_shares_of_real_servers_and_directors():
    report = _report()
    rs_new = report["real_servers"]["new_connections"]
    assert rs_new["counts"] == {"rs1": 180, "rs2": 118, "rs3": 0}
    assert rs_new["max_over_mean"] == pytest.approx(180 / (298 / 3), abs=1e-4)
    assert report["real_servers"]["flows"]["counts"] == {"rs1": 2, "rs2": 2, "rs3": 0}
    directors = report["directors"]
    assert directors["new_connections"]["max_over_mean"] == 1.2
    assert directors["flows"]["max_over_mean"] == 1.5
    assert directors["counters"]["d1"] == {"conns": 120, "active": 1}


def test_director_flows_share_needs_every_director_to_report_it():
    report = _report(director_counters={"d1": {"conns": 5, "active": 1}, "d2": {"conns": 5}})
    assert report["directors"]["flows"] is None
    assert report["directors"]["new_connections"]["max_over_mean"] == 1.0
    assert _report(director_counters=None)["directors"]["new_connections"] is None


def test_sync_lag_statistics():
    lag = _report()["sync_lag"]
    assert lag["samples"] == 3 and lag["max"] == 0.4 and lag["mean"] == pytest.approx(0.2333, abs=1e-4)
    assert lag["by_director"]["d2"]["samples"] == 2
    assert _report(sync_lag=None)["sync_lag"] is None


def test_traffic_totals_count_every_record_and_skip_noise():
    traffic = _report()["traffic"]
    assert traffic["complete"] and traffic["flows_broken"] == 3 and traffic["new_failed"] == 2
    assert traffic["broken_by_reason"] == {"reset": 1, "timeout": 1, "wrong_echo": 1}
    assert traffic["unparsed_lines"] == 1


def test_without_a_summary_totals_come_from_ticks_and_the_text_says_so():
    report = build_report(_lines(summary=False), EVENTS)
    traffic = report["traffic"]
    assert not traffic["complete"]
    assert traffic["new_ok"] == 300 and traffic["new_by_node"] == {"rs1": 180, "rs2": 120}
    assert traffic["flows_by_node"] == {"rs1": 2, "rs2": 2} and traffic["flows_alive"] == 2
    assert "no summary record" in summary_text(report)


def test_summary_text_names_what_broke_and_why():
    text = summary_text(_report())
    verdict, *lines = text.splitlines()
    assert verdict == "lab kept up: result valid"
    assert lines[0] == "scaletest 10.99.0.10: 4 flows, 10 new conn/s, 30.0 s"
    assert "3 broken (" in lines[1] and "reset 1" in lines[1] and "1 alive at the end" in lines[1]
    assert lines[2].startswith("new connections: 298 ok (9.9/s), 2 failed (")
    assert any(line.startswith("real servers, new connections: rs1 60.4% rs2 39.6% rs3 0.0%") for line in lines)
    assert "  kill d4@20s: ECMP change not seen; 2 flows broken (reset 1, timeout 1), 1 new connections failed" in lines
    assert "  drain d3@5s: ECMP changed after 0.8 s; 0 flows broken, 0 new connections failed" in lines
    assert "not near any event: 1 flows broken, 1 new connections failed" in lines
    assert lines[-1].startswith("sync lag: mean 0.23 s")
    assert len(lines) < 20


def test_event_without_time_is_an_error():
    with pytest.raises(ValueError, match="no 'at'"):
        build_report(_lines(), [{"action": "kill", "node": "d4"}])


def test_json_round_trip():
    report = _report()
    text = to_json(report)
    assert load_report(text) == report
    with pytest.raises(ValueError, match="version"):
        load_report(json.dumps({**report, "version": scaletest_report.REPORT_VERSION + 1}))


def test_plot_writes_a_png(tmp_path):
    run = parse_traffic(_lines())
    report = _report(director_flow_samples={"d1": [[0, 0], [10, 2], [30, 1]], "d2": [[0, 0], [10, 2], [30, 1]]})
    path = plot_report(report, run.ticks, tmp_path / "report.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def test_plot_says_when_the_director_lines_count_new_connections_too(tmp_path):
    run = parse_traffic(_lines())
    report = _report(director_flow_samples={"d1": [[0, 0], [10, 2], [30, 1]]})
    plain = plot_report({**report, "directors": {**report["directors"], "flow_timeline_basis": "echo packets"}},
                        run.ticks, tmp_path / "plain.png").read_bytes()
    again = plot_report({**report, "directors": {**report["directors"], "flow_timeline_basis": "echo packets"}},
                        run.ticks, tmp_path / "again.png").read_bytes()
    shared = plot_report({**report, "directors": {**report["directors"],
                                                  "flow_timeline_basis": "echo and new-connection packets"}},
                         run.ticks, tmp_path / "shared.png").read_bytes()
    assert plain == again and shared != plain  # the same report draws the same; the basis is written out


def test_plot_accepts_raw_tick_records_and_an_empty_run(tmp_path):
    raw_ticks = [json.loads(line) for line in _lines() if '"tick"' in line]
    assert plot_report(_report(), raw_ticks, tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    empty = build_report([], [])
    assert "0 established, 0 broken" in summary_text(empty)
    assert plot_report(empty, [], tmp_path / "b.png").read_bytes().startswith(b"\x89PNG")


def _judged(**summary) -> dict:
    from lvscluster.scaletest.labhealth import judge

    base = {"t": 60.0, "new_started": 600, "new_skipped": 0, "loop_lag_ms_max": 120.0,
            "lab": {"stalled_s": 0.5, "engine_stalled_s": 0.2, "probes": {"rs1": {"rtt_ms_max": 300.0, "error": None}}}}
    return judge({**base, **summary}, {"duration": 60, "rate": 10, "echo_timeout": 5})


def test_a_lab_that_kept_up_is_valid_and_each_kind_of_overload_is_named():
    assert _judged()["verdict"] == "valid" and _judged()["reasons"] == []
    cases = {
        "loop stalled 3.0 s at once": _judged(loop_lag_ms_max=3000.0),
        "stalled 9.0 s of 60 s (15%": _judged(lab={"stalled_s": 9.0, "probes": {}}),
        "40 new connections skipped": _judged(new_skipped=40),
        "started 300 of 600 new connections": _judged(new_started=300),
        "rs1's test server, probed without IPVS, took 4.0 s": _judged(
            lab={"stalled_s": 1.0, "probes": {"rs1": {"rtt_ms_max": 4000.0, "error": None}}}),
        "rs1's test server, probed without IPVS: refused": _judged(
            lab={"stalled_s": 0.0, "probes": {"rs1": {"rtt_ms_max": 0.0, "error": "refused"}}}),
    }
    for reason, lab in cases.items():
        assert lab["verdict"] == "overloaded" and any(reason in r for r in lab["reasons"]), (reason, lab)
    from lvscluster.scaletest.labhealth import judge

    assert judge(None, {})["verdict"] == "overloaded"  # the engine died: nothing to judge by


def test_an_overloaded_run_says_so_first_and_in_the_picture(tmp_path):
    lines = _lines()
    summary = json.loads(lines[-3])
    summary.update(new_skipped=684, lab={"stalled_s": 20.0, "engine_stalled_s": 20.0, "probes": {}})
    lines[-3] = json.dumps(summary)
    report = build_report(lines, EVENTS)
    text = summary_text(report).splitlines()
    assert text[0] == "lab overloaded: result not valid:" and "684 new connections skipped" in text[2]
    assert "not evidence about the cluster" in "\n".join(text)
    path = plot_report(report, parse_traffic(lines).ticks, tmp_path / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_flows_pace_is_reported_but_not_judged():
    """Echoes per live flow and interval: a flow silent across an ECMP change lowers it as much as a
    slow lab, so it is a figure in the report, not a reason for the verdict."""
    from lvscluster.scaletest.labhealth import judge
    from lvscluster.scaletest.report import Tick

    summary = {"t": 20.0, "new_started": 0, "loop_lag_ms_max": 300.0, "lab": {"stalled_s": 0.0, "probes": {}}}
    run = {"duration": 20, "rate": 0, "echo_timeout": 5, "interval": 0.5}
    kept = [Tick(t=float(s), alive=100, msgs_ok=195) for s in range(1, 21)]
    halved = [Tick(t=float(s), alive=100, msgs_ok=100) for s in range(1, 21)]
    assert judge(summary, run, kept)["verdict"] == "valid" and judge(summary, run, kept)["flow_pace"] == 0.975
    lab = judge(summary, run, halved)
    assert lab["verdict"] == "valid" and lab["flow_pace"] == 0.5


def test_matplotlib_config_dir_is_writable_and_seeded_with_the_hosts_font_cache(tmp_path, monkeypatch) -> None:
    """A lab VM's home is read-only: matplotlib gets a writable dir holding the font cache
    bootstrap built, instead of building it again at emulation speed."""
    from lvscluster.scaletest.plot import matplotlib_config_dir

    home, temp = tmp_path / "home", tmp_path / "tmp"
    (home / ".cache" / "matplotlib").mkdir(parents=True)
    temp.mkdir()
    (home / ".cache" / "matplotlib" / "fontlist-v390.json").write_text('{"_version": 390}')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    target = Path(matplotlib_config_dir())
    assert target.parent == temp and (target / "fontlist-v390.json").read_text() == '{"_version": 390}'
    (home / ".cache" / "matplotlib" / "fontlist-v390.json").write_text("newer")
    assert (Path(matplotlib_config_dir()) / "fontlist-v390.json").read_text() == '{"_version": 390}'  # seeded once


def test_the_lab_cpu_counts_what_each_pid_used_in_between_and_names_the_biggest_part_first():
    from lvscluster.scaletest.labcpu import TICKS_PER_S, CpuSnapshot, cpu_use
    from lvscluster.scaletest.labhealth import cpu_line, summary_lines

    hz = TICKS_PER_S
    before = CpuSnapshot(t=0.0, cpus=1, interrupts=0, idle=0,
                         pids={10: ("agents", 5 * hz, "python3"), 11: ("FRR", 0, "zebra"),
                               12: ("test servers", 3 * hz, "python3"), 30: ("outside the lab", 0, "kworker/0:1")})
    # 10 s of one CPU: the agent used 4 s more, FRR's pid 11 died and pid 12 was reused by an FRR
    # daemon (all its 1 s counts), a new engine used 3 s, interrupts 1 s, idle 0.5 s; outside the
    # lab two kernel worker threads used 0.4 s together, a leftover daemon 0.08 s (under 1%: unnamed)
    after = CpuSnapshot(t=10.0, cpus=1, interrupts=1 * hz, idle=hz // 2,
                        pids={10: ("agents", 9 * hz, "python3"), 12: ("FRR", 1 * hz, "zebra"),
                              20: ("traffic engine", 3 * hz, "python3"), 30: ("outside the lab", hz // 5, "kworker/0:1"),
                              31: ("outside the lab", hz // 5, "kworker/u4:2"),
                              32: ("outside the lab", hz * 8 // 100, "keepalived")})
    use = cpu_use(before, after)
    assert use["shares"] == {"traffic engine": 0.3, "agents": 0.4, "FRR": 0.1, "outside the lab": 0.048,
                             "interrupts (packets, IPVS)": 0.1, "idle": 0.05}
    assert use["busy"] == 0.95 and use["seconds"] == 10.0
    assert use["outside"] == {"kworker": 0.04}
    assert cpu_line(use) == ("lab CPU (1 CPU, 10 s): 95% busy: agents 40%, traffic engine 30%, FRR 10%, "
                             "interrupts (packets, IPVS) 10%, outside the lab 5% (kworker 4%)")
    report = {"verdict": "overloaded", "verdict_text": "lab overloaded: result not valid", "reasons": ["x"],
              "probes": {"rs1": {"rtt_ms_max": 10}}, "cpu": use}
    assert summary_lines(report)[-1] == cpu_line(use)
