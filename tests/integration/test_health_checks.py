"""The health checks (and `genhash`) against real servers this test starts on 127.0.0.1.

TCP, HTTP, HTTPS (self-signed certificate made with openssl), UDP echo and DNS servers run in
threads; exec runs real programs. One root test runs checks inside a throwaway network
namespace `hc-*`, where an unanswered SYN shows the tcp timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

import dns.message
import dns.rcode
import dns.rrset
import pytest
import typer
from typer.testing import CliRunner

from lvscluster.cli.health import genhash
from lvscluster.health.checks import CheckResult, CheckTarget, run_check
from lvscluster.model.topology import Health

OK_BODY = b"all good\n"
CHUNKS = [b"chunk one, ", b"chunk two, ", b"and the last one\n"]
CLOSE_BODY = b"read until the server closes\n" * 100


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def check(target: CheckTarget, **spec) -> CheckResult:
    return asyncio.run(run_check(Health(**spec), target))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local(port: int | None) -> CheckTarget:
    return CheckTarget("127.0.0.1", port)


def in_thread(target, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


# -- servers ------------------------------------------------------------------------------------

class Pages(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict]] = []  # the requests, for asserting on their headers

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        Pages.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path == "/ok":
            self._send(200, OK_BODY)
        elif self.path == "/down":
            self._send(503, b"maintenance\n")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":  # no length: the body ends when the connection does
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(CLOSE_BODY)
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, OK_BODY)
        else:
            self._send(404, b"no such page\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_http(address: str = "127.0.0.1", context: ssl.SSLContext | None = None):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
    server = server_class((address, 0), Pages)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    in_thread(server.serve_forever, 0.05)  # a short poll: shutdown() returns at once
    return server


@pytest.fixture
def http_port():
    server = serve_http()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for rs.example.test and 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a self-signed certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=rs.example.test",
                    "-addext", "subjectAltName=DNS:rs.example.test,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def https_port(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = serve_http(context=context)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_tcp_port():
    """Accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def silent_udp_port():
    """A bound UDP socket that reads nothing: no reply, no ICMP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _echo(sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data or b"empty", peer)
        except OSError:
            return


@pytest.fixture
def udp_echo_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        in_thread(_echo, sock)
        yield sock.getsockname()[1]


def _answer_dns(sock: socket.socket) -> None:
    """www.example.test A 192.0.2.10; other types of it: no data; any other name: NXDOMAIN."""
    while True:
        try:
            wire, peer = sock.recvfrom(65535)
        except OSError:
            return
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        if question.name.to_text() != "www.example.test.":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "192.0.2.10"))
        sock.sendto(response.to_wire(), peer)


@pytest.fixture
def dns_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        in_thread(_answer_dns, sock)
        yield sock.getsockname()[1]


def assert_timeout(result: CheckResult, limit: float) -> None:
    assert not result.ok
    assert result.detail == f"timeout after {limit} s"
    assert limit - 0.05 <= result.seconds < limit + 0.5


# -- tcp ----------------------------------------------------------------------------------------

def test_tcp_connects(silent_tcp_port):
    result = check(local(silent_tcp_port), type="tcp")
    assert result.ok and result.detail == "connected"
    assert result.seconds < 1


def test_tcp_refused():
    result = check(local(free_port()), type="tcp")
    assert (result.ok, result.detail) == (False, "connect refused")


def test_missing_port_fails_without_raising():
    assert check(local(None), type="tcp").detail == "no port to check"


# -- http ---------------------------------------------------------------------------------------

def test_http_ok_sends_host_user_agent_and_close(http_port):
    Pages.seen.clear()
    result = check(local(http_port), type="http", path="/ok")
    assert result.ok and result.detail == "HTTP 200"
    request = Pages.seen[-1]
    assert request["host"] == f"127.0.0.1:{http_port}"
    assert request["user-agent"] == "lvscluster-health"
    assert request["connection"] == "close"
    check(local(http_port), type="http", path="/ok", host="www.example.test")
    assert Pages.seen[-1]["host"] == "www.example.test"


def test_http_wrong_status(http_port):
    result = check(local(http_port), type="http", path="/down")
    assert (result.ok, result.detail) == (False, "HTTP 503 (expected 200)")
    result = check(local(http_port), type="http", path="/missing", expect_status=[200, 204])
    assert (result.ok, result.detail) == (False, "HTTP 404 (expected 200, 204)")
    assert check(local(http_port), type="http", path="/down", expect_status=[503]).ok


@pytest.mark.parametrize("path, body", [("/ok", OK_BODY), ("/chunked", b"".join(CHUNKS)), ("/close", CLOSE_BODY)])
def test_http_digest_of_each_body_framing(http_port, path, body):
    result = check(local(http_port), type="http", path=path, digest=md5(body))
    assert result.ok, result.detail
    assert result.detail == "HTTP 200, body digest matches"


def test_http_wrong_digest(http_port):
    wrong = "0" * 32
    result = check(local(http_port), type="http", path="/chunked", digest=wrong)
    assert not result.ok
    assert result.detail == f"body digest {md5(b''.join(CHUNKS))} (expected {wrong})"


def test_http_refused():
    assert check(local(free_port()), type="http").detail == "connect refused"


def test_http_timeout(http_port):
    assert_timeout(check(local(http_port), type="http", path="/slow", timeout=0.5), 0.5)


def test_http_server_that_never_answers(silent_tcp_port):
    assert_timeout(check(local(silent_tcp_port), type="http", timeout=0.3), 0.3)


def test_http_over_ipv6_brackets_the_host():
    try:
        server = serve_http("::1")
    except OSError:
        pytest.skip("no IPv6 on lo")
    try:
        Pages.seen.clear()
        port = server.server_address[1]
        result = check(CheckTarget("::1", port), type="http", path="/ok", digest=md5(OK_BODY))
        assert result.ok, result.detail
        assert Pages.seen[-1]["host"] == f"[::1]:{port}"
    finally:
        server.shutdown()
        server.server_close()


# -- https --------------------------------------------------------------------------------------

def test_https_self_signed_is_accepted_without_verification(https_port):
    result = check(local(https_port), type="https", path="/chunked", digest=md5(b"".join(CHUNKS)))
    assert result.ok, result.detail


def test_https_verification_rejects_a_self_signed_certificate(https_port):
    result = check(local(https_port), type="https", path="/ok", verify_tls=True, host="rs.example.test")
    assert not result.ok
    assert result.detail.startswith("TLS certificate rejected: self")  # "self-signed certificate"


def test_https_verification_with_a_trusted_certificate_checks_the_name(https_port, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # ssl.create_default_context() trusts it
    assert check(local(https_port), type="https", path="/ok", verify_tls=True, host="rs.example.test").ok
    assert check(local(https_port), type="https", path="/ok", verify_tls=True).ok  # IP SAN 127.0.0.1
    result = check(local(https_port), type="https", path="/ok", verify_tls=True, host="other.example.test")
    assert not result.ok and result.detail.startswith("TLS certificate rejected: Hostname mismatch")


def test_https_wrong_status(https_port):
    assert check(local(https_port), type="https", path="/down").detail == "HTTP 503 (expected 200)"


def test_https_against_plain_http(http_port):
    result = check(local(http_port), type="https", path="/ok")
    assert not result.ok and result.detail.startswith("TLS error")


# -- udp ----------------------------------------------------------------------------------------

def test_udp_echo(udp_echo_port):
    result = check(local(udp_echo_port), type="udp", send="ping", expect="ping")
    assert result.ok and result.detail == "reply of 4 bytes"


def test_udp_empty_payload_still_goes_out(udp_echo_port):
    result = check(local(udp_echo_port), type="udp")
    assert result.ok, result.detail


def test_udp_wrong_reply(udp_echo_port):
    result = check(local(udp_echo_port), type="udp", send="ping", expect="pong")
    assert (result.ok, result.detail) == (False, "reply 'ping' does not contain 'pong'")


def test_udp_refused():
    result = check(local(free_port(socket.SOCK_DGRAM)), type="udp", send="ping")
    assert (result.ok, result.detail) == (False, "refused (ICMP port unreachable)")


def test_udp_timeout(silent_udp_port):
    assert_timeout(check(local(silent_udp_port), type="udp", send="ping", timeout=0.4), 0.4)


# -- dns ----------------------------------------------------------------------------------------

def test_dns_answer(dns_port):
    result = check(local(dns_port), type="dns", query="www.example.test")
    assert result.ok and result.detail == "1 A record(s) for www.example.test"


def test_dns_nxdomain(dns_port):
    result = check(local(dns_port), type="dns", query="nope.example.test")
    assert (result.ok, result.detail) == (False, "NXDOMAIN for nope.example.test A")


def test_dns_no_record_of_that_type(dns_port):
    result = check(local(dns_port), type="dns", query="www.example.test", record="AAAA")
    assert (result.ok, result.detail) == (False, "no AAAA record in the answer for www.example.test")


def test_dns_refused():
    result = check(local(free_port(socket.SOCK_DGRAM)), type="dns", query="www.example.test")
    assert (result.ok, result.detail) == (False, "refused (ICMP port unreachable)")


def test_dns_timeout(silent_udp_port):
    assert_timeout(check(local(silent_udp_port), type="dns", query="www.example.test", timeout=0.4), 0.4)


def test_dns_without_query_fails():
    assert check(local(53), type="dns").detail == "no query name set"


# -- exec ---------------------------------------------------------------------------------------

def test_exec_true_and_false():
    assert check(local(80), type="exec", command=["/bin/true"]) == CheckResult(True, "exit 0", pytest.approx(0, abs=1))
    result = check(local(80), type="exec", command=["/bin/false"])
    assert (result.ok, result.detail) == (False, "exit 1")


def test_exec_reports_first_stderr_line_and_gets_the_environment():
    script = 'echo "rs=$LVS_RS_ADDRESS:$LVS_RS_PORT vip=$LVS_VIP:$LVS_VIP_PORT" >&2; echo second >&2; exit 3'
    result = check(CheckTarget("10.2.0.4", 8080, vip="192.0.2.1", vip_port=80),
                   type="exec", command=["/bin/sh", "-c", script])
    assert (result.ok, result.detail) == (False, "exit 3: rs=10.2.0.4:8080 vip=192.0.2.1:80")


def test_exec_is_no_shell(tmp_path):
    marker = tmp_path / "marker"
    result = check(local(80), type="exec", command=["/bin/echo", f"; touch {marker}"])
    assert result.ok and not marker.exists()


def test_exec_timeout_kills_the_command_and_its_children(tmp_path):
    pidfile = tmp_path / "pid"
    script = f"sleep 5 & echo $! > {pidfile}; wait"
    result = check(local(80), type="exec", timeout=0.5, command=["/bin/sh", "-c", script])
    assert_timeout(result, 0.5)
    child = int(pidfile.read_text())
    time.sleep(0.1)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone, or a zombie of init


def test_exec_sleep_times_out():
    assert_timeout(check(local(80), type="exec", timeout=0.5, command=["sleep", "5"]), 0.5)


def test_exec_missing_command():
    result = check(local(80), type="exec", command=["/nonexistent/check-it"])
    assert (result.ok, result.detail) == (False, "command not found: /nonexistent/check-it")


def test_exec_not_executable(tmp_path):
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    result = check(local(80), type="exec", command=[str(script)])
    assert (result.ok, result.detail) == (False, f"command not executable: {script}")


# -- checks from inside a network namespace -------------------------------------------------------

NETNS_SCRIPT = """
import asyncio, json, sys
from lvscluster.health.checks import CheckTarget, run_check
from lvscluster.model.topology import Health
async def main():
    checks = [(Health(type="tcp", timeout=0.5), CheckTarget("192.0.2.2", 80)),
              (Health(type="tcp", timeout=0.5), CheckTarget("127.0.0.1", int(sys.argv[1])))]
    results = await asyncio.gather(*(run_check(spec, target) for spec, target in checks))
    print(json.dumps([[r.ok, r.detail, r.seconds] for r in results]))
