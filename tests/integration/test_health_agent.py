"""The agents of a netns lab on this machine: checks from each director, the same verdict on every
director within one interval plus fall x interval, recovery after rise x interval, withdrawal.

This kernel has no IPVS, so the agents cannot program weights here (the kernel test in the VM
checks that); what is tested is what they decide and record, which `deploy` and `status` read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvscluster.runfiles import read_health_record as read_record
from lvscluster.lab import netns as provider
from lvscluster.lab.common import processes_in
from lvscluster.lab.record import state_dir

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path("/usr/lib/frr/zebra").exists(), reason="FRR is not installed (apt-get install frr)"),
]

INTERVAL, FALL, RISE = 0.5, 2, 3
TOPOLOGY = f"""
name: {{name}}
vips:
  - name: web
    address: 10.99.0.10
    services:
      - {{{{protocol: tcp, port: 80}}}}
      - {{{{protocol: udp, port: 53, health: {{{{type: udp, send: ping, expect: ping, interval: {INTERVAL}, fall: {FALL}, rise: {RISE}}}}}}}}}
    real_servers: [{{{{node: rs1}}}}, {{{{node: rs2}}}}]
    health: {{{{type: http, path: /, interval: {INTERVAL}, fall: {FALL}, rise: {RISE}}}}}
nodes:
  r1: {{{{role: router, router_id: 10.255.0.1}}}}
  d1: {{{{role: director, router_id: 10.255.0.11}}}}
  d2: {{{{role: director, router_id: 10.255.0.12}}}}
  rs1: {{{{role: real_server}}}}
  rs2: {{{{role: real_server}}}}
links:
  - {{{{endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}}}}
  - {{{{endpoints: [r1:d2, d2:up0], subnet: 10.1.2.0/30}}}}
  - {{{{name: lan0, endpoints: [r1:lan0, d1:lan0, d2:lan0, rs1:eth0, rs2:eth0], subnet: 10.2.0.0/24}}}}
