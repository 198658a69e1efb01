"""Files lvscluster writes: always whole, never half (write to a temporary name, then rename)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write `text` to `path` so a reader (or a crash) never sees a partial file; `mode` 0o600
    for a file holding a secret (it has that mode from its first byte on); `owner` (uid, gid)
    to keep a replaced file's owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of this process and thread: two writers of one file (an agent's checks and
    # its convergence thread) must not remove or rename each other's half-written file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crash's leftover keeps its old mode otherwise
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if owner is not None:
        with contextlib.suppress(PermissionError):  # only root may give a file away
            os.chown(tmp, *owner)
    os.chmod(tmp, mode)  # whatever the umask (and after chown, which clears set-id bits)
    os.replace(tmp, path)


def write_tree(root: Path, files: dict[str, str], mode: int = 0o644) -> list[Path]:
    """Write `{relative path: text}` under `root`, each file atomically; returns the paths written."""
    written = []
    for relative, text in files.items():
        path = root / relative
        write_atomic(path, text, mode)
        written.append(path)
    return written
