"""One health check of a real server with asyncio: tcp, http, https, udp, dns or exec.

`run_check(spec, target)` runs the check `spec.type` names within `spec.effective_timeout` and
returns a `CheckResult`; it never raises (except CancelledError). `http_get` is the small
HTTP/1.1 client behind the http and https checks and `lvscluster genhash`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from lvscluster.model.topology import Health

BODY_LIMIT = 4 * 1024 * 1024  # bytes of an HTTP body we read at most
HEAD_LIMIT = 100  # header lines of an HTTP response we accept at most
CLOSE_GRACE = 0.2  # seconds a closing connection may take before it is aborted
UDP_REPLY_MAX = 65535


@dataclass(frozen=True)
class CheckTarget:
    """What one check probes: a real server's address and port, and the VIP/port it serves."""

    address: str  # real server address (IPv4 or IPv6 text)
    port: int | None  # the port to check, already resolved by the caller; None for exec
    vip: str = ""  # for exec's environment
    vip_port: int = 0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: healthy or not, why, and how long it took."""

    ok: bool
    detail: str  # short and human: "connect refused", "HTTP 503 (expected 200)", "exit 3: ..."
    seconds: float


class CheckFailed(Exception):
    """A check found the server unhealthy; the message is the result's detail."""


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP answer: status line and, when asked for, the body."""

    status: int
    reason: str
    body: bytes | None


def md5_hex(data: bytes) -> str:
    """The MD5 hex digest of `data`, as `health: {digest: ...}` and genhash write it."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def describe_error(exc: BaseException, limit: float) -> str:
    """A short, human detail for an exception a check raised (`limit`: the check's timeout)."""
    if isinstance(exc, CheckFailed):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timeout after {round(float(limit), 3)} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed in the middle of the response"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return f"{type(exc).__name__}: {exc}"


async def run_check(spec: Health, target: CheckTarget) -> CheckResult:
    """Run one check of `spec.type` against `target` within spec.effective_timeout; never raises
    (except CancelledError)."""
    limit = spec.effective_timeout
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            detail = await _CHECKS[spec.type](spec, target)
        ok = True
    except Exception as exc:  # every failure is a result, never an exception
        ok, detail = False, describe_error(exc, limit)
    return CheckResult(ok, detail, time.monotonic() - started)


def _need_port(target: CheckTarget) -> int:
    if target.port is None:
        raise CheckFailed("no port to check")
    return target.port


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; abort it if it does not close at once (a TLS peer may never answer)."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)
    except (OSError, TimeoutError, ssl.SSLError):
        writer.transport.abort()


async def _check_tcp(spec: Health, target: CheckTarget) -> str:
    _, writer = await asyncio.open_connection(target.address, _need_port(target))
    await _close(writer)
    return "connected"


# -- http ---------------------------------------------------------------------------------------

def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


async def http_get(address: str, port: int, path: str = "/", *, host: str | None = None, tls: bool = False,
                   verify_tls: bool = False, want_body: bool = True) -> HttpResponse:
    """GET `path` from address:port with HTTP/1.1 (over TLS when `tls`), `Connection: close`.

    `host` is the Host header (default: the address, and the port unless it is the scheme's
    default) and, without its port, the TLS server name. The body is read only when `want_body`:
    with Content-Length, chunked or until the server closes, at most BODY_LIMIT bytes. Raises
    OSError, ssl.SSLError, asyncio.IncompleteReadError or CheckFailed; no timeout of its own.
    """
    if host is None:
        default_port = 443 if tls else 80
        host = _bracket(address) + ("" if port == default_port else f":{port}")
    context = None
    if tls:
        context = ssl.create_default_context()
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if any(c.isspace() for c in path + host):
        raise CheckFailed(f"the path {path!r} and host {host!r} may not contain spaces or line breaks")
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
               "User-Agent: lvscluster-health\r\nAccept: */*\r\n\r\n").encode()
    server_name = (urlsplit(f"//{host}").hostname or address) if tls else None
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=server_name)
    try:
        writer.write(request)
        await writer.drain()
        status, reason, headers = await _read_head(reader)
        body = await _read_body(reader, status, headers) if want_body else None
        return HttpResponse(status, reason, body)
    except ValueError as exc:  # a line over the stream reader's limit
        raise CheckFailed(f"malformed HTTP response: {exc}") from None
    finally:
        await _close(writer)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status line and headers (names lower-cased) of the final response, skipping 1xx ones."""
    while True:
        line = await reader.readline()
        if not line:
            raise CheckFailed("connection closed before an HTTP response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not (code.isdigit() and len(code) == 3):
            raise CheckFailed(f"not an HTTP response: {line[:60]!r}")
        headers: dict[str, str] = {}
        for _ in range(HEAD_LIMIT):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise CheckFailed(f"more than {HEAD_LIMIT} HTTP header lines")
        if not 100 <= int(code) < 200:
            return int(code), reason, headers


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> bytes:
    if status in (204, 304):
        return b""
    too_big = CheckFailed(f"HTTP body larger than {BODY_LIMIT // (1024 * 1024)} MiB")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while size := _number((await reader.readline()).split(b";")[0], 16, "chunk size"):
            if len(body) + size > BODY_LIMIT:
                raise too_big
            body += await reader.readexactly(size)
            await reader.readexactly(2)  # the CRLF after each chunk
        while (await reader.readline()).strip():  # trailers, up to the blank line (or EOF)
            pass
        return bytes(body)
    if "content-length" in headers:
        length = _number(headers["content-length"], 10, "Content-Length")
        if length > BODY_LIMIT:
            raise too_big
        return await reader.readexactly(length)
    body = bytearray()
    while chunk := await reader.read(65536):
        body += chunk
        if len(body) > BODY_LIMIT:
            raise too_big
    return bytes(body)


def _number(text: str | bytes, base: int, what: str) -> int:
    try:
        value = int(text.strip(), base)
    except ValueError:
        value = -1
    if value < 0:
        raise CheckFailed(f"bad HTTP {what}: {text[:40]!r}")
    return value


async def _check_http(spec: Health, target: CheckTarget) -> str:
    response = await http_get(target.address, _need_port(target), spec.path, host=spec.host,
                              tls=spec.type == "https", verify_tls=spec.verify_tls,
                              want_body=spec.digest is not None)
    if response.status not in spec.expect_status:
        expected = ", ".join(str(s) for s in spec.expect_status)
        raise CheckFailed(f"HTTP {response.status} (expected {expected})")
    if spec.digest is None:
        return f"HTTP {response.status}"
    digest = md5_hex(response.body or b"")
    if digest != spec.digest:
        raise CheckFailed(f"body digest {digest} (expected {spec.digest})")
    return f"HTTP {response.status}, body digest matches"


# -- udp, dns -----------------------------------------------------------------------------------

async def udp_exchange(address: str, port: int, payload: bytes) -> bytes:
    """Send one datagram to address:port and return the first reply (no timeout of its own).

    The socket is connected, so an ICMP port unreachable fails at once ("refused") instead of
    waiting out the timeout. Not a datagram endpoint: Python 3.11's would not send an empty payload.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect((address, port))
            await loop.sock_sendall(sock, payload)
            return await loop.sock_recv(sock, UDP_REPLY_MAX)
        except ConnectionRefusedError:
            raise CheckFailed("refused (ICMP port unreachable)") from None


