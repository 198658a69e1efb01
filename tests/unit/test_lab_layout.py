"""Lab layout names survive topology edits, so a running lab can grow without rewiring."""

from __future__ import annotations

import shutil
from pathlib import Path

from lvscluster.lab.layout import plan_lab
from lvscluster.model.cluster import Cluster
from lvscluster.model.edit import add_director, edit_topology, remove_node
from lvscluster.model.loader import load_topology

ROOT = Path(__file__).parent.parent.parent


def test_removing_and_adding_a_director_keeps_every_other_cable(tmp_path: Path) -> None:
    path = tmp_path / "ecmp8.lvs.yml"
    shutil.copy(ROOT / "topology" / "ecmp8.lvs.yml", path)
    before = Cluster.from_topology(load_topology(path))
    edit_topology(path, remove_node("d8", {(i.node, i.name): i.ip for i in before.interfaces}))
    edit_topology(path, add_director(Cluster.from_topology(load_topology(path)), "d9", "10.255.0.19"))
    old, new = plan_lab(before), plan_lab(Cluster.from_topology(load_topology(path)))
    assert old.bridges == new.bridges and all(len(b) <= 15 for b in new.bridges)
    kept = [v for v in old.veths if "d8" not in (v.netns + v.peer_netns)]
    assert set(kept) <= set(new.veths)  # same names, ends, addresses: nothing to rewire
    added = set(new.veths) - set(old.veths)
    assert {(v.netns, v.name) for v in added} == {("ecmp8.d9", "lan0"), ("ecmp8.r1", "d9")}
    assert all(len(v.peer) <= 15 for v in new.veths)
