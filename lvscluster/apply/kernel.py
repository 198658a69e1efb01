"""Actions onto a node's kernel: each netlink `Action` of a plan becomes a request of the netlink library.

    apply_to_kernel("lvs-d1", actions)   # actions from the diff, in order

Actions run strictly in order. Consecutive IPVS actions are sent as one pipeline (see
`netlink/genl.py`): 16,000 dests cost ~70 system calls, not 32,000. `set_frr` is not a
netlink action and is rejected; callers hand it to the FRR backend (`NETLINK_KINDS` lists
what is accepted). The first failure raises `NetlinkOperationError` naming the action.
The netlink library knows nothing of plans: this module is where the two meet.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvscluster.netlink import ipvs as ipvs_ops
from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.ipvs import IpvsOp, IpvsSocket
from lvscluster.netlink.links import Links
from lvscluster.netlink.sysctl import write_sysctls
from lvscluster.plan.actions import Action

IPVS_KINDS = frozenset(
    {"add_service", "set_service", "del_service", "add_dest", "set_dest", "del_dest", "add_daemon", "del_daemon", "set_timeouts"}
)
NETLINK_KINDS = IPVS_KINDS | {"add_address", "del_address", "set_sysctl", "add_tunnel"}


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


def apply_to_kernel(netns: str | None, actions, ipvs_socket: IpvsSocket | None = None) -> ApplyResult:
    """Execute `actions` in order in `netns`; raise NetlinkOperationError on the first failure."""
    actions = list(actions)
    for action in actions:
        if action.kind not in NETLINK_KINDS:
            raise ValueError(f"apply_to_kernel cannot run {action.kind} ({action.summary}): not a netlink action")
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
