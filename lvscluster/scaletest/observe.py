"""What a scaletest watches in the lab while the traffic runs: the router's ECMP set, the directors' IPVS.

`EcmpWatch` records each change of the router's next hops for the VIP; `DirectorProbe` reads
each director's service counters and counts its connection entries. Both read only.
"""

from __future__ import annotations

import socket
import threading
import time

from lvscluster.netlink import IpvsSocket, Links
from lvscluster.netlink.connections import count_connections
from lvscluster.netlink.links import RouteChanges
from lvscluster.state import IpvsService


class EcmpWatch(threading.Thread):
    """Keeps (time, hops) each time the router's next hops for a prefix change: it reads them when
    the router's kernel announces a route change (and every `period` s as a safety net), so it costs
    the lab nothing while ECMP stands still."""

    def __init__(self, namespace: str, prefix: str, period: float = 1.0):
        super().__init__(daemon=True, name="ecmp-watch")
        self.namespace, self.prefix, self.period = namespace, prefix, period
        self.changes: list[tuple[float, tuple[str, ...]]] = []
        self._halt = threading.Event()
        self.family = socket.AF_INET6 if ":" in prefix else socket.AF_INET
        self._events = RouteChanges(namespace, self.family)  # subscribed before the first read: no change is missed

    def run(self) -> None:
        with Links(self.namespace) as links:
            while not self._halt.is_set():
                hops = tuple(sorted(links.nexthops(self.prefix, self.family)))
                if not self.changes or self.changes[-1][1] != hops:
                    self.changes.append((time.monotonic(), hops))
                self._events.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:  # started: wake it and wait for it (a watch never started has nothing to join)
            self._events.wake()
            self.join(timeout=5)
        if not self.is_alive():
            self._events.close()

    def first_change_after(self, moment: float) -> float | None:
        """Seconds from `moment` until the next hops changed, or None if they did not."""
        return next((t - moment for t, _ in self.changes[1:] if t >= moment), None)


def _service_key(vip: str, port: int) -> str:
    """`tcp/10.99.0.10:80`, `tcp/[2001:db8:99::10]:80`: the key `service_stats` files it under."""
    return IpvsService(protocol="tcp", address=vip, port=port).key


class DirectorProbe:
    """The directors' IPVS counters and connection tables, read cheaply: one open socket per
    director, one service dump per sample, connection entries counted rather than parsed
    (every read competes with the traffic for the CPU of a slow VM)."""

    def __init__(self, namespaces: dict[str, str], directors: list[str], vip: str, http_port: int, echo_port: int):
        self.namespaces, self.vip, self.http_port, self.echo_port = namespaces, vip, http_port, echo_port
        self.sockets = {d: IpvsSocket(namespaces[d]) for d in directors}

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()

    def counters(self) -> dict[str, dict[str, int]]:
        """Per director: connections scheduled on the HTTP service, packets in on the echo service."""
        out = {}
        http, echo = _service_key(self.vip, self.http_port), _service_key(self.vip, self.echo_port)
        for name, sock in self.sockets.items():
            stats = sock.service_stats()
            out[name] = {"conns": stats[http].conns if http in stats else 0,
                         "echo_inpkts": stats[echo].inpkts if echo in stats else 0}
        return out

    def echo_flows(self) -> dict[str, dict[str, int]]:
        """Per director: established echo entries it scheduled (local) and learnt by sync."""
        return {name: count_connections(self.namespaces[name], self.vip, self.echo_port) for name in self.sockets}
