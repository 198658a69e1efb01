"""Mutated topology files never produce a traceback: either valid, or TopologyError lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from lvscluster.errors import TopologyError
from lvscluster.model.loader import parse_topology

DEMO = (Path(__file__).parent.parent.parent / "topology" / "demo.lvs.yml").read_text()
LINE = re.compile(r"^demo\.lvs\.yml:\d+: .+: .+")


def check(text: str) -> None:
    try:
        parse_topology(text, "demo.lvs.yml")
    except TopologyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert LINE.match(problem), problem


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(DEMO) - 1), st.integers(0, 20), st.text(max_size=8))
def test_text_mutations(position: int, cut: int, insert: str) -> None:
    check(DEMO[:position] + insert + DEMO[position + cut:])


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    yield path


values = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=20),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structural_mutations(data) -> None:
    yaml = YAML()
    document = yaml.load(DEMO)
    paths = [p for p in _leaves(document) if p]
    path = data.draw(st.sampled_from(paths))
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(values)
    stream = io.StringIO()
    yaml.dump(document, stream)
    check(stream.getvalue())
