"""What a director's agent checks (pure): one `HealthTarget` per VIP service and real server.

The most specific `health:` applies: a real server's, else its service's, else its VIP's. A dest
with no health anywhere is not checked and keeps its configured weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvscluster.model.cluster import Cluster
from lvscluster.model.topology import Health, Service, Vip


@dataclass(frozen=True, order=True)
class DestKey:
    """One IPVS dest, named as the topology names it: VIP, service (`tcp/80`, `fwmark/7`), real server."""

    vip: str
    service: str
    real_server: str

    def __str__(self) -> str:
        return f"{self.vip} {self.service} {self.real_server}"


@dataclass(frozen=True)
class HealthTarget:
    """A check to run and the dest whose weight it decides."""

    key: DestKey
    spec: Health
    address: str  # the real server's address as directors reach it
    port: int | None  # the port to check
    vip_address: str
    vip_port: int


def service_label(service: Service) -> str:
    """`tcp/80`, `udp/53` or `fwmark/7`: how health keys and logs name a service."""
    if service.protocol == "fwmark":
        return f"fwmark/{service.fwmark}"
    return f"{service.protocol}/{service.port}"


def health_targets(cluster: Cluster) -> list[HealthTarget]:
    """Every checked dest of the topology, in file order (the same list on every director)."""
    targets = []
    for vip in cluster.topology.vips:
        for service in vip.services:
            for ref in vip.real_servers:
                spec = ref.health or service.health or vip.health
                if spec is None:
                    continue
                dest_port = ref.port or service.port
                targets.append(HealthTarget(
                    key=DestKey(vip.name, service_label(service), ref.node),
                    spec=spec,
                    address=cluster.real_server_address(ref) or "",
                    port=None if spec.type == "exec" else (spec.port or dest_port),
                    vip_address=str(vip.address),
                    vip_port=service.port or 0,
                ))
    return targets


def checked_vips(cluster: Cluster) -> list[Vip]:
    """The VIPs with at least one checked dest: only these can be withdrawn by health."""
    names = {t.key.vip for t in health_targets(cluster)}
    return [vip for vip in cluster.topology.vips if vip.name in names]
