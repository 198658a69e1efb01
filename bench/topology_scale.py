"""Benchmark: seconds to validate, plan and render a topology of N real servers (issue 14, "Scale").

For each N of `--sizes` it writes a valid topology shaped like `topology/demo.lvs.yml` (client,
router, two directors, one LAN with the router, the directors and N real servers, `--vips` VIPs
each listing every real server) into a temporary directory, then times the library calls the
CLI makes:

* validate: `load_topology_with_warnings` (YAML read, field validation, cross-field checks), with
  its parts timed apart (YAML parse, pydantic models, checks: `--parts`);
* plan: `Cluster.from_topology` + `plan_cluster` + `diff_cluster` against empty nodes (what
  `plan --offline` computes before printing);
* render: `render_files` + `write_tree` into a fresh directory (what `render -o DIR` does after
  loading).

With `--cli`, the same file also goes once through the real command line (`validate`,
`render -o DIR`), each in its own process, for the record.

    python bench/topology_scale.py --sizes 1000,10000,50000 [--vips 1] [--cli] [--parts] [--json]
    python bench/topology_scale.py --sizes 10000 --profile validate   # cProfile's top 30 (env SORT, TOP)
    python bench/topology_scale.py --tree /tmp/baseline ...           # time another checkout

Times are CPU seconds of the process (the machine is shared; wall-clock seconds are printed
beside them).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("validate", "plan", "render", "validate.yaml", "validate.models", "validate.checks")


def topology_text(real_servers: int, vips: int = 1, name: str = "scale") -> str:
    """A valid topology: demo's shape with `real_servers` real servers behind each of `vips` VIPs."""
    hosts = real_servers + 3  # r1, d1, d2 are on the LAN too
    prefix = 32 - max(2, (hosts + 1).bit_length())  # the subnet's host part holds hosts + network + broadcast
    if prefix < 11:
        raise ValueError(f"{real_servers} real servers do not fit in 10.64.0.0/10")
    lan = ipaddress.IPv4Network(f"10.64.0.0/{prefix}")
    names = [f"rs{i}" for i in range(1, real_servers + 1)]
    lines = [
        f"# {name}: demo's shape with {real_servers} real servers (bench/topology_scale.py)",
        f"name: {name}",
        "defaults:",
        "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}",
        "  sync: {syncid: 10, interface: lan0}",
        "vips:",
    ]
    for v in range(vips):
        lines += [
            f"  - name: vip{v}",
            f"    address: 10.99.{v // 250}.{v % 250 + 1}",
            "    services:",
            "      - {protocol: tcp, port: 80, scheduler: mh, flags: [mh-fallback, mh-port], forward: dr}",
            "      - {protocol: udp, port: 53, scheduler: mh, forward: dr, health: {type: udp, send: ping, expect: ping, interval: 2}}",
            "    health: {type: http, path: /, interval: 2, rise: 2, fall: 2}",
            "    real_servers:",
            *(f"      - {{node: {rs}, weight: {i % 3 + 1}}}" for i, rs in enumerate(names)),
        ]
    lines += [
        "nodes:",
        "  c1: {role: client}",
        "  r1: {role: router, router_id: 10.255.0.1, max_paths: 8}",
        "  d1: {role: director, router_id: 10.255.0.11}",
        "  d2: {role: director, router_id: 10.255.0.12}",
        *(f"  {rs}: {{role: real_server}}" for rs in names),
        "links:",
        "  - {endpoints: [c1:eth0, r1:eth0], subnet: 172.16.0.0/24}",
        "  - {endpoints: [r1:d1, d1:up0], subnet: 10.1.1.0/30}",
        "  - {endpoints: [r1:d2, d2:up0], subnet: 10.1.2.0/30}",
        "  - name: lan0",
        f"    subnet: {lan}",
        "    endpoints:",
        "      - r1:lan0",
        "      - d1:lan0",
        "      - d2:lan0",
        *(f"      - {rs}:eth0" for rs in names),
    ]
    return "\n".join(lines) + "\n"


class Clock:
    """Times calls by phase name; with `profile` set to a phase, also cProfiles that phase's calls."""

    def __init__(self, profile: str | None = None):
        import cProfile

        self.times: dict[str, float] = {}  # CPU seconds of this process (the machine is shared)
        self.wall: dict[str, float] = {}
        self.profile = profile
        self.profiler = cProfile.Profile()

    def __call__(self, phase: str, call):
        """`call()`'s result; its seconds are stored under `phase`."""
        profiled = phase == self.profile
        started, cpu = time.perf_counter(), time.process_time()
        result = self.profiler.runcall(call) if profiled else call()
        self.times[phase] = time.process_time() - cpu
        self.wall[phase] = time.perf_counter() - started
        return result

    @property
    def done(self) -> bool:
        """True once the profiled phase has run (nothing after it needs timing)."""
        return self.profile in self.times


