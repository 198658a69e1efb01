"""Load a topology file: YAML with line numbers, pydantic validation, cross-field checks.

Every problem is collected and reported at once as `FILE:LINE: path.to.field: message`;
a user never sees a traceback for bad input.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

from lvscluster.errors import TopologyError
from lvscluster.model.checks_fields import as_list
from lvscluster.model.problems import Loc, Problem, format_path
from lvscluster.model.secrets import Secret
from lvscluster.model.topology import IPVS_MAX_SECONDS, Topology
from lvscluster.model.yamlread import read_yaml

# keepalived.conf names an operator migrating to lvscluster types, and where the setting lives here
KEEPALIVED_NAMES = {
    "lb_algo": "'scheduler'", "lb_kind": "'forward' (dr, tun, nat)", "persistence_timeout": "'persistence'",
    "persistence_granularity": "'netmask' (a prefix length)", "delay_loop": "'interval' in a health check",
    "connect_port": "'port' in a health check", "connect_timeout": "'timeout' in a health check",
    "retry": "'fall' in a health check", "virtualhost": "'host' in a health check",
    "sorry_server_inhibit": "no setting (a sorry server always takes over with no healthy real server)",
    "inhibit_on_failure": "no setting (a failed real server always stays at weight 0)",
    "quorum_up": "no setting (lvscluster announces the VIP itself)", "ops": "flags: [one-packet]",
    "virtual_router_id": "no setting (no VRRP: every director is active)", "priority": "no setting (no VRRP: every director is active)",
}


# values keepalived.conf (its checkers) or ipvsadm (its forwarding options) spell differently, by
# field: whose name it is, and what it is here
KEEPALIVED_VALUES = {
    "type": ("keepalived", {"http_get": "http", "ssl_get": "https", "tcp_check": "tcp", "udp_check": "udp",
                            "dns_check": "dns", "misc_check": "exec"}),
    "forward": ("ipvsadm", {"masq": "nat", "masquerading": "nat", "gate": "dr", "gatewaying": "dr", "ipip": "tun"}),
}


class LineMap:
    """Finds the line of any path in a ruamel round-trip document (1-based)."""

    def __init__(self, document: Any):
        self.document = document

    def line(self, loc: Loc) -> int:
        """The line of the deepest part of `loc` that exists in the document."""
        node, line = self.document, 1
        for part in loc:
            try:
                if isinstance(node, CommentedMap) and part in node:
                    line = node.lc.key(part)[0] + 1
                    node = node[part]
                elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                    line = node.lc.item(part)[0] + 1
                    node = node[part]
                else:
                    break
            except (AttributeError, KeyError, TypeError, IndexError):
                break
        return line


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that holds the last field of `loc`, to suggest field names."""
    current: Any = Topology
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin is list and isinstance(part, int):
            current = args[0]
        elif origin is dict:
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and `X | None` down to the type that holds fields."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _in_secret(loc: Loc) -> bool:
    """True when `loc` is a Secret field or lies inside one."""
    return any(_model_at((*loc[:end], "value")) is Secret for end in range(1, len(loc) + 1))


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if p != "function-after" and not str(p).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            field = str(loc[-1])
            model = _model_at(loc)
            known = sorted(model.model_fields) if model else []
            guess = difflib.get_close_matches(field, known, n=1)
            message = f"unknown field {field!r}" + (f"; did you mean {guess[0]!r}?" if guess else "")
            if model is Secret:  # `key: {hunter2}` makes the secret a field name: never echo it
                loc = loc[:-1]
                message = "unknown field (its name is not shown: it may be the secret itself)" + (
                    f"; did you mean {guess[0]!r}?" if guess else "; a secret is written as {file: PATH} or {env: NAME}")
            elif field in KEEPALIVED_NAMES:
                message = f"unknown field {field!r}: that is keepalived's name; here it is {KEEPALIVED_NAMES[field]}"
            if known:
                message += f" (allowed: {', '.join(known)})"
        elif error["type"] == "missing":
            message = f"required field {str(loc[-1])!r} is missing"
        elif _in_secret(loc) and error["type"] != "value_error":  # never echo what was given: it may be the secret
            if error["type"] == "model_type":
                message += "; a secret is written as {file: PATH} or {env: NAME}, never as its value"
        elif isinstance(error.get("input"), (str, int, float, bool)) and error["type"] != "value_error":
            message += f" (got {error['input']!r})"
            if error["type"] == "less_than_equal" and (error.get("ctx") or {}).get("le") == IPVS_MAX_SECONDS:
                message += ": 31 days is ipvsadm's limit (the kernel keeps it in jiffies in a 32-bit field)"
            message += _value_hint(error, loc)
        problems.append(Problem(loc, message))
    return problems


