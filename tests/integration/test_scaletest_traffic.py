"""The scaletest traffic engine as a program against real servers on 127.0.0.1 (no root, no VM)."""

from __future__ import annotations

import json
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from lvscluster.scaletest.report import build_report, parse_traffic
from lvscluster.scaletest.wire import PortCycle


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def testserver():
    """`lvscluster.lab.testserver` as node rs1; yields (process, echo port, http port)."""
    echo_port, http_port = _free_port(), _free_port()
    process = subprocess.Popen([sys.executable, "-m", "lvscluster.lab.testserver", "--node", "rs1", "--host",
                                "127.0.0.1", "--tcp", str(echo_port), "--tcp", str(http_port)])
    try:
        _wait_listening(echo_port)
        _wait_listening(http_port)
        yield process, echo_port, http_port
    finally:
        process.kill()
        process.wait()


def _traffic_command(echo_port: int, http_port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "lvscluster.scaletest.traffic", "--target", "127.0.0.1",
            "--echo-port", str(echo_port), "--http-port", str(http_port), *args]


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _of(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["type"] == kind]


def _read_until_flows_up(process: subprocess.Popen, flows: int) -> list[str]:
    """Lines of the running engine up to its first tick after every flow got its first echo."""
    lines, up = [], 0
    while line := process.stdout.readline():
        lines.append(line)
        record = json.loads(line)
        up += record["type"] == "up"
        if record["type"] == "tick" and up == flows:
            return lines
    raise AssertionError(f"the engine ended before its {flows} flows were up: {''.join(lines)[-2000:]}")


