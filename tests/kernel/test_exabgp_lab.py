"""`announcer: exabgp` end to end on a real IPVS kernel: the demo topology with both directors
announcing the VIP through ExaBGP (started by deploy), the lab router's FRR bgpd spreading flows
over them, the agents withdrawing the VIP through ExaBGP's API when no real server is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit import cli, http_answers, in_node, wait_for_ecmp

from lvscluster.apply import exabgp
from lvscluster.lab import netns as lab_provider

ROOT = Path(__file__).parent.parent.parent
VIP = "10.99.0.10"
OSPF_LINE = "  ospf: {area: 0.0.0.0, hello: 1, dead: 3, bfd: true}\n"
HOPS = ["10.1.1.2", "10.1.2.2"]


def exabgp_demo(tmp_path: Path) -> Path:
    text = (ROOT / "topology" / "demo.lvs.yml").read_text()
    assert OSPF_LINE in text and "name: demo\n" in text
    text = text.replace("name: demo\n", "name: exa\n").replace(
        OSPF_LINE, OSPF_LINE + "  announce: bgp\n  bgp: {announcer: exabgp}\n", 1)
    path = tmp_path / "exa.lvs.yml"
    path.write_text(text)
    return path


def test_exabgp_announces_drains_and_the_agents_withdraw_through_it(tmp_path: Path) -> None:
    topology = exabgp_demo(tmp_path)
    lab_provider.down("exa")
    try:
        code, output = cli("lab", "up", str(topology))
        assert code == 0, output
        code, output = cli("deploy", "--yes", str(topology))
        assert code == 0 and "announce 1 routes through ExaBGP" in output, output
        assert all(exabgp.pid(f"exa.{d}") for d in ("d1", "d2"))
        assert sorted(wait_for_ecmp("exa", "r1", VIP, 2)) == HOPS
        answers = http_answers("exa", "c1", VIP, 60)
        assert sum(answers.values()) == 60 and set(answers) == {"rs1", "rs2", "rs3"}, answers
        code, output = cli("deploy", "--yes", str(topology))
        assert code == 0 and output.strip().endswith("no changes"), output
        code, output = cli("status", "--json", str(topology))
        assert code == 0, output
        report = json.loads(output[output.index("{"):])
        assert all(report["nodes"][d]["vips"][f"{VIP}/32"]["announced"] for d in ("d1", "d2")), report["nodes"]["d1"]
        deadline = time.monotonic() + 60  # the agent's metric follows at its next round
        while 'lvscluster_vip_announced{vip="web"} 1.0' not in (page := in_node(
                "exa", "d1", "curl", "-s", "--max-time", "20", "http://127.0.0.1:9586/metrics").stdout):
            assert time.monotonic() < deadline, page[-2000:]
            time.sleep(2)

        # no real server left: each agent withdraws the VIP through its ExaBGP; back when they are
        servers = {node: lab_provider.processes_in(f"exa.{node}") for node in ("rs1", "rs2", "rs3")}
        for pids in servers.values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        assert wait_for_ecmp("exa", "r1", VIP, 0, timeout=90) == []
        log = (lab_provider.state_dir("exa") / "agent-d1.log").read_text()
        assert "withdraw" in log and "through ExaBGP" in log, log
        for node in servers:
            subprocess.Popen(["ip", "netns", "exec", f"exa.{node}", sys.executable, "-m", "lvscluster.lab.testserver",
                              "--node", node, "--tcp", "80", "--udp", "53"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        assert sorted(wait_for_ecmp("exa", "r1", VIP, 2, timeout=120)) == HOPS

        # (a drain through ExaBGP, a longer AS path, is tested against real ExaBGP and FRR on the host:
        # tests/integration/test_frr_config.py::test_exabgp_announces_drains_and_withdraws_through_its_api)

        # destroy stops ExaBGP first: the router drops the VIP at once
        code, output = cli("destroy", "--yes", str(topology))
        assert code == 0 and re.search(r"stop ExaBGP", output), output
        assert wait_for_ecmp("exa", "r1", VIP, 0, timeout=30) == []
        assert not any(exabgp.pid(f"exa.{d}") for d in ("d1", "d2"))
    finally:
        code, output = cli("lab", "down", str(topology))
        assert code == 0, output
        assert not any(exabgp.directory(f"exa.{d}").exists() for d in ("d1", "d2"))
