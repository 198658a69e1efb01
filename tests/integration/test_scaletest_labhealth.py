"""The scaletest tells a starved lab from a failing cluster: real test servers, a real engine, real stalls.

A test server in its own network namespace (reached over a veth, as a real server is) serves the
engine's flows; the engine probes it straight from inside that namespace. Stopping the server
(SIGSTOP) or the engine itself for longer than the echo timeout stalls every flow, but breaks
none, and the verdict says the lab was overloaded. Dropping the flows' packets on the way while
the server answers its probe is a network fault: those flows break, and the run stays valid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lvscluster.scaletest.labhealth import OVERLOADED, VALID, judge
from lvscluster.scaletest.report import parse_traffic

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

ECHO_PORT = 7007


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@pytest.fixture
def server_netns():
    """Namespace NAME with a test server (node rs1) on 10.77.<n>.2:ECHO_PORT, reached from here over a veth."""
    n = os.getpid() % 200 + 20
    name, host, peer = f"lvst-lh-{os.getpid()}", f"lvlh{n}h", f"lvlh{n}p"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    sh("ip", "netns", "add", name)
    server = None
    try:
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", name)
        sh("ip", "addr", "add", f"10.77.{n}.1/24", "dev", host)
        sh("ip", "link", "set", host, "up")
        sh("ip", "-n", name, "addr", "add", f"10.77.{n}.2/24", "dev", peer)
        sh("ip", "-n", name, "link", "set", peer, "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "lvscluster.lab.testserver",
                                   "--node", "rs1", "--tcp", str(ECHO_PORT)])
        deadline = time.monotonic() + 15
        while subprocess.run(["ip", "netns", "exec", name, "ss", "-Htln", f"sport = :{ECHO_PORT}"],
                             capture_output=True, text=True).stdout.strip() == "":
            assert time.monotonic() < deadline, "the test server did not listen"
            time.sleep(0.1)
        yield name, f"10.77.{n}.2", server
    finally:
        if server is not None:
            server.send_signal(signal.SIGCONT)
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def run_engine(netns: str, target: str, during, duration: float = 9.0, echo_timeout: float = 1.5):
    """The engine with 20 flows and a probe of rs1 for `duration` s; `during(engine)` runs at t=3 s."""
    engine = subprocess.Popen([sys.executable, "-m", "lvscluster.scaletest.traffic", "--target", target,
                               "--echo-port", str(ECHO_PORT), "--http-port", str(ECHO_PORT), "--flows", "20",
                               "--rate", "0", "--interval", "0.2", "--duration", str(duration),
                               "--echo-timeout", str(echo_timeout), "--probe", f"rs1={netns}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    during(engine)
    stdout, stderr = engine.communicate(timeout=60)
    assert engine.returncode == 0, stderr
    run = parse_traffic(stdout.splitlines())
    return run, judge(run.summary, run.start, run.ticks)


def test_a_stopped_test_server_stalls_flows_without_breaking_them(server_netns):
    netns, target, server = server_netns

    def stop_server(_):
        server.send_signal(signal.SIGSTOP)
        time.sleep(3.0)  # twice the echo timeout
        server.send_signal(signal.SIGCONT)

    run, lab = run_engine(netns, target, stop_server)
    assert run.summary["flows_established"] == 20 and run.broken == [], run.broken
    probe = run.summary["lab"]["probes"]["rs1"]
    assert probe["rtt_ms_max"] >= 2500 and probe["error"] is None, probe
    assert run.summary["lab"]["stalled_s"] >= 1.5
    assert lab["verdict"] == OVERLOADED and any("rs1's test server" in r for r in lab["reasons"]), lab
    assert any(t.stall_ms >= 500 for t in run.ticks)  # the stalled seconds are on the timeline


def test_a_stopped_engine_breaks_no_flow_and_says_so(server_netns):
    netns, target, _ = server_netns

    def stop_engine(engine):
        engine.send_signal(signal.SIGSTOP)
        time.sleep(3.0)
        engine.send_signal(signal.SIGCONT)

    run, lab = run_engine(netns, target, stop_engine)
    assert run.broken == [], run.broken
    assert run.summary["lab"]["engine_stalled_s"] >= 2.5
    assert lab["verdict"] == OVERLOADED and any("loop stalled" in r for r in lab["reasons"]), lab


def test_flows_black_holed_on_the_way_break_while_the_lab_stays_valid(server_netns):
    """The server answers its probe over loopback; the flows' packets die on the veth: a real fault."""
    netns, target, _ = server_netns

    def black_hole(_):
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"], check=True, text=True,
            input=f"table inet lvst {{ chain in {{ type filter hook input priority 0; iifname != \"lo\" "
                  f"tcp dport {ECHO_PORT} drop; }}; }}\n")  # nft's one-line form wants ';' after the chain

    run, lab = run_engine(netns, target, black_hole)
    assert {b.reason for b in run.broken} == {"timeout"} and len(run.broken) == 20, run.broken
    assert run.summary["lab"]["probes"]["rs1"]["rtt_ms_max"] < 1000
    assert lab["verdict"] == VALID, lab


def test_rate_auto_measures_what_a_real_test_server_carries_once_the_flows_are_up(server_netns):
    """`--rate auto`'s calibration against a real test server (the engine in its namespace): it
    counts new connections once every flow has had its first echo, and paces at 30% of that."""
    from lvscluster.scaletest.capacity import AUTO_SHARE, measure_capacity
    from lvscluster.scaletest.run import ScaleTest

    netns, target, _ = server_netns
    test = ScaleTest(flows=20, rate=None, duration=30, echo_port=ECHO_PORT, http_port=ECHO_PORT, interval=0.5)
    said: list[str] = []
    found = measure_capacity(netns, target, test, ["--probe", f"rs1={netns}"], said.append)
    assert found["flows_broken"] == 0 and found["new_failed"] == 0, found
    assert found["carried_per_s"] > 5, found  # a quiet test server on this machine does hundreds per second
    assert found["rate"] == max(1.0, round(found["carried_per_s"] * AUTO_SHARE, 1)), found
    assert found["lab"]["verdict"] == VALID and "the lab carried" in said[-1], (found, said)
