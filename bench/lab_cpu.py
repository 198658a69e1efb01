"""Benchmark: where an idle lab's CPU goes, by part (agents, FRR, test servers, ...), over some seconds.

Against a lab that is up (and usually deployed): the same accounting as a scaletest's
`lab CPU` line (`scaletest.labcpu`), without traffic, so it shows what the lab costs before any
is sent. Under the VM's software emulation, every part costs 15-30 times what it does natively.
Where the lab lives in a VM, the script runs itself there.

    python bench/lab_cpu.py topology/demo.lvs.yml [--seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lvscluster.model.cluster import Cluster  # noqa: E402
from lvscluster.model.loader import load_topology  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topology")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from lvscluster.cli.common import lab_vm
    from lvscluster.lab.record import read_record
    from lvscluster.scaletest.labcpu import cpu_use, snapshot
    from lvscluster.scaletest.labhealth import cpu_line

    from lvscluster.errors import LvsClusterError

    try:
        cluster = Cluster.from_topology(load_topology(args.topology))
    except LvsClusterError as exc:  # as the CLI says it: what is wrong with which file
        print(exc, file=sys.stderr)
        return 2
    if (vm := lab_vm(cluster.name)) is not None:  # the lab lives in a VM: measure there
        return vm.run([sys.executable, os.path.abspath(__file__), vm.stage(Path(args.topology)), *sys.argv[2:]])
    record = read_record(cluster.name)
    if record is None:
        print(f"lab {cluster.name} is not up: lvscluster lab up {args.topology}", file=sys.stderr)
        return 2
    roles = {node: spec.role for node, spec in cluster.topology.nodes.items()}
    before = snapshot(record.namespaces, roles)
    time.sleep(args.seconds)
    use = cpu_use(before, snapshot(record.namespaces, roles))
    print(json.dumps(use, indent=1) if args.json else cpu_line(use))
    return 0


if __name__ == "__main__":
    sys.exit(main())