"""
KEYS = ("web tcp/80", "web udp/53")


@pytest.fixture
def lab(tmp_path: Path):
    name = f"hag{os.getpid() % 100000}"
    path = tmp_path / "agents.lvs.yml"
    path.write_text(TOPOLOGY.format(name=name))
    result = subprocess.run([sys.executable, "-m", "lvscluster.cli", "lab", "up", "--no-vm", str(path)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "starting the health-check agent on 2 directors" in result.stderr
    yield name
    provider.down(name)


def records(lab: str) -> dict[str, dict]:
    return {d: read_record(d, f"{lab}.{d}") or {} for d in ("d1", "d2")}


def wait_until(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


def targets_of(record: dict, real_server: str) -> list[dict]:
    return [record.get("targets", {}).get(f"{key} {real_server}", {}) for key in KEYS]


def test_every_director_quiesces_a_dead_real_server_and_takes_it_back(lab: str) -> None:
    def all_up():
        recs = records(lab)
        return all(t.get("up") and t.get("checks", 0) >= 1 for r in recs.values() for rs in ("rs1", "rs2") for t in targets_of(r, rs))
    assert wait_until(all_up, 60), records(lab)
    assert all(r["verdict"] == {"quiesced": [], "withdrawn": [], "sorry": []} for r in records(lab).values())

    (server,) = processes_in(f"{lab}.rs2")
    killed = time.time()
    os.kill(server, 9)
    def rs2_down():
        recs = records(lab)
        return recs if all(not t.get("up", True) for r in recs.values() for t in targets_of(r, "rs2")) else None
    recs = wait_until(rs2_down, 10)
    assert recs, records(lab)
    for record in recs.values():
        assert record["verdict"]["quiesced"] == ["web tcp/80 rs2", "web udp/53 rs2"] and record["verdict"]["withdrawn"] == []
        assert all(t.get("up") for t in targets_of(record, "rs1"))  # the other server is untouched
        http, udp = targets_of(record, "rs2")
        assert "refused" in http["detail"] and "refused" in udp["detail"], (http, udp)
    # each director saw it within fall checks (plus one interval of phase and the check's own time)
    changed = [t["changed_at"] for r in recs.values() for t in targets_of(r, "rs2")]
    assert max(changed) - killed <= INTERVAL + FALL * INTERVAL + 0.5, (killed, changed)
    # the directors disagreed for at most one interval plus fall x interval
    for i in range(len(KEYS)):
        d1, d2 = (targets_of(recs[d], "rs2")[i]["changed_at"] for d in ("d1", "d2"))
        assert abs(d1 - d2) <= INTERVAL + FALL * INTERVAL, (KEYS[i], d1, d2)

    restarted = time.time()
    subprocess.Popen(["ip", "netns", "exec", f"{lab}.rs2", sys.executable, "-m", "lvscluster.lab.testserver",
                      "--node", "rs2", "--tcp", "80", "--udp", "53"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    def rs2_up():
        recs = records(lab)
        return recs if all(t.get("up") for r in recs.values() for t in targets_of(r, "rs2")) else None
    recs = wait_until(rs2_up, 15)
    assert recs, records(lab)
    assert all(r["verdict"]["quiesced"] == [] for r in recs.values())
    back = [t["changed_at"] for r in recs.values() for t in targets_of(r, "rs2")]
    assert min(back) - restarted >= (RISE - 1) * INTERVAL  # rise successes in a row, not the first one
    assert max(back) - restarted <= 3 + INTERVAL + RISE * INTERVAL  # the server's own start takes ~1-2 s


def test_no_healthy_real_server_withdraws_the_vip(lab: str) -> None:
    assert wait_until(lambda: all(r.get("targets") for r in records(lab).values()), 60)
    for rs in ("rs1", "rs2"):
        for pid in processes_in(f"{lab}.{rs}"):
            os.kill(pid, 9)
    def withdrawn():
        recs = records(lab)
        return recs if all(r.get("verdict", {}).get("withdrawn") == ["web"] for r in recs.values()) else None
    recs = wait_until(withdrawn, 10)
    assert recs, records(lab)
    log = (state_dir(lab) / "agent-d1.log").read_text()
    assert "web tcp/80 rs1 is down" in log and "web udp/53 rs2 is down" in log, log
    assert recs["d1"]["verdict"]["quiesced"] == []  # withdrawn: the weights stay (no reset while the router converges)
    assert all(not t["up"] for t in recs["d1"]["targets"].values())


def test_a_second_agent_for_a_director_says_why_it_cannot_start(lab: str, tmp_path: Path) -> None:
    """The lab's agent for d1 holds the metrics port in d1's namespace: another one ends with one
    line naming the port and the likely cause, not a traceback, and the first keeps running."""
    # the agent writes its record after its first round, which a busy machine (CI beside the VM) delays
    record = wait_until(lambda: read_record("d1", f"{lab}.d1"), 60)
    assert record, "d1's agent wrote no record within 60 s"
    first = record["pid"]
    second = subprocess.run([sys.executable, "-m", "lvscluster.cli", "agent", str(tmp_path / "agents.lvs.yml"), "--node", "d1"],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1, second.stderr
    assert "agent d1: cannot serve metrics on 127.0.0.1:9586: Address already in use" in second.stderr, second.stderr
    assert "is an agent for d1 already running?" in second.stderr and "Traceback" not in second.stderr, second.stderr
    os.kill(first, 0)  # still there
    assert read_record("d1", f"{lab}.d1")["pid"] == first


def test_a_woken_agent_converges_at_once_not_at_its_next_repair_round(lab: str) -> None:
    """deploy and `director drain` send SIGHUP (`wake_agent`) after changing a director: the agent
    re-plans with its live verdict then, not up to `repair_interval` (10 s here) later."""
    from lvscluster.apply.backends import wake_agent

    def settled():
        record = read_record("d1", f"{lab}.d1") or {}
        return record if record.get("targets") and all(t["checks"] >= RISE for t in record["targets"].values()) else None
    record = wait_until(settled, 60)
    assert record, read_record("d1", f"{lab}.d1")
    # every check counted up: only the repair round (every 10 s) writes the record now; wake the
    # agent just after one, when the next is ~10 s away
    last = record["updated"]
    before = wait_until(lambda: (read_record("d1", f"{lab}.d1") or {}).get("updated", last) != last and
                        read_record("d1", f"{lab}.d1")["updated"], 15)
    assert before, "no repair round within 15 s"
    woken = time.time()
    assert wake_agent("d1", f"{lab}.d1")
    updated = wait_until(lambda: (read_record("d1", f"{lab}.d1") or {}).get("updated", 0) > before and
                         read_record("d1", f"{lab}.d1")["updated"], 8)
    assert updated and updated - woken < 5, (before, woken, updated)
    assert not wake_agent("d9", f"{lab}.d1")  # no record, no signal
