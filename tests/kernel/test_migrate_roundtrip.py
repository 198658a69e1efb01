"""The keepalived import round trip, against a real keepalived and a real IPVS.

For each configuration in tests/migrate/kernel/: keepalived (checker process only, no VRRP)
programs it in a fresh network namespace and `ipvsadm -S -n` is saved; then `lvscluster import
keepalived` reads the same file, the first director's IPVS services are planned from the
imported topology and applied through lvscluster.apply.kernel to another fresh namespace, and
that namespace's `ipvsadm -S -n` must be the same text (ipvsadm sorts services and real servers,
so the order each side added them in does not matter). `lvscluster export ipvsadm` must print
it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import lvscluster
from lvscluster.migrate.confparse import read_config
from lvscluster.migrate.ipvsadm import save_rules
from lvscluster.migrate.keepalived import import_keepalived
from lvscluster.migrate.keepalived_checks import CHECKERS
from lvscluster.migrate.to_topology import write_topology
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import parse_topology
from lvscluster.apply.kernel import apply_to_kernel
from lvscluster.plan.desired import plan_cluster
from lvscluster.plan.diff import diff_ipvs
from lvscluster.state import IpvsState

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "tests" / "migrate" / "kernel").glob("*.conf"))
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns():
    made = []

    def make() -> str:
        name = f"lvst-mig-{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")  # DR/TUN dests need a local table to exist
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name])


def saved(ns: str) -> str:
    return sh("ip", "netns", "exec", ns, "ipvsadm", "-S", "-n")


def checkers(conf: Path) -> list[str]:
    """`FILE:LINE KEYWORD` of every checker block in a configuration (includes read)."""
    found = []

    def walk(statements):
        for stmt in statements:
            if stmt.keyword in CHECKERS:
                found.append(f"{stmt.where} {stmt.keyword}")
            walk(stmt.block or [])

    walk(read_config(conf).statements)
    return found


def keepalived_table(ns: str, conf: Path, tmp: Path, services: int, dests: int) -> tuple[str, str]:
    """Run keepalived's checker process in `ns` until it has said "Startup complete", programmed
    `services` services with `dests` destinations in all (or 15 s have passed since) and the
    table has not changed for two seconds; stop it and return `ipvsadm -S -n` as keepalived left
    it, and keepalived's log.

    The configurations' checks all pass (MISC_CHECK /bin/true), so keepalived adds every real
    server at startup and removes none: a check that failed would remove its real server at a
    random moment within delay_loop (keepalived staggers each check's first run over it)."""
    log_path = tmp / "keepalived.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, KEEPALIVED, "-n", "-l", "-D", "-C", "-f", str(conf),
         "-p", str(tmp / "keepalived.pid"), "-c", str(tmp / "checkers.pid")],
        cwd=conf.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, seen, started = time.monotonic() + 60, [], None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"keepalived exited:\n{log_path.read_text()[-6000:]}"
            text = saved(ns)
            lines = text.splitlines()
            counted = (sum(line.startswith("-A ") for line in lines) == services
                       and sum(line.startswith("-a ") for line in lines) == dests)
            if started is None and "Startup complete" in log_path.read_text():
                started = time.monotonic()
            seen = (seen + [text])[-3:] if started else []
            # Wait for the counts the import expects; 15 s after startup, take the table as it is
            # (stable for 2 s) and let the comparison show what differs.
            if len(seen) == 3 and len(set(seen)) == 1 and (counted or time.monotonic() - started > 15):
                return text, log_path.read_text()
            time.sleep(1.0)
        pytest.fail(f"keepalived did not program {services} services with {dests} real servers (stable for "
                    f"2 s) in 60 s; last table:\n{saved(ns)}\nkeepalived's log:\n{log_path.read_text()[-6000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_the_vm_runs_this_worktree():
    assert Path(lvscluster.__file__).resolve().is_relative_to(REPO)


@pytest.mark.skipif(not Path(KEEPALIVED).exists(), reason="keepalived is not installed (scripts/bootstrap installs it)")
@pytest.mark.parametrize("conf", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_keepalived_and_lvscluster_program_the_same_table(conf: Path, netns, tmp_path):
    imported = import_keepalived(conf)
    text = write_topology(imported)
    topology, _ = parse_topology(text, tmp_path / "imported.lvs.yml")  # the import validates
    cluster = Cluster.from_topology(topology)
    director = topology.nodes_with_role("director")[0]
    ipvs = plan_cluster(cluster, only=[director])[director].ipvs
    wanted = IpvsState(services=ipvs.services)

    dests = sum(len(service.dests) for service in wanted.services)
    assert not [c for c in checkers(conf) if not c.endswith("MISC_CHECK")], \
        "kernel test configurations check with MISC_CHECK /bin/true only (see keepalived_table)"

    theirs, log = keepalived_table(netns(), conf, tmp_path, len(wanted.services), dests)

    ours_ns = netns()
    early, late = diff_ipvs(director, wanted, IpvsState())
    apply_to_kernel(ours_ns, early + late)
    ours = saved(ours_ns)
    notes = "".join(n.line + "\n" for n in imported.notes)
    assert ours == theirs, (f"keepalived:\n{theirs}\nlvscluster:\n{ours}\nimport notes:\n{notes}\n"
                            f"keepalived's log:\n{log[-6000:]}\nimported topology:\n{text}")
    assert "\n".join(save_rules(wanted)) + "\n" == theirs  # export ipvsadm prints the same
