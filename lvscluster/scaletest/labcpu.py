"""Where the lab's CPU went during a scaletest, by part (traffic engine, agents, FRR, ...), from /proc.

A run that judged itself overloaded should also say *why* the lab starved: from outside (its
CPUs were busy with something else, or the VM's vCPU got little of the host) or from within
(one of its own parts took the CPU: agents, FRR starting, the test servers). `snapshot` reads
/proc (its only side effect); `cpu_use` is pure. Shares are of the CPU time the machine had
(wall time x CPUs), so a part at 50% of a 1-CPU lab took half of everything there was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FRR_COMMANDS = frozenset({"zebra", "ospfd", "ospf6d", "bfdd", "bgpd", "staticd", "watchfrr", "mgmtd", "vtysh"})
ROLE_PARTS = {"director": "agents", "real_server": "test servers", "client": "client (other)",
              "router": "router (other)"}
PARTS = ("traffic engine", "scaletest", "agents", "FRR", "test servers", "ExaBGP", "client (other)",
         "router (other)", "outside the lab", "interrupts (packets, IPVS)", "idle")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU ticks at one moment: per part (processes alive then), and the machine's totals."""
    t: float  # monotonic seconds
    cpus: int
    parts: dict[str, int]  # part -> ticks of its processes (their own and their reaped children's)
    pids: dict[int, tuple[str, int]]  # pid -> (part, ticks), to count only what a pid used in between
    interrupts: int  # /proc/stat irq + softirq ticks
    idle: int  # /proc/stat idle + iowait ticks


def _namespace_ids(namespaces: Mapping[str, str]) -> dict[tuple[int, int], str]:
    ids = {}
    for node, netns in namespaces.items():
        try:
            st = os.stat(f"/run/netns/{netns}")
        except OSError:
            continue
        ids[(st.st_ino, st.st_dev)] = node
    return ids


def _process(pid: str) -> tuple[str, int] | None:
    """(command, ticks: utime + stime + children's) of one /proc entry, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    command, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
    return command, sum(int(x) for x in fields[11:15])


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
    parts: dict[str, int] = {}
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
        pids[int(entry)] = (part, found[1])
        parts[part] = parts.get(part, 0) + found[1]
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return CpuSnapshot(t=time.monotonic(), cpus=os.cpu_count() or 1, parts=parts, pids=pids,
                       interrupts=fields[5] + fields[6], idle=fields[3] + fields[4])


def cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """Each part's share of the CPU time there was between two snapshots (pure): a process alive
    at both counts what it used in between, one started meanwhile all it used; one that started
    and ended in between is counted in its parent's children's ticks when the parent reaped it."""
    capacity = max(1e-9, (after.t - before.t) * after.cpus * TICKS_PER_S)
    used: dict[str, float] = {}
    for pid, (part, ticks) in after.pids.items():
        earlier = before.pids.get(pid)
        used[part] = used.get(part, 0) + ticks - (earlier[1] if earlier and earlier[0] == part else 0)
    used["interrupts (packets, IPVS)"] = after.interrupts - before.interrupts
    used["idle"] = after.idle - before.idle
    shares = {part: round(max(0.0, used[part]) / capacity, 3) for part in PARTS if used.get(part, 0) > 0}
    return {"seconds": round(after.t - before.t, 1), "cpus": after.cpus, "shares": shares,
            "busy": round(max(0.0, 1 - shares.get("idle", 0.0)), 3)}


def cpu_line(cpu: Mapping[str, Any]) -> str:
    """One line for the summary: where the lab's CPU went, biggest part first."""
    parts = sorted(((p, s) for p, s in cpu["shares"].items() if p != "idle" and s >= 0.005), key=lambda x: -x[1])
    return (f"lab CPU ({cpu['cpus']} CPU{'s' if cpu['cpus'] != 1 else ''}, {cpu['seconds']:g} s): {cpu['busy']:.0%} busy: "
            + ", ".join(f"{part} {share:.0%}" for part, share in parts))
