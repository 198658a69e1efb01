"""Scaletest traffic engine: long-lived echo flows plus a rate of new HTTP connections, as JSON lines.

Runs as its own program inside the client's network namespace (stdlib only: it starts fast):

    python -m lvscluster.scaletest.traffic --target VIP --flows 1000 --rate 500 --duration 60

Each long-lived flow connects to the echo port (ramped over --ramp seconds), then sends
`<flow> <seq>\\n` every --interval and expects `<node> <flow> <seq>\\n` back from
`lvscluster.lab.testserver`; its first echo names the real server holding it, and an answer from
another node, a wrong line, a reset/close or no answer within --echo-timeout breaks it. New
connections: --rate HTTP GETs per second to the HTTP port, each from the next free local port of a
cycle over --new-ports (the kernel's own choice repeats ports within a few thousand connections).

Every record on stdout is one JSON object with "type" and "t" (seconds since start, monotonic):
start, up, tick (every second, and one final), broken, conn_failed, summary. See RECORDS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
import sys
import time

from lvscluster.lab.testserver import run_ahead_of_the_control_plane
from lvscluster.scaletest.labprobe import LabClock, ServerProbe, parse_probe
from lvscluster.scaletest.wire import (CONNECTING, DONE, OPEN, Flow, HttpGet, Output, connect_failure,
                                      PortCycle, open_socket)

PACING_STEP = 0.01  # seconds between visits of the send/timeout scheduler

RECORDS = {
    "start": "wall (epoch s), mono (time.monotonic at t=0), target, echo_port, http_port, flows, rate, "
             "duration, interval, echo_timeout, connect_timeout, ramp, source_ports, new_ports",
    "up": "flow, port (local), node (real server of the first echo), connect_ms",
    "tick": "alive, msgs_ok, new_started, new_ok, new_failed, broken (all in the interval ending at t), "
            "new_by_node, flows_by_node (live flows now), rtt_ms_max, rtt_ms_mean, loop_lag_ms, "
            "stall_ms (seconds the lab could not run, in ms), probe_ms_max (per real server), final",
    "broken": "flow, reason (reset|timeout|wrong_echo|refused|connect_timeout|connect_error), node, "
              "last_ok (last echoed seq or null), port, detail",
    "conn_failed": "reason (refused|connect_timeout|connect_error|reset|timeout|bad_response), port, detail",
    "summary": "stopped_by (duration|signal), flows, flows_established, flows_alive, flows_broken, "
               "flows_not_started, broken_by_reason, messages_ok, new_started, new_ok, new_failed, "
               "new_failed_by_reason, new_skipped, new_unfinished, new_by_node, flows_by_node, "
               "new_port_reuses, rtt_ms_mean, rtt_ms_max, new_ms_mean, new_ms_max, loop_lag_ms_max, "
               "lab (stalled_s, engine_stalled_s, engine_stalls, probes: per real server answers, failures, "
               "error, rtt_ms_max, rtt_ms_mean)",
}


class Engine:
    """The flows, the new-connection generator and the counters, on one event loop."""

    def __init__(self, args: argparse.Namespace, stream=sys.stdout):
        self.args, self.stream = args, stream
        self.family = socket.AF_INET6 if ":" in args.target else socket.AF_INET
        self.flows = [Flow(self, i) for i in range(args.flows)]
        self.buckets_count = max(1, round(args.interval / PACING_STEP))
        self.buckets = [self.flows[b::self.buckets_count] for b in range(self.buckets_count)]
        self.stopping = self.draining_done = False
        self.stopped_by = "duration"
        self.stop_event: asyncio.Event | None = None
        self.tasks: set[asyncio.Task] = set()
        self.flows_by_node: dict[str, int] = {}
        self.established_by_node: dict[str, int] = {}
        self.totals = dict(messages_ok=0, new_started=0, new_ok=0, new_failed=0, new_skipped=0, broken=0,
                           established=0, rtt_sum=0.0, rtt_max=0.0, new_sum=0.0, new_max=0.0, lag_max=0.0)
        self.broken_by_reason: dict[str, int] = {}
        self.new_failed_by_reason: dict[str, int] = {}
        self.new_by_node: dict[str, int] = {}
        self.new_ports: set[int] = set()
        low, high = args.new_ports
        flow_ports = range(args.source_ports, args.source_ports + args.flows) if args.source_ports else range(0)
        self.new_port_cycle = PortCycle(low, high, flow_ports)
        self.new_port_reuses = self.new_inflight = self.flows_started = 0
        probes = [parse_probe(p) for p in args.probe]
        self.probes = [ServerProbe(node, netns, args.probe_port or args.echo_port) for node, netns in probes]
        self.clock = LabClock([node for node, _ in probes])
        self._reset_second()

    def _reset_second(self) -> None:
        self.sec = dict(msgs_ok=0, new_started=0, new_ok=0, new_failed=0, broken=0, rtt_sum=0.0, rtt_max=0.0,
                        lag=0.0)
        self.sec_new_by_node: dict[str, int] = {}

    def now(self) -> float:
        return self.loop.time() - self.t0

    # --- long-lived flows -------------------------------------------------------------

    def send(self, flow: Flow) -> None:
        if self.stopping:
            return
        flow.transport.write(b"%d %d\n" % (flow.id, flow.seq))
        flow.awaiting, flow.sent_at, flow.stall_at = True, self.loop.time(), self.clock.stalled(flow.node)

    def check_echo(self, flow: Flow, line: bytes) -> None:
        node, _, rest = line.partition(b" ")
        expected = b"%d %d" % (flow.id, flow.seq)
        if not flow.awaiting or rest != expected:
            want = expected.decode() if flow.awaiting else "nothing"
            self.break_flow(flow, "wrong_echo", f"got {line[:80].decode(errors='replace')!r}, expected {want!r}")
            return
        name = node.decode(errors="replace")
        if flow.node is None:
            flow.node = name
            self.flows_by_node[name] = self.flows_by_node.get(name, 0) + 1
            self.established_by_node[name] = self.established_by_node.get(name, 0) + 1
            self.totals["established"] += 1
            self.out.emit({"type": "up", "t": round(self.now(), 4), "flow": flow.id, "port": flow.port,
                           "node": name, "connect_ms": round((self.loop.time() - flow.connect_at) * 1000, 2)})
        elif name != flow.node:
            self.break_flow(flow, "wrong_echo", f"answered by {name}, flow was on {flow.node}")
            return
        rtt = self.loop.time() - flow.sent_at
        flow.last_ok, flow.awaiting = flow.seq, False
        flow.seq += 1
        sec = self.sec
        sec["msgs_ok"] += 1
        sec["rtt_sum"] += rtt
        if rtt > sec["rtt_max"]:
            sec["rtt_max"] = rtt

    def break_flow(self, flow: Flow, reason: str, detail: str) -> None:
        if flow.state == DONE:
            return
        flow.state = DONE
        if flow.node is not None:
            self.flows_by_node[flow.node] -= 1
        self.sec["broken"] += 1
        self.totals["broken"] += 1
        self.broken_by_reason[reason] = self.broken_by_reason.get(reason, 0) + 1
        self.out.emit({"type": "broken", "t": round(self.now(), 4), "flow": flow.id, "reason": reason,
                       "node": flow.node, "last_ok": flow.last_ok, "port": flow.port, "detail": detail})
        if flow.transport is not None:
            flow.transport.abort()

    async def _connect_flow(self, flow: Flow) -> None:
        args, sock = self.args, None
        flow.connect_at = self.loop.time()
        try:
            sock = open_socket(self.family, args.source_ports + flow.id if args.source_ports else 0)
            await self.within(self.loop.sock_connect(sock, (args.target, args.echo_port)), args.connect_timeout)
            flow.port = sock.getsockname()[1]
            await self.loop.create_connection(lambda: flow, sock=sock)
        except (OSError, TimeoutError) as exc:
            if flow.state == CONNECTING:
                if sock is not None:
                    sock.close()
                self.break_flow(flow, *connect_failure(exc))

    async def _open_flows(self) -> None:
        count, ramp = len(self.flows), self.args.ramp
        for flow in self.flows:
            due = self.t0 + ramp * flow.id / count
            if due - self.loop.time() > 0.002:
                await asyncio.sleep(due - self.loop.time())
            if self.stopping:
                return
            self.flows_started += 1
            self._spawn(self._connect_flow(flow))

    async def _pace_flows(self) -> None:
        """Visit one bucket of flows per step: send the next message, or time out a missing echo.

        A busy loop wakes late; then every bucket that came due meanwhile is visited at once
        (each at most once), so the flows keep their pace instead of falling further behind.
        """
        timeout, count, clock = self.args.echo_timeout, self.buckets_count, self.clock
        step, visited, last = self.args.interval / count, 0, self.loop.time()
        while not self.draining_done:
            now = self.loop.time()
            due = int((now - self.t0) / step) + 1
            for k in range(max(visited, due - count), due):
                for flow in self.buckets[k % count]:
                    if flow.state == OPEN:
                        if flow.awaiting:  # silent seconds count only while the lab could run
                            if now - flow.sent_at - (clock.stalled(flow.node) - flow.stall_at) > timeout:
                                self.break_flow(flow, "timeout", f"no echo of {flow.seq} within {timeout} s "
                                                                 "(the lab's stalled seconds not counted)")
                        elif not self.stopping:
                            self.send(flow)
            visited = due
            wake = self.t0 + due * step
            await asyncio.sleep(max(wake - self.loop.time(), 0))
            now = self.loop.time()
            late = now - wake  # how late the loop runs: the engine's own overload
            if late > self.sec["lag"]:
                self.sec["lag"] = late
            clock.advance(now - last, late, [p.node for p in self.probes if p.step(now)])
            last = now

    async def within(self, awaitable, limit: float, node: str | None = None):
        """Await with a deadline of `limit` seconds the lab could run (its stalled seconds do not count)."""
        task = asyncio.ensure_future(awaitable)
        start, stalled = self.loop.time(), self.clock.stalled(node)
        try:
            while True:
                remaining = start + limit + (self.clock.stalled(node) - stalled) - self.loop.time()
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    # --- new connections --------------------------------------------------------------

    async def _new_connection(self) -> None:
        args, sock, transport, started = self.args, None, None, self.loop.time()
        port, stage = None, "connect"
        try:
            sock = self.new_port_cycle.open(self.family)
            await self.within(self.loop.sock_connect(sock, (args.target, args.http_port)), args.connect_timeout)
            port, stage = sock.getsockname()[1], "response"
            if port in self.new_ports:
                self.new_port_reuses += 1
            self.new_ports.add(port)
            done = self.loop.create_future()
            transport, _ = await self.loop.create_connection(lambda: HttpGet(done), sock=sock)
            node = await self.within(done, args.echo_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            if transport is not None:
                transport.abort()
            elif sock is not None:
                sock.close()
            if stage == "connect":
                reason, detail = connect_failure(exc)
            elif isinstance(exc, TimeoutError):
                reason, detail = "timeout", f"no complete response within {args.echo_timeout} s"
            elif isinstance(exc, ValueError):
                reason, detail = "bad_response", str(exc)
            else:
                reason, detail = "reset", f"{type(exc).__name__}: {exc}"
            self.sec["new_failed"] += 1
            self.totals["new_failed"] += 1
            self.new_failed_by_reason[reason] = self.new_failed_by_reason.get(reason, 0) + 1
            self.out.emit({"type": "conn_failed", "t": round(self.now(), 4), "reason": reason, "port": port,
                           "detail": detail})
            return
        finally:
            self.new_inflight -= 1
        elapsed = self.loop.time() - started
        self.sec["new_ok"] += 1
        self.totals["new_ok"] += 1
        self.totals["new_sum"] += elapsed
        self.totals["new_max"] = max(self.totals["new_max"], elapsed)
        self.new_by_node[node] = self.new_by_node.get(node, 0) + 1
        self.sec_new_by_node[node] = self.sec_new_by_node.get(node, 0) + 1

    async def _closed_loop(self) -> None:
        """--closed N: N new connections at a time, each started as the one before it ends: how many
        the lab carries per second (what `scaletest --rate auto` paces from)."""
        async def worker() -> None:
            while not self.stopping:
                self.new_inflight += 1
                self.sec["new_started"] += 1
                self.totals["new_started"] += 1
                await self._new_connection()

        await asyncio.gather(*(worker() for _ in range(self.args.closed)))

    async def _generate_new(self) -> None:
        rate = self.args.rate
        if self.args.closed:
            return await self._closed_loop()
        if rate <= 0:
            return
        launched, limit = 0, max(100, int(rate * (self.args.connect_timeout + self.args.echo_timeout) * 2))
        pause = min(0.01, 1 / rate)
        while not self.stopping:
            due = int((self.loop.time() - self.t0) * rate) + 1
            for _ in range(due - launched):
                if self.new_inflight >= limit:
                    self.totals["new_skipped"] += 1
                    continue
                self.new_inflight += 1
                self.sec["new_started"] += 1
                self.totals["new_started"] += 1
                self._spawn(self._new_connection())
            launched = due
            await asyncio.sleep(pause)

    # --- ticks, run, stop -------------------------------------------------------------

    def _tick(self, final: bool = False) -> None:
        sec, totals = self.sec, self.totals
        totals["messages_ok"] += sec["msgs_ok"]
        totals["rtt_sum"] += sec["rtt_sum"]
        totals["rtt_max"] = max(totals["rtt_max"], sec["rtt_max"])
        totals["lag_max"] = max(totals["lag_max"], sec["lag"])
        self.out.emit({
            "type": "tick", "t": round(self.now(), 4),
            "alive": sum(1 for f in self.flows if f.state == OPEN),
            "msgs_ok": sec["msgs_ok"], "new_started": sec["new_started"], "new_ok": sec["new_ok"],
            "new_failed": sec["new_failed"], "broken": sec["broken"],
            "new_by_node": self.sec_new_by_node, "flows_by_node": {n: c for n, c in self.flows_by_node.items() if c},
            "rtt_ms_max": round(sec["rtt_max"] * 1000, 2),
            "rtt_ms_mean": round(sec["rtt_sum"] / sec["msgs_ok"] * 1000, 2) if sec["msgs_ok"] else None,
            "loop_lag_ms": round(sec["lag"] * 1000, 2), "stall_ms": round(self.clock.take_second() * 1000, 1),
            "probe_ms_max": {p.node: p.take_second() for p in self.probes}, "final": final,
        })
        self._reset_second()

    async def _ticks(self) -> None:
        k = 1
        while True:
            await asyncio.sleep(max(self.t0 + k - self.loop.time(), 0))
            self._tick()
            k += 1

    def _spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def request_stop(self) -> None:
        """First signal: stop and drain; a second one: skip the drain."""
        if self.stop_event.is_set():
            self.draining_done = True
        self.stopped_by = "signal"
        self.stop_event.set()

    async def run(self) -> dict:
        """Run until the duration ends or a signal comes; returns the summary record."""
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        self.out, self.t0, args = Output(self.stream, self.loop), self.loop.time(), self.args
        self.out.emit({"type": "start", "t": 0.0, "wall": time.time(), "mono": time.monotonic(),
                       **{k: getattr(args, k) for k in ("target", "echo_port", "http_port", "flows", "rate",
                                                        "duration", "interval", "echo_timeout",
                                                        "connect_timeout", "ramp", "source_ports",
                                                        "new_ports")}})
        for probe in self.probes:
            await probe.start(args.connect_timeout)
        pacer, ticker = self.loop.create_task(self._pace_flows()), self.loop.create_task(self._ticks())
        opener, generator = self.loop.create_task(self._open_flows()), self.loop.create_task(self._generate_new())
        try:
            await asyncio.wait_for(self.stop_event.wait(), args.duration)
        except TimeoutError:
            pass
        self.stopping = True
        for task in (opener, generator):
            task.cancel()
        await self._drain(args.connect_timeout + args.echo_timeout + args.interval)
        self.draining_done = True
        ticker.cancel()
        self._tick(final=True)
        await self._close_flows()
        pacer.cancel()
        for probe in self.probes:
            probe.close()
        for task in list(self.tasks):
            task.cancel()
        summary = self._summary()
        self.out.emit(summary)
        self.out.flush()
        return summary

    async def _drain(self, limit: float) -> None:
        """Let answers already on their way arrive (a missing one still times out)."""
        end = self.loop.time() + limit
        while self.loop.time() < end and not self.draining_done:
            if not self.tasks and not any(f.state == OPEN and f.awaiting for f in self.flows):
                return
            await asyncio.sleep(0.02)

    async def _close_flows(self) -> None:
        """Close politely: half-close each live flow, give the servers a second to close theirs."""
        live = [f for f in self.flows if f.state == OPEN]
        for flow in live:
            flow.state = DONE
            if flow.transport.can_write_eof():
                flow.transport.write_eof()
        end = self.loop.time() + 1.0
        while self.loop.time() < end and any(not f.transport.is_closing() for f in live):
            await asyncio.sleep(0.02)
        for flow in live:
            flow.transport.abort()
        self.flows_alive = len(live)

    def _summary(self) -> dict:
        totals = self.totals
        return {
            "type": "summary", "t": round(self.now(), 4), "stopped_by": self.stopped_by,
            "flows": len(self.flows), "flows_established": totals["established"], "flows_alive": self.flows_alive,
            "flows_broken": totals["broken"], "flows_not_started": len(self.flows) - self.flows_started,
            "broken_by_reason": self.broken_by_reason, "messages_ok": totals["messages_ok"],
            "new_started": totals["new_started"], "new_ok": totals["new_ok"], "new_failed": totals["new_failed"],
            "new_failed_by_reason": self.new_failed_by_reason, "new_skipped": totals["new_skipped"],
            "new_unfinished": totals["new_started"] - totals["new_ok"] - totals["new_failed"],
            "new_by_node": self.new_by_node, "flows_by_node": self.established_by_node,
            "new_port_reuses": self.new_port_reuses,
            "rtt_ms_mean": round(totals["rtt_sum"] / totals["messages_ok"] * 1000, 2) if totals["messages_ok"] else None,
            "rtt_ms_max": round(totals["rtt_max"] * 1000, 2),
            "new_ms_mean": round(totals["new_sum"] / totals["new_ok"] * 1000, 2) if totals["new_ok"] else None,
            "new_ms_max": round(totals["new_max"] * 1000, 2), "loop_lag_ms_max": round(totals["lag_max"] * 1000, 2),
            "lab": {"stalled_s": round(self.clock.stalled(None), 3), "engine_stalled_s": round(self.clock.engine, 3),
                    "engine_stalls": self.clock.engine_stalls, "probes": {p.node: p.summary() for p in self.probes}},
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The traffic program's command line."""
    parser = argparse.ArgumentParser(prog="python -m lvscluster.scaletest.traffic",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the address to connect to (the VIP)")
    parser.add_argument("--echo-port", type=int, default=7, help="line-echo port of the long-lived flows (7)")
    parser.add_argument("--http-port", type=int, default=80, help="HTTP port of the new connections (80)")
    parser.add_argument("--flows", type=int, default=100, help="long-lived flows (100)")
    parser.add_argument("--rate", type=float, default=10, help="new connections per second (10; 0: none)")
    parser.add_argument("--duration", type=float, default=30, help="seconds of traffic (30)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between a flow's messages (0.2)")
    parser.add_argument("--echo-timeout", type=float, default=2.0,
                        help="seconds an echo or an HTTP response may take (2)")
    parser.add_argument("--connect-timeout", type=float, default=2.0, help="seconds a connect may take (2)")
    parser.add_argument("--ramp", type=float, default=None,
                        help="seconds over which the flows connect (default: flows/500, at most 2)")
    parser.add_argument("--source-ports", type=int, default=0, metavar="START",
                        help="flow i connects from local port START+i (default: kernel-chosen)")
    parser.add_argument("--closed", type=int, default=0, metavar="N",
                        help="instead of --rate: N new connections at a time, each started when the one before "
                             "it ends (measures how many the lab carries)")
    parser.add_argument("--probe", action="append", default=[], metavar="NODE=NETNS",
                        help="probe real server NODE's test server straight, from inside its network namespace "
                             "NETNS over loopback (no IPVS), to tell a starved lab from a failing cluster")
    parser.add_argument("--probe-port", type=int, default=0, help="the probes' TCP echo port (default: --echo-port)")
    parser.add_argument("--new-ports", type=_port_range, default=(10000, 65535), metavar="LOW-HIGH",
                        help="local ports the new connections take in turn, skipping busy ones and the "
                             "flows' (default 10000-65535)")
    args = parser.parse_args(argv)
    if args.ramp is None:
        args.ramp = min(2.0, args.flows / 500)
    if args.interval <= 0 or args.duration <= 0 or args.flows < 0 or args.rate < 0:
        parser.error("--interval and --duration must be positive, --flows and --rate not negative")
    if args.source_ports and not 0 < args.source_ports <= 65536 - max(args.flows, 1):
        parser.error(f"--source-ports {args.source_ports}: START+flows must stay below 65536")
    return args


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        ports = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH") from None
    if not 0 < ports[0] <= ports[1] <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < LOW <= HIGH <= 65535")
    return ports


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run the engine with the command line's settings; the records go to stdout."""
    args = parse_args(argv)
    _raise_file_limit()
    run_ahead_of_the_control_plane()
    asyncio.run(Engine(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
