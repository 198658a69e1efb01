"""Links, addresses and routes of one network namespace, through pyroute2's IPRoute.

    with Links("lvs-rs1") as links:
        links.set_up("lo")
        links.add_address(InterfaceAddress(interface="lo", address="10.99.0.10/32"))
        links.ensure_tunnel("tunl0")          # TUN real servers: tunl0 exists once ipip is loaded
        print(links.addresses(["lo", "tunl0"]))

The rtnetlink socket is created inside the namespace by a setns'd helper thread
(`netns.socket_in_netns`) and handed to IPRoute, so opening one never forks and never
creates a missing namespace. Adding an address that is present or deleting one that is
absent succeeds (both leave the wanted state); every other kernel error becomes a
`NetlinkOperationError` naming the object.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lvscluster.errors import EnvironmentProblem, NetlinkOperationError
from lvscluster.netlink.netns import in_netns, socket_in_netns
from lvscluster.state import InterfaceAddress

IFF_UP = 0x1
IFA_F_NODAD = 0x2  # linux/if_addr.h: no duplicate address detection
# Addresses the kernel puts on lo by itself: never reported as managed, never removed.
LOOPBACK_ADDRESSES = {"127.0.0.1/8", "::1/128"}


def address_args(address: str, command: str = "add") -> dict:
    """pyroute2 `addr` arguments for an address with prefix length (`10.99.0.10/32`). IPv6 is
    added with `nodad`: a VIP is on every director and DR real server at once, so duplicate
    address detection must never run for it (lo skips it anyway; another interface would not),
    and a lab's fresh addresses answer at once."""
    iface = ipaddress.ip_interface(address)
    flags = {"flags": IFA_F_NODAD} if command == "add" and iface.version == 6 else {}
    return {"address": str(iface.ip), "prefixlen": iface.network.prefixlen, **flags}


