"""Edit a topology file in place, keeping the user's comments, order and layout (ruamel round trip).

Every edit is checked like a fresh `validate` before the file is replaced (atomically): an edit
that would make the file invalid changes nothing and says why.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from lvscluster.errors import LvsClusterError, TopologyError
from lvscluster.files import write_atomic
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import parse_topology
from lvscluster.model.topology import Topology
from lvscluster.model.yamlread import read_yaml, round_trip_yaml

Change = Callable[[Any], None]


def _yaml() -> YAML:
    yaml = round_trip_yaml()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the user's long lines
    return yaml


def edit_topology(path: Path, change: Change) -> tuple[Topology, bool]:
    """Apply `change` to the file's YAML document; returns the new topology and whether the text changed.

    The file stays what it was: a symlink's target is edited (the link stays a link), CRLF line
    endings, the mode and the owner are kept. An edit that would make the file invalid writes
    nothing and raises TopologyError citing the lines of the file as it is now.
    """
    target = path.resolve()
    with open(target, encoding="utf-8", newline="") as handle:  # newline="": CRLF seen as written
        raw = handle.read()
    crlf = "\r\n" in raw
    text = raw.replace("\r\n", "\n")
    yaml = _yaml()
    mapping, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    document = read_yaml(path, text, yaml)  # one parse: ruamel is pure Python, ~2 s per topology in the lab VM
    baseline = _dump(yaml, document)
    change(document)
    new_text = _keep_untouched_lines(text, baseline, _dump(yaml, document))
    try:
        topology, _ = parse_topology(new_text, path)
    except TopologyError as exc:  # nothing written
        raise TopologyError(_as_now(exc.problems, path, text, new_text)) from None
    if new_text != text:
        status = target.stat()
        write_atomic(target, new_text.replace("\n", "\r\n") if crlf else new_text, mode=status.st_mode & 0o7777,
                     owner=(status.st_uid, status.st_gid))
    return topology, new_text != text


def _as_now(problems: list[str], path: Path, text: str, new_text: str) -> list[str]:
    """The edited file's problems, their line numbers mapped back to the file as it is now (a line
    the edit adds or changes is named as such): the user reads the file they have, not ours."""
    now: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(a=text.splitlines(), b=new_text.splitlines(), autojunk=False)
    for tag, a1, _, b1, b2 in matcher.get_opcodes():
        if tag == "equal":
            now.update({b1 + k + 1: a1 + k + 1 for k in range(b2 - b1)})
    prefix = re.compile(rf"^{re.escape(str(path))}:(\d+): ")
    mapped = [f"the edit was not made: it would leave {path} invalid:"]
    for problem in problems:
        match = prefix.match(problem)
        if match is None:
            mapped.append(problem)
            continue
        line = int(match.group(1))
        where = f"{path}:{now[line]}: " if line in now else f"{path}: (a line this edit writes) "
        mapped.append(where + problem[match.end():])
    return mapped


def _guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, sequence dash offset) as the file uses them: `key:` followed by a line
    indented by N gives the mapping indent, `key:` followed by `  - item` the dash offset."""
    mapping, offset = None, None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line, following in zip(lines, lines[1:]):
        if not line.rstrip().endswith(":"):
            continue
        step = (len(following) - len(following.lstrip())) - (len(line) - len(line.lstrip()))
        if following.lstrip().startswith("- "):
            offset = step if offset is None else offset
        elif step > 0:
            mapping = step if mapping is None else mapping
    return mapping or 2, offset or 0


def _dump(yaml: YAML, document: Any) -> str:
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def _keep_untouched_lines(original: str, baseline: str, edited: str) -> str:
    """The edited text, with every line the edit did not touch exactly as the user wrote it.

    ruamel re-spaces some lines even when nothing changes (`c1:  {...}` loses its alignment);
    `baseline` is the unchanged document as ruamel writes it, line for line the original.
    """
    old_lines, base_lines, new_lines = (t.splitlines(keepends=True) for t in (original, baseline, edited))
    if len(old_lines) != len(base_lines):
        return edited
    result = []
    for tag, b1, b2, n1, n2 in difflib.SequenceMatcher(a=base_lines, b=new_lines, autojunk=False).get_opcodes():
        result += old_lines[b1:b2] if tag == "equal" else new_lines[n1:n2]
    return "".join(result)


def _node(document: Any, name: str) -> Any:
    nodes = document.get("nodes") or {}
    if name not in nodes:
        raise LvsClusterError(f"no node {name!r} in the topology (nodes: {', '.join(nodes)})")
    return nodes[name]


def set_node_field(name: str, field: str, value: Any) -> Change:
    """A change that sets `nodes.NAME.FIELD: value`."""
    def change(document: Any) -> None:
        _node(document, name)[field] = value
    return change


