"""The topology file as pydantic models: field names, types, ranges and defaults.

Only per-field facts live here; rules that relate several fields (a link naming an unknown
node, a VIP inside a link subnet, too many directors) live in `lvscluster.model.checks`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    model_validator,
)

from lvscluster.model.secrets import Secret

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos")
SERVICE_FLAGS = ("mh-fallback", "mh-port", "sh-fallback", "sh-port", "one-packet")
IFNAME_MAX = 15  # IFNAMSIZ - 1
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")
NAME_RE = r"^[a-z][a-z0-9_-]*$"


class Strict(BaseModel):
    """Base for every topology model: unknown fields are errors (typos must not pass), and so are
    non-finite numbers (`.inf`, `.nan`) in any float field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_ifname(value: str) -> str:
    if len(value) > IFNAME_MAX:
        raise ValueError(f"interface name {value!r} is {len(value)} characters; Linux allows at most {IFNAME_MAX}")
    if not _IFNAME_RE.match(value) or value in (".", ".."):
        raise ValueError(f"interface name {value!r} may contain only letters, digits and _ . @ -")
    return value


def _text_only(value: Any) -> Any:
    """Addresses are written as text: `10.0.0.1`, never a bare number or boolean."""
    if isinstance(value, (bool, int, float)):
        raise ValueError(f"expected an address written as text, e.g. 10.0.0.1, got {value!r}")
    return value


IPAddress = Annotated[IPvAnyAddress, BeforeValidator(_text_only)]
IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(_text_only)]
IPNetwork = Annotated[IPvAnyNetwork, BeforeValidator(_text_only)]
IPv6 = Annotated[ipaddress.IPv6Address, BeforeValidator(_text_only)]
IPv6Network = Annotated[ipaddress.IPv6Network, BeforeValidator(_text_only)]
InterfaceName = Annotated[str, AfterValidator(_check_ifname)]
NodeName = Annotated[str, Field(pattern=NAME_RE, max_length=32)]
Port = Annotated[int, Field(ge=1, le=65535)]
# ipvsadm's limit for persistence and timeouts (MAX_TIMEOUT, 31 days): the kernel keeps them in
# jiffies in 32-bit fields, and a larger value overflows (or fails deploy's u32 packing)
IPVS_MAX_SECONDS = 86400 * 31
Seconds = Annotated[int, Field(ge=0, le=IPVS_MAX_SECONDS)]
SYSCTL_INT_MAX = 2**31 - 1  # the kernel's int sysctls
PositiveSeconds = Annotated[float, Field(gt=0)]