class Links:
    """rtnetlink access to one namespace (None = current)."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        self.ipr = IPRoute(fileno=sock.detach())

    def close(self) -> None:
        """Close the rtnetlink socket."""
        self.ipr.close()

    def __enter__(self) -> "Links":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self) -> str:
        return f" in netns {self.netns}" if self.netns else ""

    def index(self, ifname: str) -> int | None:
        """Interface index of `ifname`, or None when it does not exist."""
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def _require(self, ifname: str) -> int:
        idx = self.index(ifname)
        if idx is None:
            raise NetlinkOperationError(f'interface "{ifname}" does not exist{self._where()}')
        return idx

    def links(self) -> dict[str, dict]:
        """{ifname: {"index", "up", "kind", "mtu"}} for every link."""
        out = {}
        for msg in self.ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            out[msg.get_attr("IFLA_IFNAME")] = {
                "index": msg["index"],
                "up": bool(msg["flags"] & IFF_UP),
                "kind": kind,
                "mtu": msg.get_attr("IFLA_MTU"),
            }
        return out

    def _names(self) -> dict[int, str]:
        """{index: ifname} of the namespace, from libc's if_nameindex() there: not a pyroute2 dump
        of every link with all its attributes, ~0.25 s of CPU under emulation on every agent round."""
        return dict(in_netns(self.netns, socket.if_nameindex))

    def is_up(self, ifname: str) -> bool:
        """True when `ifname` exists and is administratively up."""
        info = self.links().get(ifname)
        return bool(info and info["up"])

    def set_up(self, ifname: str) -> None:
        """Bring `ifname` up."""
        self._set_state(ifname, "up")

    def set_down(self, ifname: str) -> None:
        """Bring `ifname` down (the lab's abrupt loss of a node)."""
        self._set_state(ifname, "down")

    def _set_state(self, ifname: str, state: str) -> None:
        idx = self._require(ifname)
        try:
            self.ipr.link("set", index=idx, state=state)
        except NetlinkError as err:
            raise NetlinkOperationError(f"cannot bring {ifname} {state}{self._where()}: {err.args[1] if len(err.args) > 1 else err}") from err

    def ensure_tunnel(self, ifname: str = "tunl0") -> None:
        """Bring up the kernel's fallback tunnel device (tunl0 appears when ipip is loaded)."""
        if self.index(ifname) is None:
            module = {"tunl0": "ipip", "gre0": "ip_gre", "ip6tnl0": "ip6_tunnel", "sit0": "sit"}.get(ifname, "ipip")
            raise EnvironmentProblem(f"tunnel device {ifname} does not exist{self._where()} (modprobe {module})")
        self.set_up(ifname)

    def addresses(self, interfaces=None) -> tuple[InterfaceAddress, ...]:
        """Addresses on `interfaces` (all when None), lo's own 127.0.0.1/8 and ::1/128 left out."""
        names = self._names()
        out = []
        for msg in self.ipr.get_addr():
            ifname = names.get(msg["index"])
            if interfaces is not None and ifname not in interfaces:
                continue
            addr = f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"
            if ifname == "lo" and addr in LOOPBACK_ADDRESSES:
                continue
            if msg["family"] == socket.AF_INET6 and addr.startswith("fe80:"):
                continue
            out.append(InterfaceAddress(interface=ifname, address=addr))
        return tuple(sorted(out, key=lambda a: (a.interface, a.address)))

    def _addr(self, command: str, target: InterfaceAddress) -> None:
        idx = self._require(target.interface)
        try:
            self.ipr.addr(command, index=idx, **address_args(target.address, command))
        except NetlinkError as err:
            if (command == "add" and err.code == errno.EEXIST) or (command == "del" and err.code == errno.EADDRNOTAVAIL):
                return
            verb = "add" if command == "add" else "delete"
            raise NetlinkOperationError(f"cannot {verb} address {target.key}{self._where()}: {err}") from err

    def add_address(self, target: InterfaceAddress) -> None:
        """Add an address (e.g. the VIP /32 on lo; IPv6 with `nodad`); present already = success."""
        self._addr("add", target)

    def del_address(self, target: InterfaceAddress) -> None:
        """Delete an address; absent already = success."""
        self._addr("del", target)

    def routes(self, family: int = socket.AF_INET, table: int = 254) -> list[dict]:
        """Routes of `table` as {"dst", "gateway", "dev"} ("dst" = "default" for /0)."""
        names = self._names()
        out = []
        for msg in self.ipr.get_routes(family=family, table=table):
            dst = msg.get_attr("RTA_DST")
            out.append({
                "dst": f"{dst}/{msg['dst_len']}" if dst else "default",
                "gateway": msg.get_attr("RTA_GATEWAY"),
                "dev": names.get(msg.get_attr("RTA_OIF")),
            })
        return out

    def nexthops(self, prefix: str, family: int = socket.AF_INET) -> list[str]:
        """Gateways of the route to exactly `prefix` (e.g. a VIP/32): one per ECMP path, sorted."""
        address, _, length = prefix.partition("/")
        found: list[str] = []
        for msg in self.ipr.get_routes(family=family, table=254):
            if msg.get_attr("RTA_DST") != address or msg["dst_len"] != int(length or 32):
                continue
            if msg.get_attr("RTA_GATEWAY"):
                found.append(msg.get_attr("RTA_GATEWAY"))
            for hop in msg.get_attr("RTA_MULTIPATH") or ():
                if hop.get_attr("RTA_GATEWAY"):
                    found.append(hop.get_attr("RTA_GATEWAY"))
        return sorted(found)

    def add_route(self, dst: str, gateway: str | None = None, dev: str | None = None) -> None:
        """Add (or replace) a route to `dst` ("default" or a prefix) via `gateway` and/or `dev`."""
        spec: dict = {"dst": "0.0.0.0/0" if dst == "default" else dst}
        if gateway:
            spec["gateway"] = gateway
        if dev:
            spec["oif"] = self._require(dev)
        try:
            self.ipr.route("replace", **spec)
        except NetlinkError as err:
            raise NetlinkOperationError(f"cannot add route {dst}{self._where()}: {err}") from err

    def del_route(self, dst: str) -> None:
        """Delete the route to `dst`; absent already = success."""
        try:
            self.ipr.route("del", dst="0.0.0.0/0" if dst == "default" else dst)
        except NetlinkError as err:
            if err.code != errno.ESRCH:
                raise NetlinkOperationError(f"cannot delete route {dst}{self._where()}: {err}") from err


RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400  # linux/rtnetlink.h multicast groups


class RouteChanges:
    """Wakes when a route changes in one namespace (rtnetlink multicast), instead of polling.

        with RouteChanges("demo.r1") as changes:
            if changes.wait(1.0): ...   # True: something changed (or wake()); False: timeout

    A watcher that dumped the routing table every 50 ms took half a vCPU of an emulated lab
    VM from the traffic it measured; the kernel's notifications cost nothing while nothing
    changes."""

    def __init__(self, netns: str | None = None, family: int = socket.AF_INET):
        self.sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_IPV6_ROUTE if family == socket.AF_INET6 else RTMGRP_IPV4_ROUTE))
        self.sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()

    def wait(self, timeout: float) -> bool:
        """True as soon as a route change arrives (all pending ones are read) or `wake()` is
        called, False after `timeout` s."""
        ready = select.select([self.sock, self._wake_r], [], [], timeout)[0]
        if not ready:
            return False
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError as err:  # ENOBUFS: more changes than the buffer held; still a change
                if err.errno != errno.ENOBUFS:
                    raise

    def wake(self) -> None:
        """Make a `wait` in another thread return now (to stop a watcher)."""
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Close the multicast socket."""
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "RouteChanges":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
