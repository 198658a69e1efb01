"""How to start the traffic engine, and how many new connections per second a lab carries (`--rate auto`).

A fixed rate that suits a quiet machine starves a busy one: the demo's 30 new connections/s
beside a CPU hog left the engine skipping connections and every flow timing out. `--rate auto`
first runs the engine for a few seconds with the run's flows and a closed loop of new
connections (each started as the one before it ends), counts how many the lab completes per
second, and paces the run at a share of that, leaving the rest for churn (a revive deploys and
starts FRR on the same CPUs).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

from lvscluster.errors import LvsClusterError
from lvscluster.scaletest.report import parse_traffic

AUTO_SHARE = 0.3  # of the measured capacity: the run's new-connection rate
CALIBRATION_SECONDS = 12.0
CALIBRATION_SKIP = 4.0  # first seconds left out: the flows connect, caches warm
CLOSED_LOOP = 8  # connections at a time while measuring


def engine_argv(netns: str, target: str, test: Any, *extra: str, rate: float | None = None,
                duration: float | None = None) -> list[str]:
    """The traffic engine's command line in the client's namespace, for a `ScaleTest`'s settings."""
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "lvscluster.scaletest.traffic",
            "--target", target, "--echo-port", str(test.echo_port), "--http-port", str(test.http_port),
            "--flows", str(test.flows), "--rate", f"{test.rate if rate is None else rate:g}",
            "--duration", f"{test.duration if duration is None else duration:g}",
            "--interval", f"{test.interval:g}", "--echo-timeout", f"{test.echo_timeout:g}",
            "--ramp", f"{ramp_seconds(test.flows):g}", *extra]


def ramp_seconds(flows: int) -> float:
    """Seconds over which a scaletest's flows connect: 50 a second, at most 5 s. In a one-vCPU lab
    VM beside a busy host core the lab stalled 2.1-2.8 s in the first 3 s of each run while the
    engine opened every flow at once (its own default: 0.2 s for 100 flows); spread out, the
    connects and first echoes no longer come in one burst through the engine's loop."""
    return round(min(5.0, flows / 50), 2)


def measure_capacity(netns: str, target: str, test: Any, probes: list[str],
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Run the engine closed-loop beside the run's flows; the new connections per second the lab
    completed and the rate to run at (`AUTO_SHARE` of it, at least 1/s)."""
    from lvscluster.scaletest.labhealth import judge

    progress(f"measuring what the lab carries: {test.flows} flows and {CLOSED_LOOP} new connections at a time "
             f"for {CALIBRATION_SECONDS:g} s")
    argv = engine_argv(netns, target, test, "--closed", str(CLOSED_LOOP), *probes, rate=0,
                       duration=CALIBRATION_SECONDS)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CALIBRATION_SECONDS + 120)
    run = parse_traffic(done.stdout.splitlines())
    if done.returncode != 0 or run.summary is None:
        raise LvsClusterError(f"measuring the lab's capacity failed (exit {done.returncode}): {done.stderr[-1500:]}")
    # counted once every flow has had its first echo: a starved lab may still be opening them after
    # CALIBRATION_SKIP, and connections that queue behind the flows' handshakes say little of the run
    up = max((u["t"] for u in run.flows_up), default=0.0) + 1.0 if len(run.flows_up) >= test.flows else 0.0
    counted = [t for t in run.ticks if not t.final and t.t > max(CALIBRATION_SKIP, up)]
    carried = sum(t.new_ok for t in counted) / len(counted) if counted else 0.0
    rate = max(1.0, round(carried * AUTO_SHARE, 1))
    lab = judge(run.summary, {**run.start, "rate": 0}, run.ticks)
    progress(f"the lab carried {carried:.1f} new connections/s beside {test.flows} flows (saturated on purpose: "
             f"engine loop lag max {(run.summary.get('loop_lag_ms_max') or 0) / 1000:.1f} s); "
             f"pacing the run at {rate:g}/s ({AUTO_SHARE:.0%})")
    return {"closed_loop": CLOSED_LOOP, "seconds": CALIBRATION_SECONDS, "carried_per_s": round(carried, 2),
            "share": AUTO_SHARE, "rate": rate, "flows_broken": len(run.broken),
            "new_failed": len(run.conn_failed), "lab": {k: lab[k] for k in ("verdict", "reasons", "stalled_s")}}
