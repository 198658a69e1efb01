"""Would every director send the same flow to the same real server? mh/sh tables compared (pure).

ECMP hands a flow to any director, so all-active works only when every director, for every
service, schedules a new flow to the same real server. For `mh` and `sh` that holds exactly
when the directors compute the same lookup table and agree on which dests are available and on
the hash flags (`*-port`, `*-fallback`). `verify_directors` recomputes each director's table
from its observed dest order and weights (lvscluster.plan.maglev, the kernel's algorithm),
groups directors that behave identically, takes the largest group as the majority, and reports
for every other director what differs, the fraction of table slots that differ, the fraction of
a fixed sample of flows that would reach a different real server, and a few such flows.
A service missing on some directors is divergence too. Schedulers without a table (rr, wlc,
...) pick per director by local state; for them only presence, scheduler and available dests
are compared.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from lvscluster.plan import maglev
from lvscluster.state import IpvsService, IpvsState, NodeState

SAMPLE_FLOWS = 1000
EXAMPLES_PER_DIRECTOR = 3


@dataclass(frozen=True)
class FlowExample:
    """One client flow and the real server the majority and a diverging director pick (None: dropped)."""

    client: str
    majority: str | None
    director: str | None


@dataclass(frozen=True)
class Divergence:
    """How one director's service differs from the majority's."""

    director: str
    reasons: list[str]
    slots_differing: float | None  # fraction of table slots; None when the tables are not comparable
    flows_differing: float | None  # fraction of the sampled flows; None without tables on both sides
    examples: list[FlowExample] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceCheck:
    """One service across all directors: who agrees with the majority and who does not."""

    service: str
    scheduler: str | None  # the majority's (None: the majority lacks the service)
    reference: str  # a director of the majority, the one examples compare with
    agreeing: list[str]
    diverging: list[Divergence]
    notes: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """True when no director diverges."""
        return not self.diverging


@dataclass(frozen=True)
class VerifyReport:
    """Every service of every director checked."""

    directors: list[str]
    services: list[ServiceCheck]

    @property
    def consistent(self) -> bool:
        """True when every service agrees on every director."""
        return all(s.consistent for s in self.services)

    def to_json(self) -> dict:
        """Plain data for `--json`."""
        return {"consistent": self.consistent, "directors": self.directors,
                "services": [{**asdict(s), "consistent": s.consistent} for s in self.services]}


def services_of(state: NodeState | IpvsState | None) -> dict[str, IpvsService]:
    """The IPVS services an observed node or IPVS state holds, by key."""
    if isinstance(state, NodeState):
        state = state.ipvs
    return {svc.key: svc for svc in (state.services if state else ())}


def _behaviour(svc: IpvsService | None) -> tuple | None:
    """What decides where a new flow goes: equal behaviours, equal choices for every flow."""
    if svc is None:
        return None
    available = frozenset(d.key for d in svc.dests if d.weight > 0)
    table = maglev.table_for(svc)
    if table is None:
        return (svc.scheduler, available)
    return (svc.scheduler, maglev.has_flag(svc, maglev.PORT_BIT), maglev.has_flag(svc, maglev.FALLBACK_BIT),
            available, table)


def sample_flows(family: int, count: int = SAMPLE_FLOWS, seed: int = 4093) -> list[tuple[str, int]]:
    """A fixed, reproducible sample of client (address, source port) pairs."""
    rng = random.Random(seed)
    if family == 6:
        return [(str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96))), rng.randrange(1024, 65536))
                for _ in range(count)]
    return [(str(ipaddress.IPv4Address(rng.randrange(0x0100_0000, 0xE000_0000))), rng.randrange(1024, 65536))
            for _ in range(count)]  # unicast: 1.0.0.0 up to the multicast range


def _slot_values(svc: IpvsService, table: maglev.Table) -> list[str | None]:
    """Each slot's dest, or `!dest` when that dest is unavailable (weight 0)."""
    unavailable = {d.key for d in svc.dests if d.weight <= 0}
    return [f"!{key}" if key in unavailable else key for key in table]


