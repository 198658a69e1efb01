"""The diff engine (pure): desired and observed NodeState in, ordered Actions with reasons out.

Order, chosen so a node never serves a VIP it cannot forward and never drops one it still
announces:
  1. sysctls and tunnel devices, timeouts, sync daemons (backup before master);
  2. services, then their dests (kernel order repaired; see `diff_dests`);
  3. VIP addresses added, FRR config (announce/withdraw);
  4. VIP addresses removed, then services removed (after the withdrawal).
Observed == desired gives no actions.
"""

from __future__ import annotations

from lvscluster.gcpause import cyclic_gc_paused
from lvscluster.model.secrets import redact_frr
from lvscluster.plan.actions import Action
from lvscluster.state import ExabgpState, IpvsDest, IpvsService, IpvsState, NodeState, SyncDaemon


def diff_node(desired: NodeState, observed: NodeState) -> list[Action]:
    """Actions that turn `observed` into `desired` for one node, in the order they must run."""
    node = desired.name
    early: list[Action] = []
    for name, value in desired.sysctls.items():
        have = observed.sysctls.get(name)
        if not sysctl_equal(value, have):
            early.append(Action(node=node, kind="set_sysctl", sysctl=name, value=value, previous=have,
                                reason=f"now {have if have is not None else 'unset'}, a {desired.role.replace('_', ' ')} needs {value}"))
    for tunnel in desired.tunnels:
        if tunnel not in observed.tunnels:
            early.append(Action(node=node, kind="add_tunnel", tunnel=tunnel, reason="TUN real server decapsulates on it"))
    ipvs_early, ipvs_late = diff_ipvs(node, desired.ipvs, observed.ipvs)

    have_addresses = set(observed.addresses)
    want_addresses = set(desired.addresses)
    add_addresses = [Action(node=node, kind="add_address", address=a, reason=_address_reason(desired, "add"))
                     for a in desired.addresses if a not in have_addresses]
    del_addresses = [Action(node=node, kind="del_address", address=a, reason="VIP no longer in the topology")
                     for a in observed.addresses if a not in want_addresses]
    frr = []
    if desired.frr is not None and desired.frr != observed.frr:
        why = "FRR not configured yet" if observed.frr is None else _frr_difference(observed.frr)
        frr.append(Action(node=node, kind="set_frr", frr=desired.frr, reason=why))
    if desired.exabgp is not None and desired.exabgp != observed.exabgp:  # after FRR: its routes first
        frr.append(Action(node=node, kind="set_exabgp", exabgp=desired.exabgp,
                          reason=_exabgp_difference(desired.exabgp, observed.exabgp)))
    return early + ipvs_early + add_addresses + frr + del_addresses + ipvs_late


def _frr_difference(observed: str) -> str:
    """The reason for a set_frr: the frr-reload delta the backend put in the observed config, if any."""
    lines = observed.splitlines()[1:] if observed.startswith("! differs") else []
    delta = [line.strip()[0] + " " + " ".join(redact_frr(line.strip()[1:].strip()).split())
             for line in lines if line.strip()[:1] in "+-"]
    if not delta:
        return "FRR configuration differs"
    more = f" and {len(delta) - 3} more" if len(delta) > 3 else ""
    return "FRR configuration differs: " + "; ".join(delta[:3]) + more


def _exabgp_difference(desired: ExabgpState, observed: ExabgpState | None) -> str:
    if observed is None:
        return "ExaBGP not running"
    if observed.config != desired.config:
        return "ExaBGP configuration differs" + ("" if observed.config.startswith("#") else f" ({observed.config.strip()})")
    added = [r for r in desired.routes if r not in observed.routes]
    gone = [r for r in observed.routes if r not in desired.routes]
    return "; ".join([*(f"announce {r.removeprefix('route ')}" for r in added),
                      *(f"withdraw {r.removeprefix('route ')}" for r in gone)])


def sysctl_equal(want: str, have: str | None) -> bool:
    """Sysctl values compared as the kernel means them: `0x0037` == `55`, `3  50` == `3 50`."""
    if have is None:
        return False

    def words(text: str) -> list:
        out = []
        for word in text.split():
            try:
                out.append(int(word, 0))
            except ValueError:
                out.append(word)
        return out

    return words(want) == words(have)


def _address_reason(state: NodeState, verb: str) -> str:
    if state.role == "director":
        return "VIP to announce (OSPF network statement matches it on lo)"
    return "real server accepts packets for the VIP without answering ARP for it"


