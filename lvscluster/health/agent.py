"""`lvscluster agent`: the long-running process on each director.

It checks the director's real servers (asyncio, from the director's own namespace), turns the
results into a `HealthVerdict` (rise/fall, quorum, sorry server), and keeps the director at
`plan_director(cluster, node, verdict)` through the same observe -> diff -> apply pipeline as
`deploy`: a failed real server is quiesced, a VIP with no healthy service is withdrawn, and a
change made by hand (a dest deleted with ipvsadm) is put back within `repair_interval`.

It keeps the topology `deploy` last applied to the director (an edited file changes nothing
before `deploy`), acts only on a director that deploy has set up (its VIPs are on lo; after
`destroy` it waits), and logs every change with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lvscluster.apply import exabgp, frr
from lvscluster.apply.backends import KernelBackend, apply_lock
from lvscluster.apply.deploy import read_deployed
from lvscluster.apply.processes import start_time
from lvscluster.apply.status import bgp_peers, ospf_neighbors
from lvscluster.errors import LvsClusterError
from lvscluster.health.checks import CheckResult, CheckTarget, run_check
from lvscluster.plan.health import DestKey, HealthBook, HealthTarget, HealthVerdict, health_targets
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology
from lvscluster.plan.desired import plan_director, vip_prefix
from lvscluster.plan.diff import diff_node
from lvscluster.plan.render import frr_daemons
from lvscluster.runfiles import deployed_path, health_record_path, write_health_record

log = logging.getLogger("lvscluster.agent")


@dataclass
class TargetStatus:
    """The latest result of one checked dest, for the record, metrics and `status`."""

    result: CheckResult | None = None
    checked_at: float = 0.0
    checks: int = 0
    failures: int = 0
    changed_at: float = 0.0  # wall-clock time of the last up/down change (0: never changed)


@dataclass
class Agent:
    """One director's agent: checks, verdict, and keeping the director converged."""

    topology_path: Path
    node: str
    backend: KernelBackend
    repair_interval: float = 10.0
    cluster: Cluster | None = None
    book: HealthBook | None = None
    status: dict[DestKey, TargetStatus] = field(default_factory=dict)
    verdict: HealthVerdict = field(default_factory=HealthVerdict)
    announced: dict[str, bool] = field(default_factory=dict)
    ospf_full: int = 0  # OSPF neighbours in state Full at the last convergence
    changes: int = 0
    reload_now: bool = False  # set by converge when the topology changed under it
    _source: tuple[str, float] | None = None
    _planned: tuple | None = None  # ((source, verdict), desired state) of the last plan
    _record_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: dict[DestKey, asyncio.Task] = field(default_factory=dict)

    # -- topology ---------------------------------------------------------------------------
    def load(self) -> bool:
        """(Re)read the topology when it changed; True when it did. Unchanged checks keep their counts.

        The topology is the one `deploy` last applied to this director when there is one (an
        edited file changes nothing before `deploy`), else FILE (checks only: nothing deployed)."""
        source = self._source_path()
        deployed = source != self.topology_path
        stamp = (str(source), source.stat().st_mtime)
        if self.cluster is not None and stamp == self._source:
            return False
        cluster = read_deployed(self.node, self.backend.netns) if deployed else None
        cluster = cluster or Cluster.from_topology(load_topology(self.topology_path))
        if self.node not in cluster.topology.nodes or cluster.role(self.node) != "director":
            raise LvsClusterError(f"{source}: {self.node} is not a director of this topology")
        targets = health_targets(cluster)
        old = self.book
        book = HealthBook(targets)
        if old is not None:
            same = {t.key: t for t in old.targets}
            for target in targets:  # an unchanged check keeps its state across a reload
                if target.key in same and same[target.key] == target:
                    book.states[target.key] = old.states[target.key]
        self.cluster, self.book, self._source = cluster, book, stamp
        self.status = {t.key: self.status.get(t.key, TargetStatus()) for t in targets}
        log.info("%s: following %s: %d checks", self.node,
                 "the topology deploy applied" if deployed else source, len(targets))
        return True

    # -- checks -----------------------------------------------------------------------------
    def _source_path(self) -> Path:
        """The topology to follow: the one deploy last applied to this director, else FILE."""
        deployed = deployed_path(self.node, self.backend.netns)
        return deployed if deployed.exists() else self.topology_path

    def _source_changed(self) -> bool:
        """True when the topology the agent follows is not the one it loaded."""
        source = self._source_path()
        try:
            return (str(source), source.stat().st_mtime) != self._source
        except OSError:
            return True

    def _restart_checks(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks = {t.key: asyncio.create_task(self._watch(t), name=str(t.key)) for t in self.book.targets}

    async def _watch(self, target: HealthTarget) -> None:
        """Check one dest every `interval`; a phase from its name spreads the checks out."""
        spec = target.spec
        probe = CheckTarget(target.address, target.port, target.vip_address, target.vip_port)
        await asyncio.sleep((zlib.crc32(str(target.key).encode()) % 1000) / 1000 * spec.interval)
        while True:
            started = time.monotonic()
            result = await run_check(spec, probe)
            try:
                self._count(target, result)
            except Exception as exc:  # noqa: BLE001 - a check that dies of one error is never run again
                log.error("%s: %s: recording a check result failed: %s", self.node, target.key, str(exc) or repr(exc))
            await asyncio.sleep(max(0.0, spec.interval - (time.monotonic() - started)))

    def _count(self, target: HealthTarget, result: CheckResult) -> None:
        status = self.status[target.key]
        status.result, status.checked_at = result, time.time()
        status.checks += 1
        status.failures += not result.ok
        state = self.book.states[target.key]
        if self.book.record(target.key, result.ok, result.detail):
            status.changed_at = time.time()
            spec = target.spec
            if state.up:
                log.info("%s: %s is up: %s (%d successes in a row)", self.node, target.key, result.detail, spec.rise)
            else:
                log.warning("%s: %s is down: %s (%d failures in a row)", self.node, target.key, result.detail, spec.fall)
            # recorded at once, not after the next convergence: that may wait seconds for the lock
            # (a revive starting FRR), and a quick change planned meanwhile must not use the old one
            self.verdict = self.book.verdict(self.cluster)
            self.write_record()
            self._wake.set()

    def wake(self) -> None:
        """Converge now (SIGHUP: a deploy or a drain just changed the director)."""
        self._wake.set()

    # -- convergence ------------------------------------------------------------------------
    def converge(self) -> int:
        """Observe the director, apply what differs from its desired state with the current
        verdict, log each change with its reason; returns the number of changes.

        The verdict is taken once the node's lock is held: a deploy or a scaletest's revive may
        hold it for seconds, and checks that changed meanwhile must not be applied stale. A
        look without the lock comes first: most rounds (the repair round) find nothing to do,
        and then hold no lock that a drain would wait for (an observation reads FRR's running
        config: ~1.5 s under emulation)."""
        settled = self._settled()
        if settled is not None:
            self._note_announced(settled)
            return 0
        with apply_lock(self.backend.netns):
            if self._source_changed():
                self.reload_now = True  # deploy changed the topology meanwhile: reload, then converge
                return 0
            self.verdict = self.book.verdict(self.cluster)
            desired = self._desired(self.verdict)
            self._restart_crashed_frr()
            observed = self.backend.observe(desired)
            vips_on_lo = {a.address for a in observed.addresses}
            if not all(a.address in vips_on_lo for a in desired.addresses):
                return 0  # not deployed (or destroyed): deploy sets a director up, the agent keeps it
            actions = diff_node(desired, observed)
            if actions:
                for action in actions:
                    log.info("%s: %s: %s", self.node, action.summary, self._reason(action))
                self.backend.apply_under_lock(actions)
            self.write_record()  # in the same hold: a quick change never reads a verdict older than the one applied
        self._note_announced(desired)
        self.changes += len(actions)
        return len(actions)

    def _settled(self):
        """The desired state when the director already holds it with the current verdict (read
        without the lock; any difference is looked at again under it), else None."""
        if self._source_changed() or self._frr_daemons_dead():
            return None
        verdict = self.book.verdict(self.cluster)
        desired = self._desired(verdict)
        try:
            observed = self.backend.observe(desired)
        except Exception:  # noqa: BLE001 - the locked round observes again and reports it
            return None
        vips_on_lo = {a.address for a in observed.addresses}
        if not all(a.address in vips_on_lo for a in desired.addresses) or diff_node(desired, observed):
            return None
        self.verdict = verdict
        return desired

    def _desired(self, verdict: HealthVerdict):
        """The director's desired state for this verdict; the topology and verdict of the last
        plan give its plan again (a render costs ~1 s of CPU under emulation, and most rounds
        see the same verdict)."""
        key = (self._source, verdict)
        if self._planned is None or self._planned[0] != key:
            self._planned = (key, plan_director(self.cluster, self.node, verdict))
        return self._planned[1]

    def _note_announced(self, desired) -> None:
        self.ospf_full = sum(n["state"] == "Full" for n in ospf_neighbors(self.backend.frr_pathspace))
        carried = self._carried(desired)
        self.announced = {vip.name: vip.name not in self.verdict.withdrawn and vip_prefix(vip) in carried
                          for vip in self.cluster.topology.vips}

    def _carried(self, desired) -> set[str]:
        """The VIP prefixes whoever speaks for this director carries to a router: every VIP while
        OSPF is Full or a BGP session Established, or the routes ExaBGP confirmed."""
        if self.cluster.announcer(self.node) == "exabgp":
            confirmed = exabgp.observe(self.backend.netns, desired.exabgp)
            return {r.split()[1] for r in confirmed.routes} if confirmed else set()
        if self.ospf_full > 0 or any(p["state"] == "Established" for p in bgp_peers(self.backend.frr_pathspace)):
            return {vip_prefix(vip) for vip in self.cluster.topology.vips}
        return set()

    def _restart_crashed_frr(self) -> None:
        """FRR under a pathspace (a lab node, `netns:` access) has no watchfrr: a daemon that died
        is started again here, and the diff below reloads its config. A machine's own FRR is left
        to its watchfrr (systemd's frr.service)."""
        if not self._frr_daemons_dead():
            return
        pathspace, daemons = self.backend.frr_pathspace, frr_daemons(self.cluster, self.node)
        dead = frr.restart_dead(pathspace, self.backend.netns, daemons, self.backend.runner)
        log.warning("%s: FRR %s had died: started again (its config follows)", self.node, ", ".join(dead))
        self.changes += len(dead)

    def _frr_daemons_dead(self) -> bool:
        """True when FRR under a pathspace runs with one of the director's daemons missing."""
        pathspace = self.backend.frr_pathspace
        if not pathspace or not frr.is_running(pathspace):
            return False  # the machine's FRR, or not started at all (a node deploy has not set up)
        return not all(frr.running(pathspace, d) for d in frr_daemons(self.cluster, self.node))

    def _reason(self, action) -> str:
        if action.kind == "set_dest" and action.dest is not None:
            for key in self.verdict.quiesced:
                target = next(t for t in self.book.targets if t.key == key)
                if target.address == action.dest.address and action.dest.weight == 0:
                    return f"{key} failed its health check ({self.book.states[key].last_detail})"
            if action.dest.weight > 0:
                return "healthy again (or its weight was changed by hand)"
        if action.kind in ("set_frr", "set_exabgp"):
            if self.verdict.withdrawn:
                return f"no service of {', '.join(sorted(self.verdict.withdrawn))} has its quorum of healthy real servers: withdraw"
            return "announce again (or FRR was changed by hand)"
        return f"drift: {action.reason}"

    def write_record(self) -> None:
        """The record `deploy` and `status` read (atomically replaced). Written from the checks'
        loop (a check flipped) and from the convergence thread: one at a time, the later last."""
        with self._record_lock:
            self._write_record()

    def _write_record(self) -> None:
        targets = {}
        for target in self.book.targets:
            status, state = self.status[target.key], self.book.states[target.key]
            result = status.result
            protocol, _, port = target.key.service.partition("/")
            targets[str(target.key)] = {
                "service": target.key.service if protocol == "fwmark" else f"{protocol}/{target.vip_address}:{port}",
                "type": target.spec.type, "address": target.address, "port": target.port,
                "up": state.up, "detail": result.detail if result else "not checked yet",
                "checked_at": round(status.checked_at, 3), "changed_at": round(status.changed_at, 3),
                "checks": status.checks, "failures": status.failures,
            }
        write_health_record(health_record_path(self.node, self.backend.netns), {
            "node": self.node, "pid": os.getpid(), "pid_start": start_time(os.getpid()), "topology": str(self.topology_path),
            "verdict": self.verdict.to_json(), "targets": targets, "updated": round(time.time(), 3),
        })

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Check and converge until `stop` is set (or forever)."""
        stop = stop or asyncio.Event()
        self.load()
        self._restart_checks()
        log.info("%s: agent started: %d checks, repair every %g s", self.node, len(self.book.targets), self.repair_interval)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                self._wake.clear()  # before converging: a change counted meanwhile wakes the next round
                try:
                    if self.load():
                        self._restart_checks()
                    await loop.run_in_executor(None, self.converge)
                except Exception as exc:  # a long-running agent logs and retries; it never dies of one error
                    log.error("%s: %s (retrying in %g s)", self.node, str(exc) or repr(exc), self.repair_interval)
                self.write_record()  # again: the checks counted meanwhile, or converge stopped early
                if self.reload_now:
                    self.reload_now = False
                    continue
                waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(waits, timeout=self.repair_interval, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
