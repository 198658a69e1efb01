"""How many vCPUs a VM gets: two on a quiet 2-core machine, one when only one core is free."""

from __future__ import annotations

import pytest

from lvscluster.lab import vm


def test_a_busy_machine_gets_one_vcpu_and_is_told_why(monkeypatch):
    monkeypatch.delenv(vm.CPUS_ENV, raising=False)
    assert vm.vcpus_for_host(free=1.9)[0] == 2
    cpus, why = vm.vcpus_for_host(free=1.0)
    assert cpus == 1 and "1.0 of" in why and "stall each other" in why


def test_the_environment_overrides_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(vm.CPUS_ENV, "2")
    assert vm.vcpus_for_host(free=0.2) == (2, f"{vm.CPUS_ENV}=2")
    monkeypatch.setenv(vm.CPUS_ENV, "two")
    with pytest.raises(ValueError, match=f"{vm.CPUS_ENV}='two'"):
        vm.vcpus_for_host()


def test_free_cores_sees_a_busy_loop_on_this_machine():
    """Measured on the real /proc/stat: a busy process at nice 0 takes about one core from what is free."""
    import subprocess
    import sys

    idle_before = vm.free_cores(0.5)
    # at nice 0 even when this test runs niced (the suite lowers its host tests beside the VM):
    # niced work counts as free, by design
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=lambda: vm.os.setpriority(vm.os.PRIO_PROCESS, 0, 0))
    try:
        loaded = vm.free_cores(1.0)
    finally:
        busy.kill()
        busy.wait()
    assert 0 <= loaded <= vm.os.cpu_count()
    assert loaded < idle_before - 0.5 or idle_before < 0.6, (idle_before, loaded)  # unless the machine was full already
