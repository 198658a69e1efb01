"""lvscluster.apply."""
