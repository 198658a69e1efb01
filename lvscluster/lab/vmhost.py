"""A lab VM: when this kernel has no IPVS, a lab lives in a virtme-ng VM that stays up.

`lab up` boots Debian's kernel once (software emulation, ~35 s), the VM runs
`lvscluster.cli.vmagent` over a directory shared with the host, and every later lab-facing
command (`deploy`, `plan`, `status`, `lab exec|status|down`, ...) is re-run inside the VM with
its output streamed back. The VM holds the machine's VM lock for its whole life, so kernel
tests wait for `lab down` instead of competing for the two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lvscluster.apply.processes import alive
from lvscluster.errors import EnvironmentProblem, LvsClusterError
from lvscluster.files import write_atomic
from lvscluster.lab import vm

VM_ROOT = Path(os.environ.get("LVSCLUSTER_VM_DIR", "/tmp/lvscluster-labvm"))
REPO = Path(__file__).resolve().parent.parent.parent
BOOT_TIMEOUT = 300
DEFAULT_MEMORY = "2G"
# the VM agent's protocol: files in the shared directory (the agent, `cli.vmagent`, runs them)
PROTOCOL = 2  # bump when requests or answers change: a host refuses an agent that speaks another
READY = "ready"
SHUTDOWN = "shutdown"


def vm_dir(lab: str) -> Path:
    """The directory shared with a lab's VM."""
    return VM_ROOT / lab


