"""Editing a topology file in place: comments and layout kept, nothing renumbered, invalid edits refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lvscluster.errors import TopologyError
from lvscluster.model.cluster import Cluster
from lvscluster.model.edit import drop_node_field, edit_topology, remove_node, set_node_field
from lvscluster.model.loader import load_topology

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
def ecmp8(tmp_path: Path) -> Path:
    path = tmp_path / "ecmp8.lvs.yml"
    shutil.copy(ROOT / "topology" / "ecmp8.lvs.yml", path)
    return path


def addresses(path: Path) -> dict[tuple[str, str], str]:
    return {(i.node, i.name): i.ip for i in Cluster.from_topology(load_topology(path)).interfaces}


def test_drain_and_undrain_touch_one_line_and_keep_comments(ecmp8: Path) -> None:
    original = ecmp8.read_text()
    topology, changed = edit_topology(ecmp8, set_node_field("d3", "drain", True))
    assert changed and topology.nodes["d3"].drain
    diff = [(a, b) for a, b in zip(original.splitlines(), ecmp8.read_text().splitlines()) if a != b]
    assert diff == [("  d3: {role: director, router_id: 10.255.0.13}",
                     "  d3: {role: director, router_id: 10.255.0.13, drain: true}")]
    assert edit_topology(ecmp8, set_node_field("d3", "drain", True))[1] is False  # already so: file untouched
    edit_topology(ecmp8, drop_node_field("d3", "drain"))
    assert ecmp8.read_text() == original


def test_removing_a_node_renumbers_nothing(ecmp8: Path) -> None:
    before = addresses(ecmp8)
    topology, _ = edit_topology(ecmp8, remove_node("d3", before))
    after = addresses(ecmp8)
    assert "d3" not in topology.nodes and not any(node == "d3" for node, _ in after)
    assert {k: v for k, v in before.items() if "d3" not in k} == after  # r1:d3 went with its link
    assert "r1:d3" not in ecmp8.read_text()  # the director's own uplink is gone with it
    assert ecmp8.read_text().startswith("# ecmp8: eight all-active directors")


def test_removing_a_real_server_drops_its_entries(ecmp8: Path) -> None:
    topology, _ = edit_topology(ecmp8, remove_node("rs2", addresses(ecmp8)))
    assert [ref.node for ref in topology.vips[0].real_servers] == ["rs1", "rs3", "rs4"]


def test_an_edit_that_breaks_the_file_changes_nothing(ecmp8: Path) -> None:
    original = ecmp8.read_text()
    with pytest.raises(TopologyError, match="drain applies only to directors and real servers"):
        edit_topology(ecmp8, set_node_field("r1", "drain", True))
    assert ecmp8.read_text() == original


def test_aligned_lines_the_edit_does_not_touch_stay_aligned(tmp_path: Path) -> None:
    path = tmp_path / "demo.lvs.yml"
    shutil.copy(ROOT / "topology" / "demo.lvs.yml", path)
    original = path.read_text().splitlines()
    edit_topology(path, set_node_field("d2", "drain", True))
    edited = path.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(original, edited)) if a != b] == [original.index("  d2:  {role: director, router_id: 10.255.0.12}")]
    assert "  d1:  {role: director, router_id: 10.255.0.11}" in edited  # the user's alignment kept


def test_adding_a_director_wires_it_like_the_others(ecmp8: Path) -> None:
    from lvscluster.model.edit import add_director

    before = addresses(ecmp8)
    cluster = Cluster.from_topology(load_topology(ecmp8))
    edit_topology(ecmp8, remove_node("d8", before))
    cluster = Cluster.from_topology(load_topology(ecmp8))
    topology, _ = edit_topology(ecmp8, add_director(cluster, "d9", "10.255.0.19"))
    after = addresses(ecmp8)
    assert after[("d9", "up0")] == "10.1.7.6" and after[("r1", "d9")] == "10.1.7.5"  # next free /30 after d7's
    assert after[("d9", "lan0")] == "10.2.0.9"  # the LAN address d8 left free; nobody renumbered
    assert {k: v for k, v in before.items() if "d8" not in k} == {k: v for k, v in after.items() if "d9" not in k}
    assert Cluster.from_topology(topology).sync_interface("d9") == "lan0"
    with pytest.raises(Exception, match="already in the topology"):
        add_director(Cluster.from_topology(topology), "d9", "10.255.0.29")
    with pytest.raises(TopologyError, match="router_id 10.255.0.11 is also used by d1"):
        edit_topology(ecmp8, add_director(Cluster.from_topology(topology), "d10", "10.255.0.11"))


def test_adding_a_director_joins_a_sync_link_of_the_directors_alone(tmp_path: Path) -> None:
    from lvscluster.model.edit import add_director

    path = tmp_path / "tun.lvs.yml"
    shutil.copy(ROOT / "topology" / "tun.lvs.yml", path)  # its lan0 holds d1 and d2 only
    topology, _ = edit_topology(path, add_director(Cluster.from_topology(load_topology(path)), "d3", "10.255.0.13"))
    cluster = Cluster.from_topology(topology)
    assert cluster.sync_interface("d3") == "lan0"
    assert "  - {name: lan0, endpoints: [d1:lan0, d2:lan0, d3:lan0], subnet: 10.2.0.0/29}" in path.read_text()
    assert addresses(path)[("d3", "lan0")] == "10.2.0.3"


def test_an_edit_keeps_the_link_the_line_endings_and_the_mode(tmp_path: Path) -> None:
    real = tmp_path / "real" / "demo.lvs.yml"
    real.parent.mkdir()
    real.write_bytes((ROOT / "topology" / "demo.lvs.yml").read_bytes().replace(b"\n", b"\r\n"))
    real.chmod(0o640)
    link = tmp_path / "demo.lvs.yml"
    link.symlink_to(real)
    edit_topology(link, set_node_field("d2", "drain", True))
    assert link.is_symlink() and link.resolve() == real  # the link still points at the user's file
    data = real.read_bytes()
    assert b"  d2: {role: director, router_id: 10.255.0.12, drain: true}\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n")  # no line lost its CR
    assert real.stat().st_mode & 0o777 == 0o640
    edit_topology(link, drop_node_field("d2", "drain"))
    data = real.read_bytes()
    assert b"drain" not in data and data.count(b"\n") == data.count(b"\r\n") and link.is_symlink()


def test_an_invalid_edit_cites_the_lines_of_the_file_as_it_is(tmp_path: Path) -> None:
    """d0 goes in before d1, so every later line moves down one: the duplicate router id is
    d2's, on line 22 of the file the user has (23 in the text the edit would have written)."""
    from ruamel.yaml.comments import CommentedMap

    path = tmp_path / "demo.lvs.yml"
    shutil.copy(ROOT / "topology" / "demo.lvs.yml", path)
    original = path.read_text()

    def change(document) -> None:
        document["nodes"].insert(2, "d0", CommentedMap([("role", "director"), ("router_id", "10.255.0.12")]))

    with pytest.raises(TopologyError) as raised:
        edit_topology(path, change)
    problems = raised.value.problems
    assert problems[0] == f"the edit was not made: it would leave {path} invalid:"
    assert f"{path}:22: nodes.d2.router_id: router_id 10.255.0.12 is also used by d0" in problems
    assert any(p.startswith(f"{path}: (a line this edit writes) nodes.d0") for p in problems), problems
    assert path.read_text() == original
