"""The agent's record on its node: its verdict, each checked dest's state, and who wrote it.

`lvscluster agent` rewrites it (atomically) on every change; `deploy` and `status` read it, so
a deploy plans a director with the health its agent sees instead of undoing a quiesce.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lvscluster.files import write_atomic
from lvscluster.health.verdict import HealthVerdict

RECORD_DIR = Path(os.environ.get("LVSCLUSTER_RUN_DIR", "/run/lvscluster")) / "health"


def record_path(node: str, netns: str | None) -> Path:
    """Where the agent of `node` keeps its record (one per node and namespace)."""
    return RECORD_DIR / f"{netns or 'local'}.{node}.json"


def write_record(path: Path, record: dict) -> None:
    """Replace the record in one step (readers never see half of it)."""
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(node: str, netns: str | None) -> dict | None:
    """The record of a running agent, or None (no agent, or its process is gone)."""
    try:
        record = json.loads(record_path(node, netns).read_text())
    except (OSError, ValueError):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or not Path(f"/proc/{pid}").exists():
        return None
    return record


def read_verdict(node: str, netns: str | None) -> HealthVerdict | None:
    """The verdict of the node's running agent, or None without one."""
    record = read_record(node, netns)
    return HealthVerdict.from_json(record["verdict"]) if record and "verdict" in record else None
