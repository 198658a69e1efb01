"""lvscluster.model."""
