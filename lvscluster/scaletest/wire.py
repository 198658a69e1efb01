"""The traffic engine's wire: one long-lived echo flow, one HTTP GET, sockets, JSON-lines output."""

from __future__ import annotations

import asyncio
import json
import random
import socket

CONNECTING, OPEN, DONE = 0, 1, 2


class Output:
    """JSON lines on a stream; records made in one loop iteration go out in one write."""

    def __init__(self, stream, loop: asyncio.AbstractEventLoop):
        self.stream, self.loop, self.pending, self.scheduled = stream, loop, [], False

    def emit(self, record: dict) -> None:
        self.pending.append(json.dumps(record, separators=(",", ":")))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.pending:
            self.stream.write("\n".join(self.pending) + "\n")
            self.pending.clear()
            self.stream.flush()


class Flow(asyncio.Protocol):
    """One long-lived echo connection."""

    __slots__ = ("engine", "id", "state", "transport", "port", "node", "seq", "awaiting", "sent_at",
                 "last_ok", "buffer", "connect_at", "stall_at")

    def __init__(self, engine, flow_id: int):
        self.engine, self.id, self.state, self.transport = engine, flow_id, CONNECTING, None
        self.port = self.node = self.last_ok = None
        self.seq, self.awaiting, self.sent_at, self.buffer, self.connect_at = 0, False, 0.0, b"", 0.0
        self.stall_at = 0.0  # the lab's stalled seconds when the last message went out

    def connection_made(self, transport) -> None:
        self.transport, self.state = transport, OPEN
        self.engine.send(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while self.state == OPEN and (end := buffer.find(b"\n")) >= 0:
            self.engine.check_echo(self, buffer[:end])
            buffer = buffer[end + 1:]
        self.buffer = buffer

    def eof_received(self) -> bool:
        self.engine.break_flow(self, "reset", "closed by the server")
        return False

    def connection_lost(self, exc) -> None:
        if self.state == OPEN:
            self.engine.break_flow(self, "reset", str(exc) if exc else "connection lost")
        self.state = DONE


class HttpGet(asyncio.Protocol):
    """One new connection: GET, read to EOF, resolve `done` with the answering node."""

    def __init__(self, done: asyncio.Future):
        self.done, self.chunks = done, []

    def connection_made(self, transport) -> None:
        transport.write(b"GET / HTTP/1.0\r\nHost: scaletest\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc) -> None:
        if self.done.done():
            return
        if exc:
            self.done.set_exception(ConnectionResetError(str(exc)))
            return
        head, _, body = b"".join(self.chunks).partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n", 1)[0] and body.strip():
            self.done.set_result(body.strip().decode(errors="replace"))
        else:
            self.done.set_exception(ValueError(f"bad response {head[:60]!r}"))


def connect_failure(exc: BaseException) -> tuple[str, str]:
    """The reason and detail of a failed connect."""
    if isinstance(exc, TimeoutError):
        return "connect_timeout", "no answer to connect"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    return "connect_error", f"{type(exc).__name__}: {exc}"


def open_socket(family: int, port: int = 0, reuse_address: bool = True) -> socket.socket:
    """A non-blocking TCP socket, bound to local `port` if one is given (raises OSError if taken)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    if port:
        try:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        except OSError:
            sock.close()
            raise
    return sock


class PortCycle:
    """Local ports for new connections, taken in turn over a range, so each comes back as late as it can.

    (The kernel's own choice repeats ports within a few thousand connections; a director would
    then find the old connection entry and send the "new" connection where the old one went.)
    The cycle starts at a random port, so back-to-back runs do not begin on the same ports.
    """

    def __init__(self, low: int, high: int, skip: range = range(0), first: int | None = None):
        self.low, self.high, self.skip, self.wraps = low, high, skip, 0
        self.next = random.randint(low, high) if first is None else first

    def open(self, family: int, attempts: int = 64) -> socket.socket:
        """A socket bound to the next free port of the cycle (kernel-chosen if none of `attempts` is free)."""
        for _ in range(attempts):
            port = self.next
            self.next += 1
            if self.next > self.high:
                self.next, self.wraps = self.low, self.wraps + 1
            if port in self.skip:
                continue
            try:
                return open_socket(family, port, reuse_address=False)  # in use: still held, skip it
            except OSError:
                continue
        return open_socket(family)
