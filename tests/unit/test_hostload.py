"""The host CPU hog a kernel test asks for from inside the VM: requested, running, taken back."""

from __future__ import annotations

import os
import sys
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
        with host_cpu_hog() as pid:
            before = cpu_ticks(pid)
            time.sleep(0.5)
            assert cpu_ticks(pid) - before >= 5  # it runs (an idle process gains nothing; this machine may be busy)
        assert not (tmp_path / "cpu-hog.running").exists()
        time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    finally:
        service.stop()
    assert service.process is None and os.listdir(tmp_path) == []