def _boot_id() -> str:
    """This kernel's boot id: a VM guest and its host differ even when they share files."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def needs_vm() -> bool:
    """True when this kernel cannot run IPVS, so labs must live in a VM."""
    if os.environ.get("LVSCLUSTER_IN_VM"):
        return False
    return not vm.kernel_has_ipvs()


class LabVm:
    """A running lab VM, driven through its shared directory."""

    def __init__(self, lab: str):
        self.lab = lab
        self.directory = vm_dir(lab)

    @property
    def record(self) -> dict | None:
        """What `start` wrote (the vng pid, when it started), if this very machine started it.

        A VM guest sharing the host's files (a kernel-test VM) sees the record too; the boot id
        tells it that the pid is not one of its own processes.
        """
        try:
            record = json.loads((self.directory / "vm.json").read_text())
        except (OSError, ValueError):
            return None
        return None if self._foreign(record) else record

    @staticmethod
    def _foreign(record: dict) -> bool:
        return record.get("boot_id", _boot_id()) != _boot_id()

    def running(self) -> bool:
        """True when the VM's agent is up and its vng process alive."""
        record = self.record
        if not record or not (self.directory / READY).exists():
            return False
        try:
            os.kill(record["pid"], 0)
            return True
        except OSError:
            return False

    def start(self, progress: Callable[[str], None], memory: str = DEFAULT_MEMORY) -> None:
        """Boot the VM and wait until its agent answers."""
        reason = vm.vm_unavailable_reason()
        if reason:
            raise EnvironmentProblem(f"this kernel has no IPVS and no VM can be booted: {reason}")
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        lock_fd = os.open(vm.LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl

            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LvsClusterError(f"another VM holds {vm.LOCK_PATH} (a test run or another lab); "
                                      "this machine runs one VM at a time: wait for it or stop it") from None
            command = (f"cd {REPO} && exec {sys.executable} -m lvscluster.cli.vmagent {self.directory}")
            try:
                cpus, why = vm.vcpus_for_host()
            except ValueError as exc:
                raise LvsClusterError(str(exc)) from None
            cached = vm.cached_trees()
            argv = vm.vng_argv(vm.find_kernel_image(), vm.guest_prelude(cached=cached) + command, vng=vm.find_vng(),
                               memory=memory, cpus=cpus, rwdirs=[self.directory], cwd=REPO, cached=cached)
            env = dict(os.environ)
            env["PATH"] = os.pathsep.join([str(Path(vm.find_vng()).parent), env.get("PATH", vm.GUEST_PATH)])
            console = open(self.directory / "console.log", "wb")
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, pass_fds=(lock_fd,))
            console.close()
        finally:
            os.close(lock_fd)  # the lock stays held by vng/qemu, which inherited it
        (self.directory / "vm.json").write_text(json.dumps({"pid": proc.pid, "started": time.time(), "boot_id": _boot_id(),
                                                           "cpus": cpus}))
        progress(f"booting a VM with Debian's kernel for IPVS (this kernel has none; software emulation takes ~35 s); "
                 f"{cpus} vCPU{'s' if cpus > 1 else ''}: {why}")
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not (self.directory / READY).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "console.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise LvsClusterError(f"the lab VM did not come up (log {self.directory}/console.log):\n{tail}")
            time.sleep(0.2)
        progress(f"VM up after {time.monotonic() - deadline + BOOT_TIMEOUT:.0f} s")

    def run(self, argv: list[str], *, cli: bool = False, stdin: str = "", cwd: str | None = None,
            env: dict[str, str] | None = None,
            on_stdout: Callable[[bytes], None] | None = None, on_stderr: Callable[[bytes], None] | None = None,
            timeout: float | None = None) -> int:
        """Run `argv` inside the VM, streaming its output to the callbacks; returns its exit code.

        With `cli`, `argv` are `lvscluster` arguments, run by the VM's warm agent (no Python start-up).
        """
        if not self.running():
            raise LvsClusterError(f"the VM of lab {self.lab} is not running: run `lvscluster lab down` and `lab up` again")
        try:
            protocol = json.loads((self.directory / READY).read_text()).get("protocol")
        except (OSError, ValueError, AttributeError):
            protocol = None
        if protocol != PROTOCOL:
            raise LvsClusterError(f"the VM of lab {self.lab} runs another lvscluster version (agent protocol {protocol}, "
                                  f"this one {PROTOCOL}): run `lvscluster lab down` and `lab up` again")
        request_id = uuid.uuid4().hex
        request = {"cli" if cli else "argv": argv, "stdin": stdin, "cwd": cwd or str(REPO), "env": env or {}}
        write_atomic(self.directory / f"{request_id}.req", json.dumps(request))
        streams = [(self.directory / f"{request_id}.out", on_stdout or _write(sys.stdout)),
                   (self.directory / f"{request_id}.err", on_stderr or _write(sys.stderr))]
        offsets = [0, 0]
        rc_path = self.directory / f"{request_id}.rc"
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            finished = rc_path.exists()
            for i, (path, sink) in enumerate(streams):
                try:
                    with open(path, "rb") as handle:
                        handle.seek(offsets[i])
                        chunk = handle.read()
                except FileNotFoundError:
                    continue
                if chunk:
                    offsets[i] += len(chunk)
                    sink(chunk)
            if finished:
                code = int(rc_path.read_text() or 1)
                for suffix in (".out", ".err", ".rc", ".running"):
                    (self.directory / f"{request_id}{suffix}").unlink(missing_ok=True)
                return code
            if deadline and time.monotonic() > deadline:
                raise LvsClusterError(f"{' '.join(argv)} did not finish in the VM within {timeout:.0f} s")
            if not self.running():
                raise LvsClusterError(f"the VM of lab {self.lab} stopped while running {' '.join(argv)}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> None:
        """Ask the agent to exit (the VM powers off), kill it if it does not, remove the directory.
        Does nothing to a VM another machine started (see `record`)."""
        try:
            if self._foreign(json.loads((self.directory / "vm.json").read_text())):
                return
        except (OSError, ValueError):
            pass
        record = self.record
        if self.directory.exists():
            (self.directory / SHUTDOWN).write_text("")
        if record:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and alive(record["pid"]):
                time.sleep(0.2)
            if alive(record["pid"]):
                try:
                    os.killpg(record["pid"], signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def stage(self, path: Path) -> str:
        """Copy a host file into the shared directory; returns its path as the VM sees it."""
        staged = self.directory / "files" / path.name
        staged.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, staged)
        return str(staged)


def _write(stream) -> Callable[[bytes], None]:
    def sink(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.flush()
    return sink


def running_vm_labs() -> list[str]:
    """Labs whose VM is running on this machine."""
    if not VM_ROOT.exists():
        return []
    return sorted(p.name for p in VM_ROOT.iterdir() if LabVm(p.name).running())
