"""Shared by the lab kernel tests: the CLI run in-process, commands in a lab node, a traffic client."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

from typer.testing import CliRunner

from lvscluster.apply.processes import run_forked_child
from lvscluster.cli import app, main
from lvscluster.errors import LvsClusterError
from lvscluster.netlink import IpvsSocket
from lvscluster.netlink.netns import socket_in_netns


def cli(*args: str) -> tuple[int, str]:
    """Run `lvscluster ARGS` in-process; returns (exit code, stdout + stderr)."""
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, LvsClusterError):
        return result.exception.exit_code, result.output + str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


class ForkedCli:
    """`lvscluster ARGS` as a separate process forked from this one, to be signalled or killed.

    Forked rather than started: a new Python importing lvscluster costs ~30 s of emulated CPU in
    the test VM, the fork none. The child has its own pid, signal handlers and exit code, like
    `lvscluster` run from a shell; its stdout and stderr come through `stdout`.
    """

    def __init__(self, *args: str) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the CLI and leave, skipping the parent's pytest teardown
            sys.argv = ["lvscluster", *args]
            run_forked_child(main, os.open(os.devnull, os.O_RDONLY), write_end, write_end)
        os.close(write_end)
        self.stdout = io.TextIOWrapper(io.FileIO(read_end, "r"))
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child has ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the child's exit code."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["lvscluster"], timeout)
            time.sleep(0.1)
        return self.returncode


def in_node(lab: str, node: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command in a lab node's namespace."""
    return subprocess.run(["ip", "netns", "exec", f"{lab}.{node}", *argv], capture_output=True, text=True, timeout=timeout)


def family(vip: str) -> int:
    """The socket family of an address: AF_INET6 for an IPv6 VIP, else AF_INET."""
    return socket.AF_INET6 if ":" in vip else socket.AF_INET


def wait_for_ecmp(lab: str, router: str, vip: str, hops: int, timeout: float = 90) -> list[str]:
    """The router's next hops for VIP/32 (an IPv6 VIP's /128: link-local next hops, OSPFv3's)
    once there are `hops` of them (or what it has at the timeout)."""
    deadline, seen = time.monotonic() + timeout, []
    prefix = ["-6", "route", "show", f"{vip}/128"] if ":" in vip else ["route", "show", f"{vip}/32"]
    while time.monotonic() < deadline:
        routes = json.loads(in_node(lab, router, "ip", "-j", *prefix).stdout or "[]")
        seen = [h["gateway"] for r in routes for h in r.get("nexthops", [])] or [r["gateway"] for r in routes if "gateway" in r]
        if len(seen) == hops:
            return seen
        time.sleep(1)
    return seen


def service_counter(lab: str, directors, service: str, at_least: int, timeout: float = 15,
                    counter: str = "conns") -> dict[str, int]:
    """One IpvsStats `counter` (connections by default; `inpkts`, ...) of each director's `service`
    (e.g. `tcp/10.99.0.10:80`), once they add up to `at_least` or at the timeout: the kernel folds
    per-CPU counters every 2 s."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {}
        for director in directors:
            with IpvsSocket(f"{lab}.{director}") as sock:
                counts[director] = getattr(sock.service_stats()[service], counter)
        if sum(counts.values()) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def dest_weights(lab: str, director: str, port: int = 80) -> dict[str, int]:
    """The weight of each real server in a lab director's service on `port`, by address."""
    with IpvsSocket(f"{lab}.{director}") as sock:
        return {d.address: d.weight for s in sock.services() if s.port == port for d in s.dests}


# python3 -c CLIENT VIP COUNT [PORT [UDP_PORT]]: COUNT HTTP requests from unique source ports
# (each a new 5-tuple) and one UDP echo; prints the answering real servers as JSON.
CLIENT = r"""
import json, socket, sys
vip, count = sys.argv[1], int(sys.argv[2])
port = int(sys.argv[3]) if len(sys.argv) > 3 else 80
udp_port = int(sys.argv[4]) if len(sys.argv) > 4 else 53
answers = {}
for i in range(count):
    s = socket.socket()
    s.settimeout(10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 20000 + i))  # unique source ports: each request a new 5-tuple
    s.connect((vip, port))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    name = data.split(b"\r\n\r\n", 1)[1].decode().strip()
    answers[name] = answers.get(name, 0) + 1
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(10)
u.sendto(b"ping", (vip, udp_port))
print(json.dumps({"http": answers, "udp": u.recv(100).decode()}))
"""


def open_flows(lab: str, node: str, vip: str, port: int, count: int) -> list[tuple[socket.socket, str]]:
    """`count` long-lived echo connections from a lab node (the test servers echo any non-HTTP
    line as `<node> <line>`), each with the real server that answered its first line."""
    flows = []
    for _ in range(count):
        sock = socket_in_netns(f"{lab}.{node}", family(vip), socket.SOCK_STREAM)
        sock.settimeout(15)
        sock.connect((vip, port))
        sock.sendall(b"hello\n")
        flows.append((sock, sock.recv(200).decode().split(" ")[0]))
    return flows


