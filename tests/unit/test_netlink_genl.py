"""The pipelined generic netlink transport, against the always-present `nlctrl` family.

No root and no IPVS needed: GETFAMILY requests for existing and missing family names give
a success or an ENOENT per request, which is enough to prove that windows are acked,
errors are mapped back to the index of the failing request, and sending stops after an
error window. Also: a missing IPVS family becomes an EnvironmentProblem naming the module.
"""

from __future__ import annotations

import errno
import struct

import pytest
from pyroute2.netlink import CTRL_CMD_GETFAMILY, NLM_F_ACK, NLM_F_REQUEST, ctrlmsg

from lvscluster.errors import EnvironmentProblem, NetlinkOperationError
from lvscluster.netlink import ipvs as ipvs_mod
from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.genl import GenlSocket, KernelError
from lvscluster.state import IpvsDest, IpvsService, SyncDaemon


def getfamily(sock: GenlSocket, name: str) -> bytes:
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["attrs"].append(["CTRL_ATTR_FAMILY_NAME", name])
    msg["header"]["type"] = sock.family_id
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = sock.next_seq()
    msg.encode()
    return bytes(msg.data)


@pytest.fixture
def ctrl():
    sock = GenlSocket("nlctrl")
    yield sock
    sock.close()


def test_pipeline_maps_errors_to_request_index(ctrl):
    names = ["nlctrl"] * 10 + ["lvst-nosuch"] + ["nlctrl"] * 5 + ["lvst-nosuch2"]
    errors = ctrl.pipeline([getfamily(ctrl, n) for n in names], window=4, stop_on_error=False)
    assert [(e.index, e.code) for e in errors] == [(10, errno.ENOENT), (16, errno.ENOENT)]
    assert ctrl.writes == len(names)


def test_pipeline_stops_after_the_window_with_an_error(ctrl):
    names = ["nlctrl", "lvst-nosuch", "nlctrl"] + ["nlctrl"] * 6
    errors = ctrl.pipeline([getfamily(ctrl, n) for n in names], window=3)
    assert [e.index for e in errors] == [1]
    assert ctrl.writes == 3  # later windows were not sent


def test_request_raises_kernel_error(ctrl):
    ctrl.request(getfamily(ctrl, "nlctrl"))
    with pytest.raises(KernelError) as err:
        ctrl.request(getfamily(ctrl, "lvst-nosuch"))
    assert err.value.code == errno.ENOENT


def test_socket_survives_many_windows(ctrl):
    reqs = [getfamily(ctrl, "nlctrl") for _ in range(3000)]
    assert ctrl.pipeline(reqs, window=512) == []


def test_missing_ipvs_is_an_environment_problem():
    try:
        GenlSocket("IPVS").close()
    except EnvironmentProblem as err:
        assert "modprobe ip_vs" in str(err)
    else:
        pytest.skip("this kernel has IPVS")


SVC = IpvsService(protocol="tcp", address="10.99.0.10", port=80, scheduler="mh")


@pytest.mark.parametrize(
    "op, code, text",
    [
        (ipvs_mod.op_add_service(SVC), errno.ENOENT, 'cannot add service tcp/10.99.0.10:80: scheduler "mh" not available (modprobe ip_vs_mh)'),
        (ipvs_mod.op_add_dest(SVC, IpvsDest(address="10.2.0.5", port=80)), errno.ESRCH,
         "cannot add dest 10.2.0.5:80 to tcp/10.99.0.10:80: service tcp/10.99.0.10:80 does not exist"),
        (ipvs_mod.op_del_dest(SVC, IpvsDest(address="10.2.0.5", port=80)), errno.ENOENT,
         "cannot delete dest 10.2.0.5:80 from tcp/10.99.0.10:80: the dest does not exist"),
        (ipvs_mod.op_add_daemon(SyncDaemon(state="master", interface="eth9")), errno.ENODEV,
         'cannot start sync master on eth9: interface "eth9" does not exist'),
        (ipvs_mod.op_flush(), errno.EPERM, "cannot flush all services: permission denied (needs root / CAP_NET_ADMIN)"),
    ],
)
def test_explain(op, code, text):
    assert ipvs_mod.explain(op, code) == text


def test_execute_raises_named_error(monkeypatch):
    class FakeGenl:
        family_id, writes = 30, 0

        def next_seq(self):
            return 1

        def pipeline(self, requests, window):
            return [KernelError(errno.EEXIST, index=len(requests) - 1)]

    sock = ipvs_mod.IpvsSocket.__new__(ipvs_mod.IpvsSocket)
    sock.genl = FakeGenl()
    with pytest.raises(NetlinkOperationError, match="^cannot add dest 10.2.0.5:80 to tcp/10.99.0.10:80: the dest already exists$"):
        sock.execute([ipvs_mod.op_add_service(SVC), ipvs_mod.op_add_dest(SVC, IpvsDest(address="10.2.0.5", port=80))])
    assert m.CMD_NEW_DEST == 5


def test_dump_returns_every_reply_of_a_real_dump(ctrl):
    """A GETFAMILY dump (replies of many lengths, several per datagram): every message is a
    whole reply to this request, in order, and the families the kernel has are all there."""
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["header"]["type"] = ctrl.family_id
    msg["header"]["flags"] = NLM_F_REQUEST | 0x300  # NLM_F_DUMP
    msg["header"]["sequence_number"] = seq = ctrl.next_seq()
    msg.encode()
    replies = ctrl.dump(bytes(msg.data))
    names = []
    for data, offset in replies:
        length, kind, _flags, mseq = struct.unpack_from("=IHHI", data, offset)
        assert kind == ctrl.family_id and mseq == seq and offset + length <= len(data)
        reply = ctrlmsg(bytes(data[offset:offset + length]))
        reply.decode()
        names.append(reply.get_attr("CTRL_ATTR_FAMILY_NAME"))
    assert "nlctrl" in names and len(names) == len(set(names)) > 1
    assert any(sum(1 for d, _ in replies if d is data) > 1 for data, _ in replies)  # grouped datagrams were split
