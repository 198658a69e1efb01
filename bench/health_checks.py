"""Health checks one process sustains on one core: lvscluster's agent loop vs keepalived's TCP_CHECK.

Both check the same N real servers (127.0.x.y:9001, one listener in a separate process on
another core, which counts every accepted connection: that count is the number of checks
done, measured the same way for both). Each checker is pinned to one core; its CPU time over
the measured window comes from /proc. Reported: checks/s achieved against checks/s asked for,
and CPU milliseconds per 1000 checks.

keepalived needs IPVS (it programs the virtual server), so run the keepalived half where the
kernel has it (the test VM, see bench/README.md); `--which lvscluster` runs anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PORT = 9001


def addresses(count: int) -> list[str]:
    """N distinct loopback addresses: 127.0.1.1, 127.0.1.2, ... (all of 127/8 is local)."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def listener(conn, cpu: int) -> None:
    """Accept and close connections on 0.0.0.0:PORT as fast as one core can (a blocking loop in a
    thread: asyncio would be the bottleneck); answer 'count' requests over the pipe."""
    os.sched_setaffinity(0, {cpu})
    accepted = 0
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", PORT))
    sock.listen(65535)

    def accept_forever() -> None:
        nonlocal accepted
        while True:
            client, _ = sock.accept()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # linger 0: a reset, so no TIME_WAIT piles up on either side
            accepted += 1

    threading.Thread(target=accept_forever, daemon=True).start()
    conn.send("ready")
    while conn.recv() != "stop":
        conn.send(accepted)


def lvscluster_checker(count: int, interval: float, cpu: int) -> None:
    """The agent's own check loop (Agent._watch: run_check + rise/fall counting) over N targets."""
    os.sched_setaffinity(0, {cpu})
    import logging

    logging.getLogger("lvscluster.agent").setLevel(logging.ERROR)  # thousands of up/down lines otherwise
    from lvscluster.health.agent import Agent, TargetStatus
    from lvscluster.plan.health import DestKey, HealthBook, HealthTarget
    from lvscluster.model.topology import Health

    spec = Health(type="tcp", interval=interval, timeout=min(interval, 1.0))
    targets = [HealthTarget(DestKey("bench", f"tcp/{PORT}", f"rs{i}"), spec, address, PORT, "10.0.0.1", 80)
               for i, address in enumerate(addresses(count))]
    agent = Agent(Path("bench"), "bench", backend=None)  # checks only: nothing is converged here
    agent.book = HealthBook(targets)
    agent.status = {t.key: TargetStatus() for t in targets}

    async def main() -> None:
        await asyncio.gather(*(agent._watch(t) for t in targets))

    asyncio.run(main())


def keepalived_config(count: int, interval: float) -> str:
    """One virtual server with N real servers, each with a TCP_CHECK to 127.0.x.y:PORT."""
    servers = "\n".join(
        f"  real_server {a} 80 {{\n    TCP_CHECK {{\n      connect_ip {a}\n      connect_port {PORT}\n"
        f"      connect_timeout {min(interval, 1.0):g}\n    }}\n  }}" for a in addresses(count))
    return (f"global_defs {{\n  router_id bench\n}}\nvirtual_server 10.255.255.1 80 {{\n  delay_loop {interval:g}\n"
            f"  lb_algo rr\n  lb_kind DR\n  protocol TCP\n{servers}\n}}\n")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, pid: int, conn, warmup: float, duration: float, asked: float) -> dict:
    """Checks (accepts) and the checker's CPU time over `duration`, `warmup` seconds after the
    first check arrived (a Python checker takes ~25 s to start under emulation)."""
    conn.send("count")
    start = conn.recv()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        conn.send("count")
        if conn.recv() > start:
            break
        time.sleep(0.2)
    time.sleep(warmup)
    conn.send("count")
    accepts0, cpu0, t0 = conn.recv(), cpu_seconds(pid), time.monotonic()
    time.sleep(duration)
    conn.send("count")
    accepts1, cpu1, t1 = conn.recv(), cpu_seconds(pid), time.monotonic()
    checks, cpu = accepts1 - accepts0, cpu1 - cpu0
    return {"checker": name, "checks_per_second": round(checks / (t1 - t0), 1), "asked_per_second": round(asked, 1),
            "cpu_share": round(cpu / (t1 - t0), 3),
            "cpu_ms_per_1000_checks": round(1000 * cpu / checks * 1000, 1) if checks else None}


def keepalived_checker_pid(parent: int, timeout: float = 30) -> int:
    """keepalived's healthcheck child (the process that runs the checks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    return int(entry.name)
        time.sleep(0.2)
    raise SystemExit("keepalived started no healthcheck child (does this kernel have IPVS?)")


def run(which: str, count: int, interval: float, duration: float, warmup: float, cpu: int, conn) -> dict:
    asked = count / interval
    if which == "lvscluster":
        process = multiprocessing.Process(target=lvscluster_checker, args=(count, interval, cpu), daemon=True)
        process.start()
        try:
            return measure(which, process.pid, conn, warmup, duration, asked)
        finally:
            process.kill()
            process.join()
    workdir = Path(tempfile.mkdtemp(prefix="bench-keepalived-"))
    (workdir / "keepalived.conf").write_text(keepalived_config(count, interval))
    argv = ["taskset", "-c", str(cpu), "keepalived", "--dont-fork", "--check", "--log-console", "--dont-release-ipvs",
            "-f", str(workdir / "keepalived.conf"), "-p", str(workdir / "k.pid"), "-c", str(workdir / "c.pid")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "w"))
    try:
        return measure(which, keepalived_checker_pid(process.pid), conn, warmup, duration, asked)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        subprocess.run(["ipvsadm", "-C"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=("lvscluster", "keepalived", "both"), default="both")
    parser.add_argument("--targets", type=int, default=1000, help="real servers checked (default 1000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks of one server")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    checker_cpu, listener_cpu = cpus[0], cpus[-1]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=listener, args=(child, listener_cpu), daemon=True)
    server.start()
    assert parent.recv() == "ready"
    results = []
    for which in (("lvscluster", "keepalived") if args.which == "both" else (args.which,)):
        results.append(run(which, args.targets, args.interval, args.duration, args.warmup, checker_cpu, parent))
    parent.send("stop")
    server.join(timeout=5)
    server.kill()
    if args.json:
        print(json.dumps({"targets": args.targets, "interval": args.interval, "results": results}, indent=1))
        return
    print(f"{args.targets} TCP checks every {args.interval:g} s ({args.targets / args.interval:.0f}/s asked), "
          f"checker on CPU {checker_cpu}, {args.duration:g} s measured")
    for r in results:
        print(f"  {r['checker']:<11} {r['checks_per_second']:>9.1f} checks/s  CPU {100 * r['cpu_share']:5.1f}%  "
              f"{r['cpu_ms_per_1000_checks']} ms CPU per 1000 checks")


if __name__ == "__main__":
    sys.exit(main())