def _dotted_area(value: Any) -> str:
    """An OSPF area as FRR prints it: `0` and `0.0.0.0` both become `0.0.0.0`."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(ipaddress.IPv4Address(value))
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ValueError(f"OSPF area {value!r} should be a dotted quad (0.0.0.0) or a number") from None


class OspfAuth(Strict):
    """OSPF cryptographic authentication on the uplinks (both ends share the key)."""

    type: Literal["md5"] = "md5"  # message-digest; FRR 8.4 has no OSPF HMAC-SHA (key chains came later)
    key_id: Annotated[int, Field(ge=1, le=255)] = 1
    key: Secret

    @model_validator(mode="after")
    def _short_key(self) -> OspfAuth:
        if len(self.key.value) > 16:
            raise ValueError(f"an OSPF MD5 key is at most 16 characters; {self.key} holds {len(self.key.value)}")
        return self


class OspfSettings(Strict):
    """OSPF on director uplinks: area, hello/dead timers, BFD, authentication."""

    area: Annotated[str, BeforeValidator(_dotted_area)] = "0.0.0.0"
    hello: Annotated[int, Field(ge=1, le=65535)] = 1
    dead: Annotated[int, Field(ge=1, le=65535)] = 3
    retransmit: Annotated[int, Field(ge=1, le=65535)] = 1
    bfd: bool = True
    bfd_interval_ms: Annotated[int, Field(ge=10, le=60000)] = 300
    bfd_multiplier: Annotated[int, Field(ge=2, le=255)] = 3
    auth: OspfAuth | None = None


AS_TRANS = 23456  # RFC 6793: stands in for a 4-byte AS towards old speakers; no AS of its own


def _not_as_trans(value: int) -> int:
    if value == AS_TRANS:
        raise ValueError(f"AS {AS_TRANS} is AS_TRANS (RFC 6793), a placeholder no BGP speaker may use as its own AS")
    return value


ASN = Annotated[int, Field(ge=1, le=4294967294), AfterValidator(_not_as_trans)]


class BgpSettings(Strict):
    """BGP between directors and routers (`announce: bgp`): each director peers with the routers
    on its uplinks and announces every VIP /32; routers install up to `max_paths` of them."""

    director_asn: ASN = 65001  # the AS the directors share (a director's own `asn` overrides it)
    router_asn: ASN = 65000  # the routers' AS (a router's own `asn` overrides it)
    asn: ASN | None = None  # on a node: this node's own AS number
    keepalive: Annotated[int, Field(ge=1, le=65535)] = 1
    hold: Annotated[int, Field(ge=3, le=65535)] = 3
    # how soon a session whose TCP connect failed tries again (FRR's own default, 120 s, leaves a
    # director that came up before its router's bgpd out of ECMP for two minutes)
    connect_retry: Annotated[int, Field(ge=1, le=65535)] = 5
    bfd: bool = True
    bfd_interval_ms: Annotated[int, Field(ge=10, le=60000)] = 300
    bfd_multiplier: Annotated[int, Field(ge=2, le=255)] = 3
    announcer: Literal["frr", "exabgp"] = "frr"  # on directors: FRR's bgpd, or ExaBGP driven by the agent
    password: Secret | None = None  # TCP MD5 signature on every session (both ends share it)

    @model_validator(mode="after")
    def _short_password(self) -> BgpSettings:
        if self.password is not None and len(self.password.value) > 80:
            raise ValueError(f"a BGP password is at most 80 characters; {self.password} holds {len(self.password.value)}")
        return self


class SyncSettings(Strict):
    """IPVS connection sync between directors: each runs a master and a backup daemon."""

    syncid: Annotated[int, Field(ge=0, le=255)] = 0
    interface: str  # a link name (the director's interface on it) or an interface name
    group: IPAddress = ipaddress.IPv4Address("224.0.0.81")  # IPv6 (e.g. ff02::81): sync over IPv6
    port: Port = 8848
    ttl: Annotated[int, Field(ge=1, le=255)] = 1
    maxlen: Annotated[int, Field(ge=0, le=65535)] = 0


DefenseMode = Literal[0, 1, 3]


class IpvsDefense(Strict):
    """IPVS's defences against a flood of connections (`/proc/sys/net/ipv4/vs/`): 0 off, 1 on
    automatically while free memory is below `amemthresh`, 3 always on."""

    amemthresh: Annotated[int, Field(ge=0, le=SYSCTL_INT_MAX)] = 1024  # free memory (pages) below which automatic defences engage
    drop_entry: DefenseMode = 1  # drop connection entries at random to make room
    drop_packet: DefenseMode = 1  # drop a share of new connections' first packets
    secure_tcp: DefenseMode = 1  # stricter TCP state transitions and shorter timeouts

    def sysctls(self) -> dict[str, str]:
        """The sysctls these settings are."""
        return {f"net.ipv4.vs.{name}": str(getattr(self, name)) for name in type(self).model_fields}


class Timeouts(Strict):
    """IPVS connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`); 0 keeps the kernel's."""

    tcp: Seconds = 0
    tcp_fin: Seconds = 0
    udp: Seconds = 0


def _sysctl_text(value: Any) -> Any:
    """Sysctl values are written as text: `1`, `true` and `"1"` all become `"1"`; `.inf` and `.nan` are errors."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a sysctl value must be a finite number or text, got {value!r}")
    return str(value) if isinstance(value, (int, float)) else value


SysctlValue = Annotated[str, BeforeValidator(_sysctl_text)]


class Defaults(Strict):
    """Settings every node inherits unless it says otherwise."""

    announce: Literal["ospf", "bgp"] = "ospf"
    ospf: OspfSettings = OspfSettings()
    bgp: BgpSettings = BgpSettings()
    sync: SyncSettings | None = None
    timeouts: Timeouts | None = None
    ipvs_defense: IpvsDefense = IpvsDefense()
    sysctls: dict[str, SysctlValue] = {}


DNS_RECORDS = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT")


class Health(Strict):
    """How the directors' agents check a real server (keepalived's TCP_CHECK, HTTP_GET, SSL_GET,
    UDP_CHECK, DNS_CHECK, MISC_CHECK). Set on a VIP, a service or one real server; the most
    specific one applies. Each check runs from the director's own network namespace.
    """

    type: Literal["tcp", "http", "https", "udp", "dns", "exec"] = "tcp"
    interval: PositiveSeconds = 2  # seconds between checks of one real server
    timeout: PositiveSeconds | None = None  # default: the interval, at most 5 s
    rise: Annotated[int, Field(ge=1, le=100)] = 2  # successes in a row before a down server is back
    fall: Annotated[int, Field(ge=1, le=100)] = 2  # failures in a row before an up server is quiesced
    port: Port | None = None  # default: the real server's port for the service
    # http / https
    path: Annotated[str, Field(pattern=r"^/")] = "/"
    host: str | None = None  # Host header; default: the real server's address
    expect_status: Annotated[list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1)] = [200]
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None  # MD5 of the body (`lvscluster genhash`)
    verify_tls: bool = False  # https: check the certificate (keepalived's SSL_GET does not)
    # udp
    send: str | None = None  # payload to send
    expect: str | None = None  # text the reply must contain; default: any reply
    # dns
    query: str | None = None  # the name to resolve
    record: Literal[DNS_RECORDS] = "A"  # type: ignore[valid-type]
    # exec: an argument list, never a shell string; LVS_RS_ADDRESS, LVS_RS_PORT, LVS_VIP,
    # LVS_VIP_PORT are set in its environment; exit 0 means healthy
    command: Annotated[list[str], Field(min_length=1)] | None = None

    @property
    def effective_timeout(self) -> float:
        """Seconds one check may take."""
        return self.timeout if self.timeout is not None else min(self.interval, 5.0)


class SorryServer(Strict):
    """Where a VIP's new connections go while none of its real servers is healthy."""

    address: IPAddress
    port: Port | None = None


class Service(Strict):
    """One virtual service on a VIP: protocol/port (or firewall mark), scheduler, forwarding."""

    protocol: Literal["tcp", "udp", "sctp", "fwmark"] = "tcp"
    port: Port | None = None
    fwmark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    scheduler: Literal[SCHEDULERS] = "mh"  # type: ignore[valid-type]
    flags: list[Literal[SERVICE_FLAGS]] | None = None  # type: ignore[valid-type]
    persistence: Seconds = 0
    netmask: Annotated[int, Field(ge=0, le=128)] | None = None
    forward: Literal["dr", "tun", "nat"] = "dr"
    tunnel: Literal["ipip", "gue", "gre"] = "ipip"
    tunnel_port: Port | None = None
    allow_multiple_directors: bool = False  # NAT only: you pinned return routing per director
    health: Health | None = None  # overrides the VIP's for this service

    @property
    def effective_flags(self) -> tuple[str, ...]:
        """The flags to program: for mh by default `mh-port` (flows of one client spread over the real
        servers) and `mh-fallback` (a drained, weight-0 server's new flows go to the next one instead
        of being refused); none for other schedulers."""
        if self.flags is None:
            return ("mh-fallback", "mh-port") if self.scheduler == "mh" else ()
        return tuple(sorted(set(self.flags)))


class RealServerRef(Strict):
    """A real server behind a VIP: a node of the topology, its weight and optional port."""

    node: NodeName
    weight: Annotated[int, Field(ge=0, le=65535)] = 1
    port: Port | None = None  # only NAT may remap ports
    address: IPAddress | None = None  # default: its address on a link shared with the directors
    health: Health | None = None  # overrides the service's and the VIP's for this server


class Vip(Strict):
    """A virtual IP address, its services and the real servers behind them."""

    name: NodeName
    address: IPAddress
    services: Annotated[list[Service], Field(min_length=1)]
    real_servers: list[RealServerRef] = []
    health: Health | None = None  # checks of every real server of every service (unless overridden)
    quorum: Annotated[int, Field(ge=1)] = 1  # healthy real servers a service needs; below it in every
    # service, the directors stop announcing the VIP
    sorry_server: SorryServer | None = None  # serves while a service has no healthy real server


def _split_endpoint(value: Any) -> Any:
    """`"d1:up0"` -> `{"node": "d1", "interface": "up0"}`; mappings pass through."""
    if isinstance(value, str):
        node, sep, interface = value.partition(":")
        if not sep or not node or not interface:
            raise ValueError(f"endpoint {value!r} should be NODE:INTERFACE, e.g. d1:up0")
        return {"node": node, "interface": interface}
    return value


class Endpoint(Strict):
    """One end of a link: a node's interface, with an optional explicit address."""

    node: NodeName
    interface: InterfaceName
    address: IPAddress | None = None
    address6: IPv6 | None = None  # on a dual-stack link: this endpoint's address in `subnet6`


class Link(Strict):
    """A network: two endpoints (veth in a lab) or more (a bridge), with the subnet they share.

    A dual-stack link has an IPv4 `subnet` and an IPv6 `subnet6`: every endpoint gets one address
    of each (`address` / `address6` when written, else the next free host)."""

    name: InterfaceName | None = None
    endpoints: Annotated[list[Annotated[Endpoint, BeforeValidator(_split_endpoint)]], Field(min_length=2)]
    subnet: IPNetwork
    subnet6: IPv6Network | None = None
    mtu: Annotated[int, Field(ge=576, le=65535)] | None = None


def _check_access(value: str) -> str:
    if value == "local" or re.match(r"^(netns|docker):[A-Za-z0-9_.-]+$", value):
        return value
    if re.match(r"^ssh://([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.:\[\]-]+(:\d+)?$", value):
        return value
    raise ValueError(f"access {value!r} should be local, ssh://user@host[:port], netns:NAME or docker:NAME")


class Node(Strict):
    """A machine of the cluster and what it does there."""

    role: Literal["client", "router", "director", "real_server"]
    router_id: IPv4 | None = None
    max_paths: Annotated[int, Field(ge=1, le=256)] | None = None
    access: Annotated[str, AfterValidator(_check_access)] | None = None
    gateway: IPAddress | None = None
    drain: bool = False
    announce: Literal["ospf", "bgp"] | None = None  # directors: how this one announces the VIPs
    ospf: OspfSettings | None = None
    bgp: BgpSettings | None = None  # fields set here override the defaults' for this node
    sysctls: dict[str, SysctlValue] = {}
    timeouts: Timeouts | None = None
    ipvs_defense: IpvsDefense | None = None  # directors: overrides the defaults' for this one


class Topology(Strict):
    """The whole `*.lvs.yml` file."""

    name: Annotated[str, Field(pattern=NAME_RE, max_length=12)]
    defaults: Defaults = Defaults()
    vips: list[Vip] = []
    nodes: Annotated[dict[NodeName, Node], Field(min_length=1)]
    links: list[Link] = []

    def nodes_with_role(self, role: str) -> list[str]:
        """Names of the nodes with this role, in file order."""
        return [name for name, node in self.nodes.items() if node.role == role]
