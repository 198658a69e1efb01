"""The main job, end to end on a real IPVS kernel: lab up, deploy, traffic, idempotency, change, down.

Runs where the kernel has IPVS (inside the test VM on the project's machines). Commands run
in-process through the CLI app, as a user would type them, because a fresh Python costs ~25 s
under the VM's software emulation.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from labkit import CLIENT, cli, in_node, service_conns, wait_for_ecmp

from lvscluster.apply import frr
from lvscluster.lab import netns as lab_provider
from lvscluster.netlink import IpvsSocket

ROOT = Path(__file__).parent.parent.parent
VIP = "10.99.0.10"


@pytest.fixture
def demo(tmp_path: Path):
    topology = tmp_path / "demo.lvs.yml"
    shutil.copy(ROOT / "topology" / "demo.lvs.yml", topology)
    lab_provider.down("demo")
    yield topology
    lab_provider.down("demo")


def dest_weights(director: str) -> dict[str, int]:
    with IpvsSocket(f"demo.{director}") as sock:
        return {d.address: d.weight for s in sock.services() if s.port == 80 for d in s.dests}


def test_demo_lab_deploy_traffic_and_idempotency(demo: Path) -> None:
    code, output = cli("lab", "up", str(demo))
    assert code == 0, output
    code, output = cli("deploy", "--yes", str(demo))
    assert code == 0, output
    assert re.search(r"applied \d+ changes to 6 nodes", output)

    assert sorted(wait_for_ecmp("demo", "r1", VIP, 2)) == ["10.1.1.2", "10.1.2.2"]
    traffic = in_node("demo", "c1", sys.executable, "-c", CLIENT, VIP, "300")
    assert traffic.returncode == 0, traffic.stderr
    answers = json.loads(traffic.stdout)
    assert sum(answers["http"].values()) == 300
    assert set(answers["http"]) == {"rs1", "rs2", "rs3"}  # every real server served some
    assert re.fullmatch(r"rs[123] ping", answers["udp"])
    conns = service_conns("demo", ("d1", "d2"), f"tcp/{VIP}:80", at_least=300)
    assert all(c > 0 for c in conns.values()), conns  # every director served some (ECMP)
    assert sum(conns.values()) >= 300

    # a second deploy changes nothing
    code, output = cli("deploy", "--yes", str(demo))
    assert code == 0 and output.strip().endswith("no changes"), output

    # one weight in the file: one set_dest per director and service, nothing else
    demo.write_text(demo.read_text().replace("{node: rs3, weight: 2}", "{node: rs3, weight: 5}"))
    code, output = cli("plan", "--json", str(demo))
    assert code == 0, output
    plan = json.loads(output[output.index("{"):])
    changed = {node: [(a["kind"], a["service"]["port"], a["dest"]["weight"]) for a in acts]
               for node, acts in plan["nodes"].items() if acts}
    assert changed == {"d1": [("set_dest", 80, 5), ("set_dest", 53, 5)], "d2": [("set_dest", 80, 5), ("set_dest", 53, 5)]}
    code, output = cli("deploy", "--yes", str(demo))
    assert code == 0 and "applied 4 changes to 2 nodes" in output, output
    assert dest_weights("d2") == {"10.2.0.4": 1, "10.2.0.5": 1, "10.2.0.6": 5}

    # a failure mid-rollout stops there: FRR stopped on d1 makes its set_frr fail; d2 is not touched
    frr.stop("demo+d1")
    demo.write_text(demo.read_text().replace("{node: rs3, weight: 5}", "{node: rs3, weight: 3}"))
    code, output = cli("deploy", "--yes", str(demo))
    assert code != 0, output
    assert "deploy stopped at d1" in output and "FRR is not running" in output and "not touched: d2" in output, output
    assert dest_weights("d2") == {"10.2.0.4": 1, "10.2.0.5": 1, "10.2.0.6": 5}  # as it was
    frr.start("demo+d1", "demo.d1")  # the cause fixed: the next deploy continues from the current state
    code, output = cli("deploy", "--yes", str(demo))
    assert code == 0 and "to 2 nodes" in output, output
    assert dest_weights("d1") == dest_weights("d2") == {"10.2.0.4": 1, "10.2.0.5": 1, "10.2.0.6": 3}
    assert sorted(wait_for_ecmp("demo", "r1", VIP, 2)) == ["10.1.1.2", "10.1.2.2"]

    # status agrees with the kernel, and lists connection entries like `ipvsadm -lnc`
    code, output = cli("status", "--json", "--connections", str(demo))
    assert code == 0, output
    report = json.loads(output[output.index("{"):])
    assert report["in_sync"] and report["mh_tables_consistent"]
    assert report["nodes"]["r1"]["ecmp"][f"{VIP}/32"] == ["10.1.1.2", "10.1.2.2"]
    for director in ("d1", "d2"):
        node = report["nodes"][director]
        http = next(s for s in node["services"] if s["service"] == f"tcp/{VIP}:80")
        assert [d["dest"] for d in http["dests"]] == ["10.2.0.6:80", "10.2.0.5:80", "10.2.0.4:80"]
        assert http["conns"] == conns[director] and node["vips"][f"{VIP}/32"]["announced"]
        assert sorted(d["state"] for d in node["sync"]) == ["backup", "master"]
    entries = [c for cs in report["connections"].values() for c in cs]
    assert entries and all(c["vip"] in (f"{VIP}:80", f"{VIP}:53") for c in entries)

    # destroy removes what deploy added, puts sysctls back, and a second destroy finds nothing
    code, output = cli("destroy", "--yes", str(demo))
    assert code == 0 and "removed:" in output, output
    with IpvsSocket("demo.d1") as sock:
        assert sock.services() == () and sock.daemons() == ()
    assert in_node("demo", "d1", "cat", "/proc/sys/net/ipv4/vs/sloppy_tcp").stdout.strip() == "0"
    assert VIP not in in_node("demo", "rs1", "ip", "-j", "addr", "show", "lo").stdout
    assert wait_for_ecmp("demo", "r1", VIP, 0) == []
    code, output = cli("destroy", "--yes", str(demo))
    assert code == 0 and output.strip().endswith("no changes"), output

    code, output = cli("lab", "down", str(demo))
    assert code == 0, output
    assert lab_provider.lab_namespaces("demo") == []
    assert not [p for d in (frr.ETC, frr.RUN) if d.exists() for p in d.glob("demo+*")]  # no FRR leftovers