def measure(path: Path, workdir: Path, clock: Clock, parts: bool = False) -> dict[str, float]:
    """CPU seconds of each phase (and, with `parts`, of validate's parts) for one topology file;
    wall-clock seconds are in `clock.wall`."""
    from lvscluster.apply.deploy import managed
    from lvscluster.files import write_tree
    from lvscluster.model.cluster import Cluster
    from lvscluster.model.loader import load_topology_with_warnings
    from lvscluster.plan.desired import plan_cluster
    from lvscluster.plan.diff import diff_cluster
    from lvscluster.plan.render import render_files

    topology, _ = clock("validate", lambda: load_topology_with_warnings(path))
    if parts:
        validate_parts(path, clock)
    if clock.done:
        return clock.times

    def plan():
        cluster = Cluster.from_topology(topology)
        states = plan_cluster(cluster)
        return cluster, states, diff_cluster({n: s for n, s in states.items() if managed(s)}, {})

    cluster, states, _ = clock("plan", plan)
    if clock.done:
        return clock.times
    clock("render", lambda: write_tree(workdir / "out", render_files(cluster, states)))
    return clock.times


def validate_parts(path: Path, clock: Clock) -> None:
    """validate's parts: the YAML parse, the pydantic models, the cross-field checks."""
    from lvscluster.model.checks import check_topology
    from lvscluster.model.loader import _plain
    from lvscluster.model.topology import Topology
    from lvscluster.model.yamlread import read_yaml

    text = path.read_text()
    document = clock("validate.yaml", lambda: read_yaml(path, text))
    context = {"base": str(path.parent.resolve())}
    topology = clock("validate.models", lambda: Topology.model_validate(_plain(document), context=context))
    clock("validate.checks", lambda: check_topology(topology))


def measure_cli(path: Path, workdir: Path, tree: Path, clock: Clock) -> None:
    """`lvscluster validate FILE` and `lvscluster render FILE -o DIR`, each a new process (CPU
    seconds from its rusage, interpreter start and imports included)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for phase, args in (("cli validate", ["validate", str(path)]),
                        ("cli render", ["render", str(path), "-o", str(workdir / "cli-out")])):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lvscluster.cli", *args], env=env, check=True, cwd=workdir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # cwd: `-m` imports from it first
        clock.wall[phase] = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        clock.times[phase] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="real-server counts, comma-separated")
    parser.add_argument("--vips", type=int, default=1, help="VIPs, each listing every real server (default 1)")
    parser.add_argument("--parts", action="store_true", help="also time validate's parts (YAML, models, checks)")
    parser.add_argument("--cli", action="store_true", help="also time the real CLI once per size")
    parser.add_argument("--profile", choices=PHASES, help="print a cProfile of this phase (or validate's part) instead of a table")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to import lvscluster from")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import lvscluster

    print(f"lvscluster from {Path(lvscluster.__file__).parent}", file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="lvs-scale-") as tmp:  # imports and template compiles, untimed
        (Path(tmp) / "warm.lvs.yml").write_text(topology_text(3, args.vips))
        measure(Path(tmp) / "warm.lvs.yml", Path(tmp), Clock(), parts=True)
    results = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="lvs-scale-") as tmp:
            workdir = Path(tmp)
            path = workdir / f"scale{n}.lvs.yml"
            path.write_text(topology_text(n, args.vips))
            clock = Clock(args.profile)
            measure(path, workdir, clock, args.parts or (args.profile or "").startswith("validate."))
            if args.profile:
                print(f"== cProfile of {args.profile}, {n} real servers", file=sys.stderr)
                stats = pstats.Stats(clock.profiler).sort_stats(os.environ.get("SORT", "cumulative"))
                stats.print_stats(int(os.environ.get("TOP", "30")))
                continue
            if args.cli:
                measure_cli(path, workdir, args.tree.resolve(), clock)
            results[n] = {"cpu": clock.times, "wall": clock.wall}
            print(f"{n} real servers: " + ", ".join(f"{k} {v:.2f} s" for k, v in clock.times.items()), file=sys.stderr)
    if args.profile:
        return 0
    if args.json:
        print(json.dumps({"vips": args.vips, "seconds": results}, indent=2))
        return 0
    print_table(results)
    return 0


def print_table(results: dict[int, dict[str, dict[str, float]]]) -> None:
    """A Markdown table: CPU seconds per phase, wall-clock seconds in brackets."""
    columns = list(dict.fromkeys(k for times in results.values() for k in times["cpu"]))
    print("| real servers | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for n, times in results.items():
        cells = [f"{times['cpu'][c]:.2f} ({times['wall'][c]:.2f})" if c in times["cpu"] else "-" for c in columns]
        print(f"| {n:,} | " + " | ".join(cells) + " |")
    print("CPU seconds of the process (wall-clock seconds in brackets)")


if __name__ == "__main__":
    sys.exit(main())
