"""For the lab kernel tests: `lvscluster verify` on a deployed lab, through a divergence and back.

Call `check_verify_in_lab(topology_file, director)` after a deploy: verify must find the
directors consistent; then the director's first mh service gets its oldest dest deleted and
re-added (the kernel links it at the head, so the list order changes) and verify must exit 1
naming the order (and that director, when there are three or more); then `deploy` must repair
exactly that divergence and verify passes again.
"""

from __future__ import annotations

import json

from labkit import cli

from lvscluster.cli.common import load_cluster
from lvscluster.cli.deploy import lab_placements
from lvscluster.netlink import IpvsSocket


def verify_json(topology_file: str) -> tuple[int, dict]:
    """`lvscluster verify FILE --json` in-process: (exit code, report)."""
    code, output = cli("verify", topology_file, "--json")
    return code, json.loads(output[output.index("{"):])


def check_verify_in_lab(topology_file: str, director: str) -> None:
    """verify passes, catches a changed dest order on `director`, and passes once it is restored."""
    code, report = verify_json(topology_file)
    assert code == 0 and report["consistent"], report
    netns = lab_placements(load_cluster(topology_file))[director].netns
    with IpvsSocket(netns) as sock:
        svc = next(s for s in sock.services() if s.scheduler == "mh" and len(s.dests) > 1)
        oldest = svc.dests[-1]
        sock.del_dest(svc, oldest)
        sock.add_dest(svc, oldest)
    code, report = verify_json(topology_file)
    assert code == 1 and not report["consistent"], report
    check = next(s for s in report["services"] if s["service"] == svc.key)
    [divergence] = check["diverging"]
    if len(report["directors"]) > 2:  # with two, the majority is a tie and the first one wins
        assert divergence["director"] == director
    assert divergence["reasons"] == ["same dests in a different order"]
    assert divergence["slots_differing"] > 0  # with few dests a changed order moves many slots
    code, output = cli("deploy", "--yes", topology_file)  # deploy repairs the order
    assert code == 0 and "to 1 nodes" in output, output
    code, report = verify_json(topology_file)
    assert code == 0 and report["consistent"], report
