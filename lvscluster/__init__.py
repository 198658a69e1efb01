"""lvscluster: all-active, ECMP-scaled LVS clusters from one topology file."""

__version__ = "0.1.0"