def broken_flows(flows: list[tuple[socket.socket, str]]) -> list[tuple[str, str]]:
    """Echo one line on every flow: (real server, what went wrong) for each flow that failed."""
    broken = []
    for sock, server in flows:
        try:
            sock.sendall(b"ping\n")
            reply = sock.recv(200).decode()
            if reply != f"{server} ping\n":
                broken.append((server, f"echo {reply!r}"))
        except OSError as exc:
            broken.append((server, type(exc).__name__))
    return broken


def http_answers(lab: str, node: str, vip: str, count: int, port: int = 80) -> dict[str, int]:
    """`count` HTTP requests from a lab node, each a new connection: answers per real server
    (a failed request counts under its error's name)."""
    answers: dict[str, int] = {}
    for _ in range(count):
        sock = socket_in_netns(f"{lab}.{node}", family(vip), socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect((vip, port))
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            name = data.split(b"\r\n\r\n", 1)[1].decode().strip()
        except OSError as exc:
            name = type(exc).__name__
        finally:
            sock.close()
        answers[name] = answers.get(name, 0) + 1
    return answers


def udp_answer(lab: str, node: str, vip: str, port: int, payload: str) -> str:
    """One UDP request from a lab node; the answer's text."""
    sock = socket_in_netns(f"{lab}.{node}", family(vip), socket.SOCK_DGRAM)
    try:
        sock.settimeout(10)
        sock.sendto(payload.encode(), (vip, port))
        return sock.recv(200).decode()
    finally:
        sock.close()


def run_scaletest(topology, report, *args: str) -> tuple[int, str, dict]:
    """`lvscluster scaletest TOPOLOGY --report REPORT ARGS`: exit code, output and the report (PNG checked)."""
    code, output = cli("scaletest", str(topology), "--report", str(report), *args)
    assert (report / "report.json").exists(), output
    assert (report / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return code, output, json.loads((report / "report.json").read_text())


def drain_undrain_holds(topology, report_dir, what: str, *args: str) -> dict:
    """A scaletest of 40 echo flows on port 80 and 5 new connections/s for 40 s while d2 is
    drained at 5 s and undrained at 22 s (ARGS add to it, e.g. `--vip web6`): prints a `measured`
    line naming `what`, asserts no flow broke, no connection was refused, the exit code the report
    owes and an ECMP change after each event; returns the report."""
    code, output, report = run_scaletest(
        topology, report_dir, "--echo-port", "80", "--flows", "40", "--interval", "1", "--rate", "5",
        "--duration", "40", "--churn", "drain d2@5s,undrain d2@22s", *args)
    traffic, events = report["traffic"], {e["action"]: e for e in report["events"]}
    print(f"measured: {what}: {traffic['flows_broken']} of 40 flows broken, {traffic['new_ok']} new ok, "
          f"{traffic['new_failed']} failed; ECMP after drain {events['drain']['ecmp_changed_after']} s, "
          f"undrain {events['undrain']['ecmp_changed_after']} s; {report['lab']['verdict_text']}")
    assert traffic["flows_broken"] == 0, report["broken_flows"]
    assert traffic["new_failed_by_reason"].get("refused", 0) == 0, traffic
    assert code == scaletest_exit(report), output
    assert all(events[a]["ecmp_changed_after"] is not None for a in ("drain", "undrain")), events
    return report


def scaletest_exit(report: dict) -> int:
    """The exit code `lvscluster scaletest` owes this report: 3 when the lab judged itself overloaded
    (a busy CI machine), else 1 when a flow broke, else 0."""
    if report["lab"]["verdict"] != "valid":
        return 3
    return 1 if report["traffic"]["flows_broken"] else 0


def deployed_lab(directory, topology: str, nodes: int):
    """Generator for a module fixture: `topology/<topology>.lvs.yml` copied to `directory`, its lab
    up without agents (8 would share the emulated VM's two CPUs with the scaletests) and deployed
    to `nodes` nodes; yields the file, then takes the lab down."""
    import re
    import shutil
    from pathlib import Path

    from lvscluster.lab import netns as lab_provider

    path = Path(directory) / f"{topology}.lvs.yml"
    shutil.copy(Path(__file__).parent.parent.parent / "topology" / f"{topology}.lvs.yml", path)
    lab_provider.down(topology)
    code, output = cli("lab", "up", "--no-agents", str(path))
    assert code == 0, output
    code, output = cli("deploy", "--yes", str(path))
    assert code == 0, output
    assert re.search(rf"applied \d+ changes to {nodes} nodes", output), output
    yield path
    code, output = cli("lab", "down", str(path))
    assert code == 0, output
