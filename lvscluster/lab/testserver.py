"""The lab's stand-in application: every answer names the real server that gave it.

On each TCP port: a connection that starts with an HTTP request line gets one HTTP response
whose body is `<node>\\n`; any other connection is a line echo, each line answered as
`<node> <line>`. On each UDP port: each datagram is answered as `<node> <payload>`.

Run: `python -m lvscluster.lab.testserver --node rs1 --tcp 80 --tcp 7 --udp 53`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ")


class _TcpAnswer(asyncio.Protocol):
    """One TCP connection: an HTTP request gets its response and the connection closes; anything
    else is a line echo. A protocol, not asyncio streams: a little less CPU per answer (on the host
    62 against 70 us per echo line, 240-335 against 335-380 us per HTTP request), which counts in
    a one-vCPU lab where the test servers share the CPU with everything measured."""

    def __init__(self, node: bytes):
        self.node, self.buffer, self.http = node, b"", None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.http is None:
            if b"\n" not in self.buffer:
                return
            self.http = self.buffer.startswith(HTTP_METHODS)
        if self.http:
            if b"\n\r\n" in self.buffer or b"\n\n" in self.buffer:  # the blank line after the headers
                self._answer_http()
            return
        *lines, self.buffer = self.buffer.split(b"\n")
        if lines:
            self.transport.write(b"".join(self.node + b" " + line + b"\n" for line in lines))

    def eof_received(self) -> bool:
        if self.http:
            self._answer_http()  # headers cut short: answered all the same
        elif self.buffer:  # a last line without its newline
            self.transport.write(self.node + b" " + self.buffer + b"\n")
        self.buffer = b""
        return False  # close

    def _answer_http(self) -> None:
        if self.transport.is_closing():
            return
        body = self.node + b"\n"
        head = self.buffer.startswith(b"HEAD ")
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % len(body) + (b"" if head else body))
        self.transport.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, node: bytes):
        self.node = node
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.node + b" " + data, addr)


def _udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket; an IPv6 one takes IPv6 only, so it can share its port with the IPv4 one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    return sock


async def serve(node: str, tcp_ports: list[int], udp_ports: list[int], host: str | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled (or SIGTERM when run as a program). `host` None: every address of
    both families (a dual-stack lab's real server answers its IPv4 and IPv6 VIPs)."""
    name = node.encode()
    loop = asyncio.get_running_loop()
    # backlog 4096, not asyncio's 100: a scaletest's burst of connects overflows a short accept queue
    # under emulation, and the client would count the kernel's drops as broken flows
    servers = [await loop.create_server(lambda: _TcpAnswer(name), host, port, reuse_address=True, backlog=4096)
               for port in tcp_ports]
    hosts = [host] if host else ["0.0.0.0", "::"]
    transports = [(await loop.create_datagram_endpoint(lambda: _UdpEcho(name), sock=_udp_socket(h, port)))[0]
                  for port in udp_ports for h in hosts]
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    if ready:
        ready.set()
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()


INSTRUMENT_NICE = -5  # the lab's instruments (traffic engine, test servers) run ahead of its control plane


def run_ahead_of_the_control_plane() -> None:
    """Raise this process's CPU priority a little above the lab's other processes (as root; else as is).

    In a one-vCPU emulated lab, a health agent re-planning after a drain or FRR starting on a
    revive took the CPU for long enough that the traffic engine's pacer woke 0.5-0.8 s late, and
    the test servers answered their direct probe 2.9-3.7 s late beside a CPU hog, so runs were
    judged overloaded though every flow kept its pace. The engine is the instrument, and a test
    server stands in for an application that has a machine of its own in production: neither
    should queue behind the control plane being measured. The data plane (IPVS, in the kernel)
    does not care about nice values, and FRR and the agents only get slower, so this cannot make
    a cluster look better than it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, INSTRUMENT_NICE)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the test server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="the name every answer carries")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="a TCP port (HTTP or line echo)")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP echo port")
    parser.add_argument("--host", default=None, help="address to bind (default: every IPv4 and IPv6 address)")
    args = parser.parse_args(argv)
    run_ahead_of_the_control_plane()
    asyncio.run(serve(args.node, args.tcp, args.udp, args.host))


if __name__ == "__main__":
    main()
