"""Boot a Debian kernel with IPVS under virtme-ng (QEMU) and detect IPVS in the running kernel."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Lock file serialising VM boots across processes (compatible with ``flock(1)``).
LOCK_PATH = "/tmp/lvscluster-vm.lock"

#: Modules a guest loads before running anything: IPVS with every scheduler lvscluster
#: uses, plus the tunnel and virtual-link drivers tests and the lab build topologies with.
GUEST_MODULES = (
    "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_mh",
    "ipip", "fou", "dummy", "veth", "bridge", "macvlan",
)

#: PATH used inside the guest (the host's may lack the sbin directories).
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_MEMORY = "1G"
DEFAULT_CPUS = 2
CPUS_ENV = "LVSCLUSTER_VM_CPUS"  # overrides `vcpus_for_host`
QEMU_BINARY = "qemu-system-x86_64"


@dataclass
class VMResult:
    """Outcome of one VM run."""

    returncode: int | None  # None when the VM was killed on timeout
    timed_out: bool
    duration: float  # seconds from launch to exit, lock wait excluded
    lock_wait: float  # seconds spent waiting for the VM lock
    log_path: Path | None  # where the guest console output was written, if asked

    @property
    def ok(self) -> bool:
        """True when the guest command exited with status 0."""
        return self.returncode == 0 and not self.timed_out


class VMLockTimeout(RuntimeError):
    """The VM lock stayed busy longer than allowed."""


def cpu_times() -> dict[str, int]:
    """This machine's CPU time so far in clock ticks (/proc/stat): at nice 0, at a positive nice, idle."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return {"normal": user + system + irq + softirq + steal, "nice": nice, "idle": idle + iowait}


def free_cores(sample: float = 0.5) -> float:
    """Cores of this machine not taken by work at nice 0 over `sample` s (niced work yields, so it counts as free)."""
    before = cpu_times()
    time.sleep(sample)
    after = cpu_times()
    busy = after["normal"] - before["normal"]
    total = sum(after.values()) - sum(before.values())
    return (os.cpu_count() or 1) * (1 - busy / total) if total > 0 else float(os.cpu_count() or 1)


def vcpus_for_host(free: float | None = None) -> tuple[int, str]:
    """How many vCPUs a VM should get here, and why: `$LVSCLUSTER_VM_CPUS` if set; else 2 when at
    least 1.5 cores are free, else 1.

    Under software emulation each vCPU is a host thread. Two vCPUs sharing one free core (the
    other busy, say with a compile) stall each other: a guest CPU spins on a lock or waits for an
    IPI from the other, which the host has descheduled. Measured beside a one-core CPU hog, the
    demo lab carried 4 new connections/s with 2 vCPUs and 20/s with 1."""
    forced = os.environ.get(CPUS_ENV)
    if forced:
        if not forced.isdigit() or not 1 <= int(forced) <= 64:
            raise ValueError(f"{CPUS_ENV}={forced!r}: give a number of vCPUs from 1 to 64")
        return int(forced), f"{CPUS_ENV}={forced}"
    free = free_cores() if free is None else free
    if free >= 1.5:
        return DEFAULT_CPUS, f"{free:.1f} of {os.cpu_count()} cores free"
    return 1, (f"only {free:.1f} of {os.cpu_count()} cores free (two vCPUs on one free core "
               "stall each other under emulation)")


