"""What health decides (pure): the dests a director's agent checks, and from their results a verdict.

Targets: one `HealthTarget` per VIP service and real server. The most specific `health:`
applies: a real server's, else its service's, else its VIP's. A dest with no health anywhere is
not checked and keeps its configured weight.

Verdict: rise/fall counting and quorum.

Every director's agent runs the same checks against the same real servers with the same
`rise`/`fall`, so they reach the same verdict on their own; no director waits for another.
They can disagree only while a change is being counted: a real server that fails is quiesced
by each director within `fall` checks of its failure, and the checks of two directors are at
most one `interval` apart, so two directors disagree for at most `interval + fall x interval`
(and `interval + rise x interval` on recovery). docs/health.md says more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lvscluster.model.cluster import Cluster
from lvscluster.model.topology import Health, Service, Vip


@dataclass(frozen=True, order=True)
class DestKey:
    """One IPVS dest, named as the topology names it: VIP, service (`tcp/80`, `fwmark/7`), real server."""

    vip: str
    service: str
    real_server: str

    def __str__(self) -> str:
        return f"{self.vip} {self.service} {self.real_server}"


@dataclass(frozen=True)
class HealthTarget:
    """A check to run and the dest whose weight it decides."""

    key: DestKey
    spec: Health
    address: str  # the real server's address as directors reach it
    port: int | None  # the port to check
    vip_address: str
    vip_port: int


def service_label(service: Service) -> str:
    """`tcp/80`, `udp/53` or `fwmark/7`: how health keys and logs name a service."""
    if service.protocol == "fwmark":
        return f"fwmark/{service.fwmark}"
    return f"{service.protocol}/{service.port}"


def health_targets(cluster: Cluster) -> list[HealthTarget]:
    """Every checked dest of the topology, in file order (the same list on every director)."""
    targets = []
    for vip in cluster.topology.vips:
        for service in vip.services:
            for ref in vip.real_servers:
                spec = ref.health or service.health or vip.health
                if spec is None:
                    continue
                dest_port = ref.port or service.port
                targets.append(HealthTarget(
                    key=DestKey(vip.name, service_label(service), ref.node),
                    spec=spec,
                    address=cluster.real_server_address(ref, vip.address.version) or "",
                    port=None if spec.type == "exec" else (spec.port or dest_port),
                    vip_address=str(vip.address),
                    vip_port=service.port or 0,
                ))
    return targets


def checked_vips(cluster: Cluster) -> list[Vip]:
    """The VIPs with at least one checked dest: only these can be withdrawn by health."""
    names = {t.key.vip for t in health_targets(cluster)}
    return [vip for vip in cluster.topology.vips if vip.name in names]


@dataclass
class RiseFall:
    """keepalived's counting: `fall` failures in a row take an up server down, `rise` successes
    in a row bring a down one back. A server starts up (as deploy left it)."""

    rise: int
    fall: int
    up: bool = True
    streak: int = 0  # consecutive results that disagree with `up`
    last_detail: str = ""

    def record(self, ok: bool, detail: str = "") -> bool:
        """Count one result; True when this result flipped the state."""
        self.last_detail = detail
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.up, self.streak = ok, 0
            return True
        return False


@dataclass(frozen=True)
class HealthVerdict:
    """What health changes in a director's desired state."""

    quiesced: frozenset[DestKey] = frozenset()  # weight 0: no new connections, mh table kept
    withdrawn: frozenset[str] = frozenset()  # VIP names the director stops announcing
    sorry: frozenset[tuple[str, str]] = frozenset()  # (VIP, service) sent to the VIP's sorry server

    def to_json(self) -> dict:
        """Plain data for the agent's state file and `status`."""
        return {"quiesced": [str(k) for k in sorted(self.quiesced)], "withdrawn": sorted(self.withdrawn),
                "sorry": [f"{v} {s}" for v, s in sorted(self.sorry)]}

    @classmethod
    def from_json(cls, data: dict) -> "HealthVerdict":
        """The inverse of `to_json`."""
        return cls(quiesced=frozenset(DestKey(*text.split(" ")) for text in data.get("quiesced", ())),
                   withdrawn=frozenset(data.get("withdrawn", ())),
                   sorry=frozenset(tuple(text.split(" ")) for text in data.get("sorry", ())))


@dataclass
class HealthBook:
    """Rise/fall state of every checked dest of one director."""

    targets: list[HealthTarget]
    states: dict[DestKey, RiseFall] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for target in self.targets:
            self.states.setdefault(target.key, RiseFall(target.spec.rise, target.spec.fall))

    def record(self, key: DestKey, ok: bool, detail: str = "") -> bool:
        """Count one check result for `key`; True when the dest changed state."""
        return self.states[key].record(ok, detail)

    def down(self) -> frozenset[DestKey]:
        """The dests that are down now."""
        return frozenset(k for k, s in self.states.items() if not s.up)

    def verdict(self, cluster: Cluster) -> HealthVerdict:
        """Quiesce what is down; withdraw a VIP none of whose services meets its quorum (its weights
        stay: see `decide`), unless a sorry server takes over the services without a healthy one."""
        return decide(cluster, self.down())


def decide(cluster: Cluster, down: Iterable[DestKey]) -> HealthVerdict:
    """The verdict for a set of down dests (pure; the same on every director for the same set)."""
    down = frozenset(down)
    withdrawn, sorry, unserved = set(), set(), set()
    for vip in cluster.topology.vips:
        healthy_per_service = {}
        for service in vip.services:
            label = service_label(service)
            healthy = [ref for ref in vip.real_servers
                       if ref.weight > 0 and not cluster.topology.nodes[ref.node].drain
                       and DestKey(vip.name, label, ref.node) not in down]
            healthy_per_service[label] = len(healthy)
            if not healthy:
                if vip.sorry_server is not None:
                    sorry.add((vip.name, label))
                else:
                    unserved.add((vip.name, label))
        if not any(vip.name == k.vip for k in down):
            continue  # nothing of this VIP is down: drained or zero weights are deploy's business
        if vip.sorry_server is None and all(n < vip.quorum for n in healthy_per_service.values()):
            withdrawn.add(vip.name)
    # A withdrawn VIP keeps its weights: packets the router still sends while it converges find
    # a real server (or its own failure) rather than a service with every weight at 0, which the
    # director would answer with a reset. That also covers checks that failed from this director
    # only (its LAN path is what broke). For the same reason a service with no healthy real server
    # and no sorry server keeps its weights while another service keeps the VIP announced: checks
    # that come back one by one (a director whose links were down) never leave it refusing every
    # new connection of one service for a round.
    quiesced = frozenset(k for k in down if k.vip not in withdrawn and (k.vip, k.service) not in unserved)
    return HealthVerdict(quiesced=quiesced, withdrawn=frozenset(withdrawn),
                         sorry=frozenset(s for s in sorry if any(k.vip == s[0] and k.service == s[1] for k in down)))