asyncio.run(main())
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_checks_run_in_the_namespace_they_are_started_in(silent_tcp_port):
    """An unanswered SYN (nothing answers ARP on the veth link) times out; the host's listener on
    127.0.0.1 is not visible from the namespace's own loopback."""
    ns = f"hc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for command in ("link set lo up", "link add hc0 type veth peer name hc1", "link set hc0 up", "link set hc1 up",
                        "address add 192.0.2.1/24 dev hc0"):
            subprocess.run(["ip", "-n", ns, *command.split()], check=True)
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", NETNS_SCRIPT, str(silent_tcp_port)],
                              check=False, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        (unanswered_ok, unanswered, seconds), (host_ok, host_detail, _) = json.loads(done.stdout)
        assert (unanswered_ok, unanswered) == (False, "timeout after 0.5 s")
        assert 0.45 <= seconds < 1.0
        assert (host_ok, host_detail) == (False, "connect refused")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


# -- genhash ------------------------------------------------------------------------------------

def genhash_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(genhash)
    return app


@pytest.mark.parametrize("path, body", [("/ok", OK_BODY), ("/chunked", b"".join(CHUNKS))])
def test_genhash_prints_the_body_digest(http_port, path, body):
    done = CliRunner().invoke(genhash_app(), [f"http://127.0.0.1:{http_port}{path}"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [f"MD5SUM = {md5(body)}", "HTTP status: 200", f"Body length: {len(body)} bytes"]


def test_genhash_over_https(https_port):
    done = CliRunner().invoke(genhash_app(), [f"https://127.0.0.1:{https_port}/ok"])
    assert done.exit_code == 0 and f"MD5SUM = {md5(OK_BODY)}" in done.stdout
    done = CliRunner().invoke(genhash_app(), ["--verify-tls", f"https://127.0.0.1:{https_port}/ok"])
    assert done.exit_code == 1 and "TLS certificate rejected" in done.stderr


def test_genhash_non_2xx_prints_the_digest_and_fails(http_port):
    done = CliRunner().invoke(genhash_app(), [f"http://127.0.0.1:{http_port}/down"])
    assert done.exit_code == 1
    assert f"MD5SUM = {md5(b'maintenance' + bytes([10]))}" in done.stdout
    assert "HTTP 503 is not a 2xx answer" in done.stderr


def test_genhash_connection_error_and_bad_url():
    done = CliRunner().invoke(genhash_app(), [f"http://127.0.0.1:{free_port()}/"])
    assert done.exit_code == 1 and "connect refused" in done.stderr and "MD5SUM" not in done.stdout
    done = CliRunner().invoke(genhash_app(), ["ftp://example.test/"], env={"COLUMNS": "200"})
    assert done.exit_code == 2 and "not an http:// or https:// URL" in done.output


@pytest.mark.parametrize("url", ["http://admin:s3cret@127.0.0.1:{port}/", "ftp://admin:s3cret@example.test/",
                                 "http://admin:s3cret@example.test:99999/"])
def test_genhash_never_repeats_user_and_password(url, http_port):
    done = CliRunner().invoke(genhash_app(), [url.format(port=free_port())], env={"COLUMNS": "200"})
    assert done.exit_code in (1, 2) and "s3cret" not in done.output and "admin" not in done.output, done.output
    assert "***@" in done.output and "is not sent" in done.output


def test_genhash_with_credentials_in_the_url_still_fetches(http_port):
    done = CliRunner().invoke(genhash_app(), [f"http://user:pw@127.0.0.1:{http_port}/ok"])
    assert done.exit_code == 0 and f"MD5SUM = {md5(OK_BODY)}" in done.stdout and "pw@" not in done.output
