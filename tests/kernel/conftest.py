"""Kernel tests' shared check: a test module leaves no process behind when its labs are down.

All kernel tests share one VM. An agent, FRR daemon, ExaBGP or test server that an earlier
module's `lab down` missed keeps running there and takes the CPU of every later test: the
busy-host scaletest then starves on what an earlier lab left, and its verdict says "outside the
lab", not why. So each module is checked when its fixtures are gone.
"""

from __future__ import annotations

import os
import time

import pytest

from lvscluster.apply.processes import stat_fields

SETTLE_S = 10  # processes a lab down terminated may take this long to exit under emulation


def user_processes() -> dict[tuple[int, str], str]:
    """(pid, start time) -> command line of every user-space process now (kernel threads have an
    empty command line), except this pytest and its ancestors."""
    own, pid = set(), os.getpid()
    while pid > 1 and (found := stat_fields(str(pid))):
        own.add(pid)
        pid = int(found[1][1])  # ppid
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if command and (found := stat_fields(entry)):
            processes[(int(entry), found[1][19])] = command  # proc(5) field 22: start time
    return processes


@pytest.fixture(scope="module", autouse=True)
def leaves_no_processes_behind(request):
    """After the module's own fixtures (its labs) are torn down, every process it started is gone."""
    before = user_processes()
    yield
    deadline = time.monotonic() + SETTLE_S
    while (left := {k: v for k, v in user_processes().items() if k not in before}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, (f"{request.module.__name__} left {len(left)} processes running: "
                      + "; ".join(f"{pid}: {command[:120]}" for (pid, _), command in sorted(left.items())))
