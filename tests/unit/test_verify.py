"""lvscluster.plan.verify and `lvscluster verify`: which directors would send a flow elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lvscluster.cli.verify import print_report
from lvscluster.plan.verify import verify_directors
from lvscluster.state import IpvsDest, IpvsService, IpvsState, NodeState

ROOT = Path(__file__).parent.parent.parent
VIP = "10.99.0.10"
DESTS = tuple(IpvsDest(address=f"10.2.0.{i}", port=80, weight=1) for i in range(1, 8))
WEB = IpvsService(protocol="tcp", address=VIP, port=80, scheduler="mh", flags=("mh-port",), dests=DESTS)
DNS = IpvsService(protocol="udp", address=VIP, port=53, scheduler="sh", dests=DESTS[:3])


def director(name: str, *services: IpvsService) -> NodeState:
    return NodeState(name=name, role="director", ipvs=IpvsState(services=services))


def test_identical_directors_are_consistent() -> None:
    report = verify_directors({"d1": director("d1", WEB, DNS), "d2": director("d2", WEB, DNS),
                               "d3": IpvsState(services=(WEB, DNS))})
    assert report.consistent
    assert [(s.service, s.agreeing) for s in report.services] == [
        ("tcp/10.99.0.10:80", ["d1", "d2", "d3"]), ("udp/10.99.0.10:53", ["d1", "d2", "d3"])]


def test_a_different_dest_order_is_found_with_the_slots_and_flows_it_moves() -> None:
    reordered = WEB.model_copy(update={"dests": DESTS[::-1]})
    report = verify_directors({"d1": director("d1", WEB), "d2": director("d2", reordered), "d3": director("d3", WEB)})
    [check] = report.services
    assert not report.consistent and check.agreeing == ["d1", "d3"] and check.reference == "d1"
    [div] = check.diverging
    assert div.director == "d2" and div.reasons == ["same dests in a different order"]
    assert 0 < div.slots_differing < 0.05 and 0 < div.flows_differing < 0.05
    assert div.examples and all(ex.majority != ex.director for ex in div.examples)


def test_a_missing_service_diverges_on_every_flow() -> None:
    report = verify_directors({"d1": director("d1", WEB, DNS), "d2": director("d2", WEB), "d3": director("d3", WEB, DNS)})
    web, dns = report.services
    assert web.consistent and not dns.consistent
    [div] = dns.diverging
    assert div.director == "d2" and div.reasons == ["service missing here"]
    assert div.flows_differing == 1.0 and div.examples[0].director is None


def test_a_service_only_one_director_has_diverges_there() -> None:
    report = verify_directors({"d1": director("d1", WEB), "d2": director("d2"), "d3": director("d3")})
    [check] = report.services
    assert check.agreeing == ["d2", "d3"] and check.scheduler is None
    assert check.diverging[0].reasons == ["service present here, missing on the majority"]


def test_quiesced_dest_and_flag_differences_are_named() -> None:
    quiesced = WEB.model_copy(update={"dests": (DESTS[0].model_copy(update={"weight": 0}),) + DESTS[1:]})
    no_port = WEB.model_copy(update={"flags": ()})
    report = verify_directors({"d1": director("d1", WEB), "d2": director("d2", quiesced),
                               "d3": director("d3", WEB), "d4": director("d4", no_port)})
    [check] = report.services
    reasons = {d.director: d.reasons for d in check.diverging}
    assert reasons == {"d2": ["10.2.0.1:80 weight 0 (majority 1)"], "d4": ["mh-port not set here only"]}
    quiesced_div = next(d for d in check.diverging if d.director == "d2")
    assert 0.1 < quiesced_div.flows_differing < 0.2  # 1 of 7 dests: its flows are dropped
    assert any("weight 0" in note for note in check.notes)


def test_schedulers_without_a_table_compare_presence_and_available_dests() -> None:
    rr = WEB.model_copy(update={"scheduler": "rr", "flags": ()})
    report = verify_directors({"d1": director("d1", rr), "d2": director("d2", rr)})
    assert report.consistent
    wlc = rr.model_copy(update={"scheduler": "wlc"})
    [check] = verify_directors({"d1": director("d1", rr), "d2": director("d2", wlc), "d3": director("d3", rr)}).services
    [div] = check.diverging
    assert div.reasons == ["scheduler wlc instead of rr"] and div.flows_differing is None


def test_the_report_is_json(capsys) -> None:
    reordered = WEB.model_copy(update={"dests": DESTS[::-1]})
    report = verify_directors({"d1": director("d1", WEB), "d2": director("d2", reordered), "d3": director("d3", WEB)})
    document = json.loads(json.dumps(report.to_json()))
    assert document["consistent"] is False
    assert document["services"][0]["diverging"][0]["director"] == "d2"
    print_report(report)
    printed = capsys.readouterr().out
    assert "DIVERGENT" in printed and "DIFFERS" in printed and "d2" in printed and "on d1" in printed


def lvscluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvscluster.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_verify_help_says_what_it_checks() -> None:
    done = lvscluster("verify", "--help")
    assert done.returncode == 0 and "mh" in done.stdout and "Exits 0" in done.stdout


def test_verify_without_a_lab_or_access_is_a_clear_error(tmp_path: Path) -> None:
    topology = tmp_path / "nolab.lvs.yml"  # a name no lab on this machine can have
    topology.write_text((ROOT / "topology" / "demo.lvs.yml").read_text().replace("name: demo", "name: mgv-nolab", 1))
    done = lvscluster("verify", str(topology))
    assert done.returncode == 1 and "no lab is up" in done.stderr and "Traceback" not in done.stderr
