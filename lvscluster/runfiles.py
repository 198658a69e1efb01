"""Every file lvscluster keeps on a node at run time, under one directory: `$LVSCLUSTER_RUN_DIR`
(default `/run/lvscluster`, a tmpfs: a reboot forgets them, as it forgets what they describe).

| path | written by | what it holds |
| --- | --- | --- |
| `deployed/<netns or local>.<node>.json` | deploy | the topology last applied to a director (its agent and quick drains plan from it) |
| `journal/<netns>.json` | deploy | sysctl values as they were before deploy first changed them (destroy restores them) |
| `health/<netns or local>.<node>.json` | agent | the agent's record: its verdict, each checked dest, its pid |
| `exabgp/<netns or host>/` | deploy | a director's ExaBGP: config, pipes, log |
| `withdrawals.json` | director drain | when each director last withdrew a VIP (how long ECMP took) |
| `labs/<lab>/` | lab up | a lab's record, its daemons' logs and pids |
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lvscluster.files import write_atomic

RUN_DIR = Path(os.environ.get("LVSCLUSTER_RUN_DIR", "/run/lvscluster"))
DEPLOYED_DIR = RUN_DIR / "deployed"
JOURNAL_DIR = RUN_DIR / "journal"
HEALTH_DIR = RUN_DIR / "health"
EXABGP_DIR = RUN_DIR / "exabgp"
WITHDRAWALS = RUN_DIR / "withdrawals.json"
LABS_DIR = RUN_DIR / "labs"


def deployed_path(node: str, netns: str | None) -> Path:
    """Where deploy keeps the topology it last applied to a director on this machine."""
    return DEPLOYED_DIR / f"{netns or 'local'}.{node}.json"


def journal_path(netns: str | None) -> Path:
    """Where a node's original sysctl values are kept.

    A named namespace is keyed by its name; the current one by its identity, so a node reached
    over ssh inside a namespace of a shared machine never mixes with the machine's own journal.
    """
    if netns:
        return JOURNAL_DIR / f"{netns}.json"
    return JOURNAL_DIR / f"netns-{os.stat('/proc/self/ns/net').st_ino}.json"


def exabgp_dir(netns: str | None) -> Path:
    """The directory of one director's ExaBGP."""
    return EXABGP_DIR / (netns or "host")


def health_record_path(node: str, netns: str | None) -> Path:
    """Where the agent of `node` keeps its record (one per node and namespace)."""
    return HEALTH_DIR / f"{netns or 'local'}.{node}.json"


def write_health_record(path: Path, record: dict) -> None:
    """Replace the agent's record in one step (readers never see half of it)."""
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_health_record(node: str, netns: str | None) -> dict | None:
    """The record of a running agent, or None (no agent, or its process is gone)."""
    try:
        record = json.loads(health_record_path(node, netns).read_text())
    except (OSError, ValueError):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or not Path(f"/proc/{pid}").exists():
        return None
    return record


def forget_namespace(netns: str) -> None:
    """Drop the files of a namespace that is gone: its sysctl journal and its agents' records."""
    journal_path(netns).unlink(missing_ok=True)
    for record in HEALTH_DIR.glob(f"{netns}.*.json"):
        record.unlink(missing_ok=True)
