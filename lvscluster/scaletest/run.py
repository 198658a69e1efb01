"""The scaletest orchestrator: traffic from the lab's client, churn on the nodes, the report.

Runs where the lab runs (inside the lab VM on a kernel without IPVS). It starts the traffic
engine (`scaletest.traffic`) in the client's namespace, carries out the churn events at their
times through the same deploy pipeline as `lvscluster deploy` (drain/undrain) or the lab
provider's fault injection (kill/revive here, the smaller faults in `scaletest.faultevents`),
watches the router's ECMP next hops for the VIP, samples the directors' IPVS counters and connection tables, and builds the report (`scaletest.report`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lvscluster.apply.change import change_director
from lvscluster.apply.placement import Placement, namespaces_of
from lvscluster.errors import LvsClusterError
from lvscluster.files import write_atomic
from lvscluster.lab.provider import lab_faults
from lvscluster.model.cluster import Cluster
from lvscluster.plan.desired import plan_director, vip_prefix
from lvscluster.plan.render import frr_daemons
from lvscluster.scaletest import labcpu
from lvscluster.scaletest import report as reporting
from lvscluster.scaletest.capacity import engine_argv, measure_capacity
from lvscluster.scaletest.churn import chosen_vip
from lvscluster.scaletest.faultevents import FAULT_ACTIONS, FaultEvents
from lvscluster.scaletest.observe import DirectorProbe, EcmpWatch
from lvscluster.scaletest.report import ChurnEvent

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class ScaleTest:
    """What to run: traffic shape, churn, where the report goes."""

    flows: int = 200
    rate: float | None = 100  # None: measure what the lab carries and pace from it (--rate auto)
    duration: float = 30
    churn: list[ChurnEvent] = field(default_factory=list)
    echo_port: int = 7
    http_port: int = 80
    interval: float = 0.2
    echo_timeout: float = 5.0
    vip: str | None = None  # the VIP's name (--vip); None: the topology's first


def control_cluster(cluster: Cluster) -> Cluster:
    """The same cluster without what makes flows survive churn: `wlc` instead of `mh`, no
    connection sync, `sloppy_tcp=0`. A scaletest against it must break flows (the control run)."""
    topology = cluster.topology
    vips = [vip.model_copy(update={"services": [svc.model_copy(update={"scheduler": "wlc", "flags": []})
                                                for svc in vip.services]}) for vip in topology.vips]
    defaults = topology.defaults.model_copy(update={
        "sync": None, "sysctls": {**topology.defaults.sysctls, "net.ipv4.vs.sloppy_tcp": "0"}})
    return Cluster.from_topology(topology.model_copy(update={"vips": vips, "defaults": defaults}))


class Orchestrator:
    """One scaletest run against a lab that is up and deployed."""

    def __init__(self, cluster: Cluster, lab: dict[str, Placement], test: ScaleTest, progress: Progress):
        self.cluster, self.lab, self.test, self.progress = cluster, lab, test, progress
        self.namespaces = namespaces_of(lab)  # each node's namespace (a Docker lab attaches its containers' under the same names)
        clients = cluster.topology.nodes_with_role("client")
        if not clients or not cluster.routers or not cluster.topology.vips:
            raise LvsClusterError(f"scaletest needs a client, a router and a VIP in {cluster.name}")
        self.client, self.router = clients[0], cluster.routers[0]
        self.vip_spec = chosen_vip(cluster, test.vip)
        self.vip = str(self.vip_spec.address)
        ports = {(s.protocol, s.port) for s in self.vip_spec.services}
        for port, what in ((test.echo_port, "--echo-port"), (test.http_port, "--http-port")):
            if ("tcp", port) not in ports:
                raise LvsClusterError(f"{what} {port}: VIP {self.vip_spec.name} has no tcp service on port {port}")
        self.directors = list(cluster.directors)
        self.current = cluster
        self.killed_links: dict[str, list[str]] = {}
        self.node_faults = lab_faults(cluster.name)
        self.faults = FaultEvents(cluster, lab, self.node_faults, progress)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.t0 = 0.0
        self.moments: dict[str, tuple[float, float]] = {}  # event label -> (monotonic start, seconds taken)
        self._node_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._state_lock = threading.Lock()  # `current` (the drained directors) is shared by event threads
        self._event_threads: list[threading.Thread] = []
        self._event_errors: list[Exception] = []
        self.flows_up: float | None = None  # when the last flow got its first echo (s after start)
        self.flows_up_count = 0  # flows that have had their first echo so far
        self.calibration: dict | None = None  # what --rate auto measured
        self.cpu: list[labcpu.CpuSnapshot] = []  # the lab's CPU ticks when the traffic started and ended
        self.roles = {node: spec.role for node, spec in cluster.topology.nodes.items()}
        for event in test.churn:  # plan each drain once now: the templates compile before the traffic, not in it
            if event.action in ("drain", "undrain"):
                plan_director(cluster.with_node(event.node, drain=event.action == "drain"), event.node)

    def _follow(self, path: Path, traffic: subprocess.Popen):
        """The lines of the engine's output file as they come, until the engine has exited.

        A file, not a pipe: a pipe the orchestrator drains late (its deploys hold the GIL for
        seconds in a slow VM) would block the engine's writes and stall every flow with it.
        """
        pending = ""
        with open(path) as handle:
            while True:
                chunk = handle.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        yield pending
                        pending = ""
                elif traffic.poll() is not None:
                    rest = pending + handle.read()
                    yield from (line + "\n" for line in rest.splitlines() if line)
                    return
                else:
                    time.sleep(0.1)

    def _read_traffic(self, path: Path, traffic: subprocess.Popen) -> None:
        """Collect the engine's records; note when it started and when its flows were up."""
        ramp, up, shown = 0.0, 0, -5.0
        for line in self._follow(path, traffic):
            self.lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("type") == "up":
                up += 1
                self.flows_up_count = up
                continue
            if record.get("type") not in ("start", "tick"):
                continue
            if record["type"] == "start":
                self.t0, ramp = record.get("mono", time.monotonic()), record.get("ramp", 0.0)
                self.started.set()
                continue
            if self.flows_up is None and (up >= self.test.flows or record["t"] >= ramp + 10):
                self.flows_up = record["t"]
            if record["t"] - shown >= 5 or record.get("broken"):
                shown = record["t"]
                stall = record.get("stall_ms") or 0
                self.progress(f"t={record['t']:5.1f}s  flows alive {record['alive']:4d}  "
                              f"new ok {record['new_ok']:4d}/s  broken {record.get('broken', 0)}"
                              + (f"  lab stalled {stall / 1000:.1f} s of the last second" if stall >= 100 else ""))

    def _probe_args(self) -> list[str]:
        """`--probe NODE=NETNS` for each real server of the VIP: the engine asks its test server
        straight, from inside its namespace, to tell a starved lab from a failing cluster."""
        nodes = dict.fromkeys(ref.node for ref in self.vip_spec.real_servers)
        return [x for node in nodes if os.path.exists(f"/run/netns/{self.namespaces.get(node, '-')}")
                for x in ("--probe", f"{node}={self.namespaces[node]}")]

    def carry_out(self, event: ChurnEvent) -> None:
        """Do one churn event now."""
        if event.action in ("drain", "undrain"):
            with self._state_lock:
                self.current = current = self.current.with_node(event.node, drain=event.action == "drain")
            change_director(current, self.lab, event.node, _quiet)  # one vtysh run, no observing
        elif event.action == "kill":
            self.killed_links[event.node] = self.node_faults.kill(event.node)
        elif event.action == "revive":
            with self._state_lock:
                current = self.current
            self.node_faults.revive(event.node, self.killed_links.pop(event.node, []), frr_daemons(current, event.node))
            # a kill leaves IPVS and sync as they were: the revived node needs its FRR config back
            change_director(current, self.lab, event.node, _quiet, frr_restarted=True)
        elif event.action in FAULT_ACTIONS:
            self.faults.carry_out(event)

    def run(self) -> tuple[dict, list]:
        """Run traffic and churn; returns the report and the traffic's ticks."""
        test, ns = self.test, self.namespaces
        probe = DirectorProbe(ns, self.directors, self.vip, test.http_port, test.echo_port)
        watch = EcmpWatch(ns[self.router], vip_prefix(self.vip_spec))
        traffic = None
        try:
            before = probe.counters()
            watch.start()
            if test.rate is None:  # --rate auto: measure what the lab carries first, pace from that
                self.calibration = measure_capacity(ns[self.client], self.vip, test, self._probe_args(), self.progress)
                test.rate = self.calibration["rate"]
            argv = engine_argv(ns[self.client], self.vip, test, *self._probe_args())
            self.progress(f"traffic from {self.client}: {test.flows} flows, {test.rate:g} new connections/s, "
                          f"{test.duration:g} s; churn: {', '.join(e.label for e in test.churn) or 'none'}")
            records, errors = _temp_file(".jsonl"), _temp_file(".err")
            with open(records, "w") as stdout, open(errors, "w") as stderr:
                traffic = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
            reader = threading.Thread(target=self._read_traffic, args=(records, traffic), daemon=True)
            reader.start()
            if not self.started.wait(120):
                raise LvsClusterError("the traffic engine did not start: " + (
                    errors.read_text()[-2000:] if traffic.poll() is not None else "no start record in 120 s"))
            self.cpu.append(labcpu.snapshot(ns, self.roles, {traffic.pid}))
            samples, sync, late = self._drive(traffic, probe)
            for event in late:  # never leave a director drained or dead because the traffic ended first
                self.progress(f"after the traffic: {event.label}")
                self.carry_out(event)
            self.faults.repair(self.current)
        finally:
            if traffic is not None:
                if traffic.poll() is None:
                    traffic.terminate()
                traffic.wait(timeout=60)
            watch.stop()
        reader.join(timeout=30)
        after = probe.counters()
        probe.close()
        failure = errors.read_text()[-2000:]
        records.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)
        if not self.lines:
            raise LvsClusterError(f"the traffic engine printed nothing: {failure}")
        for event in test.churn:
            if event.label in self.moments:
                event.ecmp_changed_after = watch.first_change_after(self.moments[event.label][0])
        first = sync[0]["held"] if sync else {}
        counters = {d: {"conns": after[d]["conns"] - before[d]["conns"],
                        "active": first.get(d, {}).get("local", 0)} for d in self.directors}
        run = reporting.parse_traffic(self.lines)
        report = reporting.build_report(run, test.churn, counters, sync_lag=_sync_lags(run, sync),
                                        real_servers={ref.node: ref.weight for ref in self.vip_spec.real_servers},
                                        director_flow_samples=samples)
        # the timeline is echo packets per director over two per flow and interval: with the echo
        # flows on the HTTP port, each new connection's packets count too and the lines run high
        report["directors"]["flow_timeline_basis"] = (
            "echo packets" if test.echo_port != test.http_port else "echo and new-connection packets (echo port = HTTP port)")
        report["ecmp_changes"] = [{"t": round(t - self.t0, 3), "next_hops": list(h)} for t, h in watch.changes]
        report["event_durations"] = {label: round(took, 3) for label, (_, took) in self.moments.items()}
        report["sync_samples"] = sync
        report["events_after_traffic"] = [e.label for e in late]
        report["calibration"] = self.calibration
        if len(self.cpu) == 2 and traffic.pid in self.cpu[1].pids:  # else the engine's CPU is not told apart
            report["lab"]["cpu"] = labcpu.cpu_use(*self.cpu)
        return report, run.ticks

    def _drive(self, traffic: subprocess.Popen, probe: DirectorProbe) -> tuple[dict, list, list]:
        """Until the traffic ends: churn events on time; counters every 2 s; after the flows are
        up, the directors' connection tables once a second until each holds every flow (at most 8 times)."""
        test = self.test
        pending = list(test.churn)
        samples: dict[str, list[list[float]]] = {d: [] for d in self.directors}
        sync: list[dict] = []
        next_sample, last = 0.0, None
        while traffic.poll() is None:
            now = time.monotonic() - self.t0
            # well before the engine exits: once reaped, its ticks would count as this process's children's
            if len(self.cpu) == 1 and now >= max(test.duration * 0.9, test.duration - 5):
                self.cpu.append(labcpu.snapshot(self.namespaces, self.roles, {traffic.pid}))
            if pending and now >= pending[0].at:
                event = pending.pop(0)
                self.progress(f"t={now:5.1f}s  {event.label}")
                self._start_event(event)
            elif self.flows_up is not None and len(sync) < 8 and now >= self.flows_up + len(sync) + 1 and \
                    not (sync and min(sum(h.values()) for h in sync[-1]["held"].values()) >= self.flows_up_count):
                sync.append({"t": round(now, 2), "held": probe.echo_flows()})
            elif now >= next_sample:
                next_sample = now + 2.0
                counters = probe.counters()
                if last is not None:
                    for name, counter in counters.items():
                        # each flow sends one message and acks one echo per interval
                        pps = (counter["echo_inpkts"] - last[1][name]["echo_inpkts"]) / (now - last[0])
                        samples[name].append([round(now, 2), round(pps * test.interval / 2, 1)])
                last = (now, counters)
            time.sleep(0.1)
        self._finish_events()
        return samples, sync, pending

    def _start_event(self, event: ChurnEvent) -> None:
        """Carry an event out in the background, so a slow one (a deploy under emulation) delays
        neither the sampling nor other nodes' events; one node's events still run in order."""
        def run() -> None:
            with self._node_locks[event.node]:
                moment = time.monotonic()
                try:
                    self.carry_out(event)
                except Exception as exc:  # re-raised by _finish_events
                    self._event_errors.append(exc)
                self.moments[event.label] = (moment, time.monotonic() - moment)

        thread = threading.Thread(target=run, name=event.label, daemon=True)
        thread.start()
        self._event_threads.append(thread)

    def _finish_events(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._event_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise LvsClusterError(f"churn event {thread.name} still running after {timeout:g} s")
        if self._event_errors:
            raise self._event_errors[0]


def _temp_file(suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix="lvscluster-traffic-", suffix=suffix)
    os.close(handle)
    return Path(name)


def _sync_lags(run: reporting.TrafficRun, sync: list[dict]) -> list[dict]:
    """Per director: seconds from the last flow's first echo until it held every flow's entry."""
    if not run.flows_up or not sync:
        return []
    last_up, total = max(r["t"] for r in run.flows_up), len(run.flows_up)
    lags = []
    for director in sync[-1]["held"]:
        when = next((s["t"] for s in sync if sum(s["held"].get(director, {}).values()) >= total), None)
        if when is not None:
            lags.append({"director": director, "lag": round(max(0.0, when - last_up), 2)})
    return lags


def write_report(report: dict, ticks: list, directory: Path) -> list[Path]:
    """report.json, report.png and summary.txt in `directory`."""
    from lvscluster.scaletest.plot import plot_report

    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "report.json", reporting.to_json(report))
    write_atomic(directory / "summary.txt", reporting.summary_text(report))
    plot_report(report, ticks, directory / "report.png")
    return [directory / "report.json", directory / "report.png", directory / "summary.txt"]
