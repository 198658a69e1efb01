"""The lab provider interface (`LabProvider`) and the one place that picks a provider for a lab.

A provider builds a topology's nodes somewhere on this machine (`netns.NetnsLab`: network
namespaces; `containers.DockerLab`: Docker containers), writes the lab record (`record.py`) with
its name in `provider`, and gives each node a network namespace `<lab>.<node>`. Everyone else asks
`provider_for(record)` or `provider_of(lab)`, never which provider it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from lvscluster.apply.placement import Placement
from lvscluster.errors import LvsClusterError
from lvscluster.lab.common import Progress, quiet
from lvscluster.lab.containers import DockerLab
from lvscluster.lab.faults import NodeFaults
from lvscluster.lab.netns import NetnsLab
from lvscluster.lab.record import RECORD_FILE, LabRecord, read_record, state_dir
from lvscluster.model.cluster import Cluster


@runtime_checkable
class LabProvider(Protocol):
    """Builds, changes, enters and removes a lab of one kind on this machine."""

    name: str  # what the lab record's `provider` holds

    def up(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet, agents: bool = True) -> str:
        """Build the lab (removing all of it on failure); returns what was built, e.g. `5 namespaces, 4 cables`."""
        ...

    def grow(self, cluster: Cluster, topology_path: Path, progress: Progress = quiet) -> list[str]:
        """Add to the running lab the nodes the topology gained, leaving the rest alone; returns them."""
        ...

    def shrink(self, record: LabRecord, node: str, progress: Progress = quiet) -> None:
        """Take one node out of the running lab (and out of its record); the rest carries on."""
        ...

    def down(self, lab: str, progress: Progress = quiet) -> str:
        """Remove everything of the lab, also what a crash left; returns what went ("" when nothing)."""
        ...

    def record(self, lab: str) -> LabRecord | None:
        """The lab's record, when a lab of this provider is up under that name."""
        ...

    def exec(self, lab: str, node: str, command: list[str], tty: bool = False) -> list[str]:
        """The command line that runs `command` inside the node (on the machine that holds the lab)."""
        ...

    def placements(self, record: LabRecord) -> dict[str, Placement]:
        """Where each node of the lab lives, for `deploy` to reach it."""
        ...

    def frr_daemons(self, record: LabRecord, node: str) -> list[str]:
        """The FRR daemons running on a node (for `lab status`)."""
        ...

    def faults(self, record: LabRecord) -> NodeFaults:
        """The scaletest's faults on the lab's directors: kill, revive, crash-frr, restart-agent."""
        ...

    def leftovers(self, lab: str) -> bool:
        """Whether anything of the lab is left on this machine, even with no record."""
        ...

    def prepare_vm(self, why: str, progress: Progress = quiet) -> None:
        """Get ready on this machine what building the lab inside a lab VM (no network) needs."""
        ...


NETNS, DOCKER = NetnsLab(), DockerLab()
PROVIDERS: dict[str, LabProvider] = {p.name: p for p in (NETNS, DOCKER)}


def provider_for(lab: LabRecord | str) -> LabProvider:
    """The provider that built the lab of this record, or the one of this name (`netns`, `docker`)."""
    name = lab.provider if isinstance(lab, LabRecord) else lab
    if name in PROVIDERS:
        return PROVIDERS[name]
    known = ", ".join(PROVIDERS)
    if isinstance(lab, LabRecord):
        raise LvsClusterError(f"lab {lab.name!r} has an unknown provider {name!r} in {state_dir(lab.name) / RECORD_FILE} "
                              f"(known: {known}); remove what is left of it by hand")
    raise LvsClusterError(f"unknown lab provider {name!r} (known: {known})")


def provider_of(lab: str) -> LabProvider:
    """The provider of a lab on this machine: by its record; without one, the first that finds
    something of the lab left (a killed `lab up`); else the namespace provider."""
    record = read_record(lab)
    if record is not None:
        return provider_for(record)
    return DOCKER if DOCKER.leftovers(lab) else NETNS  # first: a Docker lab leaves namespaces too


def lab_faults(lab: str) -> NodeFaults:
    """The faults of the running lab `lab` (LvsClusterError when it is not up here)."""
    record = read_record(lab)
    if record is None:
        raise LvsClusterError(f"no lab {lab!r} is up on this machine")
    return provider_for(record).faults(record)


def lab_placements(lab: str) -> dict[str, Placement] | None:
    """Where each node of lab `lab` lives when it is up on this machine (None when it is not)."""
    record = read_record(lab)
    return None if record is None else provider_for(record).placements(record)


def shrink(lab: str, node: str, progress: Progress = quiet) -> bool:
    """Take one node out of a running lab, as decommissioning the machine would; the rest carries on.
    False when no lab of that name is up here or it has no such node.

    `director remove` and `rs remove` call it after tearing the node down, so a node added later
    can take the freed addresses without meeting the old one on the LAN.
    """
    record = read_record(lab)
    if record is None or node not in record.namespaces:
        return False
    provider_for(record).shrink(record, node, progress)
    return True

