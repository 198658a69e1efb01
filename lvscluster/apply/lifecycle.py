"""Director and real-server lifecycle steps: deploy some nodes, tear one down, wait for traffic to move.

The choreographies (`director drain|undrain|remove`, `rs drain|undrain|remove` in the CLI)
are built from these steps, all through the deploy pipeline: the topology says what a node
should be, deploy makes it so, and the waits watch the kernel (router next hops, IPVS rates
and connection counts) until traffic has really moved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from lvscluster.apply.deploy import apply_plan, plan_deploy, plan_teardown
from lvscluster.apply.placement import Placement, placement_of
from lvscluster.files import write_atomic
from lvscluster.model.cluster import Cluster
from lvscluster.runfiles import WITHDRAWALS

Progress = Callable[[str], None]


def deploy_nodes(cluster: Cluster, lab: dict[str, Placement] | None, nodes: list[str], progress: Progress) -> int:
    """Deploy the topology to these nodes only (rollout order); returns the number of changes."""
    plan = plan_deploy(cluster, lab, progress=progress, only=nodes)
    apply_plan(plan, progress=progress)
    return plan.total


def teardown_node(cluster: Cluster, lab: dict[str, Placement] | None, node: str, progress: Progress) -> int:
    """Remove what deploy put on one node (VIPs, IPVS, sync, FRR config; sysctls back)."""
    teardown = plan_teardown(plan_deploy(cluster, lab, progress=progress, only=[node]))
    apply_plan(teardown, progress=progress)
    return teardown.total


def _netns(cluster: Cluster, lab: dict[str, Placement] | None, node: str) -> str | None | bool:
    """The namespace to read a node's kernel in; False when the node is not on this machine."""
    placement = placement_of(cluster, node, lab)
    return placement.netns if placement.on_this_machine else False


def router_next_hops(cluster: Cluster, lab: dict[str, Placement] | None) -> dict[str, list[str]] | None:
    """Each VIP's next hops on the first router, when the router's kernel can be read from here."""
    from lvscluster.netlink import Links

    if not cluster.routers or (netns := _netns(cluster, lab, cluster.routers[0])) is False:
        return None
    with Links(netns) as links:
        return {str(vip.address): sorted(links.nexthops(f"{vip.address}/32")) for vip in cluster.topology.vips}


def director_uplink_addresses(cluster: Cluster, director: str) -> set[str]:
    """The addresses the router uses as next hops towards a director."""
    return {u.director.ip for r in cluster.routers for u in cluster.uplinks(r) if u.director.node == director}


def router_uses(cluster: Cluster, lab: dict[str, Placement] | None, director: str) -> bool | None:
    """Whether the router's ECMP set for any VIP includes the director (None: the router is not readable here)."""
    hops = router_next_hops(cluster, lab)
    if hops is None:
        return None
    return any(director_uplink_addresses(cluster, director) & set(h) for h in hops.values())


def director_load(cluster: Cluster, lab: dict[str, Placement] | None, director: str) -> dict[str, int] | None:
    """A director's IPVS load over all services: active and inactive connections, packets in
    (a counter) and packets/s in (the kernel's 2 s moving average, slow to reach 0)."""
    from lvscluster.netlink import IpvsSocket

    if (netns := _netns(cluster, lab, director)) is False:
        return None
    load = {"active": 0, "inactive": 0, "inpps": 0, "inpkts": 0}
    with IpvsSocket(netns) as sock:
        for stats in sock.service_stats().values():
            load["inpps"] += stats.inpps
            load["inpkts"] += stats.inpkts
        for service in sock.services():
            for stats in sock.dest_stats(service).values():
                load["active"] += stats.active_conns or 0
                load["inactive"] += stats.inact_conns or 0
    return load


def real_server_traffic(cluster: Cluster, lab: dict[str, Placement] | None, real_server: str) -> dict[str, int] | None:
    """Active connection entries and packets in (a counter) towards one real server, summed over
    every director that can be read from here. In an all-active cluster the entries overstate:
    a director the router no longer sends a flow to keeps its entry until the entry times out."""
    from lvscluster.netlink import IpvsSocket

    addresses = {cluster.real_server_address(ref, vip.address.version) for vip in cluster.topology.vips for ref in vip.real_servers
                 if ref.node == real_server}
    total, seen = {"active": 0, "inpkts": 0}, False
    for director in cluster.directors:
        if (netns := _netns(cluster, lab, director)) is False:
            continue
        seen = True
        with IpvsSocket(netns) as sock:
            for service in sock.services():
                for key, stats in sock.dest_stats(service).items():
                    if key.rsplit(":", 1)[0].strip("[]") in addresses:
                        total["active"] += stats.active_conns or 0
                        total["inpkts"] += stats.inpkts
    return total if seen else None


def settled(sample: Callable[[], int | None], samples: int = 3) -> Callable[[], bool]:
    """A check for `wait_for`: true once a counter read by `sample` stood still over `samples` reads."""
    seen: list[int | None] = []

    def check() -> bool:
        seen.append(sample())
        return len(seen) >= samples and len(set(seen[-samples:])) == 1
    return check


def wait_for(check: Callable[[], bool], timeout: float, period: float = 1.0) -> bool:
    """Poll `check` until it is true or `timeout` seconds passed; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


def connection_entries(cluster: Cluster, lab: dict[str, Placement] | None, director: str) -> int | None:
    """How many IPVS connection entries a director holds (its own and those learnt by sync)."""
    from lvscluster.netlink.connections import connections

    if (netns := _netns(cluster, lab, director)) is False:
        return None
    return len(connections(netns))


def sync_caught_up(cluster: Cluster, lab: dict[str, Placement] | None, director: str, share: float = 0.9) -> bool:
    """True when the director holds at least `share` of the entries the median other director holds."""
    others = sorted(n for d in cluster.directors if d != director
                    if (n := connection_entries(cluster, lab, d)) is not None)
    mine = connection_entries(cluster, lab, director)
    if mine is None or not others:
        return True  # nothing to compare with from here
    return mine >= share * others[len(others) // 2]


REANNOUNCE_HOLD = 8.0  # seconds: FRR re-adds a VIP withdrawn moments ago only after 6-9 s anyway


def note_withdrawal(cluster: Cluster, director: str, path: Path = WITHDRAWALS) -> None:
    """Remember when a director withdrew its VIPs (so a quick re-add waits; see `hold_reannouncement`)."""
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        seen = {}
    seen[f"{cluster.name}/{director}"] = time.time()
    write_atomic(path, json.dumps(seen, indent=1, sort_keys=True))


def hold_reannouncement(cluster: Cluster, director: str, progress: Progress, hold: float = REANNOUNCE_HOLD,
                        path: Path = WITHDRAWALS) -> float:
    """Wait until `hold` seconds passed since the director last withdrew; returns the seconds waited.

    Announcing again right after a withdrawal makes the router re-add the VIP only after
    several seconds (an LSA it just flushed); waiting out the hold first is as fast and predictable.
    """
    try:
        since = time.time() - json.loads(path.read_text()).get(f"{cluster.name}/{director}", 0)
    except (OSError, ValueError):
        return 0.0
    wait = max(0.0, hold - since)
    if wait:
        progress(f"{director} withdrew {since:.1f} s ago: holding its announcement for {wait:.1f} s")
        time.sleep(wait)
    return wait