async def _check_udp(spec: Health, target: CheckTarget) -> str:
    reply = await udp_exchange(target.address, _need_port(target), (spec.send or "").encode())
    if spec.expect is not None and spec.expect not in reply.decode(errors="replace"):
        raise CheckFailed(f"reply {reply[:40].decode(errors='replace')!r} does not contain {spec.expect!r}")
    return f"reply of {len(reply)} bytes"


async def _check_dns(spec: Health, target: CheckTarget) -> str:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdatatype

    if not spec.query:
        raise CheckFailed("no query name set")
    query = dns.message.make_query(spec.query, spec.record)
    # Over udp_exchange rather than dns.asyncquery.udp, which misses ICMP port unreachable.
    wire = await udp_exchange(target.address, target.port or 53, query.to_wire())
    try:
        response = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        raise CheckFailed(f"malformed DNS reply: {exc}") from None
    if not query.is_response(response):
        raise CheckFailed("the DNS reply does not answer the query")
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise CheckFailed(f"{dns.rcode.to_text(rcode)} for {spec.query} {spec.record}")
    wanted = dns.rdatatype.from_text(spec.record)
    records = sum(len(rrset) for rrset in response.answer if rrset.rdtype == wanted)
    if not records:
        truncated = " (truncated reply)" if response.flags & dns.flags.TC else ""
        raise CheckFailed(f"no {spec.record} record in the answer for {spec.query}{truncated}")
    return f"{records} {spec.record} record(s) for {spec.query}"


# -- exec ---------------------------------------------------------------------------------------

async def _check_exec(spec: Health, target: CheckTarget) -> str:
    if not spec.command:
        raise CheckFailed("no command set")
    env = {**os.environ, "LVS_RS_ADDRESS": target.address, "LVS_RS_PORT": str(target.port or ""),
           "LVS_VIP": target.vip, "LVS_VIP_PORT": str(target.vip_port)}
    try:
        process = await asyncio.create_subprocess_exec(
            *spec.command, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)  # its own group: kill its children too
    except FileNotFoundError:
        raise CheckFailed(f"command not found: {spec.command[0]}") from None
    except PermissionError:
        raise CheckFailed(f"command not executable: {spec.command[0]}") from None
    try:
        stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:  # timed out or cancelled: kill the group, then reap
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await process.wait()
    code = process.returncode
    if code == 0:
        return "exit 0"
    if code < 0:
        raise CheckFailed(f"killed by signal {-code}")
    lines = (stderr or stdout).decode(errors="replace").strip().splitlines()
    raise CheckFailed(f"exit {code}: {lines[0][:200]}" if lines else f"exit {code}")


_CHECKS: dict[str, Callable[[Health, CheckTarget], Awaitable[str]]] = {
    "tcp": _check_tcp, "http": _check_http, "https": _check_http,
    "udp": _check_udp, "dns": _check_dns, "exec": _check_exec,
}
