"""Eight directors announcing over BGP on a real IPVS kernel: churn and removal as in OSPF mode.

`topology/bgp8.lvs.yml` (ecmp8 over eBGP with BFD): the router installs 8 equal paths; drain,
undrain, kill and revive under a scaletest break no flow; `director remove` takes one out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import cli, deployed_lab, run_scaletest, scaletest_exit, wait_for_ecmp


VIP = "10.99.0.10"
UPLINKS = [f"10.1.{i}.2" for i in range(1, 9)]


@pytest.fixture(scope="module")
def bgp8(tmp_path_factory) -> Path:
    """The bgp8 lab, up and deployed; down afterwards."""
    yield from deployed_lab(tmp_path_factory.mktemp("bgp8"), "bgp8", 13)


def test_bgp_directors_churn_without_breaking_a_flow_and_one_is_removed(bgp8: Path, tmp_path: Path) -> None:
    assert sorted(wait_for_ecmp("bgp8", "r1", VIP, 8)) == UPLINKS
    code, output, report = run_scaletest(
        bgp8, tmp_path / "churn", "--flows", "60", "--interval", "0.5", "--rate", "8", "--duration", "75",
        "--echo-timeout", "15", "--churn", "drain d3@8s,undrain d3@25s,kill d4@40s,revive d4@52s")
    print(output)
    traffic, events = report["traffic"], {e["label"]: e for e in report["events"]}
    assert traffic["flows_established"] == 60
    assert traffic["flows_broken"] == 0, report["broken_flows"]
    assert code == scaletest_exit(report), (report["lab"], output)
    assert all(events[label]["ecmp_changed_after"] is not None
               for label in ("drain d3@8s", "undrain d3@25s", "kill d4@40s")), events
    print("measured: BGP churn: 0 of 60 flows broken, " + f"{traffic['new_ok']} new connections ok, "
          f"{traffic['new_failed']} failed; ECMP changed after " +
          ", ".join(f"{label}: {e['ecmp_changed_after']} s" for label, e in events.items()))
    assert sorted(wait_for_ecmp("bgp8", "r1", VIP, 8, timeout=90)) == UPLINKS  # d4 announces again

    code, output = cli("director", "remove", str(bgp8), "d8", "--timeout", "60")
    assert code == 0, output
    assert sorted(wait_for_ecmp("bgp8", "r1", VIP, 7)) == UPLINKS[:7]
    code, output = cli("deploy", "--yes", str(bgp8))
    assert code == 0 and output.strip().endswith("no changes"), output
