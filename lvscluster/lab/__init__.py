"""Labs: a topology built on this machine or in a VM, by a provider (network namespaces or Docker)."""
