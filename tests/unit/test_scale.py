"""Scale (issue 14): the indexes that made validate and render linear answer exactly what the
scans they replaced did, and bench/topology_scale.py's topology is valid and renders as before.

No timings here: the speed figures live in bench/topology_scale.py and bench/README.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from lvscluster.errors import TopologyError
from lvscluster.model.addressing import SubnetIndex, assign_addresses
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import _plain, parse_topology_with_warnings
from lvscluster.model.topology import RealServerRef, Topology
from lvscluster.model.yamlread import read_yaml
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.render import render_files

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("topology_scale", ROOT / "bench" / "topology_scale.py")
topology_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(topology_scale)

# sha256 of every rendered file (sorted by path) of the generated topologies, as rendered
# before the indexes (commit a665bb1, where every lookup scanned all interfaces)
RENDERED_BEFORE = {
    (200, 1): "363245d0bd9d0fb751f31a157e261a30f6038c585de726664a5d85f0a35fccc2",
    (50, 3): "a9be29b1dda797a048f7d6b7fa04d19bc060183d0f7692789b3e762bd50c6c20",
}


def _digest(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()


@pytest.mark.parametrize(("real_servers", "vips"), sorted(RENDERED_BEFORE))
def test_generated_topology_is_valid_and_renders_as_before(real_servers: int, vips: int) -> None:
    text = topology_scale.topology_text(real_servers, vips)
    topology, _, warnings = parse_topology_with_warnings(text, "scale.lvs.yml")
    assert warnings == []
    cluster = Cluster.from_topology(topology)
    assert len(cluster.real_servers) == real_servers and len(topology.vips) == vips
    files = render_files(cluster, plan_cluster(cluster))
    assert len(files) == real_servers + 1 + 2 * 3 + 3  # state.json each; frr.conf and daemons for r1, d1, d2
    assert _digest(files) == RENDERED_BEFORE[(real_servers, vips)]


# The scans the indexes replaced, kept here as the reference.

def _interfaces_of(cluster: Cluster, node: str) -> list:
    return [i for i in cluster.interfaces if i.node == node]


def _interface_on(cluster: Cluster, node: str, li: int):
    return next((i for i in _interfaces_of(cluster, node) if i.link_index == li), None)


def _real_server_interface(cluster: Cluster, node: str, version: int):
    for iface in _interfaces_of(cluster, node):
        if iface.address_of(version) and all(_interface_on(cluster, d, iface.link_index) for d in cluster.directors):
            return iface
    return None


ODD = [  # no director; a node twice on one link and a real server on no link with the directors
    """
name: odd1
nodes: {r1: {role: router}, rs1: {role: real_server}, rs2: {role: real_server}}
links: [{endpoints: [r1:a, rs1:eth0, rs2:eth0], subnet: 10.0.0.0/24}, {endpoints: [rs1:eth1, r1:b], subnet: 10.0.1.0/24}]
""",
    """
name: odd2
nodes: {d1: {role: director}, d2: {role: director}, rs1: {role: real_server}, rs2: {role: real_server}}
links:
  - {endpoints: [d1:lan0, rs1:eth0, rs1:eth1, d2:lan0], subnet: 10.0.0.0/24}
  - {endpoints: [d1:x, rs2:eth0], subnet: 10.0.1.0/24}
  - {endpoints: [rs2:eth1, d2:x, d1:y], subnet: 10.0.2.0/24}
""",
]


def _clusters() -> list[Cluster]:
    """Every shipped topology and every error case whose fields parse (their links may be odd:
    a node twice on one link, unknown nodes, no directors), cross-field checks not run."""
    paths = sorted((ROOT / "topology").glob("*.lvs.yml")) + sorted((ROOT / "tests" / "errors").glob("*.lvs.yml"))
    texts = [p.read_text() for p in paths] + [topology_scale.topology_text(20, 2), *ODD]
    clusters = []
    for text in texts:
        try:
            topology = Topology.model_validate(_plain(read_yaml(Path("case.lvs.yml"), text)), context={"base": str(ROOT)})
        except (TopologyError, ValidationError):
            continue
        clusters.append(Cluster(topology, assign_addresses(topology)[0]))
    return clusters


def test_cluster_indexes_answer_as_the_scans_did() -> None:
    clusters = _clusters()
    assert len(clusters) > 20
    for cluster in clusters:
        nodes = list(cluster.topology.nodes) + sorted({i.node for i in cluster.interfaces}) + ["nobody"]
        for node in nodes:
            assert cluster.interfaces_of(node) == _interfaces_of(cluster, node)
            for li in range(len(cluster.topology.links) + 1):
                assert cluster.interface_on(node, li) == _interface_on(cluster, node, li)
            ref = RealServerRef.model_construct(node=node)
            for version in (4, 6):
                assert cluster.real_server_interface(ref, version) == _real_server_interface(cluster, node, version)
        for li in range(len(cluster.topology.links) + 1):
            assert cluster.link_members(li) == [i for i in cluster.interfaces if i.link_index == li]
        assert list(cluster.director_links) == [
            li for li in range(len(cluster.topology.links))
            if cluster.directors and all(_interface_on(cluster, d, li) for d in cluster.directors)]
        for vip in cluster.topology.vips:
            for ref in vip.real_servers:
                assert vip in cluster.vips_of(ref.node)
        for node in cluster.real_servers:
            assert cluster.vips_of(node) == [v for v in cluster.topology.vips if node in {r.node for r in v.real_servers}]


def _random_subnets(rng: random.Random, count: int) -> list:
    subnets = []
    for _ in range(count):
        if rng.random() < 0.2 and subnets:
            subnets.append(rng.choice(subnets))  # the same subnet twice
        elif rng.random() < 0.8:
            prefix = rng.choice([8, 16, 20, 24, 25, 26, 30, 31, 32])
            subnets.append(ipaddress.ip_network((rng.choice([0x0A000000, 0x0A020000, 0xC0A80000]) + rng.randrange(0, 1 << 12) * 256, prefix), strict=False))
        else:
            prefix = rng.choice([48, 56, 64, 120, 127, 128])
            subnets.append(ipaddress.ip_network((0x20010DB8 << 96 | rng.randrange(0, 1 << 20) << 64, prefix), strict=False))
    return subnets


def test_subnet_index_finds_what_comparing_every_pair_found() -> None:
    rng = random.Random(14)
    for _ in range(60):
        subnets = _random_subnets(rng, rng.randrange(1, 40))
        index = SubnetIndex(subnets)
        for li, subnet in enumerate(subnets):
            first = next((lj for lj in range(li) if subnets[lj] != subnet and subnets[lj].version == subnet.version
                          and subnet.overlaps(subnets[lj])), None)
            found = index.first_overlap(subnet)
            assert (found if found is not None and found < li else None) == first
        for subnet in subnets:
            for address in (subnet.network_address, subnet[-1], ipaddress.ip_address("10.2.0.200"),
                            ipaddress.ip_address("2001:db8::1")):
                assert index.holding(address) == [
                    li for li, s in enumerate(subnets) if s.version == address.version and address in s]