def drop_node_field(name: str, field: str) -> Change:
    """A change that removes `nodes.NAME.FIELD` (back to its default)."""
    def change(document: Any) -> None:
        _node(document, name).pop(field, None)
    return change


def remove_node(name: str, addresses: dict[tuple[str, str], str]) -> Change:
    """A change that removes a node, its link endpoints (and links left with one end), its real-server entries.

    `addresses` maps (node, interface) to the address each endpoint has now: endpoints numbered
    after a removed one get it written down, so removing a node never renumbers the others.
    """
    def change(document: Any) -> None:
        _node(document, name)
        del document["nodes"][name]
        links = document.get("links") or []
        for index in reversed(range(len(links))):
            endpoints = links[index]["endpoints"]
            owners = [_endpoint_node(e) for e in endpoints]
            if name not in owners:
                continue
            first = owners.index(name)
            for position in range(first + 1, len(endpoints)):
                endpoints[position] = _pinned(endpoints[position], addresses)
            for position in reversed(range(len(endpoints))):
                if owners[position] == name:
                    del endpoints[position]
            if len(endpoints) < 2:
                del links[index]
        for vip in document.get("vips") or []:
            refs = vip.get("real_servers") or []
            for position in reversed(range(len(refs))):
                if refs[position].get("node") == name:
                    del refs[position]
    return change


def _endpoint_node(endpoint: Any) -> str:
    return endpoint.get("node") if hasattr(endpoint, "get") else str(endpoint).split(":", 1)[0]


def _pinned(endpoint: Any, addresses: dict[tuple[str, str], str]) -> Any:
    """The endpoint with its current address written down (unchanged if it already has one)."""
    if hasattr(endpoint, "get"):
        if endpoint.get("address") is None:
            endpoint["address"] = addresses[(endpoint["node"], endpoint["interface"])]
        return endpoint
    node, _, interface = str(endpoint).partition(":")
    pinned = CommentedMap([("node", node), ("interface", interface), ("address", addresses[(node, interface)])])
    pinned.fa.set_flow_style()
    return pinned


def add_director(cluster: Cluster, name: str, router_id: str, router: str | None = None,
                 subnet: str | None = None) -> Change:
    """A change that adds a director wired like the others: a point-to-point uplink to `router`
    (the first router by default) on `subnet` (by default the next free subnet the size of the
    last director's uplink), and an endpoint on every shared link all directors are on (the sync
    and real-server LAN), with the interface names the other directors use there."""
    if name in cluster.topology.nodes:
        raise LvsClusterError(f"node {name!r} is already in the topology")
    if not cluster.directors or not cluster.routers:
        raise LvsClusterError("add a director to a topology that has directors and a router: copy one by hand first")
    router = router or cluster.routers[0]
    if router not in cluster.routers:
        raise LvsClusterError(f"{router!r} is not a router of {cluster.name} (routers: {', '.join(cluster.routers)})")
    uplinks = [u for d in cluster.directors for u in cluster.uplinks(d) if u.router.node == router]
    if not uplinks:
        raise LvsClusterError(f"no director has an uplink to {router}: add the director by hand")
    uplink_name = _common({u.director.name for u in uplinks}, "up0")
    subnet = subnet or str(_next_free_subnet(cluster, uplinks[-1].director.address.network))
    shared = []
    for index, link in enumerate(cluster.topology.links):
        members = cluster.link_members(index)
        on_it = {m.node: m.name for m in members if m.node in cluster.directors}
        only_directors = len(on_it) == len(members)  # a sync link of the directors alone (tun.lvs.yml's lan0)
        if (len(members) > 2 or only_directors) and set(on_it) == set(cluster.directors):
            shared.append((index, _common(set(on_it.values()), "lan0")))

    def change(document: Any) -> None:
        node = CommentedMap([("role", "director"), ("router_id", router_id)])
        node.fa.set_flow_style()
        document["nodes"][name] = node
        for index, interface in shared:
            document["links"][index]["endpoints"].append(f"{name}:{interface}")
        link = CommentedMap([("endpoints", _flow([f"{router}:{name}", f"{name}:{uplink_name}"])), ("subnet", subnet)])
        link.fa.set_flow_style()
        document["links"].append(link)
    return change


def _common(names: set[str], default: str) -> str:
    return names.pop() if len(names) == 1 else default


def _flow(items: list) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _next_free_subnet(cluster: Cluster, after: ipaddress.IPv4Network | ipaddress.IPv6Network):
    """The first subnet of the same size after `after` that overlaps no link of the topology."""
    used = [link.subnet for link in cluster.topology.links]
    candidate = after
    while True:
        candidate = ipaddress.ip_network((int(candidate.network_address) + candidate.num_addresses, candidate.prefixlen))
        if not any(candidate.overlaps(u) for u in used if u.version == candidate.version):
            return candidate