def _value_hint(error: dict, loc: Loc) -> str:
    """What the operator likely meant by a value of the wrong form: `RR` for `rr`, keepalived's
    `HTTP_GET` for `http`, a dotted netmask for a prefix length, an asdot AS number."""
    value, field = error["input"], str(loc[-1]) if loc else ""
    if error["type"] == "list_type" and field == "command" and isinstance(value, str):
        return f": command is an argument list run without a shell, e.g. {as_list(value)}"
    if error["type"] == "literal_error" and isinstance(value, str):
        options = re.findall(r"'([^']*)'", (error.get("ctx") or {}).get("expected", ""))
        whose, names = KEEPALIVED_VALUES.get(field, ("", {}))
        if value.strip().lower() in names and (field != "type" or "health" in loc):
            return f": that is {whose}'s name; here it is {names[value.strip().lower()]!r}"
        same = [o for o in options if o.lower() == value.strip().lower()]
        if same:
            return f"; did you mean {same[0]!r}? (exactly as written here: case and spaces count)"
    if error["type"] == "int_parsing" and isinstance(value, str):
        if field == "netmask":
            if value.strip().startswith("/") and value.strip()[1:].isdigit():
                return f": netmask is a prefix length; write {value.strip()[1:]}, without the slash"
            try:
                return f": netmask is a prefix length; {value} is {ipaddress.IPv4Network('0.0.0.0/' + value.strip()).prefixlen}"
            except ValueError:
                return ""
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", value)
        if field in ("asn", "director_asn", "router_asn") and match and max(int(match[1]), int(match[2])) < 65536:
            return f": write an AS number as one number; asdot {value.strip()} is {int(match[1]) * 65536 + int(match[2])}"
    return ""


def parse_topology(text: str, path: Path | str = "<topology>") -> tuple[Topology, LineMap]:
    """Parse and validate topology text; raise TopologyError with every problem found."""
    topology, lines, _ = parse_topology_with_warnings(text, path)
    return topology, lines


def parse_topology_with_warnings(text: str, path: Path | str = "<topology>") -> tuple[Topology, LineMap, list[str]]:
    """`parse_topology`, plus the warnings (`FILE:LINE: path: warning: message`) of a valid topology.

    A TopologyError lists the warnings too, among the errors in line order."""
    from lvscluster.model.checks import check_topology  # checks import the model, not the loader

    path = Path(path)
    document = read_yaml(path, text)
    lines = LineMap(document)
    if not isinstance(document, CommentedMap):
        raise TopologyError([f"{path}:1: (top): the file should be a mapping with name, nodes, links, vips"])
    try:
        topology = Topology.model_validate(_plain(document), context={"base": str(path.parent.resolve())})
    except ValidationError as exc:
        raise TopologyError(_format(path, lines, _pydantic_problems(exc))) from None
    problems = check_topology(topology)
    if any(not p.warning for p in problems):
        raise TopologyError(_format(path, lines, problems))
    return topology, lines, _format(path, lines, problems)


def load_topology(path: Path | str) -> Topology:
    """Read, parse and validate a topology file."""
    return load_topology_with_warnings(path)[0]


def load_topology_with_warnings(path: Path | str) -> tuple[Topology, list[str]]:
    """`load_topology`, plus the warnings of a valid topology (what `validate` prints)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([f"{path}: cannot read: {exc}"]) from None
    topology, _, warnings = parse_topology_with_warnings(text, path)
    return topology, warnings


def _format(path: Path, lines: LineMap, problems: list[Problem]) -> list[str]:
    ordered = sorted(problems, key=lambda p: (lines.line(p.loc), format_path(p.loc)))
    return [f"{path}:{lines.line(p.loc)}: {format_path(p.loc)}: {'warning: ' if p.warning else ''}{p.message}"
            for p in ordered]


def _plain(node: Any) -> Any:
    """ruamel's commented containers -> plain dicts and lists (keys as strings), tagged scalars -> their text."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, TaggedScalar):  # `!!str 5`: the text
        return node.value
    return node
