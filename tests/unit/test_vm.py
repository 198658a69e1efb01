"""Host-side tests of lvscluster.lab.vm and of the kernel-test plugin (with a fake vng, no VM)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lvscluster.lab import vm

CONFTEST = Path(__file__).parents[1] / "conftest.py"


# -- kernel discovery -------------------------------------------------------------------------
def _kernel(boot: Path, mods: Path, release: str, with_modules: bool = True) -> Path:
    image = boot / f"vmlinuz-{release}"
    image.write_bytes(b"\0")
    if with_modules:
        (mods / release).mkdir(parents=True)
    return image


def test_find_kernel_image_picks_newest_release_with_modules(tmp_path, monkeypatch):
    monkeypatch.delenv("LVSCLUSTER_KERNEL", raising=False)
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    mods.mkdir()
    _kernel(boot, mods, "6.1.0-9-amd64")
    newest = _kernel(boot, mods, "6.1.0-56-amd64")  # 56 > 9 numerically, not as text
    _kernel(boot, mods, "6.12.0-1-amd64", with_modules=False)  # unusable: no modules
    (boot / "config-6.1.0-56-amd64").write_text("")
    assert vm.find_kernel_image(boot, mods) == newest


def test_find_kernel_image_none_when_nothing_fits(tmp_path, monkeypatch):
    monkeypatch.delenv("LVSCLUSTER_KERNEL", raising=False)
    assert vm.find_kernel_image(tmp_path, tmp_path) is None


def test_find_kernel_image_env_override(tmp_path, monkeypatch):
    image = tmp_path / "bzImage"
    image.write_bytes(b"\0")
    monkeypatch.setenv("LVSCLUSTER_KERNEL", str(image))
    assert vm.find_kernel_image(tmp_path / "nope", tmp_path / "nope") == image
    monkeypatch.setenv("LVSCLUSTER_KERNEL", str(tmp_path / "missing"))
    assert vm.find_kernel_image() is None


# -- argv -------------------------------------------------------------------------------------
def test_vng_argv_defaults_are_tcg_9p_and_command_last():
    argv = vm.vng_argv("/boot/vmlinuz-6.1.0-56-amd64", "modprobe ip_vs && true", vng="/v/vng")
    assert argv[:3] == ["/v/vng", "--run", "/boot/vmlinuz-6.1.0-56-amd64"]
    assert "--disable-kvm" in argv and "--force-9p" in argv
    assert argv[argv.index("--memory") + 1] == "1G"
    assert argv[argv.index("--cpus") + 1] == "2"
    assert argv[-2:] == ["--exec", "modprobe ip_vs && true"]


def test_vng_argv_rwdirs_cwd_kvm_extra():
    argv = vm.vng_argv("k", "c", rwdirs=["/tmp/a", Path("/tmp/b")], cwd="/work/main",
                       memory="2G", cpus=4, kvm=True, extra=["--name", "lab"])
    assert "--disable-kvm" not in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--rwdir"] == ["/tmp/a", "/tmp/b"]
    assert argv[argv.index("--cwd") + 1] == "/work/main"
    assert argv[argv.index("--memory") + 1] == "2G"
    assert argv[argv.index("--name") + 1] == "lab"
    assert argv[-2:] == ["--exec", "c"]


def test_cached_trees_are_shared_read_only_and_mounted_with_the_page_cache_on():
    trees = vm.cached_trees()
    assert trees[0] == "/usr" and os.path.realpath(sys.prefix) in trees  # FRR and vtysh; this venv
    assert len(trees) == len(set(trees)) and "/" not in trees
    argv = vm.vng_argv("k", "c", cached=trees)
    (opts,) = [a for a in argv if a.startswith("--qemu-opts=")]
    for i, tree in enumerate(trees):
        assert f"-fsdev local,id=lvsc{i},path={tree},security_model=none,readonly=on" in opts
        assert f"-device virtio-9p-pci,fsdev=lvsc{i},mount_tag=lvsc{i}" in opts
    prelude = vm.guest_prelude(cached=trees)
    assert "cache=loose lvsc0 /usr " in prelude and prelude.index("lvsc0") < prelude.index("modprobe")
    assert not [a for a in vm.vng_argv("k", "c") if a.startswith("--qemu-opts")]  # nothing asked, nothing shared


def test_guest_prelude_loads_ipvs_schedulers_and_tunnels():
    prelude = vm.guest_prelude()
    for mod in ("ip_vs", "ip_vs_mh", "ip_vs_sh", "ip_vs_rr", "ip_vs_wlc", "ipip"):
        assert f" {mod} " in prelude or f" {mod}\n" in prelude
    assert "/usr/sbin" in prelude


# -- IPVS detection ---------------------------------------------------------------------------
def test_kernel_has_ipvs_from_proc_file(tmp_path):
    proc = tmp_path / "ip_vs"
    proc.write_text("IP Virtual Server version 1.2.1\n")
    assert vm.kernel_has_ipvs(proc, modprobe=None) is True


def test_kernel_has_ipvs_false_on_this_host():
    """A real fact on the project's machines: the host kernel has no IPVS and no modules."""
    release = os.uname().release
    if Path("/proc/net/ip_vs").exists() or Path(f"/lib/modules/{release}").exists():
        pytest.skip(f"host kernel {release} has IPVS or loadable modules")
    assert vm.kernel_has_ipvs() is False


