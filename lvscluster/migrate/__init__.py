"""Migration from keepalived and ipvsadm: read their configurations into topology files (pure).

`confparse` reads keepalived.conf into statements with FILE:LINE, `keepalived` and `ipvsadm`
turn keepalived statements and `ipvsadm -S -n` dumps into virtual services, `to_topology` writes
those as a topology file, and `ipvsadm` also prints a director's desired state as `ipvsadm -S`
would. Nothing here touches a machine.
"""