def _version_key(version: str) -> tuple:
    """Sort key comparing kernel release strings numerically (6.1.0-10 < 6.1.0-56)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p)


def find_kernel_image(
    boot_dir: str | os.PathLike = "/boot", modules_dir: str | os.PathLike = "/lib/modules"
) -> Path | None:
    """Return the newest ``vmlinuz-<release>`` in *boot_dir* whose modules are installed.

    A kernel is usable only if ``<modules_dir>/<release>`` exists, because IPVS is a module.
    ``$LVSCLUSTER_KERNEL`` overrides the search when set. Returns None when nothing fits.
    """
    override = os.environ.get("LVSCLUSTER_KERNEL")
    if override:
        return Path(override) if Path(override).is_file() else None
    boot, mods = Path(boot_dir), Path(modules_dir)
    candidates = []
    for image in boot.glob("vmlinuz-*"):
        release = image.name[len("vmlinuz-"):]
        if image.is_file() and (mods / release).is_dir():
            candidates.append((_version_key(release), image))
    if not candidates:
        return None
    return max(candidates)[1]


def find_vng() -> str | None:
    """Return the path of the ``vng`` executable: ``$LVSCLUSTER_VNG``, PATH, or beside this Python."""
    override = os.environ.get("LVSCLUSTER_VNG")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("vng")
    if found:
        return found
    beside = Path(sys.executable).parent / "vng"
    return str(beside) if os.access(beside, os.X_OK) else None


def vm_unavailable_reason() -> str | None:
    """Explain why a VM cannot be booted here, or return None when it can."""
    if find_vng() is None:
        return "virtme-ng (vng) is not installed (run scripts/bootstrap)"
    if shutil.which(QEMU_BINARY) is None:
        return f"{QEMU_BINARY} is not installed (apt-get install qemu-system-x86)"
    if find_kernel_image() is None:
        return "no /boot/vmlinuz-* with matching /lib/modules (apt-get install linux-image-amd64)"
    return None


def kernel_has_ipvs(
    proc_path: str | os.PathLike = "/proc/net/ip_vs", modprobe: str | None = "modprobe"
) -> bool:
    """Tell whether the running kernel (this network namespace) has IPVS.

    True if *proc_path* exists; otherwise try ``modprobe ip_vs`` (skipped when *modprobe* is
    None or not installed) and look again; finally ask generic netlink for the "IPVS" family.
    """
    if Path(proc_path).exists():
        return True
    if modprobe and shutil.which(modprobe):
        try:
            subprocess.run([modprobe, "-q", "ip_vs"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if Path(proc_path).exists():
            return True
    return _genl_family_exists("IPVS")


def _genl_family_exists(name: str) -> bool:
    """Resolve a generic netlink family by name; False on any error."""
    try:
        from pyroute2.netlink.generic import GenericNetlinkSocket
    except ImportError:
        return False
    try:
        sock = GenericNetlinkSocket()
        try:
            sock.bind(name, None)  # resolves the family id or raises
            return True
        finally:
            sock.close()
    except Exception:  # NetlinkError(ENOENT) when absent, OSError without netlink
        return False


def cached_trees() -> list[str]:
    """Read-only trees a guest reads the same files from again and again: /usr (FRR, vtysh, the
    shared libraries), this Python and its venv. `vng_argv` shares each over its own 9p device
    that the guest mounts with its page cache on (`guest_prelude`); over the uncached root, each
    vtysh run took 1.5 s and an import of the apply layer 19 s in a lab VM (0.3 s and 11 s cached).
    The root stays uncached, so the guest sees at once what the host writes during a lab's life."""
    trees: list[str] = []
    for path in ("/usr", sys.base_prefix, sys.prefix):
        path = os.path.realpath(path)
        inside = any(path == t or path.startswith(t + "/") for t in trees)
        if os.path.isdir(path) and not inside and path != "/" and not re.search(r"[\s,'\"\\]", path):
            trees.append(path)
    return trees


def _cached_tree_opts(trees: Sequence[str]) -> str:
    return " ".join(f"-fsdev local,id=lvsc{i},path={tree},security_model=none,readonly=on "
                    f"-device virtio-9p-pci,fsdev=lvsc{i},mount_tag=lvsc{i}" for i, tree in enumerate(trees))


def vng_argv(
    kernel: str | os.PathLike,
    command: str,
    *,
    vng: str = "vng",
    memory: str = DEFAULT_MEMORY,
    cpus: int = DEFAULT_CPUS,
    rwdirs: Iterable[str | os.PathLike] = (),
    cwd: str | os.PathLike | None = None,
    kvm: bool = False,
    extra: Sequence[str] = (),
    cached: Sequence[str] = (),
) -> list[str]:
    """Build the ``vng`` command line that boots *kernel* and runs shell *command* in it.

    KVM is off by default (it does not work on the project's machines) and the root
    filesystem is shared over 9p (virtiofsd fails here, and vng wastes ~5 s trying it).
    Each of *rwdirs* is shared writable at the same path, so the guest can leave results;
    each of *cached* (see :func:`cached_trees`) read-only over its own 9p device, which
    :func:`guest_prelude` mounts with the guest's page cache on.
    """
    argv = [vng, "--run", str(kernel), "--force-9p", "--memory", str(memory), "--cpus", str(cpus)]
    if not kvm:
        argv.append("--disable-kvm")
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    if cwd is not None:
        argv += ["--cwd", str(cwd)]
    if cached:
        argv.append("--qemu-opts=" + _cached_tree_opts(cached))
    argv += list(extra)
    argv += ["--exec", command]
    return argv


