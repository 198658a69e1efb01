"""Where the lab's CPU went during a scaletest, by part (traffic engine, agents, FRR, ...), from /proc.

A run that judged itself overloaded should also say on what the lab starved: which of its own
parts took the CPU (agents, FRR starting, the test servers, the engine), or something outside
its namespaces. `snapshot` reads
/proc (its only side effect); `cpu_use` is pure. Shares are of the CPU time the machine had
(wall time x CPUs), so a part at 50% of a 1-CPU lab took half of everything there was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lvscluster.apply.processes import stat_fields
from lvscluster.netlink.netns import netns_path

FRR_COMMANDS = frozenset({"zebra", "ospfd", "ospf6d", "bfdd", "bgpd", "staticd", "watchfrr", "mgmtd", "vtysh"})
ROLE_PARTS = {"director": "agents", "real_server": "test servers", "client": "client (other)",
              "router": "router (other)"}
PARTS = ("traffic engine", "scaletest", "agents", "FRR", "test servers", "ExaBGP", "client (other)",
         "router (other)", "outside the lab", "interrupts (packets, IPVS)", "idle")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU ticks at one moment: per process alive then, and the machine's totals."""
    t: float  # monotonic seconds
    cpus: int
    pids: dict[int, tuple[str, int, str]]  # pid -> (part, ticks: its own and its reaped children's, command)
    interrupts: int  # /proc/stat irq + softirq ticks
    idle: int  # /proc/stat idle + iowait ticks


def _namespace_ids(namespaces: Mapping[str, str]) -> dict[tuple[int, int], str]:
    ids = {}
    for node, netns in namespaces.items():
        try:
            st = os.stat(netns_path(netns))
        except OSError:
            continue
        ids[(st.st_ino, st.st_dev)] = node
    return ids


def _process(pid: str) -> tuple[str, int] | None:
    """(command, ticks) of one /proc entry, None once it is gone. Ticks are utime + stime +
    the reaped children's (proc(5) fields 14-17): a command the scaletest ran and waited for
    counts as the scaletest's. Not for pid 1: init reaps every orphan, and the lab's daemons are
    orphans by design (double-forked), so a director's FRR killed during the run would bring its
    whole lifetime's CPU to init, "outside the lab" (5% of one run was that)."""
    found = stat_fields(pid)
    if not found:
        return None
    return found[0], sum(int(x) for x in found[1][11:13 if pid == "1" else 15])


def part_of(pid: int, command: str, node_role: str | None, engine_pids: frozenset[int]) -> str:
    """The part of the lab a process belongs to (pure)."""
    if pid in engine_pids:
        return "traffic engine"
    if pid == os.getpid():
        return "scaletest"
    if node_role is None:
        return "outside the lab"
    if command in FRR_COMMANDS:
        return "FRR"
    if command.startswith("exabgp"):
        return "ExaBGP"
    return ROLE_PARTS.get(node_role, "outside the lab")


def snapshot(namespaces: Mapping[str, str], roles: Mapping[str, str], engine_pids=()) -> CpuSnapshot:
    """Read every process's CPU ticks and the machine's totals now (namespaces: node -> netns;
    roles: node -> its topology role)."""
    ids, engines = _namespace_ids(namespaces), frozenset(engine_pids)
    pids: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (found := _process(entry)) is None:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
            node = ids.get((st.st_ino, st.st_dev))
        except OSError:
            node = None
        part = part_of(int(entry), found[0], roles.get(node) if node else None, engines)
        pids[int(entry)] = (part, found[1], found[0])
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return CpuSnapshot(t=time.monotonic(), cpus=os.cpu_count() or 1, pids=pids,
                       interrupts=fields[5] + fields[6], idle=fields[3] + fields[4])


def command_group(command: str) -> str:
    """A command as the outside-the-lab list names it: kernel threads without their CPU and
    queue suffix (kworker/1:2 -> kworker), so many small threads add up to one visible line."""
    return command.split("/", 1)[0]


def cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """Each part's share of the CPU time there was between two snapshots (pure): a process alive
    at both counts what it used in between, one started meanwhile all it used; one that started
    and ended in between is counted in its parent's children's ticks when the parent reaped it.
    `outside` names the commands outside the lab that took 1% or more, biggest first: what a
    user stops, or a lab leaves behind, before the next run."""
    capacity = max(1e-9, (after.t - before.t) * after.cpus * TICKS_PER_S)
    used: dict[str, float] = {}
    outside: dict[str, float] = {}
    for pid, (part, ticks, command) in after.pids.items():
        earlier = before.pids.get(pid)
        spent = ticks - (earlier[1] if earlier and earlier[0] == part else 0)
        used[part] = used.get(part, 0) + spent
        if part == "outside the lab":
            outside[command_group(command)] = outside.get(command_group(command), 0) + spent
    used["interrupts (packets, IPVS)"] = after.interrupts - before.interrupts
    used["idle"] = after.idle - before.idle
    shares = {part: round(max(0.0, used[part]) / capacity, 3) for part in PARTS if used.get(part, 0) > 0}
    biggest = sorted(((c, round(t / capacity, 3)) for c, t in outside.items() if t / capacity >= 0.01),
                     key=lambda x: (-x[1], x[0]))
    return {"seconds": round(after.t - before.t, 1), "cpus": after.cpus, "shares": shares,
            "busy": round(max(0.0, 1 - shares.get("idle", 0.0)), 3), "outside": dict(biggest[:5])}

