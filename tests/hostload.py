"""A CPU hog on the host, for kernel tests that must hold on a busy machine.

The host's test session (tests/conftest.py) runs `HostLoadService` beside the VM batch: while
the file `cpu-hog.request` exists in the batch's shared directory, one busy process keeps one
host core at 100% (what `stress-ng --cpu 1` does), and `cpu-hog.running` holds its pid. A test
inside the VM asks for it with `host_cpu_hog()`. Run in place (a kernel with IPVS, no VM), the
same context manager starts the busy process itself.

The hog runs beside the VM alone: while the host's own tests still run (at nice 10, they still
took up to half a core beside the VM under sched_autogroup), the service holds the request back
and says so in `cpu-hog.waiting`, until they are done or HOST_TESTS_WAIT has passed. A test that
asks for "one busy core" then gets one, not one plus the host's suite.

When the hog stops, `cpu-hog.load` says how busy the host's cores were meanwhile (from
/proc/stat): the hog's own share, the rest at nice 0 (the VM, when there is one), and the time
at a positive nice (the host's own tests, which tests/conftest.py lowers beside the VM). A test
that claims "one core busy" can then show that the host was not busier than that.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lvscluster.lab.vm import cpu_times

REQUEST, RUNNING, LOAD, WAITING = "cpu-hog.request", "cpu-hog.running", "cpu-hog.load", "cpu-hog.waiting"
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]
LONGEST = 900.0  # seconds a hog may run, even if its request is never taken back
HOST_TESTS_WAIT = 1200.0  # seconds a request waits for the host's own tests to finish (then the hog starts anyway)


def _start_busy_loop() -> subprocess.Popen:
    """The busy process at nice 0 whoever starts it: one started from the host's tests would
    inherit their nice 10 and take a few percent of a core beside the VM, not the whole of one
    (test_hostload met that: 2 ticks in 0.5 s)."""
    return subprocess.Popen(BUSY_LOOP, preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0))


def process_ticks(pid: int) -> int:
    """Clock ticks process *pid* has run (utime + stime), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def load_beside(before: dict[str, int], hog_ticks: int, seconds: float) -> dict[str, float]:
    """Cores busy on average since *before*: the hog, the rest at nice 0, and at a positive nice."""
    after, hz = cpu_times(), os.sysconf("SC_CLK_TCK")
    cores = {k: (after[k] - before[k]) / hz / max(seconds, 1e-3) for k in after}
    hog = hog_ticks / hz / max(seconds, 1e-3)
    return {"seconds": round(seconds, 1), "cores": os.cpu_count() or 1, "hog": round(hog, 2),
            "other_nice0": round(max(0.0, cores["normal"] - hog), 2), "niced": round(cores["nice"], 2),
            "idle": round(cores["idle"], 2)}


class HostLoadService(threading.Thread):
    """Starts and stops the host's busy process as the VM's requests come and go."""

    def __init__(self, directory: Path, host_tests_done: threading.Event | None = None):
        super().__init__(daemon=True, name="lvscluster-host-load")
        self.directory, self.halt = directory, threading.Event()
        self.host_tests_done = host_tests_done  # None: nothing to wait for
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.asked: float | None = None  # when the pending request was first seen
        self.before: dict[str, int] = {}

    def run(self) -> None:
        try:
            while not self.halt.wait(0.2):
                wanted = (self.directory / REQUEST).exists() and time.monotonic() - self.started < LONGEST \
                    if self.process else (self.directory / REQUEST).exists()
                if wanted and self.process is None and self._host_busy_with_its_tests():
                    continue
                if wanted and self.process is None:
                    self.process, self.started, self.before = _start_busy_loop(), time.monotonic(), cpu_times()
                    (self.directory / WAITING).unlink(missing_ok=True)
                    (self.directory / RUNNING).write_text(str(self.process.pid))
                elif not wanted and self.process is not None:
                    self._stop_hog()
        finally:
            self._stop_hog()

    def _host_busy_with_its_tests(self) -> bool:
        """True (and said in WAITING) while a request waits for the host's own tests to end."""
        if self.host_tests_done is None or self.host_tests_done.is_set():
            return False
        self.asked = self.asked or time.monotonic()
        waited = time.monotonic() - self.asked
        if waited >= HOST_TESTS_WAIT:
            return False
        (self.directory / WAITING).write_text(f"{waited:.0f}")
        return True

    def _stop_hog(self) -> None:
        if self.process is not None:
            load = load_beside(self.before, process_ticks(self.process.pid), time.monotonic() - self.started)
            (self.directory / LOAD).write_text(json.dumps(load))
            self.process.kill()
            self.process.wait()
            self.process = None
        (self.directory / RUNNING).unlink(missing_ok=True)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


