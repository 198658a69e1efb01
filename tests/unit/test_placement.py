"""Where a node lives: a lab's placement wins over `access:`, each placement gets its backend,
and callers learn what they need (on this machine? which namespace?) from the placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvscluster.apply.backends import DockerBackend, KernelBackend, SshBackend
from lvscluster.apply.placement import Placement, placement_of
from lvscluster.apply.reach import backend_for
from lvscluster.errors import LvsClusterError
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("access, kind, target, here, netns", [
    ("local", "local", "", True, None),
    ("netns:lvs-d1", "netns", "lvs-d1", True, "lvs-d1"),
    ("ssh://root@10.0.0.5:2222", "ssh", "ssh://root@10.0.0.5:2222", False, None),
    ("docker:demo.d1", "docker", "demo.d1", False, None),
])
def test_access_forms(access: str, kind: str, target: str, here: bool, netns: str | None) -> None:
    placement = Placement.parse(access)
    assert (placement.kind, placement.target, placement.on_this_machine, placement.netns) == (kind, target, here, netns)
    assert str(placement) == access  # it reads back as the user wrote it
    assert backend_for(placement).placement == placement


def test_each_placement_gets_its_backend() -> None:
    assert isinstance(backend_for(Placement("local")), KernelBackend)
    kernel = backend_for(Placement("netns", "demo.d1"))
    assert isinstance(kernel, KernelBackend) and kernel.netns == "demo.d1" and kernel.frr_pathspace == "demo+d1"
    assert isinstance(backend_for(Placement("ssh", "ssh://root@h")), SshBackend)
    assert isinstance(backend_for(Placement("docker", "demo.d1")), DockerBackend)
    with pytest.raises(ValueError, match="no backend reaches a memory node"):
        backend_for(Placement("memory", "d1"))


def test_a_lab_wins_over_access_and_a_node_with_neither_is_named(tmp_path: Path) -> None:
    text = (ROOT / "topology" / "demo.lvs.yml").read_text().replace(
        "  d1:  {role: director, router_id: 10.255.0.11}", "  d1:  {role: director, router_id: 10.255.0.11, access: 'ssh://root@d1'}")
    path = tmp_path / "demo.lvs.yml"
    path.write_text(text)
    cluster = Cluster.from_topology(load_topology(path))
    assert placement_of(cluster, "d1", None) == Placement("ssh", "ssh://root@d1")
    lab = {"d1": Placement("netns", "demo.d1")}
    assert placement_of(cluster, "d1", lab) == Placement("netns", "demo.d1")
    with pytest.raises(LvsClusterError, match=r"node d2: no lab is up for topology 'demo' and the node has no `access:`"):
        placement_of(cluster, "d2", lab)
