"""Parsing the kernel's connection table (format of net/netfilter/ipvs/ip_vs_conn.c, sync variant)."""

from lvscluster.netlink.connections import parse_connections

SAMPLE = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires PEName PEData
TCP AC100001 4E20 0A63000A 0050 0A020004 0050 ESTABLISHED Local      899
UDP AC100001 C350 0A63000A 0035 0A020006 0035 UDP         Sync       293
TCP 2001:0db8:0000:0000:0000:0000:0000:0001 4E21 2001:0db8:0000:0000:0000:0000:0000:00aa 0050 2001:0db8:0000:0000:0000:0000:0000:0005 0050 FIN_WAIT    Local 60
"""


def test_parse_connections() -> None:
    first, second, third = parse_connections(SAMPLE)
    assert (first.protocol, first.client, first.vip, first.dest, first.state, first.origin, first.expires) == (
        "tcp", "172.16.0.1:20000", "10.99.0.10:80", "10.2.0.4:80", "ESTABLISHED", "local", 899)
    assert (second.protocol, second.dest, second.origin) == ("udp", "10.2.0.6:53", "sync")
    assert third.client == "[2001:db8::1]:20001" and third.dest == "[2001:db8::5]:80"


def test_count_in_table_counts_one_vip_port_and_state_by_origin() -> None:
    from lvscluster.netlink.connections import count_in_table

    extra = "TCP AC100002 4E22 0A63000A 0050 0A020005 0050 ESTABLISHED Sync       890\n"
    assert count_in_table(SAMPLE + extra, "10.99.0.10", 80) == {"local": 1, "sync": 1}
    assert count_in_table(SAMPLE + extra, "10.99.0.10", 53) == {"local": 0, "sync": 0}  # UDP state
    assert count_in_table(SAMPLE + extra, "10.99.0.10", 53, state="UDP") == {"local": 0, "sync": 1}
    assert count_in_table(SAMPLE, "10.99.0.11", 80) == {"local": 0, "sync": 0}


def test_count_in_table_finds_an_ipv6_vip_as_the_kernel_prints_it() -> None:
    from lvscluster.netlink.connections import count_in_table

    synced = ("TCP 2001:0db8:0000:0000:0000:0000:0000:0002 4E22 2001:0db8:0000:0000:0000:0000:0000:00aa 0050 "
              "2001:0db8:0000:0000:0000:0000:0000:0006 0050 ESTABLISHED Sync 890\n")
    assert count_in_table(SAMPLE + synced, "2001:db8::aa", 80) == {"local": 0, "sync": 1}
    assert count_in_table(SAMPLE + synced, "2001:db8::aa", 80, state="FIN_WAIT") == {"local": 1, "sync": 0}
    assert count_in_table(SAMPLE + synced, "2001:db8::ab", 80) == {"local": 0, "sync": 0}
