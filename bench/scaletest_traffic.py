"""How much load the scaletest traffic engine sustains against a local testserver on this host.

Starts `lvscluster.lab.testserver` on 127.0.0.1, runs `lvscluster.scaletest.traffic` against it
once per scenario (FLOWSxRATE: long-lived echo flows x new connections per second), and prints,
per scenario, what the engine achieved and what it cost: CPU of the engine (one process, one
core at most) and of the testserver, echo round trips, event-loop lag, breakages.

    .venv/bin/python bench/scaletest_traffic.py                      # default scenarios, 10 s each
    .venv/bin/python bench/scaletest_traffic.py --duration 20 --scenario 1000x500 --scenario 0x2000

Both programs share this machine's cores, so the numbers are a floor for the engine alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

DEFAULT_SCENARIOS = ["100x50", "1000x500", "2000x0", "4000x0", "0x1000", "0x2000", "1000x1000"]
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# The lab's testserver with a listen backlog of 4096 instead of asyncio's 100: at 1000+ connects/s
# on a busy machine a backlog of 100 overflows (nstat TcpExtListenOverflows), SYNs are dropped
# and connects time out on the server's side, which is not what this measures.
SERVER = ("import asyncio, functools, sys; asyncio.start_server = functools.partial(asyncio.start_server, "
          "backlog=4096); from lvscluster.lab import testserver; testserver.main(sys.argv[1:])")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime + stime


def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"testserver does not listen on {port}")


def run_scenario(flows: int, rate: int, duration: float, echo_port: int, http_port: int, server_pid: int,
                 interval: float = 0.2) -> dict:
    """One traffic run; its summary plus CPU use of both sides."""
    command = [sys.executable, "-m", "lvscluster.scaletest.traffic", "--target", "127.0.0.1",
               "--echo-port", str(echo_port), "--http-port", str(http_port), "--flows", str(flows),
               "--rate", str(rate), "--duration", str(duration), "--interval", str(interval)]
    server_before = cpu_seconds(server_pid)
    with tempfile.TemporaryFile("w+") as output:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=output)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        output.seek(0)
        records = [json.loads(line) for line in output]
    summary = records[-1]
    ticks = [r for r in records if r["type"] == "tick" and not r["final"]]
    steady = ticks[2:] or ticks  # after the ramp
    seconds = len(steady) or 1
    new_per_s = sum(t["new_ok"] for t in steady) / seconds
    echoes_per_s = sum(t["msgs_ok"] for t in steady) / seconds
    return {
        "scenario": f"{flows}x{rate}", "exit": process.returncode,
        "new_per_s": new_per_s, "echoes_per_s": echoes_per_s,
        "engine_cpu": (usage.ru_utime + usage.ru_stime) / wall,
        "server_cpu": (cpu_seconds(server_pid) - server_before) / wall,
        "rtt_ms_mean": summary["rtt_ms_mean"], "rtt_ms_max": summary["rtt_ms_max"],
        "lag_ms_max": summary["loop_lag_ms_max"],
        "steady_lag_ms_max": max((t["loop_lag_ms"] for t in steady), default=0.0), "broken": summary["flows_broken"],
        "new_failed": summary["new_failed"], "new_failed_by_reason": summary["new_failed_by_reason"],
        "broken_by_reason": summary["broken_by_reason"], "new_skipped": summary["new_skipped"],
        "established": summary["flows_established"],
        "sustained": (summary["flows_broken"] == 0 and summary["new_failed"] == 0 and summary["new_skipped"] == 0
                      and summary["flows_established"] == flows
                      and new_per_s >= 0.97 * rate and echoes_per_s >= 0.97 * flows / interval),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", help="FLOWSxRATE (repeatable; default: a standard set)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    echo_port, http_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, "--node", "rs1", "--host", "127.0.0.1",
                               "--tcp", str(echo_port), "--tcp", str(http_port)])
    results = []
    try:
        wait_listening(echo_port)
        wait_listening(http_port)
        for scenario in args.scenario or DEFAULT_SCENARIOS:
            flows, rate = (int(part) for part in scenario.split("x"))
            results.append(run_scenario(flows, rate, args.duration, echo_port, http_port, server.pid))
            if not args.json:
                print(_row(results[-1]), flush=True)
    finally:
        server.terminate()
        server.wait()
    if args.json:
        print(json.dumps(results, indent=2))


def _row(r: dict) -> str:
    return (f"{r['scenario']:>10}: {r['new_per_s']:7.1f} new/s {r['echoes_per_s']:8.1f} echoes/s | "
            f"engine CPU {r['engine_cpu'] * 100:5.1f}% server CPU {r['server_cpu'] * 100:5.1f}% | "
            f"rtt mean {r['rtt_ms_mean'] or 0:6.2f} ms max {r['rtt_ms_max']:7.1f} ms | lag max {r['lag_ms_max']:6.1f} ms"
            f" (after the ramp {r['steady_lag_ms_max']:6.1f} ms)"
            f" | broken {r['broken']} {r['broken_by_reason'] or ''} failed {r['new_failed']}"
            f" {r['new_failed_by_reason'] or ''} skipped {r['new_skipped']}"
            f" | {'sustained' if r['sustained'] else 'NOT sustained'}")


if __name__ == "__main__":
    main()
