"""Actions: one change to one node, with the reason it is needed.

The diff engine (`lvscluster.plan.diff`) produces them in the order they must run; the
backends (`lvscluster.apply.kernel`, FRR, ExaBGP) carry them out. An action holds everything its
backend needs, so applying never re-reads the topology.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from lvscluster.state import ExabgpState, InterfaceAddress, IpvsDest, IpvsService, IpvsTimeouts, SyncDaemon

ActionKind = Literal[
    "add_address",  # target: InterfaceAddress
    "del_address",
    "set_sysctl",  # name, value
    "add_tunnel",  # name ("tunl0"): bring the kernel's fallback tunnel device up
    "add_service",  # service (dests ignored)
    "set_service",  # service (dests ignored): scheduler, flags, persistence, netmask
    "del_service",  # service
    "add_dest",  # service (for its key), dest
    "set_dest",  # service, dest: weight, thresholds, forward
    "del_dest",  # service, dest
    "add_daemon",  # daemon
    "del_daemon",  # daemon
    "set_timeouts",  # timeouts
    "set_frr",  # frr: whole config text
    "set_exabgp",  # exabgp: config and announced routes (ExaBGP started or reloaded as needed)
    "del_exabgp",  # stop ExaBGP (its peers drop its routes at once) and remove its files
]


class Action(BaseModel):
    """One ordered step of a plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str
    kind: ActionKind
    reason: str
    address: InterfaceAddress | None = None
    sysctl: str | None = None
    value: str | None = None
    previous: str | None = None  # set_sysctl: the value before (journaled, so destroy can restore it)
    tunnel: str | None = None
    service: IpvsService | None = None
    dest: IpvsDest | None = None
    daemon: SyncDaemon | None = None
    timeouts: IpvsTimeouts | None = None
    frr: str | None = None
    exabgp: ExabgpState | None = None

    @property
    def summary(self) -> str:
        """One line: what the action does, e.g. `add dest 10.2.0.5:80 to tcp/10.99.0.10:80`."""
        verb, _, noun = self.kind.partition("_")
        match noun:
            case "address":
                return f"{verb} address {self.address.key}"
            case "sysctl":
                return f"set {self.sysctl} = {self.value}"
            case "tunnel":
                return f"bring up tunnel {self.tunnel}"
            case "service":
                return f"{verb} service {self.service.key} ({self.service.scheduler})"
            case "dest":
                prep = "from" if verb == "del" else "on" if verb == "set" else "to"
                detail = f" weight {self.dest.weight}" if verb != "del" else ""
                return f"{verb} dest {self.dest.key}{detail} {prep} {self.service.key}"
            case "daemon":
                return f"{'start' if verb == 'add' else 'stop'} sync {self.daemon.state} on {self.daemon.interface} (syncid {self.daemon.syncid})"
            case "timeouts":
                t = self.timeouts
                return f"set timeouts tcp {t.tcp} tcp_fin {t.tcp_fin} udp {t.udp}"
            case "frr":
                return "apply FRR configuration"
            case "exabgp":
                if verb == "del":
                    return "stop ExaBGP"
                return f"announce {len(self.exabgp.routes)} routes through ExaBGP"
        return self.kind  # pragma: no cover - every kind is matched above


__all__ = ["Action", "ActionKind"]
