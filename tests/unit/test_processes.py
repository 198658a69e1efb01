"""Signals reach only the process a record names: pid plus start time, never a reused pid."""

from __future__ import annotations

import signal
import subprocess

from lvscluster.apply.processes import alive, signal_if_same, start_time


def test_a_signal_reaches_the_named_process_and_not_one_with_another_start_time() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = start_time(child.pid)
        assert isinstance(started, int) and started > 0
        assert not signal_if_same(child.pid, started + 1, signal.SIGTERM)  # a reused pid: left alone
        assert not signal_if_same(child.pid, None, signal.SIGTERM)
        assert alive(child.pid)
        assert signal_if_same(child.pid, started, signal.SIGTERM)
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert start_time(child.pid) is None and not signal_if_same(child.pid, started, signal.SIGTERM)
    finally:
        child.kill()
        child.wait()
