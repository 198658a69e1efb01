"""A node held in memory: the `NodeBackend` deploy's rollout logic is tested with, without a kernel.

Like Seesaw's dummy NCC, it keeps a `NodeState` and changes it as the kernel would (a new IPVS
dest goes to the head of its service's list, as `IPVS_CMD_NEW_DEST` puts it), so a plan applied
to it and observed again diffs to nothing. It records every apply, can fail on a chosen action,
and can run a hook before applying (a test sends itself SIGINT there).
"""

from __future__ import annotations

from collections.abc import Callable

from lvscluster.apply.placement import Placement
from lvscluster.errors import ApplyError
from lvscluster.plan.actions import Action
from lvscluster.state import IpvsService, IpvsState, NodeState


class MemoryBackend:
    """A `NodeBackend` whose node is a NodeState in memory."""

    def __init__(self, name: str, role: str, state: NodeState | None = None,
                 fail_on: Callable[[Action], bool] | None = None, before_apply: Callable[[str], None] | None = None):
        self.name = name
        self.state = state or NodeState(name=name, role=role)
        self.placement = Placement("memory", name)
        self.description = str(self.placement)
        self.dry_run = False
        self.fail_on = fail_on
        self.before_apply = before_apply
        self.applied: list[list[Action]] = []  # every apply call's actions, in order
        self.sysctl_originals: dict[str, str] = {}
        self.recorded: dict[str, str | None] = {}  # deploy's record of a director: node -> topology (None: forgotten)

    def observe(self, desired: NodeState) -> NodeState:
        """The held state, limited to what `desired` manages (as the kernel backend reads it)."""
        held = self.state
        interfaces = {"lo", "tunl0"} | {a.interface for a in desired.addresses}
        return NodeState(
            name=desired.name, role=desired.role,
            addresses=tuple(a for a in held.addresses if a.interface in interfaces),
            sysctls={k: v for k, v in held.sysctls.items() if k in desired.sysctls},
            tunnels=tuple(t for t in held.tunnels if t in desired.tunnels),
            ipvs=(held.ipvs or IpvsState()) if desired.ipvs is not None else None,
            frr=held.frr if desired.frr is not None else None,
            exabgp=held.exabgp if desired.exabgp is not None else None,
        )

    def originals(self) -> dict[str, str]:
        """Sysctl values as they were before the first change."""
        return dict(self.sysctl_originals)

    def apply(self, actions: list[Action]) -> None:
        """Change the held state action by action; a failing action stops there (earlier ones stay)."""
        if self.before_apply is not None:
            self.before_apply(self.name)
        self.applied.append(list(actions))
        for action in actions:
            if self.fail_on is not None and self.fail_on(action):
                raise ApplyError(f"{self.description}: {action.summary}: refused (a failure this test asked for)")
            self.state = apply_action(self.state, action, self.sysctl_originals)

    def apply_recorded(self, actions: list[Action], node: str, topology: str | None) -> None:
        """`apply`, then keep deploy's record of director `node` (as a remote node keeps it)."""
        self.apply(actions)
        self.recorded[node] = topology


def apply_action(state: NodeState, action: Action, originals: dict[str, str] | None = None) -> NodeState:
    """The state after one action, as the kernel, FRR or ExaBGP would leave it."""
    kind = action.kind
    if kind in ("add_address", "del_address"):
        kept = tuple(a for a in state.addresses if a != action.address)
        return state.model_copy(update={"addresses": kept + ((action.address,) if kind == "add_address" else ())})
    if kind == "set_sysctl":
        if originals is not None and action.previous is not None:
            originals.setdefault(action.sysctl, action.previous)
        return state.model_copy(update={"sysctls": {**state.sysctls, action.sysctl: action.value}})
    if kind == "add_tunnel":
        return state.model_copy(update={"tunnels": tuple(sorted({*state.tunnels, action.tunnel}))})
    if kind == "set_frr":
        return state.model_copy(update={"frr": action.frr})
    if kind in ("set_exabgp", "del_exabgp"):
        return state.model_copy(update={"exabgp": action.exabgp if kind == "set_exabgp" else None})
    return state.model_copy(update={"ipvs": _ipvs_after(state.ipvs or IpvsState(), action)})


def _ipvs_after(ipvs: IpvsState, action: Action) -> IpvsState:
    kind, services = action.kind, {s.key: s for s in ipvs.services}
    if kind == "set_timeouts":
        return ipvs.model_copy(update={"timeouts": action.timeouts})
    if kind in ("add_daemon", "del_daemon"):
        kept = tuple(d for d in ipvs.daemons if d.key != action.daemon.key)
        return ipvs.model_copy(update={"daemons": kept + ((action.daemon,) if kind == "add_daemon" else ())})
    key = action.service.key
    if kind == "add_service":
        services[key] = action.service.without_dests()
    elif kind == "set_service":
        services[key] = action.service.model_copy(update={"dests": services[key].dests})
    elif kind == "del_service":
        del services[key]
    else:
        services[key] = _dests_after(services[key], action)
    return ipvs.model_copy(update={"services": tuple(services.values())})


def _dests_after(service: IpvsService, action: Action) -> IpvsService:
    dests = list(service.dests)
    index = next((i for i, d in enumerate(dests) if d.key == action.dest.key), None)
    if action.kind == "add_dest":
        dests.insert(0, action.dest)  # the kernel's list: newest first
    elif action.kind == "set_dest":
        dests[index] = action.dest
    else:
        del dests[index]
    return service.model_copy(update={"dests": tuple(dests)})
