"""Node state as plain data: what plan wants, what netlink observes, what the diff compares.

Every type here is a frozen pydantic model so it serialises to stable JSON (`state.json`,
`lvscluster node apply` on stdin) and two states compare with `==`.

Order matters in exactly one place: `IpvsService.dests` is the kernel's destination list
order (the order `IPVS_CMD_GET_DEST` dumps them, newest insertion first). The `mh` and `sh`
schedulers build their lookup table by walking that list, so every director must hold the
same list in the same order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Protocol = Literal["tcp", "udp", "sctp", "fwmark"]
ForwardMethod = Literal["dr", "tun", "nat"]
TunnelType = Literal["ipip", "gue", "gre"]

# Service flag names, as ipvsadm spells them (`-b`). Order-free: kept sorted.
SERVICE_FLAG_BITS: dict[str, int] = {
    "persistent": 0x1,
    "one-packet": 0x4,
    "sh-fallback": 0x8,
    "mh-fallback": 0x8,
    "sh-port": 0x10,
    "mh-port": 0x10,
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IpvsDest(_Frozen):
    """One real server behind a service, as the kernel holds it."""

    address: str
    port: int = 0
    forward: ForwardMethod = "dr"
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: TunnelType | None = None  # only with forward == "tun"; None = ipip (kernel default)
    tun_port: int | None = None  # gue only
    tun_flags: int | None = None

    @property
    def key(self) -> str:
        """`10.2.0.5:80` (IPv6 as `[2001:db8::5]:80`)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class IpvsService(_Frozen):
    """One virtual service: (protocol, VIP, port) or a firewall mark."""

    protocol: Protocol
    address: str | None = None  # None only for fwmark services
    port: int = 0
    fwmark: int = 0
    family: Literal[4, 6] = 4
    scheduler: str = "mh"
    flags: tuple[str, ...] = ()  # sorted names from SERVICE_FLAG_BITS (excluding "persistent")
    persistence: int = 0  # seconds; > 0 sets the persistent flag
    netmask: int = 32  # persistence granularity as a prefix length (IPv4 /32, IPv6 /128)
    dests: tuple[IpvsDest, ...] = ()  # kernel list order (see module docstring)

    @property
    def key(self) -> str:
        """`tcp/10.99.0.10:80`, `fwmark/5` or `fwmark6/5`: what identifies it in the kernel."""
        if self.protocol == "fwmark":
            return f"fwmark{'6' if self.family == 6 else ''}/{self.fwmark}"
        host = f"[{self.address}]" if self.address and ":" in self.address else self.address
        return f"{self.protocol}/{host}:{self.port}"

    def without_dests(self) -> "IpvsService":
        """The service's own settings, for comparing services apart from their dests."""
        return self.model_copy(update={"dests": ()})


class SyncDaemon(_Frozen):
    """An IPVS connection-sync thread: a director runs a master and a backup."""

    state: Literal["master", "backup"]
    interface: str
    syncid: int = 0
    group: str = "224.0.0.81"
    port: int = 8848
    ttl: int = 1
    maxlen: int = 0  # 0 = kernel default (from the interface MTU)

    @property
    def key(self) -> str:
        """`master` or `backup`: the kernel runs at most one of each."""
        return self.state


class IpvsTimeouts(_Frozen):
    """Connection timeouts in seconds (ipvsadm --set tcp tcpfin udp); 0 = leave as is."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0


class IpvsState(_Frozen):
    """Everything IPVS holds in one network namespace."""

    services: tuple[IpvsService, ...] = ()
    daemons: tuple[SyncDaemon, ...] = ()
    timeouts: IpvsTimeouts = IpvsTimeouts()


class InterfaceAddress(_Frozen):
    """An address on an interface, e.g. the VIP on `lo`: `10.99.0.10/32` on `lo`."""

    interface: str
    address: str  # with prefix length

    @property
    def key(self) -> str:
        """`10.99.0.10/32 on lo`."""
        return f"{self.address} on {self.interface}"


class ExabgpState(_Frozen):
    """A director's ExaBGP (`announcer: exabgp`): its configuration (neighbours, the API process),
    and the routes that process announces through ExaBGP's API, one `route ...` line each, sorted."""

    config: str
    routes: tuple[str, ...] = ()


class NodeState(_Frozen):
    """What one node should have (plan) or has (netlink observe): the data the diff compares.

    `addresses` lists only the addresses lvscluster manages (VIPs); `sysctls` maps full
    dotted names (`net.ipv4.vs.sloppy_tcp`) to values as strings; `tunnels` lists tunnel
    interfaces the node needs up (`tunl0` for TUN real servers); `ipvs` is None on nodes
    without IPVS; `frr` is the whole FRR configuration text, or None when FRR is not managed;
    `exabgp` is set on directors that announce through ExaBGP.
    """

    name: str
    role: Literal["director", "real_server", "router", "client"]
    addresses: tuple[InterfaceAddress, ...] = ()
    sysctls: dict[str, str] = Field(default_factory=dict)
    tunnels: tuple[str, ...] = ()
    ipvs: IpvsState | None = None
    frr: str | None = None
    exabgp: ExabgpState | None = None
