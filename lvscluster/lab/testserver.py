"""The lab's stand-in application: every answer names the real server that gave it.

On each TCP port: a connection that starts with an HTTP request line gets one HTTP response
whose body is `<node>\\n`; any other connection is a line echo, each line answered as
`<node> <line>`. On each UDP port: each datagram is answered as `<node> <payload>`.

Run: `python -m lvscluster.lab.testserver --node rs1 --tcp 80 --tcp 7 --udp 53`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ")


async def _handle_tcp(node: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        first = await reader.readline()
        if first.startswith(HTTP_METHODS):
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            body = node + b"\n"
            head = b"HEAD " if first.startswith(b"HEAD ") else b""
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(body) + (b"" if head else body))
            await writer.drain()
            return
        line = first
        while line:
            writer.write(node + b" " + line if line.endswith(b"\n") else node + b" " + line + b"\n")
            await writer.drain()
            line = await reader.readline()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, node: bytes):
        self.node = node
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.node + b" " + data, addr)


async def serve(node: str, tcp_ports: list[int], udp_ports: list[int], host: str = "0.0.0.0",
                ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled (or SIGTERM when run as a program)."""
    name = node.encode()
    loop = asyncio.get_running_loop()
    # backlog 4096, not asyncio's 100: a scaletest's burst of connects overflows a short accept queue
    # under emulation, and the client would count the kernel's drops as broken flows
    servers = [await asyncio.start_server(lambda r, w: _handle_tcp(name, r, w), host, port, reuse_address=True,
                                          backlog=4096)
               for port in tcp_ports]
    transports = [(await loop.create_datagram_endpoint(lambda: _UdpEcho(name), local_addr=(host, port)))[0]
                  for port in udp_ports]
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


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the test server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="the name every answer carries")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="a TCP port (HTTP or line echo)")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP echo port")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.node, args.tcp, args.udp, args.host))


if __name__ == "__main__":
    main()
