"""The Docker lab's image, built on this machine: no registry is needed (or reachable).

`debootstrap` installs a minimal Debian of this machine's release with FRR, iproute2, ipvsadm
and Python into a cached root filesystem; `docker import` turns it into `lvscluster-lab:<release>-<digest of the package list>`.
lvscluster itself is not copied in: a lab bind-mounts this checkout and its Python (read-only),
so the containers run exactly the code on this machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
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


def ensure_image(client, progress: Callable[[str], None]) -> str:
    """The lab image's name, after building and importing it if Docker does not have it yet."""
    import docker.errors

    name = image_name()
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    rootfs = _rootfs(progress)
    progress(f"importing {rootfs} into Docker as {name}")
    with tempfile.TemporaryDirectory(prefix="lvscluster-image-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        client.api.import_image_from_file(str(tarball), repository=REPOSITORY, tag=tag())
    client.images.get(name)  # raises if the import did not take
    return name
