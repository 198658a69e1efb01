"""observe() and apply(): one node's kernel state in and `Action`s out, for one namespace.

    current = observe_node("lvs-d1", desired)     # NodeState shaped like `desired`
    apply("lvs-d1", actions)                      # actions from the diff, in order

`observe` reads only what lvscluster manages: addresses on `lo`, `tunl0` and any interface
the desired state names (lo's own 127.0.0.1/8 and ::1/128 left out), the requested sysctls,
which of the requested tunnel devices are up, and the whole IPVS state (services with dests
in kernel list order, daemons, timeouts).

`apply` runs actions strictly in order. Consecutive IPVS actions are sent as one pipeline
(see `genl.py`): 16,000 dests cost ~70 system calls, not 32,000. `set_frr` is not a
netlink action and is rejected; callers hand it to the FRR backend (`NETLINK_KINDS` lists
what apply accepts). The first failure raises `NetlinkOperationError` naming the action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvscluster.netlink import ipvs as ipvs_ops
from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.ipvs import IpvsOp, IpvsSocket
from lvscluster.netlink.links import Links
from lvscluster.netlink.sysctl import read_sysctls, write_sysctls
from lvscluster.plan.actions import Action
from lvscluster.state import InterfaceAddress, IpvsState, NodeState

MANAGED_INTERFACES = ("lo", "tunl0")
IPVS_KINDS = frozenset(
    {"add_service", "set_service", "del_service", "add_dest", "set_dest", "del_dest", "add_daemon", "del_daemon", "set_timeouts"}
)
NETLINK_KINDS = IPVS_KINDS | {"add_address", "del_address", "set_sysctl", "add_tunnel"}


@dataclass
class Observed:
    """What `observe` read from one namespace."""

    addresses: tuple[InterfaceAddress, ...] = ()
    sysctls: dict[str, str | None] = field(default_factory=dict)
    tunnels: tuple[str, ...] = ()
    ipvs: IpvsState | None = None


def observe(netns: str | None, *, interfaces=MANAGED_INTERFACES, sysctls=(), tunnels=(), ipvs: bool = True) -> Observed:
    """Read managed addresses on `interfaces`, the named sysctls, which `tunnels` are up, and IPVS."""
    with Links(netns) as links:
        addresses = links.addresses(set(interfaces))
        up = tuple(t for t in tunnels if links.is_up(t))
    values = read_sysctls(netns, sysctls) if sysctls else {}
    state = None
    if ipvs:
        with IpvsSocket(netns) as sock:
            state = sock.state()
    return Observed(addresses=addresses, sysctls=values, tunnels=up, ipvs=state)


# IPVS's DoS defences read 2 while their automatic mode (1) is engaged: that is still mode 1.
AUTOMATIC_DEFENSES = {"net.ipv4.vs.drop_entry", "net.ipv4.vs.drop_packet", "net.ipv4.vs.secure_tcp"}


def _defense_mode(name: str, value: str) -> str:
    return "1" if name in AUTOMATIC_DEFENSES and value == "2" else value


def observe_node(netns: str | None, desired: NodeState) -> NodeState:
    """The node's current state, limited to what `desired` manages, as a NodeState to diff."""
    interfaces = set(MANAGED_INTERFACES) | {a.interface for a in desired.addresses}
    seen = observe(
        netns,
        interfaces=interfaces,
        sysctls=tuple(desired.sysctls),
        tunnels=desired.tunnels,
        ipvs=desired.ipvs is not None,
    )
    return NodeState(
        name=desired.name,
        role=desired.role,
        addresses=seen.addresses,
        sysctls={k: _defense_mode(k, v) for k, v in seen.sysctls.items() if v is not None},
        tunnels=seen.tunnels,
        ipvs=seen.ipvs,
        frr=None,
    )


def action_op(action: Action, key_cache: dict | None = None) -> IpvsOp:
    """The IPVS request for one IPVS action (`key_cache` reuses encoded service keys)."""
    svc, dest = action.service, action.dest
    key = None
    if dest is not None and key_cache is not None:
        key = key_cache.get(svc.key)
        if key is None:
            key = key_cache[svc.key] = m.nested("IPVS_CMD_ATTR_SERVICE", m.service_key_attrs(svc))
    match action.kind:
        case "add_service":
            return ipvs_ops.op_add_service(svc)
        case "set_service":
            return ipvs_ops.op_set_service(svc)
        case "del_service":
            return ipvs_ops.op_del_service(svc)
        case "add_dest":
            return ipvs_ops.op_add_dest(svc, dest, key)
        case "set_dest":
            return ipvs_ops.op_set_dest(svc, dest, key)
        case "del_dest":
            return ipvs_ops.op_del_dest(svc, dest, key)
        case "add_daemon":
            return ipvs_ops.op_add_daemon(action.daemon)
        case "del_daemon":
            return ipvs_ops.op_del_daemon(action.daemon)
        case "set_timeouts":
            return ipvs_ops.op_set_timeouts(action.timeouts)
    raise ValueError(f"{action.kind} is not an IPVS action")


@dataclass
class ApplyResult:
    """How many actions ran and how many IPVS requests were written."""

    actions: int = 0
    ipvs_writes: int = 0


def apply(netns: str | None, actions, ipvs_socket: IpvsSocket | None = None) -> ApplyResult:
    """Execute `actions` in order in `netns`; raise NetlinkOperationError on the first failure."""
    actions = list(actions)
    for action in actions:
        if action.kind not in NETLINK_KINDS:
            raise ValueError(f"apply cannot run {action.kind} ({action.summary}): not a netlink action")
    result = ApplyResult()
    sock = ipvs_socket
    links = None
    key_cache: dict = {}
    try:
        i = 0
        while i < len(actions):
            action = actions[i]
            if action.kind in IPVS_KINDS:
                j = i
                while j < len(actions) and actions[j].kind in IPVS_KINDS:
                    j += 1
                ops = [action_op(a, key_cache) for a in actions[i:j]]
                if sock is None:
                    sock = IpvsSocket(netns)
                before = sock.writes
                sock.execute(ops)
                result.ipvs_writes += sock.writes - before
                i = j
                continue
            if action.kind == "set_sysctl":
                j = i
                while j < len(actions) and actions[j].kind == "set_sysctl":
                    j += 1
                write_sysctls(netns, {a.sysctl: a.value for a in actions[i:j]})
                i = j
                continue
            if links is None:
                links = Links(netns)
            if action.kind == "add_address":
                links.add_address(action.address)
            elif action.kind == "del_address":
                links.del_address(action.address)
            elif action.kind == "add_tunnel":
                links.ensure_tunnel(action.tunnel)
            i += 1
        result.actions = len(actions)
        return result
    finally:
        if links is not None:
            links.close()
        if sock is not None and sock is not ipvs_socket:
            sock.close()
