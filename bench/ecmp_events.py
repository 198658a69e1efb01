"""Benchmark: seconds from a churn step to the router's ECMP change, the old way (a whole deploy) and the new one.

Against a lab that is up and deployed (`lvscluster lab up FILE && lvscluster deploy --yes FILE`),
for the last director of FILE, `--rounds` times each, in one lab (one VM session):

* drain / undrain: `deploy` = what the scaletest and `director drain` did before (a whole
  deploy of the node: observe, diff, apply, re-observe under the lock, frr reload);
  `quick` = `apply.change.change_director` (the recorded plan against the new one, one vtysh run);
* kill: every link down and FRR SIGKILLed (the network's own reaction: BFD / OSPF dead interval);
* revive: links up, FRR started, then the node deployed whole (`deploy`) or its FRR config
  loaded from the record (`quick`).

The clock starts when the step starts and stops when the router's next hops for the VIP change
(polled every 20 ms). Where the lab lives in a VM, the script runs itself there.

    python bench/ecmp_events.py topology/demo.lvs.yml [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lvscluster.model.cluster import Cluster  # noqa: E402
from lvscluster.model.loader import load_topology  # noqa: E402

STEPS = ("drain", "undrain", "kill", "revive")
STEP_START = 0.0  # when the step being timed began (for the progress lines)


def next_hops(namespace: str, prefix: str) -> tuple[str, ...]:
    from lvscluster.netlink import Links

    with Links(namespace) as links:
        return tuple(sorted(links.nexthops(prefix)))


def timed(step, namespace: str, prefix: str, timeout: float = 120.0) -> float | None:
    """Seconds from the start of `step()` to a change of the router's next hops (None: no change)."""
    global STEP_START
    before = next_hops(namespace, prefix)
    started = STEP_START = time.monotonic()
    step()
    while time.monotonic() - started < timeout:
        if next_hops(namespace, prefix) != before:
            return round(time.monotonic() - started, 3)
        time.sleep(0.02)
    return None


def trace_commands() -> None:
    """--trace: print every command deploy runs (vtysh, ip) with its duration, to see where a step's time goes."""
    from lvscluster.apply import commands

    def timed(real, show):
        def traced(self, *args, **kwargs):
            started = time.monotonic()
            try:
                return real(self, *args, **kwargs)
            finally:
                print(f"    +{time.monotonic() - STEP_START:5.2f} s  took {time.monotonic() - started:4.2f} s: "
                      f"{show(*args)[:100]}", file=sys.stderr)
        return traced

    commands.Runner.run = timed(commands.Runner.run, lambda argv, *_: " ".join(map(str, argv)))
    commands.Runner.vty = timed(commands.Runner.vty, lambda path, lines: f"vty {path}: {'; '.join(lines)}")


def run(path: str, rounds: int, steps: tuple[str, ...] = STEPS, ways: tuple[str, ...] = ("deploy", "quick")) -> dict:
    """Every step in both ways, `rounds` times; the figures per way and step."""
    from lvscluster.apply.change import change_director
    from lvscluster.apply.lifecycle import deploy_nodes
    from lvscluster.apply.placement import namespaces_of
    from lvscluster.cli.deploy import lab_placements
    from lvscluster.lab import faults
    from lvscluster.plan.render import frr_daemons

    cluster = Cluster.from_topology(load_topology(path))
    lab = lab_placements(cluster)
    if not lab:
        raise SystemExit(f"no lab is up for {path}: lvscluster lab up {path} && lvscluster deploy --yes {path}")
    namespaces = namespaces_of(lab)
    director, router = cluster.directors[-1], namespaces[cluster.routers[0]]
    prefix = f"{cluster.topology.vips[0].address}/32"
    def quiet(message: str) -> None:
        print(f"    +{time.monotonic() - STEP_START:5.2f} s  {message}", file=sys.stderr)

    results: dict[str, dict[str, list]] = {way: {step: [] for step in STEPS} for way in ways}
    for _ in range(rounds):
        for way, results_of in results.items():
            def apply(target: Cluster, revived: bool = False) -> None:
                if way == "deploy":
                    deploy_nodes(target, lab, [director], quiet)
                else:
                    change_director(target, lab, director, quiet, frr_restarted=revived)

            drained = cluster.with_node(director, drain=True)
            results_of["drain"].append(timed(lambda: apply(drained), router, prefix))
            time.sleep(3)
            results_of["undrain"].append(timed(lambda: apply(cluster), router, prefix))
            time.sleep(5)
            killed: list[str] = []
            results_of["kill"].append(timed(lambda: killed.extend(faults.kill_node(namespaces[director])), router, prefix))
            time.sleep(3)

            def revive() -> None:
                faults.revive_node(namespaces[director], killed, frr_daemons(cluster, director))
                apply(cluster, revived=True)

            results_of["revive"].append(timed(revive, router, prefix))
            time.sleep(8)  # OSPF full and BFD up again before the next round
            print(f"{way}: " + ", ".join(f"{s} {results_of[s][-1]}" for s in STEPS), file=sys.stderr, flush=True)
    return {"director": director, "rounds": rounds, "seconds": results,
            "median": {way: {s: statistics.median([v for v in vs if v is not None] or [float("nan")])
                             for s, vs in steps.items()} for way, steps in results.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topology")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print each command run, with its duration")
    parser.add_argument("--ways", default="deploy,quick", help="deploy,quick or one of them")
    args = parser.parse_args()
    from lvscluster.cli.common import lab_vm

    cluster = Cluster.from_topology(load_topology(args.topology))
    if (vm := lab_vm(cluster.name)) is not None:  # the lab lives in a VM: measure there
        return vm.run([sys.executable, os.path.abspath(__file__), vm.stage(Path(args.topology)), *sys.argv[2:]])
    if args.trace:
        trace_commands()
    result = run(args.topology, args.rounds, ways=tuple(args.ways.split(",")))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"director {result['director']}, {result['rounds']} rounds, seconds to the router's ECMP change (median)")
        print("| step | whole deploy (before) | quick change (after) |\n| --- | --- | --- |")
        median = {way: result["median"].get(way, {}) for way in ("deploy", "quick")}
        for step in STEPS:
            print(f"| {step} | " + " | ".join(f"{median[w].get(step, float('nan')):.2f}" for w in ("deploy", "quick")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
