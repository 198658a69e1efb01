"""The keepalived import round trip, against a real keepalived and a real IPVS.

For each configuration in tests/migrate/kernel/: keepalived (checker process only, no VRRP)
programs it in a fresh network namespace and `ipvsadm -S -n` is saved; then `lvscluster import
keepalived` reads the same file, the first director's IPVS services are planned from the
imported topology and applied through lvscluster's netlink library to another fresh namespace,
and that namespace's `ipvsadm -S -n` must be the same text. `lvscluster export ipvsadm` must print
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
from lvscluster.migrate.ipvsadm import save_rules
from lvscluster.migrate.keepalived import import_keepalived
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


def keepalived_table(ns: str, conf: Path, tmp: Path, services: int) -> str:
    """Run keepalived's checker process in `ns` until it has programmed `services` services
    and the table is stable, then stop it; returns `ipvsadm -S -n` as keepalived left it."""
    log = (tmp / "keepalived.log").open("w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, KEEPALIVED, "-n", "-l", "-D", "-C", "-f", str(conf),
         "-p", str(tmp / "keepalived.pid"), "-c", str(tmp / "checkers.pid")],
        cwd=conf.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, last = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"keepalived exited: {(tmp / 'keepalived.log').read_text()[-2000:]}"
            text = saved(ns)
            if text.count("-A ") >= services and text == last:
                return text
            last = text
            time.sleep(1.0)
        pytest.fail(f"keepalived did not program {services} services in 90 s:\n{last}\n"
                    f"{(tmp / 'keepalived.log').read_text()[-2000:]}")
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

    theirs = keepalived_table(netns(), conf, tmp_path, len(wanted.services))

    ours_ns = netns()
    early, late = diff_ipvs(director, wanted, IpvsState())
    apply_to_kernel(ours_ns, early + late)
    ours = saved(ours_ns)
    assert ours == theirs, f"keepalived:\n{theirs}\nlvscluster:\n{ours}\nimported topology:\n{text}"
    assert "\n".join(save_rules(wanted)) + "\n" == theirs  # export ipvsadm prints the same
