"""A lab VM's record is trusted only on the machine that booted the VM (same kernel boot id).

The kernel-test VM shares the host's files; a `lab down` inside it once found the host's demo lab
VM directory, took the lab for a VM lab, asked the host's VM to shut down and left its own
namespaces behind.
"""

import json
import os
import subprocess

from lvscluster.lab import vmhost


def _record(tmp_path, monkeypatch, boot_id: str, pid: int) -> vmhost.LabVm:
    monkeypatch.setattr(vmhost, "VM_ROOT", tmp_path)
    lab = vmhost.LabVm("demo")
    lab.directory.mkdir()
    (lab.directory / vmhost.READY).write_text("")
    (lab.directory / "vm.json").write_text(json.dumps({"pid": pid, "started": 0, "boot_id": boot_id}))
    return lab


def test_a_vm_this_machine_booted_is_running_while_its_process_lives(tmp_path, monkeypatch) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        lab = _record(tmp_path, monkeypatch, vmhost._boot_id(), sleeper.pid)
        assert lab.running()
        lab.stop(timeout=0)  # kills it: the shutdown request has no agent to read it
        assert sleeper.wait(timeout=5) != 0 and not lab.directory.exists()
    finally:
        sleeper.kill()


def test_a_record_from_another_boot_is_not_ours_to_stop(tmp_path, monkeypatch) -> None:
    lab = _record(tmp_path, monkeypatch, "another-kernel", os.getpid())
    assert lab.record is None and not lab.running()
    lab.stop(timeout=0)
    assert (lab.directory / "vm.json").exists() and not (lab.directory / vmhost.SHUTDOWN).exists()
