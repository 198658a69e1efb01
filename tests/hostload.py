"""A CPU hog on the host, for kernel tests that must hold on a busy machine.

The host's test session (tests/conftest.py) runs `HostLoadService` beside the VM batch: while
the file `cpu-hog.request` exists in the batch's shared directory, one busy process keeps one
host core at 100% (what `stress-ng --cpu 1` does), and `cpu-hog.running` holds its pid. A test
inside the VM asks for it with `host_cpu_hog()`. Run in place (a kernel with IPVS, no VM), the
same context manager starts the busy process itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REQUEST, RUNNING = "cpu-hog.request", "cpu-hog.running"
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]
LONGEST = 900.0  # seconds a hog may run, even if its request is never taken back


class HostLoadService(threading.Thread):
    """Starts and stops the host's busy process as the VM's requests come and go."""

    def __init__(self, directory: Path):
        super().__init__(daemon=True, name="lvscluster-host-load")
        self.directory, self.halt = directory, threading.Event()
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def run(self) -> None:
        try:
            while not self.halt.wait(0.2):
                wanted = (self.directory / REQUEST).exists() and time.monotonic() - self.started < LONGEST \
                    if self.process else (self.directory / REQUEST).exists()
                if wanted and self.process is None:
                    self.process, self.started = subprocess.Popen(BUSY_LOOP), time.monotonic()
                    (self.directory / RUNNING).write_text(str(self.process.pid))
                elif not wanted and self.process is not None:
                    self._stop_hog()
        finally:
            self._stop_hog()

    def _stop_hog(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        (self.directory / RUNNING).unlink(missing_ok=True)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


@contextlib.contextmanager
def host_cpu_hog(timeout: float = 30.0):
    """One host core kept busy for the duration of the block (asked of the host from inside the VM)."""
    results = os.environ.get("LVSCLUSTER_VM_RESULTS")
    if not results:  # in place: this machine is the host
        process = subprocess.Popen(BUSY_LOOP)
        try:
            yield process.pid
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        return
    directory = Path(results).parent
    (directory / REQUEST).write_text("busy one core\n")
    try:
        deadline = time.monotonic() + timeout
        while not (directory / RUNNING).exists():
            assert time.monotonic() < deadline, f"the host did not start its CPU hog within {timeout:g} s"
            time.sleep(0.2)
        yield int((directory / RUNNING).read_text())
    finally:
        (directory / REQUEST).unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while (directory / RUNNING).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