def guest_prelude(modules: Iterable[str] = GUEST_MODULES, cached: Sequence[str] = ()) -> str:
    """Shell lines that prepare a guest: sane PATH, the *cached* trees mounted over themselves
    with the page cache on (as `vng_argv` shared them), the IPVS and networking modules loaded."""
    mods = " ".join(modules)
    mounts = "".join(f"mount -t 9p -o ro,trans=virtio,version=9p2000.L,access=any,msize=524288,cache=loose lvsc{i} {tree} "
                     f"|| echo 'lvscluster-vm: {tree} stays uncached' >&2\n" for i, tree in enumerate(cached))
    return (
        f"export PATH={GUEST_PATH}\n"
        + mounts +
        f"modprobe -qa {mods} || echo 'lvscluster-vm: some of [{mods}] failed to load' >&2\n"
    )


class _Lock:
    """Exclusive ``flock`` on :data:`LOCK_PATH`, waited for with a deadline and a message."""

    def __init__(self, path: str, timeout: float, on_wait: Callable[[str], None] | None):
        self.path, self.timeout, self.on_wait = path, timeout, on_wait
        self.fd = -1
        self.waited = 0.0

    def __enter__(self) -> "_Lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not told and self.on_wait:
                self.on_wait(f"waiting for {self.path}: another VM is running")
                told = True
            if time.monotonic() - start > self.timeout:
                os.close(self.fd)
                raise VMLockTimeout(f"{self.path} still busy after {self.timeout:.0f} s")
            time.sleep(0.5)
        self.waited = time.monotonic() - start
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the flock


def _kill_group(proc: subprocess.Popen) -> None:
    """Terminate *proc*'s process group (vng, virtme-run, qemu), escalating to SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_in_vm(
    command: str,
    *,
    kernel: str | os.PathLike | None = None,
    timeout: float = 600,
    memory: str = DEFAULT_MEMORY,
    cpus: int = DEFAULT_CPUS,
    rwdirs: Iterable[str | os.PathLike] = (),
    cwd: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    on_line: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    lock_path: str = LOCK_PATH,
    lock_timeout: float = 1800,
    cancel: threading.Event | None = None,
) -> VMResult:
    """Boot a VM, run shell *command* (after :func:`guest_prelude`) and return how it ended.

    Holds the VM lock from before boot until qemu exits (the lock fd is inherited by vng and
    qemu, so it stays held even if this process dies). The guest's output goes to *log_path*
    and, line by line, to *on_line*. After *timeout* seconds the whole process group,
    qemu included, is killed and ``timed_out`` is set; setting *cancel* kills it the same way
    (``returncode`` None, ``timed_out`` False). Raises :class:`VMLockTimeout` when the
    lock stays busy for *lock_timeout* seconds and RuntimeError when no VM can be booted.
    """
    vng = find_vng()
    kernel = kernel or find_kernel_image()
    reason = vm_unavailable_reason() if (vng is None or kernel is None) else None
    if reason or vng is None or kernel is None:
        raise RuntimeError(reason or "cannot boot a VM")
    cached = cached_trees()
    argv = vng_argv(kernel, guest_prelude(cached=cached) + command, vng=vng, memory=memory, cpus=cpus,
                    rwdirs=rwdirs, cwd=cwd, cached=cached)
    env = dict(os.environ)
    # vng starts virtme-run through PATH: make the directory vng lives in (the venv) come first.
    env["PATH"] = os.pathsep.join([str(Path(vng).parent), env.get("PATH", GUEST_PATH)])
    log = open(log_path, "w", encoding="utf-8", errors="replace") if log_path else None
    try:
        with _Lock(lock_path, lock_timeout, on_wait) as lock:
            start = time.monotonic()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, pass_fds=(lock.fd,),
            )
            reader = threading.Thread(target=_pump, args=(proc, log, on_line), daemon=True)
            reader.start()
            timed_out = False
            try:
                while proc.poll() is None:
                    try:
                        proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        if time.monotonic() - start > timeout:
                            timed_out = True
                            break
                        if cancel is not None and cancel.is_set():
                            break
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
            reader.join(timeout=10)
            duration = time.monotonic() - start
    finally:
        if log:
            log.close()
    cancelled = cancel is not None and cancel.is_set() and not timed_out
    return VMResult(
        returncode=None if timed_out or cancelled else proc.returncode, timed_out=timed_out,
        duration=duration, lock_wait=lock.waited, log_path=Path(log_path) if log_path else None,
    )


def _pump(proc: subprocess.Popen, log, on_line: Callable[[str], None] | None) -> None:
    """Copy the VM's output to the log file and the line callback until it closes."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if log:
            log.write(line + "\n")
            log.flush()
        if on_line:
            try:
                on_line(line)
            except Exception:  # a broken progress display must not break the VM run
                pass
