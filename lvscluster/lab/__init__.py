"""Labs: a topology built as network namespaces (default) on this machine or in a VM."""
