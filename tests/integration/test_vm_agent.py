"""The lab VM's agent, run here on the host: the same loop answers the host inside a VM.

It takes `<id>.req` files and answers with `<id>.out`, `<id>.err` and `<id>.rc`; `lvscluster`
command lines run in a child forked from the agent (already warm), other commands are spawned.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lvscluster.files import write_atomic
from lvscluster.cli import vmagent

ROOT = Path(__file__).resolve().parents[2]


def ask(directory: Path, request_id: str, request: dict, timeout: float = 60) -> tuple[int, str, str]:
    """Drop a request as the host does; its exit code, stdout and stderr once answered."""
    write_atomic(directory / f"{request_id}.req", json.dumps({"cwd": str(ROOT), "env": {}, "stdin": "", **request}))
    rc = directory / f"{request_id}.rc"
    deadline = time.monotonic() + timeout
    while not rc.exists():
        assert time.monotonic() < deadline, f"no answer to {request}"
        time.sleep(0.05)
    return int(rc.read_text()), (directory / f"{request_id}.out").read_text(), (directory / f"{request_id}.err").read_text()


def test_the_agent_runs_cli_lines_and_commands_and_stops_on_request(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-m", "lvscluster.cli.vmagent", str(tmp_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / vmagent.READY).exists():
            assert time.monotonic() < deadline and agent.poll() is None, agent.stdout.read() if agent.poll() is not None else ""
            time.sleep(0.05)
        assert json.loads((tmp_path / vmagent.READY).read_text()) == {"pid": agent.pid, "protocol": vmagent.PROTOCOL}

        code, out, err = ask(tmp_path, "valid", {"cli": ["validate", "topology/demo.lvs.yml"]})
        assert (code, out.strip(), err) == (0, "topology/demo.lvs.yml: valid", ""), (code, out, err)
        # an error of the command: its own message and exit code, and the agent goes on
        code, out, err = ask(tmp_path, "missing", {"cli": ["validate", "no-such.lvs.yml"]})
        assert code != 0 and "no-such.lvs.yml" in out + err and "Traceback" not in out + err, (code, out, err)
        code, out, err = ask(tmp_path, "env", {"argv": ["sh", "-c", "echo $LVSCLUSTER_IN_VM $X; exit 3"], "env": {"X": "y"}})
        assert (code, out) == (3, "1 y\n"), (code, out, err)
        code, _, err = ask(tmp_path, "nothing", {"argv": ["/no/such/program"]})
        assert code == 127 and "cannot run /no/such/program" in err, err

        (tmp_path / vmagent.SHUTDOWN).write_text("")
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        agent.wait()


def test_an_idle_agent_looks_less_often_and_still_answers(tmp_path: Path) -> None:
    """Under emulation each look at the shared 9p directory costs guest CPU: after BUSY_FOR s
    without a request the agent backs off to POLL_IDLE, and a request then is still answered."""
    schedule, poll = [], vmagent.POLL_BUSY
    for since in (0.0, 1.0, vmagent.BUSY_FOR + 0.1, vmagent.BUSY_FOR + 0.3, 10.0, 20.0, 30.0):
        poll = vmagent.next_poll(since, poll)
        schedule.append(poll)
    assert schedule[:2] == [vmagent.POLL_BUSY] * 2
    assert schedule[2:] == sorted(schedule[2:]) and schedule[-1] == vmagent.POLL_IDLE, schedule
    agent = subprocess.Popen([sys.executable, "-m", "lvscluster.cli.vmagent", str(tmp_path)], cwd=ROOT)
    try:
        time.sleep(vmagent.BUSY_FOR + 2)  # idle: backed off
        started = time.monotonic()
        code, out, _ = ask(tmp_path, "late", {"argv": ["echo", "late"]})
        assert (code, out) == (0, "late\n")
        assert time.monotonic() - started < vmagent.POLL_IDLE + 5
        (tmp_path / vmagent.SHUTDOWN).write_text("")
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        agent.wait()
