"""YAML a topology cannot hold (odd tags, complex keys, alias bombs) is a FILE:LINE error, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lvscluster.errors import TopologyError
from lvscluster.model.loader import parse_topology

NOT_ALLOWED = "is not allowed (a topology holds strings, numbers, booleans, null, mappings and lists)"


@pytest.mark.parametrize("text,message", [
    ("name: !!int two\n", "t.yml:1: yaml: 'two' is not a valid !!int"),
    ("name: x\nnodes: !!bool x\n", "t.yml:2: yaml: 'x' is not a valid !!bool"),
    ("name: !!float x\n", "t.yml:1: yaml: 'x' is not a valid !!float"),
    ("name: !!timestamp junk\n", "t.yml:1: yaml: 'junk' is not a valid !!timestamp"),
    ("name: !!set x\n", f"t.yml:1: yaml: tag !!set {NOT_ALLOWED}"),
    ("name: !!omap x\n", f"t.yml:1: yaml: tag !!omap {NOT_ALLOWED}"),
    ("name: !!binary '@@@'\n", f"t.yml:1: yaml: tag !!binary {NOT_ALLOWED}"),
    ("name: !mine x\n", f"t.yml:1: yaml: tag !mine {NOT_ALLOWED}"),
    ("name: !!python/object:os.system x\n", f"t.yml:1: yaml: tag !!python/object:os.system {NOT_ALLOWED}"),
    ("name: !!map x\n", "t.yml:1: yaml: tag !!map does not fit a scalar"),
    ("name: x\n? [a, b]\n: c\n", "t.yml:2: yaml: a mapping key must be a plain value, not a list"),
    ("name: x\nnodes: &n [*n]\n", "t.yml:2: yaml: an alias refers to the collection that contains it"),
])
def test_a_tag_or_key_a_topology_cannot_hold(text: str, message: str) -> None:
    with pytest.raises(TopologyError) as error:
        parse_topology(text, "t.yml")
    assert error.value.problems == [message]


def test_plain_tags_and_small_aliases_still_load() -> None:
    demo = (Path(__file__).parents[2] / "topology" / "demo.lvs.yml").read_text()  # a whole, valid topology
    text = demo.replace("name: demo\n", "name: !!str demo\n", 1).replace(
        "  rs1: {role: real_server}", "  rs1: {role: real_server, drain: !!bool false}", 1)
    assert "!!bool false" in text and "!!str demo" in text
    topology, _ = parse_topology(text, "t.yml")
    assert topology.name == "demo" and not topology.nodes["rs1"].drain


def test_an_alias_bomb_is_refused_quickly() -> None:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 11))
    started = time.monotonic()
    with pytest.raises(TopologyError) as error:
        parse_topology(text, "t.yml")
    assert time.monotonic() - started < 5
    assert error.value.problems == ["t.yml:5: yaml: aliases here expand to more than 100000 nodes; write the values out"]