def _reasons(reference: IpvsService | None, svc: IpvsService | None) -> list[str]:
    """Human-readable differences of `svc` from the reference service."""
    if reference is None:
        return ["service present here, missing on the majority"]
    if svc is None:
        return ["service missing here"]
    reasons = []
    if svc.scheduler != reference.scheduler:
        reasons.append(f"scheduler {svc.scheduler} instead of {reference.scheduler}")
    for bit, name in ((maglev.PORT_BIT, "port"), (maglev.FALLBACK_BIT, "fallback")):
        if maglev.has_flag(svc, bit) != maglev.has_flag(reference, bit):
            reasons.append(f"{svc.scheduler}-{name} {'set' if maglev.has_flag(svc, bit) else 'not set'} here only")
    mine, theirs = [d.key for d in svc.dests], [d.key for d in reference.dests]
    if set(mine) != set(theirs):
        extra, lacking = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        reasons.append("dests differ: " + ", ".join([f"+{k}" for k in extra] + [f"-{k}" for k in lacking]))
    elif mine != theirs:
        reasons.append("same dests in a different order")
    weights = {d.key: d.weight for d in reference.dests}
    changed = [f"{d.key} weight {d.weight} (majority {weights[d.key]})" for d in svc.dests
               if d.key in weights and d.weight != weights[d.key]]
    reasons += changed
    return reasons or ["differs"]


def _compare(reference: IpvsService | None, svc: IpvsService | None, director: str,
             flows: list[tuple[str, int]]) -> Divergence:
    """One diverging director against the majority's reference service."""
    ref_table = maglev.table_for(reference) if reference else None
    table = maglev.table_for(svc) if svc else None
    slots = None
    if ref_table is not None and table is not None and len(ref_table) == len(table):
        pairs = zip(_slot_values(reference, ref_table), _slot_values(svc, table))
        slots = sum(1 for a, b in pairs if a != b) / len(table)
    if (reference is not None and ref_table is None) or (svc is not None and table is None):
        return Divergence(director, _reasons(reference, svc), slots, None)
    differing, examples = 0, []
    for ip, port in flows:
        ours = maglev.choose(reference, ip, port, ref_table) if reference else None
        theirs = maglev.choose(svc, ip, port, table) if svc else None
        ours_key, theirs_key = (ours.key if ours else None), (theirs.key if theirs else None)
        if ours_key != theirs_key:
            differing += 1
            if len(examples) < EXAMPLES_PER_DIRECTOR:
                client = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                examples.append(FlowExample(client, ours_key, theirs_key))
    return Divergence(director, _reasons(reference, svc), slots, differing / len(flows), examples)


def _notes(by_director: dict[str, IpvsService | None]) -> list[str]:
    """Caveats the observed state cannot settle (weight-0 dests of mh services)."""
    notes = []
    for director, svc in by_director.items():
        if svc is None or svc.scheduler != "mh":
            continue
        zero = [d.key for d in svc.dests if d.weight == 0]
        if zero:
            notes.append(f"{director}: {', '.join(zero)} at weight 0; mh keeps slots for the weight a dest had "
                         "before it was set to 0, which netlink does not show: taken as added at weight 0 (no slots)")
    return notes


def check_service(key: str, by_director: dict[str, IpvsService | None]) -> ServiceCheck:
    """Compare one service across directors (None: the director lacks it)."""
    names = list(by_director)
    behaviours = {name: _behaviour(svc) for name, svc in by_director.items()}
    counts = Counter(behaviours.values())
    majority = max(counts, key=lambda b: (counts[b], b is not None, -names.index(
        next(n for n in names if behaviours[n] == b))))
    agreeing = [n for n in names if behaviours[n] == majority]
    reference_name = agreeing[0]
    reference = by_director[reference_name]
    present = next((s for s in by_director.values() if s is not None), None)
    flows = sample_flows(present.family if present else 4)
    diverging = [_compare(reference, by_director[n], n, flows) for n in names if behaviours[n] != majority]
    return ServiceCheck(key, reference.scheduler if reference else None, reference_name, agreeing, diverging,
                        _notes(by_director))


def verify_directors(observed: Mapping[str, NodeState | IpvsState | None]) -> VerifyReport:
    """Check every service found on any director; directors in the given order."""
    held = {name: services_of(state) for name, state in observed.items()}
    keys: list[str] = []
    for services in held.values():
        keys += [k for k in services if k not in keys]
    checks = [check_service(k, {name: services.get(k) for name, services in held.items()}) for k in keys]
    return VerifyReport(list(observed), checks)
