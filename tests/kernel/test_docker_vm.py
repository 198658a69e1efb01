"""The Docker lab on a real IPVS kernel: `lab up --backend docker`, deploy, traffic, no-op deploy, down.

Runs where the kernel has IPVS: inside the test VM on the project's machines, where the lab's
dockerd is started by `lab up` itself (data root on a tmpfs, `lvscluster.lab.vmdocker`) and
makes the skeleton image (`lvscluster.lab.dockerimage`) from the files the VM sees. The module
stops that dockerd at its end: every kernel test module leaves no process behind.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from labkit import cli, drain_undrain_holds, http_answers, service_counter, wait_for_ecmp

from lvscluster.lab import vmdocker
from lvscluster.lab.containers import LABEL, connect

ROOT = Path(__file__).parent.parent.parent
LAB = "dockervm"
VIP = "10.99.0.10"
DIRECTORS = ("d1", "d2")


def measured(what: str, started: float) -> None:
    print(f"measured: {what} {time.monotonic() - started:.0f} s")  # reaches the host's test summary


@pytest.fixture(scope="module")
def docker_demo(tmp_path_factory):
    """The demo topology as a Docker lab named dockervm, up (not deployed); taken down afterwards."""
    path = tmp_path_factory.mktemp("dockervm") / "demo.lvs.yml"
    path.write_text((ROOT / "topology" / "demo.lvs.yml").read_text().replace("name: demo\n", f"name: {LAB}\n", 1))
    started = time.monotonic()
    code, output = cli("lab", "up", "--backend", "docker", str(path))
    assert code == 0, output
    for line in output.splitlines():  # the steps' own timings: dockerd start, image import
        if re.search(r"\(\d+ s\)$", line):
            print(f"measured: {line.strip()}")
    measured("lab up --backend docker (dockerd start and image import included)", started)
    yield path
    cli("lab", "down", str(path))
    if vmdocker.in_vm():
        vmdocker.stop_dockerd()


def test_deploy_traffic_and_noop(docker_demo):
    """deploy configures all 6 nodes through `docker exec`; requests through the VIP reach every
    real server and move the directors' IPVS counters; a second deploy changes nothing."""
    started = time.monotonic()
    code, output = cli("deploy", "--yes", str(docker_demo))
    assert code == 0, output
    assert re.search(r"applied \d+ changes to 6 nodes", output), output
    measured("deploy of 6 containers", started)
    started = time.monotonic()
    assert len(wait_for_ecmp(LAB, "r1", VIP, 2)) == 2  # deploy does not wait for OSPF; the router then takes both
    measured("both directors in the router's ECMP set after the deploy", started)
    before = service_counter(LAB, DIRECTORS, f"tcp/{VIP}:80", at_least=0, counter="inpkts")

    started = time.monotonic()
    answers = http_answers(LAB, "c1", VIP, 60)
    assert set(answers) == {"rs1", "rs2", "rs3"}, answers  # every real server answered, no request failed
    measured("60 HTTP requests through the VIP", started)
    # SYN, request and FIN of each at least, in the directors' packet counters (the kernel folds
    # per-CPU counters every 2 s)
    after = service_counter(LAB, DIRECTORS, f"tcp/{VIP}:80", at_least=sum(before.values()) + 180, timeout=30,
                            counter="inpkts")
    assert sum(after.values()) - sum(before.values()) >= 180, (before, after)
    assert all(after[d] > before[d] for d in DIRECTORS), (before, after)  # both directors served (ECMP)

    started = time.monotonic()
    code, output = cli("deploy", "--yes", str(docker_demo))
    assert code == 0 and output.strip().endswith("no changes"), output
    measured("no-op deploy", started)


def test_a_scaletest_drains_a_director_of_the_docker_lab_and_no_flow_breaks(docker_demo, tmp_path):
    """The scaletest runs on a Docker lab as on a namespace lab (the engine in the client
    container's namespace): d2 drained and undrained under 40 flows and new connections, the
    router's ECMP set follows, no flow breaks. A kill is refused on a Docker lab, naming why."""
    assert len(wait_for_ecmp(LAB, "r1", VIP, 2)) == 2
    code, output = cli("scaletest", str(docker_demo), "--churn", "kill d2@5s", "--duration", "10")
    assert code != 0 and "kill is not available on a Docker lab yet" in output, output
    report = drain_undrain_holds(docker_demo, tmp_path / "docker", "Docker lab scaletest")
    conns = {d: c["conns"] for d, c in report["directors"]["counters"].items()}
    assert sorted(conns) == list(DIRECTORS) and all(conns.values()), conns  # each director's IPVS, read through its namespace


def test_lab_down_removes_everything_labelled(docker_demo):
    """`lab down` removes every container and network carrying the lab's label."""
    started = time.monotonic()
    code, output = cli("lab", "down", str(docker_demo))
    assert code == 0, output
    measured("lab down", started)
    client = connect()
    labelled = {"label": f"{LABEL}={LAB}"}
    assert client.containers.list(all=True, filters=labelled) == []
    assert client.networks.list(filters=labelled) == []
