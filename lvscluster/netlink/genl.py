"""A synchronous generic netlink transport with request pipelining.

`GenlSocket` is a raw NETLINK_GENERIC socket opened inside a network namespace
(`netns.socket_in_netns`). The family id is resolved with pyroute2's `ctrlmsg`. Requests
are bytes built by `ipvs_messages.encode_request`; this module only moves them:

* `request()` sends one request and waits for its acknowledgement;
* `dump()` sends one dump request and returns every reply message's raw bytes;
* `pipeline()` sends many requests in windows: a window is one datagram holding up to
  `window` requests (the kernel runs them in order within the one `sendmsg`), only the last
  request of a window asks for an ACK, and the kernel reports any failing request by its
  sequence number. That is one `sendmsg` and about one `recvmsg` per window instead of two
  system calls per request, which is what lets Python keep up with `ipvsadm -R`.

`writes` counts the change requests sent (dumps excluded): the benchmark uses it to prove
that a single weight change is exactly one netlink write.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    ctrlmsg,
)

from lvscluster.errors import EnvironmentProblem
from lvscluster.netlink.netns import socket_in_netns

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_MULTI = 0x2
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

_NLHDR = struct.Struct("=IHHII")
_ERR = struct.Struct("=i")
_SEQ_OFFSET = 8
_FLAGS_OFFSET = 6
BUFSIZE = 1 << 16


class KernelError(Exception):
    """The kernel refused a request: `code` is the errno, `extack` its extended ack text."""

    def __init__(self, code: int, extack: str = "", index: int | None = None):
        self.code = code
        self.extack = extack
        self.index = index
        super().__init__(f"[Errno {code}] {os.strerror(code)}" + (f": {extack}" if extack else ""))


def _extack(data: bytes, offset: int, end: int, flags: int) -> str:
    """The NLMSGERR_ATTR_MSG text after an error's echoed header (NETLINK_CAP_ACK is on)."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    pos = offset + 4 + _NLHDR.size
    while pos + 4 <= end:
        n, kind = struct.unpack_from("=HH", data, pos)
        if n < 4:
            break
        if kind == NLMSGERR_ATTR_MSG:
            return bytes(data[pos + 4:pos + n]).split(b"\0", 1)[0].decode(errors="replace")
        pos += (n + 3) & ~3
    return ""


