"""The scaletest says which part of the lab took the CPU: real busy processes, a real namespace, /proc.

A busy process in a namespace whose node is a director counts as the agents', one in a real
server's namespace as the test servers', the engine's pid as the traffic engine's, a busy
process outside every lab namespace as outside the lab; an idle one counts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lvscluster.scaletest.labcpu import cpu_line, cpu_use, snapshot

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

BUSY = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
IDLE = "import time; time.sleep(60)"


@pytest.fixture
def namespaces():
    """Two lab namespaces: node d1 (a director) and rs1 (a real server)."""
    names = {"d1": f"lvst-cpu-d1-{os.getpid()}", "rs1": f"lvst-cpu-rs1-{os.getpid()}"}
    for name in names.values():
        subprocess.run(["ip", "netns", "add", name], check=True)
    yield names
    for name in names.values():
        subprocess.run(["ip", "netns", "del", name], check=False)


def start(code: str, netns: str | None = None) -> subprocess.Popen:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.Popen([*prefix, sys.executable, "-c", code])


def test_each_busy_part_is_named_and_an_idle_one_is_not(namespaces) -> None:
    roles = {"d1": "director", "rs1": "real_server"}
    agent, idle_server = start(BUSY, namespaces["d1"]), start(IDLE, namespaces["rs1"])
    engine, outsider = start(BUSY), start(BUSY)
    try:
        time.sleep(1.0)  # the interpreters have started: what is measured below is their loops
        before = snapshot(namespaces, roles, {engine.pid})
        time.sleep(2.0)
        after = snapshot(namespaces, roles, {engine.pid})
    finally:
        for process in (agent, idle_server, engine, outsider):
            process.kill()
            process.wait()
    use = cpu_use(before, after)
    shares, cpus = use["shares"], os.cpu_count() or 1
    # three loops on `cpus` CPUs: each gets at most one CPU, at least a fair part of them (other
    # tests may run beside this one, so only a loose lower bound)
    for part in ("agents", "traffic engine", "outside the lab"):
        assert 0.1 / cpus <= shares.get(part, 0) <= 1.05 / cpus, (part, use)
    assert shares.get("test servers", 0) < 0.02, use  # asleep the whole time
    assert use["busy"] >= min(1.0, 3 / cpus) * 0.5, use
    line = cpu_line(use)
    assert line.startswith(f"lab CPU ({cpus} CPU") and "agents" in line and "test servers" not in line, line
