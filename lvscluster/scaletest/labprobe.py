"""The lab's own health beside the traffic: the engine's stalls and the test servers' answers without IPVS.

A scaletest in a lab shares its CPUs with everything it measures. When the engine's event loop
runs late, or a test server cannot answer, a flow's silent seconds say nothing about the
cluster. The traffic engine therefore keeps a `LabClock`: seconds the engine itself was stalled
(its pacer woke more than LAG_GRACE late) and, per real server, seconds its `ServerProbe` was
overdue (a line echoed straight from the server's own namespace, over loopback, bypassing the
directors, took more than PROBE_GRACE). A flow's echo timeout and a connection's deadline count
only the seconds the lab was able to run; the report judges from the same figures whether the
run is valid at all (`scaletest.labhealth`). Stdlib only: the engine starts fast.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket

LAG_GRACE = 0.5  # s: a pacer wake-up later than this is the engine being stalled (less is an emulated VM's jitter)
PROBE_GRACE = 1.0  # s: a probe echo later than this is its test server being starved
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A non-blocking TCP socket that lives in network namespace `netns` (a /run/netns name or a path).

    Only the calling thread switches, and it switches back before returning; the socket stays there."""
    path = netns if "/" in netns else f"/run/netns/{netns}"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    sock.setblocking(False)
    return sock


class LabClock:
    """Seconds the lab could not run: the engine's own stalls, and each real server's overdue probe time.

    `stalled(node)` only grows; a wait's healthy seconds are its elapsed time minus the growth of
    `stalled` over it. node None (a flow before its first echo, a new connection): the engine's
    stalls plus the most any server was overdue."""

    def __init__(self, nodes: list[str]):
        self.engine = 0.0
        self.server = {node: 0.0 for node in nodes}
        self.engine_stalls = 0  # wake-ups later than LAG_GRACE
        self.second = 0.0  # stalled seconds in the current tick, the worst node's

    def advance(self, dt: float, late: float, overdue: list[str]) -> None:
        """One pacer step of `dt` seconds, `late` of them the engine stalled, with these servers' probes overdue."""
        if late > LAG_GRACE:
            self.engine += late
            self.engine_stalls += 1
            self.second += late
        running = max(0.0, dt - (late if late > LAG_GRACE else 0.0))
        for node in overdue:
            self.server[node] = self.server.get(node, 0.0) + running
        if overdue:
            self.second += running

    def stalled(self, node: str | None) -> float:
        """Stalled seconds so far that bear on a wait for `node`."""
        if node is None or node not in self.server:
            return self.engine + max(self.server.values(), default=0.0)
        return self.engine + self.server[node]

    def take_second(self) -> float:
        """The stalled seconds counted since the last call (for a tick), and start again."""
        value, self.second = self.second, 0.0
        return value


class ServerProbe(asyncio.Protocol):
    """One echo connection straight to a real server's test server (its namespace, 127.0.0.1), a line every `period`.

    It measures the server's responsiveness without IPVS, ECMP or the directors: an overdue probe
    means the lab, not the cluster, is slow there."""

    def __init__(self, node: str, netns: str, port: int, period: float = 0.5):
        self.node, self.netns, self.port, self.period = node, netns, port, period
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.awaiting, self.sent_at, self.seq, self.buffer = False, 0.0, 0, b""
        self.rtts: list[float] = []  # this tick's round trips
        self.rtt_max = 0.0
        self.rtt_sum, self.answers, self.failures = 0.0, 0, 0
        self.error: str | None = None

    async def start(self, timeout: float) -> None:
        """Connect (a failure is kept in `error`, not raised: the run goes on and the report says so)."""
        self.loop = asyncio.get_running_loop()
        try:
            sock = socket_in_netns(self.netns)
            async with asyncio.timeout(timeout):
                await self.loop.sock_connect(sock, ("127.0.0.1", self.port))
            await self.loop.create_connection(lambda: self, sock=sock)
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            self.error = f"cannot reach the test server on port {self.port} in {self.netns}: {exc or 'timeout'}"

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.transport is not None and self.error is None:
            self.failures += 1
            self.error = f"probe connection lost: {exc or 'closed by the server'}"
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            self.buffer = self.buffer[end + 1:]
            if self.awaiting:
                rtt = self.loop.time() - self.sent_at
                self.awaiting = False
                self.rtts.append(rtt)
                self.rtt_sum += rtt
                self.answers += 1
                self.rtt_max = max(self.rtt_max, rtt)

    def step(self, now: float) -> bool:
        """Send when due; True while an echo is overdue (more than PROBE_GRACE on its way)."""
        if self.transport is None:
            return False
        if self.awaiting:
            waited = now - self.sent_at
            self.rtt_max = max(self.rtt_max, waited)
            return waited > PROBE_GRACE
        if now - self.sent_at >= self.period:
            self.transport.write(b"probe %d\n" % self.seq)
            self.seq += 1
            self.awaiting, self.sent_at = True, now
        return False

    def take_second(self) -> float | None:
        """The slowest round trip of this tick in ms (an overdue one counts as far as it got), and start again."""
        worst = max(self.rtts, default=None)
        if self.awaiting:
            waited = self.loop.time() - self.sent_at
            worst = waited if worst is None else max(worst, waited)
        self.rtts = []
        return None if worst is None else round(worst * 1000, 1)

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.abort()

    def summary(self) -> dict:
        """What the report keeps of this probe."""
        return {"answers": self.answers, "failures": self.failures, "error": self.error,
                "rtt_ms_max": round(self.rtt_max * 1000, 1),
                "rtt_ms_mean": round(self.rtt_sum / self.answers * 1000, 1) if self.answers else None}


def parse_probe(text: str) -> tuple[str, str]:
    """`NODE=NETNS` from the command line."""
    node, sep, netns = text.partition("=")
    if not sep or not node or not netns:
        raise ValueError(f"{text!r} is not NODE=NETNS")
    return node, netns
