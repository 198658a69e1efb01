"""Destroy plan (pure): the actions that remove what deploy added to a node, and nothing else.

Only objects the topology manages are touched: its VIP addresses, its IPVS services (their
dests go with them) and sync daemons, its FRR configuration (replaced by an empty one), its
ExaBGP (stopped), and
the sysctls deploy changed, set back to the values journaled before the first change.
Withdrawal comes first, so no router sends traffic to a director that has stopped serving.
"""

from __future__ import annotations

from lvscluster.plan.actions import Action
from lvscluster.plan.diff import sysctl_equal
from lvscluster.state import NodeState

SECTION_STARTS = ("interface ", "router ", "bfd")


FORWARD = "net.ipv4.ip_forward"


def emptied_frr(desired: str, forwarding: bool | None = None) -> str:
    """The FRR config destroy leaves: the deployed global lines (nexthop handling, forwarding) kept,
    every interface, OSPF and BFD setting gone. An empty `bfd` node stays while bfdd runs: FRR
    cannot remove it. zebra owns ip_forward, so `forwarding` (when known) says what it must be
    left at: the value deploy found, which destroy restores."""
    lines = desired.splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith(SECTION_STARTS)), len(lines))
    header = [line for line in lines[:end] if not line.startswith("! ")]
    if forwarding is not None:
        header = [line for line in header if line != "no ip forwarding"]
        if not forwarding:
            header.insert(max(len(header) - 1, 0), "no ip forwarding")
    tail = ["bfd", "exit", "!"] if "bfd" in lines else []
    return "\n".join(["! emptied by lvscluster destroy", *header, *tail, "end"]) + "\n"


def destroy_frr(desired: NodeState, observed: NodeState, originals: dict[str, str]) -> str | None:
    """The FRR config a destroyed node keeps, or None when deploy manages no FRR there."""
    if desired.frr is None:
        return None
    forwarding = None
    if FORWARD in desired.sysctls:
        after = originals.get(FORWARD, observed.sysctls.get(FORWARD))
        forwarding = None if after is None else after.strip() != "0"
    return emptied_frr(desired.frr, forwarding)


def plan_destroy(desired: NodeState, observed: NodeState, originals: dict[str, str],
                 frr_emptied: bool = False) -> list[Action]:
    """Actions that undo deploy on one node, given the journaled original sysctl values and
    whether the node's FRR already runs the emptied configuration."""
    node = desired.name
    actions: list[Action] = []
    if desired.exabgp is not None and observed.exabgp is not None:
        actions.append(Action(node=node, kind="del_exabgp", reason="stop announcing: stop ExaBGP"))
    if desired.frr is not None and observed.frr is not None and not frr_emptied:
        actions.append(Action(node=node, kind="set_frr", frr=destroy_frr(desired, observed, originals),
                              reason="stop announcing: remove the FRR configuration"))
    have = set(observed.addresses)
    actions += [Action(node=node, kind="del_address", address=a, reason="added by deploy")
                for a in desired.addresses if a in have]
    if desired.ipvs and observed.ipvs:
        wanted = {s.key for s in desired.ipvs.services}
        actions += [Action(node=node, kind="del_service", service=s.without_dests(), reason="added by deploy")
                    for s in observed.ipvs.services if s.key in wanted]
        wanted_daemons = {d.key for d in desired.ipvs.daemons}
        actions += [Action(node=node, kind="del_daemon", daemon=d, reason="started by deploy")
                    for d in observed.ipvs.daemons if d.key in wanted_daemons]
    for name in desired.sysctls:
        original, now = originals.get(name), observed.sysctls.get(name)
        if original is not None and now is not None and not sysctl_equal(original, now):
            actions.append(Action(node=node, kind="set_sysctl", sysctl=name, value=original, previous=now,
                                  reason="back to its value before deploy"))
    return actions
