"""Mutated topology files never produce a traceback nor hang: either valid, or TopologyError lines."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from lvscluster.errors import TopologyError
from lvscluster.model.loader import parse_topology

DEMO = (Path(__file__).parent.parent.parent / "topology" / "demo.lvs.yml").read_text()
LINE = re.compile(r"^demo\.lvs\.yml:\d+: .+: .+")


BOUND = 20.0  # seconds: a demo-sized file parses in ~0.05 s; this catches a hang (alias bombs), not slowness


def check(text: str) -> None:
    started = time.monotonic()
    try:
        parse_topology(text, "demo.lvs.yml")
    except TopologyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert LINE.match(problem), problem
    assert time.monotonic() - started < BOUND, f"{time.monotonic() - started:.1f} s for {text!r}"


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


# What YAML lets a person write into a topology by mistake or on purpose: tags (core, unknown,
# python), anchors and aliases (recursive, nested), complex keys, flow and block collections,
# document markers, directives, tabs, odd numbers (hex, octal, sexagesimal, .inf), odd characters.
YAML_PIECES = st.sampled_from([
    "!!int ", "!!float ", "!!bool ", "!!str ", "!!null ", "!!set ", "!!omap ", "!!binary ", "!!timestamp ",
    "!!map ", "!!seq ", "!mine ", "!!python/object:os.system ", "!<tag:yaml.org,2002:int> ",
    "&a ", "*a", "&b [*a, *a, *a] ", "*b", "? ", "? [x, y]\n: z\n", "{", "}", "[", "]", ", ", ": ", "- ",
    "\n---\n", "\n...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "\ufeff", "\x00", "|\n  ", ">-\n  ",
    "0x1F", "0o17", "017", "1_000", "1:20:30", ".inf", "-.inf", ".nan", "1e400", "99999999999999999999",
    "~", "null", "yes", "no", "on", "off", "'", "\"", "#", "@", "`", "%", "\\", "\r", "\u2028",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(DEMO) - 1), st.integers(0, 12), st.lists(YAML_PIECES, min_size=1, max_size=4))
def test_yaml_syntax_mutations(position: int, cut: int, pieces: list[str]) -> None:
    check(DEMO[:position] + "".join(pieces) + DEMO[position + cut:])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(2, 12))
def test_alias_trees_are_bounded(depth: int, width: int) -> None:
    """Aliases of aliases: whatever the depth and width, the answer comes quickly (refused past 100k nodes)."""
    text = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]\n" for i in range(1, depth + 1))
    check(DEMO + text)