class GenlSocket:
    """One generic netlink socket bound to family `name` inside `netns` (None = current)."""

    def __init__(self, name: str, netns: str | None = None):
        self.netns = netns
        self.sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        for opt, fallback, size in ((SO_SNDBUFFORCE, socket.SO_SNDBUF, 4 << 20), (SO_RCVBUFFORCE, socket.SO_RCVBUF, 8 << 20)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, fallback, size)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self.sock.bind((0, 0))
        self.pid = self.sock.getsockname()[0]
        self.seq = 0
        self.writes = 0
        self.family_id = self._resolve(name)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def next_seq(self) -> int:
        """A fresh sequence number."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def _resolve(self, name: str) -> int:
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"].append(["CTRL_ATTR_FAMILY_NAME", name])
        msg["header"]["type"] = GENL_ID_CTRL
        msg["header"]["flags"] = NLM_F_REQUEST
        msg["header"]["sequence_number"] = self.next_seq()
        msg.encode()
        self.sock.send(msg.data)
        data = self.sock.recv(BUFSIZE)
        _len, kind, _flags, _seq, _pid = _NLHDR.unpack_from(data, 0)
        if kind == NLMSG_ERROR:
            code = -_ERR.unpack_from(data, 16)[0]
            if code == errno.ENOENT:
                raise EnvironmentProblem(
                    f"the kernel has no {name} generic netlink family"
                    + (" (IPVS is not loaded: modprobe ip_vs)" if name == "IPVS" else "")
                )
            raise KernelError(code)
        reply = ctrlmsg(data)
        reply.decode()
        return reply.get_attr("CTRL_ATTR_FAMILY_ID")

    def _messages(self, data: bytes):
        """(type, flags, seq, offset, end) of every netlink message in one datagram."""
        offset = 0
        while offset + 16 <= len(data):
            length, kind, flags, seq, _pid = _NLHDR.unpack_from(data, offset)
            if length < 16:
                break
            yield kind, flags, seq, offset, offset + length
            offset += (length + 3) & ~3

    def request(self, data: bytes) -> None:
        """Send one change request (built with NLM_F_ACK) and wait for its acknowledgement."""
        errors = self.pipeline([data])
        if errors:
            raise errors[0]

    def pipeline(self, requests: list[bytes], window: int = 256, stop_on_error: bool = True) -> list[KernelError]:
        """Send change requests in order, `window` per datagram; return the errors (with `index`).

        Each request must carry its own unique sequence number and NLM_F_ACK; the ACK flag
        is cleared on all but the last request of a window (errors are reported anyway).
        With `stop_on_error`, no further window is sent after one that had an error.
        """
        errors: list[KernelError] = []
        for start in range(0, len(requests), window):
            chunk = requests[start:start + window]
            seqs = {}
            parts = []
            for i, req in enumerate(chunk):
                seqs[struct.unpack_from("=I", req, _SEQ_OFFSET)[0]] = start + i
                if i != len(chunk) - 1:
                    flags = struct.unpack_from("=H", req, _FLAGS_OFFSET)[0] & ~NLM_F_ACK
                    req = req[:_FLAGS_OFFSET] + struct.pack("=H", flags) + req[_FLAGS_OFFSET + 2:]
                parts.append(req)
            last_seq = struct.unpack_from("=I", chunk[-1], _SEQ_OFFSET)[0]
            self.sock.send(b"".join(parts))
            self.writes += len(chunk)
            done = False
            while not done:
                data = self.sock.recv(BUFSIZE)
                for kind, flags, seq, offset, end in self._messages(data):
                    if kind != NLMSG_ERROR or seq not in seqs:
                        continue
                    code = -_ERR.unpack_from(data, offset + 16)[0]
                    if code:
                        errors.append(KernelError(code, _extack(data, offset + 16, end, flags), seqs[seq]))
                    if seq == last_seq:
                        done = True
            if errors and stop_on_error:
                break
        return errors

    def dump(self, data: bytes) -> list[tuple[bytes, int]]:
        """Send one dump request; return (datagram, offset) of every reply message."""
        return [(chunk, offset + i * stride)
                for chunk, offset, count, stride in self.dump_runs(data) for i in range(count)]

    def dump_runs(self, data: bytes) -> list[tuple[bytes, int, int, int]]:
        """Like `dump`, grouped: (datagram, offset, count, stride) runs of equal-length replies.

        A run is `count` consecutive reply messages of one length starting at `offset`,
        `stride` bytes apart (the length rounded up to 4). A datagram whose messages are all
        replies of one length (what a dump of uniform objects gives) is checked with one
        `struct` call instead of a Python step per message; anything else is walked message
        by message as in `dump`, each reply becoming a run of one.
        """
        seq = struct.unpack_from("=I", data, _SEQ_OFFSET)[0]
        self.sock.send(data)
        out = []
        while True:
            chunk = self.sock.recv(BUFSIZE)
            size = len(chunk)
            if size >= 16:
                length = _U32.unpack_from(chunk, 0)[0]
                stride = (length + 3) & ~3
                if length >= 16 and size % stride == 0:
                    count = size // stride
                    check = _run_check(stride, count)
                    if check(chunk) == (length, self.family_id, NLM_F_MULTI, seq) * count:
                        out.append((chunk, 0, count, stride))
                        continue
            for kind, flags, mseq, offset, end in self._messages(chunk):
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -_ERR.unpack_from(chunk, offset + 16)[0]
                    if code:
                        raise KernelError(code, _extack(chunk, offset + 16, end, flags))
                    return out
                out.append((chunk, offset, 1, (end - offset + 3) & ~3))
                if not flags & NLM_F_MULTI:
                    return out


_U32 = struct.Struct("=I")
_RUN_CHECKS: dict[tuple[int, int], object] = {}


def _run_check(stride: int, count: int):
    """unpack of (length, type, flags, seq) of `count` messages `stride` bytes apart (memoised)."""
    check = _RUN_CHECKS.get((stride, count))
    if check is None:
        if len(_RUN_CHECKS) > 512:
            _RUN_CHECKS.clear()
        one = "IHHI" + f"{stride - 12}x"
        fmt = "=" + one * count
        check = _RUN_CHECKS[(stride, count)] = struct.Struct(fmt).unpack_from
    return check



DUMP_FLAGS = NLM_F_REQUEST | NLM_F_DUMP
ACK_FLAGS = NLM_F_REQUEST | NLM_F_ACK
