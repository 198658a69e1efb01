"""The host CPU hog a kernel test asks for from inside the VM: requested, running, taken back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from hostload import HostLoadService, host_cpu_hog  # noqa: E402


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_request_from_the_vm_keeps_a_host_core_busy_until_taken_back(tmp_path, monkeypatch):
    service = HostLoadService(tmp_path)
    service.start()
    monkeypatch.setenv("LVSCLUSTER_VM_RESULTS", str(tmp_path / "results.jsonl"))  # as inside the VM
    try:
        with host_cpu_hog() as hog:
            pid = hog.pid
            before = cpu_ticks(pid)
            time.sleep(0.5)
            assert cpu_ticks(pid) - before >= 5  # it runs (an idle process gains nothing; this machine may be busy)
        assert not (tmp_path / "cpu-hog.running").exists()
        # how busy the host was meanwhile came back with it: the hog ran, and the shares add up to the cores
        assert hog.load["hog"] > 0.05 and hog.load["seconds"] >= 0.5, hog.load
        total = hog.load["hog"] + hog.load["other_nice0"] + hog.load["niced"] + hog.load["idle"]
        assert abs(total - hog.load["cores"]) < 0.5, hog.load
        assert "the hog" in hog.describe()
        time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    finally:
        service.stop()
    assert service.process is None and os.listdir(tmp_path) == []


def test_in_place_the_hog_says_how_busy_the_host_was_and_counts_niced_work_apart(monkeypatch):
    monkeypatch.delenv("LVSCLUSTER_VM_RESULTS", raising=False)
    with host_cpu_hog() as hog:
        # at nice 10 itself, not 10 more than this test (the suite's host tests already run at 10)
        niced = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                 preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 10))
        try:
            time.sleep(1.0)
        finally:
            niced.kill()
            niced.wait()
    assert not Path(f"/proc/{hog.pid}").exists() or Path(f"/proc/{hog.pid}/stat").read_text().split()[2] == "Z"
    assert hog.load["hog"] > 0.05, hog.load
    # the niced busy loop is counted as niced, not as the VM's (beside the suite's VM and the hog,
    # both at nice 0 on two cores, a loop at nice 10 gets ~7% of a core)
    assert hog.load["niced"] > 0.02, hog.load


def test_a_request_waits_for_the_hosts_own_tests_and_says_so(tmp_path, monkeypatch):
    """While the host's own tests run, the hog is held back (the VM test was promised one busy
    core, not one plus the host's suite) and cpu-hog.waiting says so; once they end it starts,
    and the test's line says how long it waited."""
    host_tests_done = threading.Event()
    service = HostLoadService(tmp_path, host_tests_done)
    service.start()
    monkeypatch.setenv("LVSCLUSTER_VM_RESULTS", str(tmp_path / "results.jsonl"))  # as inside the VM
    threading.Timer(1.5, host_tests_done.set).start()
    try:
        with host_cpu_hog(timeout=1.0) as hog:  # 1 s would not do without the host's word that it waits
            assert not (tmp_path / "cpu-hog.waiting").exists()
            assert hog.waited >= 1.0, hog.waited
            assert (tmp_path / "cpu-hog.running").exists()
        assert "the host's own tests were still running" in hog.describe()
    finally:
        service.stop()
    assert service.process is None and os.listdir(tmp_path) == []
