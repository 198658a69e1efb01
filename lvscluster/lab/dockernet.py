"""A Docker lab's networks, and the interfaces they give its containers, made the topology's.

Docker's address management would claim an address of every /30 for its gateway, so each
network gets a private /28 from BOOKKEEPING (one no other network on the engine uses) for
Docker's own addresses, and `wire` gives each interface the topology's name and address (and
drops Docker's). Networks are named from their link's subnet, so adding or removing a link
renames none of the others; `unplug` deletes one end of a cable by its MAC address, since
Docker finds an endpoint's interface by the name it gave it, which `wire` changed, and `detach`
takes every container off a network that way.
"""

from __future__ import annotations

import ipaddress
import subprocess

from pyroute2 import IPRoute

from lvscluster.errors import ApplyError
from lvscluster.lab.common import add_addresses
from lvscluster.lab.layout import short_name
from lvscluster.model.cluster import Cluster

LABEL = "lvscluster.lab"  # every container and network of a lab: lvscluster.lab=<lab>
BOOKKEEPING = ipaddress.ip_network("100.64.0.0/10")  # Docker's own addresses, dropped from the interfaces


def network_name(cluster: Cluster, link_index: int) -> str:
    """`demo.net-<10 hex digits>`: a link's Docker network, named from its subnet, never from its
    place in the list, so a link removed or added leaves the other networks' names as they were
    (the namespace lab names its bridges the same way)."""
    return f"{cluster.name}.{short_name('net-', str(cluster.topology.links[link_index].subnet))}"


def free_pool(client) -> ipaddress.IPv4Network:
    """A /28 of BOOKKEEPING no Docker network on this engine uses (another lab's included)."""
    used = [ipaddress.ip_network(c["Subnet"]) for n in client.api.networks()
            for c in ((n.get("IPAM") or {}).get("Config") or []) if "Subnet" in c]
    for pool in BOOKKEEPING.subnets(new_prefix=28):
        if not any(pool.overlaps(u) for u in used):
            return pool
    raise ApplyError(f"no free /28 left in {BOOKKEEPING} for Docker's own addresses")


def create_network(client, cluster: Cluster, index: int, mtu: int | None) -> None:
    from docker.types import IPAMConfig, IPAMPool

    pool = free_pool(client)
    options = {"com.docker.network.bridge.inhibit_ipv4": "true"}
    if mtu:
        options["com.docker.network.driver.mtu"] = str(mtu)
    client.networks.create(network_name(cluster, index), driver="bridge", internal=True, options=options,
                           ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(pool), gateway=str(pool[1]))]),
                           labels={LABEL: cluster.name})


def wire(container, cluster: Cluster, node: str, space: str, links: list[int] | None = None) -> None:
    """Attach the container's namespace as `space` and give each interface the topology's name and
    address; `links`: only the interfaces on these links, of a container attached already."""
    container.reload()
    if links is None:
        pid = container.attrs["State"]["Pid"]
        subprocess.run(["ip", "netns", "attach", space, str(pid)], check=True, capture_output=True)
    given = container.attrs["NetworkSettings"]["Networks"]
    with IPRoute(netns=space) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        found = []  # Docker names a container's interfaces in its own order: each is renamed in two steps
        for iface in cluster.interfaces_of(node):
            if links is not None and iface.link_index not in links:
                continue
            docker_address = given[network_name(cluster, iface.link_index)]["IPAddress"]
            held = ipr.get_addr(address=docker_address)
            if not held:
                raise ApplyError(f"no interface holds Docker's address {docker_address} for {node}:{iface.name}")
            index = held[0]["index"]
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, ifname=f"lvs-tmp{index}")  # out of the way of a name another one takes
            ipr.addr("del", index=index, address=docker_address, prefixlen=held[0]["prefixlen"])
            found.append((index, iface))
        for index, iface in found:
            ipr.link("set", index=index, ifname=iface.name)
            add_addresses(ipr, index, str(iface.address), iface.address6 and str(iface.address6))
            ipr.link("set", index=index, state="up")


def unplug(space: str, mac: str) -> None:
    """Delete the interface with this MAC address in the namespace (a veth: its pair goes too)."""
    with IPRoute(netns=space) as ipr:
        for link in ipr.get_links():
            if link.get_attr("IFLA_ADDRESS") == mac.lower():
                ipr.link("del", index=link["index"])


def detach(network, spaces: dict[str, str], keep: str | None = None) -> None:
    """Disconnect every container but `keep` (an id) from the network: each one's interface is
    deleted first, by its MAC address in its namespace (`spaces`: container name -> namespace),
    since Docker looks for it under the name it gave it, which `wire` changed; then Docker forgets
    the endpoint."""
    network.reload()
    for cid, end in (network.attrs.get("Containers") or {}).items():
        if cid == keep:
            continue
        if end["Name"] in spaces:
            unplug(spaces[end["Name"]], end["MacAddress"])
        network.disconnect(cid, force=True)
