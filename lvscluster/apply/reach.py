"""How lvscluster reaches a node: the backend for its placement (`apply.placement`).

One place decides it, so nobody else asks "is this a namespace, a container, ssh?": a lab's
container in a lab VM is entered by a forked child (`apply.entered`), any other container is
reached with `docker exec`, an ssh node over ssh, a node on this machine through netlink.
"""

from __future__ import annotations

import os

from lvscluster.apply import frr
from lvscluster.apply.backends import DockerBackend, KernelBackend, NodeBackend, SshBackend
from lvscluster.apply.commands import DEFAULT_RUNNER, Runner
from lvscluster.apply.entered import EnteredContainerBackend
from lvscluster.apply.placement import Placement


def backend_for(placement: Placement, runner: Runner = DEFAULT_RUNNER) -> NodeBackend:
    """The backend that reaches a node where `placement` says it is."""
    match placement.kind:
        case "local":
            return KernelBackend(None, None, runner)
        case "netns":
            return KernelBackend(placement.target, frr.pathspace_for(placement.target), runner)
        case "ssh":
            return SshBackend(placement.target, runner)
        case "docker":
            if placement.lab and os.environ.get("LVSCLUSTER_IN_VM"):  # no new Python per node and verb
                return EnteredContainerBackend(placement.target, runner)
            return DockerBackend(placement.target, runner)
    raise ValueError(f"no backend reaches a {placement.kind} node by itself ({placement})")
