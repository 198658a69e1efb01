"""Files lvscluster writes: always whole, never half (write to a temporary name, then rename)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader (or a crash) never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tree(root: Path, files: dict[str, str]) -> list[Path]:
    """Write `{relative path: text}` under `root`, each file atomically; returns the paths written."""
    written = []
    for relative, text in files.items():
        path = root / relative
        write_atomic(path, text)
        written.append(path)
    return written
