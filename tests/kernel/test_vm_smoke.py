"""Smoke tests proving the kernel-test environment (host or VM) has a working IPVS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

VIP = "198.51.100.10"
REAL = "10.0.0.2"


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ipvs():
    """pyroute2's IPVS socket on a table flushed before and after the test."""
    from pyroute2 import IPVS

    ipvsadm("-C")
    sock = IPVS()
    try:
        yield sock
    finally:
        sock.close()
        ipvsadm("-C")


def test_ipvs_module_loaded():
    assert Path("/proc/net/ip_vs").exists()
    modules = Path("/proc/modules").read_text().split("\n")
    assert any(line.startswith("ip_vs ") for line in modules)
    assert any(line.startswith("ip_vs_mh ") for line in modules)


def test_empty_table_pyroute2_and_ipvsadm_agree(ipvs):
    assert list(ipvs.service("dump")) == []
    lines = ipvsadm("-Ln").splitlines()
    assert lines[0].startswith("IP Virtual Server version")
    assert lines[3:] == [], "ipvsadm lists no service below its 3 header lines"


def test_mh_service_added_by_ipvsadm_is_seen_by_pyroute2(ipvs):
    ipvsadm("-A", "-t", f"{VIP}:80", "-s", "mh", "-b", "mh-port")
    ipvsadm("-a", "-t", f"{VIP}:80", "-r", f"{REAL}:80", "-g", "-w", "3")
    from pyroute2 import IPVSService

    messages = list(ipvs.service("dump"))
    assert len(messages) == 1
    svc = messages[0].get("IPVS_CMD_ATTR_SERVICE")
    assert svc.get("IPVS_SVC_ATTR_SCHED_NAME") == "mh"
    assert svc.get("IPVS_SVC_ATTR_ADDR") == VIP
    assert svc.get("IPVS_SVC_ATTR_PORT") == 80
    assert svc.get("IPVS_SVC_ATTR_FLAGS")["flags"] & 0x10, "mh-port is SCHED2 (0x10)"
    dests = list(ipvs.dest("dump", service=IPVSService.from_message(messages[0])))
    assert len(dests) == 1
    dest = dests[0].get("IPVS_CMD_ATTR_DEST")
    assert dest.get("IPVS_DEST_ATTR_ADDR") == REAL
    assert dest.get("IPVS_DEST_ATTR_WEIGHT") == 3
    assert dest.get("IPVS_DEST_ATTR_FWD_METHOD") == 3, "-g is direct routing (3)"
    listing = ipvsadm("-Ln")
    assert f"TCP  {VIP}:80 mh (mh-port)" in listing
    assert f"{REAL}:80" in listing
