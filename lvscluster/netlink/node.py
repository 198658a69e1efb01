"""observe() and observe_node(): one node's kernel state, for one namespace.

    current = observe_node("lvs-d1", desired)     # NodeState shaped like `desired`

`observe` reads only what lvscluster manages: addresses on `lo`, `tunl0` and any interface
the desired state names (lo's own 127.0.0.1/8 and ::1/128 left out), the requested sysctls,
which of the requested tunnel devices are up, and the whole IPVS state (services with dests
in kernel list order, daemons, timeouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvscluster.netlink.ipvs import IpvsSocket
from lvscluster.netlink.links import Links
from lvscluster.netlink.sysctl import read_sysctls
from lvscluster.state import InterfaceAddress, IpvsState, NodeState

MANAGED_INTERFACES = ("lo", "tunl0")


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
