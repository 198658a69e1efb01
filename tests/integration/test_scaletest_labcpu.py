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

from lvscluster.scaletest.labcpu import TICKS_PER_S, cpu_use, snapshot
from lvscluster.scaletest.labhealth import cpu_line

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


def ticks(pid: int) -> int:
    """The process's own CPU ticks (utime + stime), read straight from /proc for comparison."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_each_busy_part_is_named_and_an_idle_one_is_not(namespaces) -> None:
    """What each part is given is what its processes used, whatever else the machine runs (in
    the suite these loops run at nice 10 beside the VM batch, and may get little CPU)."""
    roles = {"d1": "director", "rs1": "real_server"}
    agent, idle_server = start(BUSY, namespaces["d1"]), start(IDLE, namespaces["rs1"])
    engine, outsider = start(BUSY), start(BUSY)
    busy = {"agents": agent, "traffic engine": engine, "outside the lab": outsider}
    try:
        time.sleep(1.0)  # the interpreters have started: what is measured below is their loops
        own = {part: ticks(p.pid) for part, p in busy.items()}
        before = snapshot(namespaces, roles, {engine.pid})
        time.sleep(3.0)
        after = snapshot(namespaces, roles, {engine.pid})
        own = {part: ticks(p.pid) - own[part] for part, p in busy.items()}
    finally:
        for process in (agent, idle_server, engine, outsider):
            process.kill()
            process.wait()
    use = cpu_use(before, after)
    shares, cpus = use["shares"], os.cpu_count() or 1
    capacity = use["seconds"] * cpus * TICKS_PER_S
    assert all(own.values()), own  # each loop ran at all: else this test could not tell parts apart
    for part in ("agents", "traffic engine"):  # the loop is the part's only process
        assert abs(shares.get(part, 0) - own[part] / capacity) <= 0.02, (part, own, use)
    assert shares.get("outside the lab", 0) >= own["outside the lab"] / capacity - 0.02, (own, use)
    assert shares.get("test servers", 0) < 0.01, use  # asleep the whole time
    line = cpu_line(use)
    assert line.startswith(f"lab CPU ({cpus} CPU") and "test servers" not in line, line
