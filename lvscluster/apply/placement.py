"""Where a node lives and how lvscluster reaches it: one `Placement` per node, one backend per placement.

A node's placement comes from the lab built from its topology when one is up (a namespace, or
a container of a Docker lab), else from its `access:` field. Callers ask the placement, or
the backend's `placement`, what they need to know (is the node on this machine? in which
namespace?), never the backend's concrete type.

| placement | `access:` | backend | the node's state and records |
| --- | --- | --- | --- |
| local | `local` | KernelBackend (this namespace) | on this machine |
| netns | `netns:NAME` | KernelBackend (in NAME) | on this machine |
| ssh | `ssh://user@host[:port]` | SshBackend (`lvscluster node` over ssh) | on that machine |
| docker | `docker:NAME` | DockerBackend (`docker exec`) | in the container |
| memory | (tests) | MemoryBackend | in this process |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lvscluster.errors import LvsClusterError
from lvscluster.model.cluster import Cluster

PlacementKind = Literal["local", "netns", "ssh", "docker", "memory"]
ACCESS_FORMS = "local, netns:NAME, ssh://user@host[:port], docker:NAME"


@dataclass(frozen=True)
class Placement:
    """Where one node lives: `kind`, and the namespace, ssh URL or container (`target`)."""

    kind: PlacementKind
    target: str = ""
    lab: bool = False  # made by `lab up`: a lab container holds this checkout at the same path

    @classmethod
    def parse(cls, access: str) -> "Placement":
        """A placement from an `access:` value (the model has checked its form)."""
        if access == "local":
            return cls("local")
        if access.startswith("ssh://"):
            return cls("ssh", access)
        for kind in ("netns", "docker"):
            if access.startswith(f"{kind}:"):
                return cls(kind, access.removeprefix(f"{kind}:"))  # type: ignore[arg-type]
        raise LvsClusterError(f"access {access!r} should be one of {ACCESS_FORMS}")

    def __str__(self) -> str:
        if self.kind in ("local", "ssh"):
            return self.target or self.kind
        return f"{self.kind}:{self.target}"

    @property
    def on_this_machine(self) -> bool:
        """The node's kernel, FRR, apply lock and records are on this machine (netlink reaches it)."""
        return self.kind in ("local", "netns")

    @property
    def netns(self) -> str | None:
        """The network namespace the node is (None: the current one, or not on this machine)."""
        return self.target if self.kind == "netns" else None


def in_namespaces(namespaces: dict[str, str]) -> dict[str, Placement]:
    """Placements for nodes that each live in a network namespace (a namespace lab's nodes)."""
    return {node: Placement("netns", space) for node, space in namespaces.items()}


def namespaces_of(lab: dict[str, Placement]) -> dict[str, str]:
    """The namespace of each node of a namespace lab (the inverse of `in_namespaces`)."""
    return {node: placement.target for node, placement in lab.items()}


def placement_of(cluster: Cluster, node: str, lab: dict[str, Placement] | None) -> Placement:
    """The node's lab placement when a lab is up, else its `access:`; an error naming the node without either."""
    if lab and node in lab:
        return lab[node]
    access = cluster.topology.nodes[node].access
    if access:
        return Placement.parse(access)
    raise LvsClusterError(f"node {node}: no lab is up for topology {cluster.name!r} and the node has no "
                          f"`access:` ({ACCESS_FORMS}); run `lvscluster lab up` or set access")
