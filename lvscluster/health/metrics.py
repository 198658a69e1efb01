"""The agent's Prometheus endpoint: kernel counters read at scrape time, health from the agent.

Every scrape reads IPVS through netlink (services, dests, sync daemons) so the numbers are the
kernel's own; health, weights the agent chose, OSPF adjacency and whether each VIP is announced
come from the agent's last convergence. Served on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from lvscluster.errors import LvsClusterError

if TYPE_CHECKING:
    from lvscluster.health.agent import Agent

PREFIX = "lvscluster"
# IpvsStats field -> (metric suffix, help, counter?)
SERVICE_COUNTERS = {
    "conns": ("connections", "connections scheduled", True),
    "inpkts": ("packets_in", "packets from clients", True),
    "outpkts": ("packets_out", "packets to clients (NAT only)", True),
    "inbytes": ("bytes_in", "bytes from clients", True),
    "outbytes": ("bytes_out", "bytes to clients (NAT only)", True),
    "cps": ("connections_per_second", "connection rate (kernel estimator, 2 s)", False),
    "inpps": ("packets_in_per_second", "packet rate from clients", False),
    "outpps": ("packets_out_per_second", "packet rate to clients", False),
    "inbps": ("bytes_in_per_second", "byte rate from clients", False),
    "outbps": ("bytes_out_per_second", "byte rate to clients", False),
}


class AgentCollector:
    """prometheus-client collector over one agent and its director's kernel."""

    def __init__(self, agent: "Agent"):
        self.agent = agent

    def _family(self, name: str, doc: str, labels: list[str], counter: bool):
        cls = CounterMetricFamily if counter else GaugeMetricFamily
        return cls(f"{PREFIX}_{name}", doc, labels=labels)

    def collect(self):
        """Called by prometheus-client on every scrape."""
        from lvscluster.netlink import IpvsSocket

        agent = self.agent
        service_families = {f: self._family(f"service_{n}", d, ["service"], c) for f, (n, d, c) in SERVICE_COUNTERS.items()}
        dest_families = {f: self._family(f"dest_{n}", d, ["service", "dest"], c) for f, (n, d, c) in SERVICE_COUNTERS.items()}
        active = GaugeMetricFamily(f"{PREFIX}_dest_active_connections", "established connections", labels=["service", "dest"])
        inactive = GaugeMetricFamily(f"{PREFIX}_dest_inactive_connections", "other connections", labels=["service", "dest"])
        weight = GaugeMetricFamily(f"{PREFIX}_dest_weight", "weight in the kernel (0: quiesced)", labels=["service", "dest"])
        sync = GaugeMetricFamily(f"{PREFIX}_sync_daemon_running", "IPVS sync daemon running", labels=["state", "interface", "syncid"])
        readable = GaugeMetricFamily(f"{PREFIX}_ipvs_readable", "1 when the scrape could read IPVS (0: not loaded)", labels=[])
        try:
            with IpvsSocket(agent.backend.netns) as sock:
                stats = sock.service_stats()
                for svc in sock.services():
                    for field_name, family in service_families.items():
                        family.add_metric([svc.key], getattr(stats.get(svc.key), field_name, 0) or 0)
                    per_dest = sock.dest_stats(svc)
                    for dest in svc.dests:
                        counters = per_dest.get(dest.key)
                        labels = [svc.key, dest.key]
                        for field_name, family in dest_families.items():
                            family.add_metric(labels, getattr(counters, field_name, 0) or 0)
                        active.add_metric(labels, getattr(counters, "active_conns", 0) or 0)
                        inactive.add_metric(labels, getattr(counters, "inact_conns", 0) or 0)
                        weight.add_metric(labels, dest.weight)
                for daemon in sock.daemons():
                    sync.add_metric([daemon.state, daemon.interface, str(daemon.syncid)], 1)
            readable.add_metric([], 1)
        except (LvsClusterError, OSError):
            readable.add_metric([], 0)
        yield readable
        yield from service_families.values()
        yield from dest_families.values()
        yield from (active, inactive, weight, sync)
        yield from self._health()

    def _health(self):
        agent = self.agent
        labels = ["vip", "service", "real_server"]
        up = GaugeMetricFamily(f"{PREFIX}_health_up", "1 while the agent counts the real server healthy", labels=labels)
        checks = CounterMetricFamily(f"{PREFIX}_health_checks", "health checks run", labels=labels)
        failures = CounterMetricFamily(f"{PREFIX}_health_check_failures", "health checks failed", labels=labels)
        seconds = GaugeMetricFamily(f"{PREFIX}_health_check_seconds", "how long the last check took", labels=labels)
        if agent.book is not None:
            for target in agent.book.targets:
                key, status = target.key, agent.status.get(target.key)
                values = [key.vip, key.service, key.real_server]
                up.add_metric(values, int(agent.book.states[key].up))
                checks.add_metric(values, status.checks if status else 0)
                failures.add_metric(values, status.failures if status else 0)
                seconds.add_metric(values, status.result.seconds if status and status.result else 0)
        announced = GaugeMetricFamily(f"{PREFIX}_vip_announced", "1 while the director announces the VIP", labels=["vip"])
        for vip, state in agent.announced.items():
            announced.add_metric([vip], int(state))
        neighbors = GaugeMetricFamily(f"{PREFIX}_ospf_neighbors_full", "OSPF neighbours in state Full", labels=[])
        neighbors.add_metric([], agent.ospf_full)
        changes = CounterMetricFamily(f"{PREFIX}_agent_changes", "changes the agent applied", labels=[])
        changes.add_metric([], agent.changes)
        yield from (up, checks, failures, seconds, announced, neighbors, changes)


def registry_for(agent: "Agent") -> CollectorRegistry:
    """A registry holding only the agent's collector (no process metrics of the Python runtime)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def serve(agent: "Agent", address: str, port: int):
    """Start the endpoint in a background thread; returns prometheus-client's (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=address, registry=registry_for(agent))
