"""A dockerd inside a lab VM (or the kernel-test VM): the Docker lab where this kernel has no IPVS.

The VM sees this machine's root filesystem read-only over 9p, where overlay2 cannot keep its
layers, so the daemon's data root is a tmpfs of its own (`/run/lvscluster-docker`), gone with
the VM. Measured under software emulation:

- dockerd's built-in containerd supervisor gives up after 15 s ("timeout waiting for containerd
  to start"); containerd needs ~10-20 s here. So containerd is started first, with the CRI and
  unusable snapshotter plugins off, and dockerd is pointed at its socket (`--containerd`);
- `--iptables=false --ip6tables=false --bridge=none`: the lab's networks are internal, nothing
  is NATed, and the VM has no default bridge to manage;
- the guest kernel has AppArmor but no `apparmor_parser`: containers run `apparmor=unconfined`
  (as `containers.up` does everywhere).

Both daemons are started in their own sessions so they outlive the command that started them
and end with the VM.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lvscluster.errors import EnvironmentProblem

ROOT = Path("/run/lvscluster-docker")
CONTAINERD_SOCKET = ROOT / "containerd.sock"
START_TIMEOUT = 240
CONTAINERD_CONFIG = f"""version = 2
root = "{ROOT}/containerd"
state = "{ROOT}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{CONTAINERD_SOCKET}"
"""


def in_vm() -> bool:
    """True inside a VM lvscluster booted (a lab VM or the kernel-test VM), where it owns dockerd."""
    return bool(os.environ.get("LVSCLUSTER_IN_VM"))


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def _wait(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise EnvironmentProblem(f"{what} did not start in the VM within {START_TIMEOUT} s "
                                     f"(exit {proc.poll()}; log {log}):\n{tail}")
        time.sleep(0.3)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def start_dockerd(ping: Callable[[], bool], progress: Callable[[str], None]) -> None:
    """Start containerd and dockerd in this VM (data root on a tmpfs); returns once `ping()` is true."""
    started = time.monotonic()
    progress(f"starting dockerd in the VM (data root on a tmpfs at {ROOT})")
    ROOT.mkdir(parents=True, exist_ok=True)
    if not _mounted(ROOT):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", str(ROOT)], check=True)
    (ROOT / "containerd.toml").write_text(CONTAINERD_CONFIG)
    containerd = _spawn(["containerd", "--config", str(ROOT / "containerd.toml")], ROOT / "containerd.log")
    _wait(CONTAINERD_SOCKET.exists, containerd, "containerd", ROOT / "containerd.log")
    dockerd = _spawn(["dockerd", "--containerd", str(CONTAINERD_SOCKET), "--data-root", str(ROOT / "data"),
                      "--exec-root", str(ROOT / "exec"), "--pidfile", str(ROOT / "dockerd.pid"),
                      "--iptables=false", "--ip6tables=false", "--bridge=none"], ROOT / "dockerd.log")
    _wait(ping, dockerd, "dockerd", ROOT / "dockerd.log")
    progress(f"dockerd up in the VM ({time.monotonic() - started:.0f} s)")


def stop_dockerd(timeout: float = 30) -> list[int]:
    """Stop the dockerd and containerd `start_dockerd` started in this VM (a test that started
    them leaves none behind; a lab VM's end with it). Returns the pids it stopped."""
    from lvscluster.apply.processes import terminate

    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].rsplit(b"/", 1)[-1] in (b"dockerd", b"containerd") and str(ROOT).encode() in b" ".join(argv):
            pids.append(int(entry.name))
    terminate(pids, timeout)
    return pids