# -- lock and run_in_vm with a fake vng -------------------------------------------------------
FAKE_VNG = """\
#!{python}
# Stands in for vng: runs --exec's shell command on the host, in --cwd, modprobe disabled.
import os, subprocess, sys
args = sys.argv[1:]
cmd = args[args.index("--exec") + 1]
cwd = args[args.index("--cwd") + 1] if "--cwd" in args else None
open(os.environ["FAKE_VNG_ARGV"], "w").write("\\n".join(args)) if "FAKE_VNG_ARGV" in os.environ else None
sys.exit(subprocess.call(["sh", "-c", "modprobe() {{ :; }}\\n" + cmd], cwd=cwd))
"""


@pytest.fixture
def fake_vm(tmp_path, monkeypatch):
    """Environment in which lvscluster.lab.vm boots a fake VM: a script that runs the command here."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vng = bindir / "vng"
    vng.write_text(FAKE_VNG.format(python=sys.executable))
    vng.chmod(0o755)
    qemu = bindir / vm.QEMU_BINARY
    qemu.write_text("#!/bin/sh\nexit 0\n")
    qemu.chmod(0o755)
    kernel = tmp_path / "vmlinuz-test"
    kernel.write_bytes(b"\0")
    env = {"LVSCLUSTER_VNG": str(vng), "LVSCLUSTER_KERNEL": str(kernel),
           "LVSCLUSTER_VM_LOCK": str(tmp_path / "vm.lock"), "LVSCLUSTER_VM_WORKDIR": str(tmp_path),
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_run_in_vm_reports_exit_status_and_output(fake_vm, tmp_path):
    lines = []
    res = vm.run_in_vm("echo hello; exit 3", timeout=30, log_path=tmp_path / "log",
                       on_line=lines.append, lock_path=fake_vm["LVSCLUSTER_VM_LOCK"])
    assert res.returncode == 3 and not res.ok and not res.timed_out
    assert "hello" in lines
    assert "hello" in (tmp_path / "log").read_text()


def test_run_in_vm_timeout_kills_the_whole_group(fake_vm, tmp_path):
    marker = tmp_path / "still-running"
    start = time.monotonic()
    res = vm.run_in_vm(f"sleep 30; touch {marker}", timeout=1,
                       lock_path=fake_vm["LVSCLUSTER_VM_LOCK"])
    assert res.timed_out and res.returncode is None
    assert time.monotonic() - start < 15
    time.sleep(0.5)
    out = subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", "the guest's processes outlived the timeout"


def test_run_in_vm_waits_for_the_lock(fake_vm, tmp_path):
    lock = fake_vm["LVSCLUSTER_VM_LOCK"]
    holder = subprocess.Popen(["flock", lock, "sleep", "1.5"])
    time.sleep(0.3)
    told = []
    try:
        res = vm.run_in_vm("true", timeout=30, on_wait=told.append, lock_path=lock)
    finally:
        holder.wait()
    assert res.ok and res.lock_wait >= 0.8 and told


def test_run_in_vm_lock_timeout(fake_vm, tmp_path):
    lock = fake_vm["LVSCLUSTER_VM_LOCK"]
    holder = subprocess.Popen(["flock", lock, "sleep", "3"])
    time.sleep(0.3)
    try:
        with pytest.raises(vm.VMLockTimeout):
            vm.run_in_vm("true", timeout=30, lock_path=lock, lock_timeout=0.5)
    finally:
        holder.wait()


# -- the pytest plugin, end to end with the fake vng ------------------------------------------
INNER_TESTS = """
import os, time, pytest
pytestmark = pytest.mark.kernel