class HostHog:
    """The busy process a test asked for: its pid, and once it stopped, how busy the host was."""

    def __init__(self, pid: int):
        self.pid, self.load = pid, {}
        self.waited = 0.0  # seconds the request waited for the host's own tests to finish

    def describe(self) -> str:
        """One line on the host's cores while the hog ran (empty until it stopped)."""
        load = self.load
        if not load:
            return f"host CPU hog pid {self.pid}"
        waited = f" (started after {self.waited:.0f} s: the host's own tests were still running)" if self.waited >= 1 else ""
        return (f"host CPU hog pid {self.pid}{waited}: over {load['seconds']} s of {load['cores']} cores, the hog "
                f"{load['hog']}, the rest at nice 0 (the VM) {load['other_nice0']}, niced (the host's "
                f"own tests) {load['niced']}, idle {load['idle']}")


@contextlib.contextmanager
def host_cpu_hog(timeout: float = 30.0):
    """One host core kept busy for the duration of the block (asked of the host from inside the
    VM); yields a `HostHog` whose `load` is filled in when the block ends."""
    results = os.environ.get("LVSCLUSTER_VM_RESULTS")
    if not results:  # in place: this machine is the host
        process, started, before = _start_busy_loop(), time.monotonic(), cpu_times()
        hog = HostHog(process.pid)
        try:
            yield hog
        finally:
            hog.load = load_beside(before, process_ticks(process.pid), time.monotonic() - started)
            process.send_signal(signal.SIGKILL)
            process.wait()
        return
    directory = Path(results).parent
    (directory / REQUEST).write_text("busy one core\n")
    hog = None
    try:
        asked = time.monotonic()
        deadline = asked + timeout
        while not (directory / RUNNING).exists():
            if (directory / WAITING).exists():  # the host's own tests are still running: it said so
                deadline = max(deadline, asked + HOST_TESTS_WAIT + timeout)
            assert time.monotonic() < deadline, f"the host did not start its CPU hog within {deadline - asked:g} s"
            time.sleep(0.2)
        hog = HostHog(int((directory / RUNNING).read_text()))
        hog.waited = time.monotonic() - asked
        yield hog
    finally:
        (directory / REQUEST).unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while (directory / RUNNING).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if hog is not None:
            with contextlib.suppress(OSError, ValueError):
                hog.load = json.loads((directory / LOAD).read_text())
        (directory / LOAD).unlink(missing_ok=True)


@contextlib.contextmanager
def vm_cpus_as_booted_beside_the_hog():
    """Inside the test VM: take every vCPU but the first offline for the block, and back online after.

    `lvscluster lab up` boots its VM with one vCPU when only one host core is free
    (`lvscluster.lab.vm.vcpus_for_host`: two emulated vCPUs on one free core stall each other). This
    batch VM was booted on a quiet host with two; with the hog it becomes the VM a user would
    have got. In place (a host kernel with IPVS, no VM) nothing changes."""
    if not os.environ.get("LVSCLUSTER_VM_RESULTS"):
        yield os.cpu_count()
        return
    cpus = sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/online"))
    taken = [p for p in cpus if p.parent.name != "cpu0" and p.read_text().strip() == "1"]
    for path in taken:
        path.write_text("0")
    try:
        yield len(os.sched_getaffinity(0))
    finally:
        for path in taken:
            path.write_text("1")
