"""Links.nexthops reads ECMP routes (RTA_MULTIPATH) and single-path routes from the kernel."""

from __future__ import annotations

import os
import subprocess

import pytest

from lvscluster.netlink import Links

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


@pytest.fixture
def netns():
    name = f"lvst-nh-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def test_nexthops(netns: str) -> None:
    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", netns, *args], check=True)

    ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("link", "add", "v2", "type", "veth", "peer", "name", "v3")
    ip("addr", "add", "10.0.0.1/24", "dev", "v0")
    ip("addr", "add", "10.0.1.1/24", "dev", "v2")
    for dev in ("v0", "v1", "v2", "v3"):
        ip("link", "set", dev, "up")
    ip("route", "add", "10.99.0.10/32", "nexthop", "via", "10.0.1.2", "nexthop", "via", "10.0.0.2")
    ip("route", "add", "10.99.0.11/32", "via", "10.0.0.3")
    with Links(netns) as links:
        assert links.nexthops("10.99.0.10/32") == ["10.0.0.2", "10.0.1.2"]
        assert links.nexthops("10.99.0.11/32") == ["10.0.0.3"]
        assert links.nexthops("10.99.0.12/32") == []