def test_clean_run_breaks_nothing_and_the_counts_add_up(testserver):
    _, echo_port, http_port = testserver
    result = subprocess.run(_traffic_command(echo_port, http_port, "--flows", "50", "--rate", "50",
                                             "--duration", "3"), capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    assert records[0]["type"] == "start" and abs(records[0]["wall"] - time.time()) < 30
    summary = records[-1]
    assert summary["type"] == "summary" and summary["stopped_by"] == "duration"
    assert _of(records, "broken") == [] and _of(records, "conn_failed") == []
    assert summary["flows_established"] == summary["flows_alive"] == 50 and summary["flows_broken"] == 0
    ups = _of(records, "up")
    assert sorted(u["flow"] for u in ups) == list(range(50)) and {u["node"] for u in ups} == {"rs1"}
    assert len({u["port"] for u in ups}) == 50
    ticks = _of(records, "tick")
    assert [t["t"] for t in ticks] == sorted(t["t"] for t in ticks) and ticks[-1]["final"]
    assert sum(t["new_ok"] for t in ticks) == summary["new_ok"] == summary["new_started"]
    assert sum(t["msgs_ok"] for t in ticks) == summary["messages_ok"]
    assert 140 <= summary["new_ok"] <= 155  # 50/s for 3 s
    assert summary["new_by_node"] == {"rs1": summary["new_ok"]} and summary["new_port_reuses"] == 0
    assert summary["messages_ok"] >= 50 * 3 / 0.2 * 0.8  # one echo per flow every 0.2 s
    assert ticks[-2]["flows_by_node"] == {"rs1": 50} and ticks[-2]["alive"] == 50
    report = build_report(result.stdout.splitlines(), [])
    assert report["traffic"]["flows_broken"] == 0 and report["real_servers"]["flows"]["counts"] == {"rs1": 50}


def test_killed_server_breaks_every_flow_and_the_engine_carries_on(testserver):
    server, echo_port, http_port = testserver
    traffic = subprocess.Popen(_traffic_command(echo_port, http_port, "--flows", "30", "--rate", "20",
                                                "--duration", "4", "--echo-timeout", "1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = _read_until_flows_up(traffic, 30)
    killed_at = time.time()
    server.kill()
    stdout, stderr = traffic.communicate(timeout=20)
    stdout = "".join(before) + stdout
    assert traffic.returncode == 0, stderr
    records = _records(stdout)
    broken = _of(records, "broken")
    assert sorted(b["flow"] for b in broken) == list(range(30))
    assert {b["reason"] for b in broken} <= {"reset", "timeout"}
    assert all(b["node"] == "rs1" and b["last_ok"] is not None and b["port"] for b in broken)
    failed = _of(records, "conn_failed")
    assert failed and {f["reason"] for f in failed} <= {"refused", "reset", "timeout"}
    summary = records[-1]
    assert summary["type"] == "summary" and summary["flows_broken"] == 30 and summary["flows_alive"] == 0
    report = build_report(stdout.splitlines(), [{"wall": killed_at, "action": "kill", "node": "rs1"}])
    assert report["events"][0]["broken_flows"] == 30 and report["unattributed"]["broken_flows"] == 0
    assert report["events"][0]["new_failed"] == len(failed)


class _FakeEcho(socketserver.StreamRequestHandler):
    """Echoes like the testserver as node `fake`, except: flow 3 gets a wrong number at seq 2,
    flow 5 is answered by another node at seq 3, flow 7 gets no answer after seq 1."""

    def handle(self) -> None:
        for line in self.rfile:
            flow, seq = line.split()
            if (flow, seq) == (b"3", b"2"):
                self.wfile.write(b"fake 3 99\n")
            elif (flow, seq) == (b"5", b"3"):
                self.wfile.write(b"other " + line)
            elif flow == b"7" and int(seq) >= 1:
                continue
            else:
                self.wfile.write(b"fake " + line)


def test_wrong_echo_other_node_and_silence_are_told_apart():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FakeEcho)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = subprocess.run(_traffic_command(port, _free_port(), "--flows", "10", "--rate", "0",
                                                 "--duration", "2.5", "--echo-timeout", "0.6"),
                                capture_output=True, text=True, timeout=20)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    broken = {b["flow"]: b for b in _of(records, "broken")}
    assert sorted(broken) == [3, 5, 7]
    assert broken[3]["reason"] == "wrong_echo" and broken[3]["last_ok"] == 1 and "'fake 3 99'" in broken[3]["detail"]
    assert broken[5]["reason"] == "wrong_echo" and broken[5]["last_ok"] == 2
    assert broken[5]["detail"] == "answered by other, flow was on fake"
    assert broken[7]["reason"] == "timeout" and broken[7]["last_ok"] == 0
    summary = records[-1]
    assert summary["flows_alive"] == 7 and summary["broken_by_reason"] == {"wrong_echo": 2, "timeout": 1}


def test_refused_flows_are_broken_from_the_start():
    port = _free_port()  # nothing listens there
    result = subprocess.run(_traffic_command(port, port, "--flows", "5", "--rate", "10", "--duration", "1"),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    assert {(b["reason"], b["node"], b["last_ok"]) for b in _of(records, "broken")} == {("refused", None, None)}
    assert len(_of(records, "broken")) == 5
    assert {f["reason"] for f in _of(records, "conn_failed")} == {"refused"}
    assert records[-1]["flows_established"] == 0 and records[-1]["new_ok"] == 0


def test_sigterm_stops_cleanly_with_a_summary(testserver):
    _, echo_port, http_port = testserver
    start_port = random.randrange(20000, 30000)  # under 32768: no kernel-chosen port takes one of these
    traffic = subprocess.Popen(_traffic_command(echo_port, http_port, "--flows", "20", "--rate", "20",
                                                "--duration", "60", "--source-ports", str(start_port)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = _read_until_flows_up(traffic, 20)
    stopped_at = time.monotonic()
    traffic.send_signal(signal.SIGTERM)
    stdout, stderr = traffic.communicate(timeout=20)
    stdout = "".join(before) + stdout
    assert time.monotonic() - stopped_at < 5
    assert traffic.returncode == 0, stderr
    run = parse_traffic(stdout.splitlines())
    assert run.summary["stopped_by"] == "signal" and run.summary["flows_alive"] == 20
    assert run.broken == [] and run.conn_failed == []
    assert {u["port"] - u["flow"] for u in run.flows_up} == {start_port}  # flow i from START+i


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_new_connection_ports_cycle_past_busy_and_flow_ports():
    busy = socket.socket()
    for _ in range(50):  # a random block of free ports (something else may hold one: CI once had low + 2 taken)
        low = random.randrange(20000, 30000, 10)
        try:
            busy.bind(("127.0.0.1", low + 2))
        except OSError:
            continue
        if all(_free(port) for port in (low, low + 1, low + 3, low + 4)):
            break
        busy.close()
        busy = socket.socket()
    cycle = PortCycle(low, low + 4, skip=range(low + 1, low + 2), first=low)
    try:
        sockets = [cycle.open(socket.AF_INET) for _ in range(3)]
        assert [s.getsockname()[1] for s in sockets] == [low, low + 3, low + 4]
        assert cycle.wraps == 1
        with cycle.open(socket.AF_INET) as again:  # low is still held: all taken, so the kernel picks
            assert again.getsockname()[1] == 0 or again.getsockname()[1] not in range(low, low + 5)
        sockets[0].close()
        with cycle.open(socket.AF_INET) as reused:
            assert reused.getsockname()[1] == low
    finally:
        for sock in sockets:
            sock.close()
        busy.close()
