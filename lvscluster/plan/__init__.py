"""lvscluster.plan."""
