"""The lab record (`runfiles.LABS_DIR/<lab>/lab.json`): what `lab up` built, read and written here alone.

Every provider writes one when it builds a lab, and `provider` names which built it, so whoever
finds the lab later (`lab status`, `lab down`, `deploy`, `director remove`) hands it to the right
provider (`lab.provider.provider_for`). The directory also holds the lab's logs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lvscluster.files import write_atomic
from lvscluster.runfiles import LABS_DIR

STATE_ROOT = LABS_DIR
RECORD_FILE = "lab.json"


@dataclass
class LabRecord:
    """One lab on this machine: its provider, and per node its namespace (and container) and processes."""

    name: str
    topology: str  # the topology file it was built from, absolute
    provider: str = "netns"
    agents: bool = True  # whether `lab up` started the directors' health-check agents
    namespaces: dict[str, str] = field(default_factory=dict)  # node -> network namespace
    containers: dict[str, str] = field(default_factory=dict)  # node -> container (a Docker lab)
    veths: list[dict] = field(default_factory=list)  # `layout.Veth` as a dict
    bridges: list[str] = field(default_factory=list)
    frr_nodes: list[str] = field(default_factory=list)
    frr_daemons: dict[str, list[str]] = field(default_factory=dict)
    test_servers: list[dict] = field(default_factory=list)  # `layout.TestServer` as a dict

    @classmethod
    def from_dict(cls, data: dict) -> LabRecord:
        """A record from lab.json's text (keys it does not know are passed over; missing ones default)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def forget(self, node: str) -> None:
        """Drop a node that left the lab: its namespace, container, cables, FRR and test server."""
        space = self.namespaces.pop(node, None)
        self.containers.pop(node, None)
        self.veths = [v for v in self.veths if space not in (v["netns"], v["peer_netns"])]
        self.frr_nodes = [n for n in self.frr_nodes if n != node]
        self.frr_daemons.pop(node, None)
        self.test_servers = [t for t in self.test_servers if t["node"] != node]


def state_dir(lab: str) -> Path:
    """Where a lab keeps its record and logs."""
    return STATE_ROOT / lab


def read_record(lab: str) -> LabRecord | None:
    """The record `lab up` wrote, or None when the lab is not up (or its record is unreadable)."""
    try:
        data = json.loads((state_dir(lab) / RECORD_FILE).read_text())
        return LabRecord.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: LabRecord) -> None:
    """Write the lab's record whole (its state directory made if need be)."""
    directory = state_dir(record.name)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / RECORD_FILE, json.dumps(asdict(record), indent=2) + "\n")


def recorded_labs() -> list[str]:
    """The labs with a state directory on this machine."""
    return sorted(p.name for p in STATE_ROOT.iterdir()) if STATE_ROOT.exists() else []


def remove_state_dir(lab: str) -> None:
    """Remove the lab's record and logs (any provider's)."""
    directory = state_dir(lab)
    if directory.exists():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