def test_ok():
    assert os.environ["LVSCLUSTER_IN_VM"] == "1"

def test_bad():
    print("inner output")
    assert 1 == 2, "inner failure message"

@pytest.mark.skipif("os.environ.get('LVSCLUSTER_IN_VM') == '1'", reason="skipped inside")
def test_skip_decided_inside():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n

def test_slow():
    if os.environ.get("SLOW"):
        time.sleep(60)
"""


@pytest.fixture
def project(pytester, fake_vm):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    kernel: needs IPVS\n")
    pytester.makepyfile(test_host="def test_host():\n    assert True\n")
    pytester.makepyfile(test_k=INNER_TESTS)
    return pytester


def test_plugin_runs_kernel_tests_in_one_vm_and_reports_each(project):
    res = project.runpytest_subprocess("--kernel-tests=vm", "-rA")
    res.assert_outcomes(passed=5, failed=1, skipped=1, xfailed=1)
    out = res.stdout.str()
    assert out.count("booting") == 1, "one VM boot for the whole batch"
    assert "inner failure message" in out and "inner output" in out
    assert "[in VM] skipped inside" in out
    res.stdout.fnmatch_lines(["PASSED test_k.py::test_param[[]2[]]",
                              "FAILED test_k.py::test_bad - [[]in VM[]] AssertionError: inner*"])


def test_plugin_honours_k_and_m(project):
    res = project.runpytest_subprocess("--kernel-tests=vm", "-k", "param or host")
    res.assert_outcomes(passed=3)
    res = project.runpytest_subprocess("--kernel-tests=vm", "-m", "not kernel")
    res.assert_outcomes(passed=1)
    assert "booting" not in res.stdout.str()


def test_plugin_reports_a_hung_vm(project, monkeypatch):
    monkeypatch.setenv("SLOW", "1")
    res = project.runpytest_subprocess("--kernel-tests=vm", "--vm-timeout=8", "-k", "ok or slow")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*VM batch timed out after 8 s*"])


@pytest.mark.parametrize("ci", ["", "true"])
def test_plugin_without_vm_skips_or_fails_in_ci(project, monkeypatch, ci):
    monkeypatch.setenv("LVSCLUSTER_VNG", "/nonexistent/vng")
    monkeypatch.setenv("CI", ci)
    res = project.runpytest_subprocess("--kernel-tests=vm", "-k", "ok or host", "-rs")
    if ci:
        res.assert_outcomes(passed=1, failed=1)
    else:
        res.assert_outcomes(passed=1, skipped=1)
    res.stdout.fnmatch_lines(["*no VM can be booted: virtme-ng (vng) is not installed*"])


def test_plugin_skip_mode(project):
    res = project.runpytest_subprocess("--kernel-tests=skip", "-k", "ok")
    res.assert_outcomes(skipped=1)


def test_inner_run_executes_in_place(project, monkeypatch):
    """Inside the VM (LVSCLUSTER_IN_VM=1) kernel tests are ordinary tests: no nested VM."""
    monkeypatch.setenv("LVSCLUSTER_IN_VM", "1")
    res = project.runpytest_subprocess("-k", "ok", "--kernel-tests=vm")
    res.assert_outcomes(passed=1)
    assert "booting" not in res.stdout.str()


def test_vm_argv_from_plugin(project, monkeypatch, tmp_path):
    argv_file = tmp_path / "argv"
    monkeypatch.setenv("FAKE_VNG_ARGV", str(argv_file))
    project.runpytest_subprocess("--kernel-tests=vm", "-k", "ok").assert_outcomes(passed=1)
    argv = argv_file.read_text().splitlines()
    assert "--disable-kvm" in argv and "--force-9p" in argv and "--rwdir" in argv
    assert textwrap.dedent(argv[argv.index("--cwd") + 1]) == str(project.path)
