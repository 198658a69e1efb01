"""Read topology YAML safely: every problem is a `FILE:LINE: yaml: ...` TopologyError, never a traceback.

The document is composed into nodes first and checked before anything is constructed: only the
plain tags a topology needs (strings, numbers, booleans, null, dates, mappings, lists), each on a
node of its kind and with a value it can hold; mapping keys that are plain values; and aliases
that expand to a bounded number of nodes (a "billion laughs" file of a few hundred bytes would
otherwise expand into billions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lvscluster.errors import TopologyError
from lvscluster.gcpause import cyclic_gc_paused

CORE = "tag:yaml.org,2002:"
SCALAR_TAGS = {f"{CORE}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")}
NODE_KINDS = {f"{CORE}map": MappingNode, f"{CORE}seq": SequenceNode, **{tag: ScalarNode for tag in SCALAR_TAGS}}
# Nodes the document may expand to through aliases, beyond the nodes written in it.
ALIAS_BUDGET = 100_000
# Fields whose value is a secret: no message echoes what is written under them.
SECRET_FIELDS = {"key", "password"}


class _Rejected(Exception):
    def __init__(self, node: Node, message: str):
        super().__init__(message)
        self.line = node.start_mark.line + 1 if node.start_mark else 1


def round_trip_yaml() -> YAML:
    """ruamel's round-trip loader as lvscluster reads topologies (duplicate keys are errors)."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def read_yaml(path: Path, text: str, yaml: YAML | None = None) -> Any:
    """The round-trip document of `text`; raises TopologyError naming the line of any problem."""
    yaml = yaml or round_trip_yaml()
    try:
        with cyclic_gc_paused():  # a large file is ~10 objects a line, none cyclic
            node = yaml.compose(text)
            if node is None:
                return None
            _check_nodes(node, yaml)
            return yaml.constructor.construct_document(node)
    except _Rejected as exc:
        raise TopologyError([f"{path}:{exc.line}: yaml: {exc}"]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        if "duplicate key" in str(exc):
            what = str(exc.problem or exc).splitlines()[0].split(" with value")[0]
        raise TopologyError([f"{path}:{line}: yaml: {what}"]) from None
    except YAMLError as exc:
        raise TopologyError([f"{path}:1: yaml: {exc}"]) from None
    except RecursionError:
        raise TopologyError([f"{path}:1: yaml: the document is nested too deeply"]) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a constructor's own, unmarked
        raise TopologyError([f"{path}:1: yaml: cannot read a value: {exc}"]) from None


def _check_nodes(root: Node, yaml: YAML) -> None:
    """Reject what a topology cannot hold before it is constructed (see the module docstring)."""
    sizes: dict[int, int] = {}  # id(node) -> nodes it expands to, aliases included
    written = 0  # distinct nodes in the text
    stack: list[tuple[Node, bool, bool]] = [(root, False, False)]  # node, children done, inside a secret
    on_path: set[int] = set()
    while stack:
        node, children_done, secret = stack.pop()
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child, _ in _children(node, secret))
            if sizes[id(node)] > written + ALIAS_BUDGET:
                raise _Rejected(node, f"aliases here expand to more than {ALIAS_BUDGET} nodes; write the values out")
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise _Rejected(node, "an alias refers to the collection that contains it")
        written += 1
        _check_tag(node, yaml, secret)
        on_path.add(id(node))
        stack.append((node, True, secret))
        stack.extend((child, False, inside) for child, inside in _children(node, secret) if id(child) not in sizes)


def _children(node: Node, secret: bool) -> list[tuple[Node, bool]]:
    """A node's children, each with whether it lies inside a secret (under a `key:` or `password:`)."""
    if isinstance(node, MappingNode):
        return [(part, secret or (isinstance(key, ScalarNode) and key.value in SECRET_FIELDS))
                for key, value in node.value for part in (key, value)]
    if isinstance(node, SequenceNode):
        return [(child, secret) for child in node.value]
    return []


def _check_tag(node: Node, yaml: YAML, secret: bool) -> None:
    tag = str(node.tag)
    short = tag.replace(CORE, "!!")
    hidden = "(not shown: it lies in a secret)"
    if tag not in NODE_KINDS:
        raise _Rejected(node, f"tag {short} is not allowed (a topology holds strings, numbers, booleans, "
                              "null, mappings and lists)")
    if not isinstance(node, NODE_KINDS[tag]):
        raise _Rejected(node, f"tag {short} does not fit a {_kind(node)}")
    if isinstance(node, ScalarNode) and tag != f"{CORE}str":
        implicit = str(yaml.resolver.resolve(ScalarNode, node.value, (True, False)))
        if implicit != tag and not (tag == f"{CORE}float" and implicit == f"{CORE}int"):
            raise _Rejected(node, f"a value {hidden} is not a valid {short}" if secret
                                else f"{node.value!r} is not a valid {short}")
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                raise _Rejected(key, f"a mapping key must be a plain value, not a {_kind(key)}")
            if key.value in seen:  # checked here, not by ruamel, so a secret written as a key is not echoed
                raise _Rejected(key, f"duplicate key {hidden if secret else repr(key.value)} (first on line {seen[key.value]})")
            seen[key.value] = key.start_mark.line + 1 if key.start_mark else 1


def _kind(node: Node) -> str:
    return {MappingNode: "mapping", SequenceNode: "list"}.get(type(node), "scalar")
