"""lvscluster.netlink."""