def diff_ipvs(node: str, desired: IpvsState | None, observed: IpvsState | None) -> tuple[list[Action], list[Action]]:
    """IPVS actions split into (before the VIP is announced, after it is withdrawn)."""
    if desired is None:
        return [], []
    observed = observed or IpvsState()
    early: list[Action] = []
    if desired.timeouts != observed.timeouts and any(desired.timeouts.model_dump().values()):
        changed = {k: v for k, v in desired.timeouts.model_dump().items() if v and v != getattr(observed.timeouts, k)}
        if changed:
            early.append(Action(node=node, kind="set_timeouts", timeouts=desired.timeouts,
                                reason="timeouts " + ", ".join(f"{k} {getattr(observed.timeouts, k)} -> {v}" for k, v in changed.items())))
    have_daemons = {d.key: d for d in observed.daemons}
    want_daemons = {d.key: d for d in desired.daemons}
    for key, daemon in have_daemons.items():
        if not same_daemon(want_daemons.get(key), daemon):
            why = "sync settings changed" if key in want_daemons else "sync no longer configured"
            early.append(Action(node=node, kind="del_daemon", daemon=daemon, reason=why))
    for daemon in desired.daemons:
        if not same_daemon(daemon, have_daemons.get(daemon.key)):
            why = "receive connection state from the other directors" if daemon.state == "backup" else "send connection state to the other directors"
            early.append(Action(node=node, kind="add_daemon", daemon=daemon, reason=why))
    have_services = {s.key: s for s in observed.services}
    want_keys = {s.key for s in desired.services}
    for service in desired.services:
        have = have_services.get(service.key)
        if have is None:
            early.append(Action(node=node, kind="add_service", service=service.without_dests(), reason="new service"))
            have = service.without_dests()
        elif have.without_dests() != service.without_dests():
            early.append(Action(node=node, kind="set_service", service=service.without_dests(),
                                reason=_service_change(have, service)))
        early += diff_dests(node, service, have.dests)
    late = [Action(node=node, kind="del_service", service=s.without_dests(), reason="service no longer in the topology")
            for s in observed.services if s.key not in want_keys]
    return early, late


def same_daemon(want: SyncDaemon | None, have: SyncDaemon | None) -> bool:
    """True when the running daemon is what is wanted; a wanted maxlen of 0 accepts the kernel's choice."""
    if want is None or have is None:
        return want is have
    if want.maxlen == 0:
        have = have.model_copy(update={"maxlen": 0})
    return want == have


def _service_change(have: IpvsService, want: IpvsService) -> str:
    parts = []
    for field in ("scheduler", "flags", "persistence", "netmask"):
        old, new = getattr(have, field), getattr(want, field)
        if old != new:
            parts.append(f"{field} {_show(old)} -> {_show(new)}")
    return ", ".join(parts)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def diff_dests(node: str, service: IpvsService, observed: tuple[IpvsDest, ...]) -> list[Action]:
    """Dest actions that leave the kernel list exactly `service.dests`, in that order.

    The kernel inserts at the head of the list. The observed dests that can stay are the
    longest common tail of (observed, minus the removed ones) and desired; every other
    observed dest is deleted, and the missing head of the desired list is inserted last
    first. Appending a real server to the topology therefore is one insert; a divergent
    order (mh would hash differently on this director) is repaired by re-inserting.
    """
    desired = service.dests
    want = {d.key for d in desired}
    survivors = [d for d in observed if d.key in want]
    keep = 0
    while (keep < len(survivors) and keep < len(desired)
           and survivors[-1 - keep].key == desired[-1 - keep].key):
        keep += 1
    kept = {d.key for d in survivors[len(survivors) - keep:]}
    owner = service.without_dests()
    actions = []
    for dest in observed:
        if dest.key in kept:
            continue
        why = "real server removed from the topology" if dest.key not in want else \
            "re-insert to restore the canonical order (mh/sh tables must match on every director)"
        actions.append(Action(node=node, kind="del_dest", service=owner, dest=dest, reason=why))
    have = {d.key: d for d in observed}
    for dest in desired[len(desired) - keep:]:
        old = have[dest.key]
        if old != dest:
            actions.append(Action(node=node, kind="set_dest", service=owner, dest=dest, reason=_dest_change(old, dest)))
    for dest in reversed(desired[:len(desired) - keep]):
        why = "re-insert in canonical order" if dest.key in have else "new real server"
        actions.append(Action(node=node, kind="add_dest", service=owner, dest=dest, reason=why))
    return actions


def _dest_change(have: IpvsDest, want: IpvsDest) -> str:
    fields = ("weight", "forward", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")
    return ", ".join(f"{f} {getattr(have, f)} -> {getattr(want, f)}" for f in fields if getattr(have, f) != getattr(want, f))


def diff_cluster(desired: dict[str, NodeState], observed: dict[str, NodeState]) -> dict[str, list[Action]]:
    """Actions per node; a node missing from `observed` is treated as empty."""
    with cyclic_gc_paused():  # an action per dest, none cyclic
        return {name: diff_node(state, observed.get(name) or NodeState(name=name, role=state.role))
                for name, state in desired.items()}
