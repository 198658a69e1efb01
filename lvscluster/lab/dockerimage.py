"""The Docker lab's image, built on this machine: no registry is needed (or reachable).

`debootstrap` installs a minimal Debian of this machine's release with FRR, iproute2, ipvsadm
and Python into a cached root filesystem, kept also as one tarball; `docker import` of that
tarball gives `lvscluster-lab:<release>-<digest of the package list>`.
lvscluster itself is not copied in: a lab bind-mounts this checkout and its Python (read-only),
so the containers run exactly the code on this machine.

A lab VM (this kernel has no IPVS) has no network and a read-only view of this machine's files:
the host makes the tarball (`tarball`, before booting) and the VM's own dockerd imports it
(`ensure_image`). No dockerd is needed on the host for that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lvscluster.errors import ApplyError, EnvironmentProblem

PACKAGES = ("frr", "frr-pythontools", "iproute2", "ipvsadm", "python3", "procps", "iputils-ping", "kmod")
MIRROR = os.environ.get("LVSCLUSTER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("LVSCLUSTER_IMAGE_CACHE", "/var/lib/lvscluster"))
REPOSITORY = "lvscluster-lab"


def release() -> str:
    """This machine's Debian release (`bookworm`): the image matches it, so the bind-mounted
    Python and its compiled packages find the same libraries."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"') or "bookworm"
    except OSError:
        pass
    return "bookworm"


def tag() -> str:
    """`bookworm-<8 hex digits>`: the release and a digest of the package list, so a changed list
    builds a new image instead of reusing one that lacks a package."""
    return f"{release()}-{hashlib.sha256(' '.join(PACKAGES).encode()).hexdigest()[:8]}"


def image_name() -> str:
    """`lvscluster-lab:bookworm-<digest>`."""
    return f"{REPOSITORY}:{tag()}"


def _rootfs(progress: Callable[[str], None]) -> Path:
    """The cached root filesystem, built by debootstrap when missing or unfinished."""
    rootfs, done = CACHE / f"lab-rootfs-{tag()}", CACHE / f"lab-rootfs-{tag()}.done"
    if done.exists():
        return rootfs
    if shutil.which("debootstrap") is None:
        raise EnvironmentProblem("building the Docker lab image needs debootstrap: apt-get install debootstrap")
    shutil.rmtree(rootfs, ignore_errors=True)  # a debootstrap that was interrupted
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    progress(f"building the lab image: debootstrap {release()} with {', '.join(PACKAGES)} (~2 min, once)")
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", release(), str(rootfs), MIRROR]
    run = subprocess.run(argv, capture_output=True, text=True)
    if run.returncode != 0:
        raise ApplyError(f"debootstrap failed (exit {run.returncode}): {(run.stdout + run.stderr).strip()[-1500:]}")
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    done.write_text(image_name() + "\n")
    return rootfs


def tarball(progress: Callable[[str], None]) -> Path:
    """The cached tarball of the image's root filesystem (`docker import` input), made when missing.

    Needs debootstrap and a Debian mirror the first time; afterwards it is only read, so a lab VM
    (read-only view of this machine, no network) finds it where the host left it.
    """
    path = CACHE / f"lab-rootfs-{tag()}.tar"
    if path.exists():
        return path
    if os.environ.get("LVSCLUSTER_IN_VM"):
        raise EnvironmentProblem(f"the lab image's tarball {path} is missing: the host makes it before booting the VM "
                                 "(python -c 'from lvscluster.lab import dockerimage; dockerimage.tarball(print)')")
    rootfs = _rootfs(progress)
    progress(f"packing {rootfs} into {path.name}")
    partial = path.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
    partial.rename(path)
    return path


def _chunks(path: Path, size: int = 1 << 20):
    """The file in 1 MiB reads, streamed to dockerd (in a lab VM, `docker load -i` of a 250 MB
    file on the 9p root took 300 s, and `cp` of it did not finish in 500 s, while `dd bs=1M`
    read it at 70 MB/s)."""
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def ensure_image(client, progress: Callable[[str], None]) -> str:
    """The lab image's name, after building and importing it if Docker does not have it yet."""
    import docker.errors

    name = image_name()
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    source = tarball(progress)
    progress(f"importing {source.name} into Docker as {name}")
    started = time.monotonic()
    client.api.import_image_from_stream(_chunks(source), repository=REPOSITORY, tag=tag())
    client.images.get(name)  # raises if the import did not take
    progress(f"image {name} imported ({time.monotonic() - started:.0f} s)")
    return name
