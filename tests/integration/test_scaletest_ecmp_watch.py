"""The scaletest's ECMP watch on a real routing table: it sees next hops come and go, with times."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from lvscluster.scaletest.observe import EcmpWatch

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def router():
    ns = f"lvst-ecmpw-{os.getpid()}"
    ip("netns", "add", ns)
    ip("-n", ns, "link", "add", "a0", "type", "veth", "peer", "name", "b0")
    ip("-n", ns, "addr", "add", "10.1.1.1/24", "dev", "a0")
    for dev in ("a0", "b0", "lo"):
        ip("-n", ns, "link", "set", dev, "up")
    yield ns
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_watch_records_each_change_of_the_next_hops(router: str) -> None:
    """Each change is seen within 0.15 s although the watch reads the table on its own only every
    30 s: the kernel's route notifications wake it (no polling that takes a slow lab's CPU)."""
    watch = EcmpWatch(router, "10.99.0.10/32", period=30)
    watch.start()
    try:
        time.sleep(0.2)
        ip("-n", router, "route", "add", "10.99.0.10/32", "nexthop", "via", "10.1.1.2", "nexthop", "via", "10.1.1.3")
        time.sleep(0.2)
        moment = time.monotonic()
        ip("-n", router, "route", "replace", "10.99.0.10/32", "via", "10.1.1.3")
        time.sleep(0.2)
    finally:
        stopping = time.monotonic()
        watch.stop()
    assert not watch.is_alive() and time.monotonic() - stopping < 1  # stop wakes it, not the 30 s period
    assert [hops for _, hops in watch.changes] == [(), ("10.1.1.2", "10.1.1.3"), ("10.1.1.3",)]
    assert 0 <= watch.first_change_after(moment) < 0.15
    assert watch.first_change_after(time.monotonic()) is None
