"""The one netlink library through which every node's IPVS and real-server side is read and changed.

Modules: `ipvs_messages` (pyroute2's `ipvsmsg` completed and fixed, state <-> attributes),
`codec` (fast encoder/decoder compiled from those NLA maps), `genl` (pipelined generic
netlink transport), `ipvs` (`IpvsSocket`), `links` (addresses, links, routes via pyroute2
IPRoute), `sysctl` (per-namespace /proc/sys/net), `netns` (setns'd helper threads), `node`
(`observe`, `observe_node`). Every entry point takes `netns` (a name under /run/netns, a path,
or None for the current namespace). It knows nothing of plans: their actions reach it through
`lvscluster.apply.kernel`.
"""

from lvscluster.netlink.ipvs import IpvsSocket, IpvsStats
from lvscluster.netlink.links import Links
from lvscluster.netlink.node import Observed, observe, observe_node
from lvscluster.netlink.sysctl import read_sysctl, read_sysctls, write_sysctl, write_sysctls

__all__ = [
    "IpvsSocket",
    "IpvsStats",
    "Links",
    "Observed",
    "observe",
    "observe_node",
    "read_sysctl",
    "read_sysctls",
    "write_sysctl",
    "write_sysctls",
]
