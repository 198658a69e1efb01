"""The Docker lab's image, made on this machine in a second: a skeleton that runs this machine's programs.

No registry is needed (or reachable), and no distribution is installed into the image. The
image holds only what a container must own: the directory skeleton, a copy of the few `/etc`
files FRR, iproute2 and the dynamic loader read (`ETC_FILES`), and FRR's state directories
owned by its user. A container then bind-mounts this machine's `/usr` read-only (with a tmpfs
on `/usr/local/bin` for its own `lvscluster` command), this checkout and its Python, so it runs
exactly the FRR, iproute2 and lvscluster of the namespace lab. The tarball is built in memory
from this machine's files (about 100 KB) and fed to `docker import`; its digest is the image's
tag, so a changed `/etc/frr` or user list makes a new image rather than reuse a stale one.

Why not a distribution image: the debootstrap image this replaced was 250 MB; a lab VM's
dockerd (software emulation) took 300 s to import it, and it needed a Debian mirror once.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

REPOSITORY = "lvscluster-lab"
# /etc files (or directories, copied whole) a container reads: users and groups (frr, frrvty),
# the loader's cache, FRR's packaged configuration, PAM (vtysh asks it whether root may run
# it), iproute2's tables, name service switch
ETC_FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "frr",
             "pam.conf", "pam.d", "security", "iproute2", "protocols", "services", "alternatives",
             "os-release", "default/frr")
# /sbin stays a directory: Docker mounts its init (`--init`) at /sbin/docker-init, which a link
# into the read-only /usr would not take; nothing the lab runs names /sbin/ (PATH has /usr/sbin)
LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "var/run": "/run"}
DIRECTORIES = {"usr": 0o755, "sbin": 0o755, "etc": 0o755, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777, "var/log": 0o755,
               "var/lib": 0o755, "run": 0o755, "root": 0o700, "proc": 0o555, "sys": 0o555, "dev": 0o755}
FRR_OWNED = ("var/lib/frr", "var/log/frr", "etc/frr")  # FRR's own, as its package leaves them
# a container's own bind mounts and tmpfs: this machine's programs, read-only; its own command
PROGRAM_MOUNTS = ("/usr",)
OWN_COMMANDS = "/usr/local/bin"


def _user_ids(name: str) -> tuple[int, int]:
    """The uid and gid of a user of this machine (FRR's), or root's when it has none."""
    try:
        import pwd

        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    except (KeyError, ImportError):
        return 0, 0


def _add_directory(tar: tarfile.TarFile, name: str, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, (info.uid, info.gid), info.mtime = tarfile.DIRTYPE, mode, owner, 0
    tar.addfile(info)


def _add_tree(tar: tarfile.TarFile, source: Path, name: str, owner: tuple[int, int] | None) -> None:
    """A file, symlink or directory of this machine under `name`, owner kept unless given, mtimes 0."""
    st = source.lstat()
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), 0
    info.uid, info.gid = owner if owner else (st.st_uid, st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(source)
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for child in sorted(source.iterdir()):
            _add_tree(tar, child, f"{name}/{child.name}", owner)
    elif stat.S_ISREG(st.st_mode):
        data = source.read_bytes()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def skeleton(etc: Path = Path("/etc")) -> bytes:
    """The image's root filesystem as an uncompressed tar (pure but for reading `etc`): the same
    bytes for the same files, so its digest names the image."""
    frr = _user_ids("frr")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in DIRECTORIES.items():
            _add_directory(tar, name, mode)
        for name in FRR_OWNED:
            if name != "etc/frr":
                _add_directory(tar, name, 0o755, frr)
        _add_directory(tar, "etc/default", 0o755)
        for name, target in LINKS.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
        for name in ETC_FILES:
            source = etc / name
            if source.exists() or source.is_symlink():
                _add_tree(tar, source, f"etc/{name}", frr if f"etc/{name}" in FRR_OWNED else None)
    return buffer.getvalue()


def tag(data: bytes) -> str:
    """`skeleton-<12 hex digits>` of the image's tar."""
    return f"skeleton-{hashlib.sha256(data).hexdigest()[:12]}"


def ensure_image(client, progress: Callable[[str], None]) -> str:
    """The lab image's name (`lvscluster-lab:skeleton-<digest>`), imported into Docker when it
    does not have it yet (well under a second on a host; a few seconds in a lab VM)."""
    import docker.errors

    data = skeleton()
    image_tag = tag(data)
    name = f"{REPOSITORY}:{image_tag}"
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    started = time.monotonic()
    client.api.import_image_from_data(data, repository=REPOSITORY, tag=image_tag,
                                      changes=["CMD [\"sleep\", \"infinity\"]"])
    client.images.get(name)  # raises if the import did not take
    progress(f"image {name} made from this machine's /etc ({len(data) // 1024} KB, "
             f"{time.monotonic() - started:.1f} s); containers run this machine's /usr")
    return name
