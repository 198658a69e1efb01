"""IpvsSocket: one namespace's IPVS, read and changed as `lvscluster.state` types.

    with IpvsSocket(netns="lvs-d1") as ipvs:
        svc = IpvsService(protocol="tcp", address="10.99.0.10", port=80, scheduler="mh")
        ipvs.add_service(svc)
        ipvs.set_dests_in_order(svc, dests)     # kernel list order == dests
        print(ipvs.state())                     # IpvsState: services with dests, daemons, timeouts
        print(ipvs.service_stats(svc), ipvs.dest_stats(svc))

Every change goes through `execute(ops)`, which pipelines requests (see `genl.py`) and turns
the first kernel error into a `NetlinkOperationError` naming the object and the fix, e.g.
`cannot add service tcp/10.99.0.10:80: scheduler "mh" not available (modprobe ip_vs_mh)`.
An `IpvsOp` is built by `op_add_service`, `op_add_dest`, ... so callers (node.apply) can
collect many and send them at once.

The kernel adds a dest at the head of the service's list, so programming dests in a given
order means adding them in reverse (`set_dests_in_order`, `ops_add_dests_in_order`).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_REQUEST

from lvscluster.errors import NetlinkOperationError
from lvscluster.gcpause import cyclic_gc_paused
from lvscluster.netlink import ipvs_messages as m
from lvscluster.netlink.codec import LayoutDecoder
from lvscluster.netlink.fastdecode import DestDumpDecoder, service_from_kernel, service_with_dests
from lvscluster.netlink.genl import ACK_FLAGS, DUMP_FLAGS, GenlSocket, KernelError
from lvscluster.state import IpvsDest, IpvsService, IpvsState, IpvsTimeouts, SyncDaemon


@dataclass(frozen=True)
class IpvsStats:
    """Counters of a service or dest (ipvsadm --stats / --rate); dests add connection counts."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0
    active_conns: int | None = None
    inact_conns: int | None = None
    persist_conns: int | None = None


@dataclass(frozen=True)
class IpvsOp:
    """One change request: command, encoded attributes, what it does (for errors), the objects."""

    cmd: int
    body: bytes
    what: str
    service: IpvsService | None = None
    dest: IpvsDest | None = None
    daemon: SyncDaemon | None = None


def op_add_service(svc: IpvsService) -> IpvsOp:
    """NEW_SERVICE (dests ignored)."""
    return IpvsOp(m.CMD_NEW_SERVICE, m.payload(service=m.service_attrs(svc)), f"add service {svc.key}", svc)


def op_set_service(svc: IpvsService) -> IpvsOp:
    """SET_SERVICE: scheduler, flags (with mask), persistence, netmask."""
    return IpvsOp(m.CMD_SET_SERVICE, m.payload(service=m.service_attrs(svc)), f"set service {svc.key}", svc)


def op_del_service(svc: IpvsService) -> IpvsOp:
    """DEL_SERVICE (its dests go with it)."""
    return IpvsOp(m.CMD_DEL_SERVICE, m.payload(service=m.service_key_attrs(svc)), f"delete service {svc.key}", svc)


def _dest_op(cmd: int, verb: str, prep: str, svc: IpvsService, dest: IpvsDest, key: bytes | None) -> IpvsOp:
    key = key if key is not None else m.nested("IPVS_CMD_ATTR_SERVICE", m.service_key_attrs(svc))
    body = key + m.nested("IPVS_CMD_ATTR_DEST", m.dest_attrs(dest, full=cmd != m.CMD_DEL_DEST))
    return IpvsOp(cmd, body, f"{verb} dest {dest.key} {prep} {svc.key}", svc, dest)


def op_add_dest(svc: IpvsService, dest: IpvsDest, key: bytes | None = None) -> IpvsOp:
    """NEW_DEST: the kernel puts it at the head of the list. `key`: cached encoded service key."""
    return _dest_op(m.CMD_NEW_DEST, "add", "to", svc, dest, key)


def op_set_dest(svc: IpvsService, dest: IpvsDest, key: bytes | None = None) -> IpvsOp:
    """SET_DEST: forward method, weight, thresholds, tunnel settings (list position kept)."""
    return _dest_op(m.CMD_SET_DEST, "set", "on", svc, dest, key)


def op_del_dest(svc: IpvsService, dest: IpvsDest, key: bytes | None = None) -> IpvsOp:
    """DEL_DEST."""
    return _dest_op(m.CMD_DEL_DEST, "delete", "from", svc, dest, key)


def ops_add_dests_in_order(svc: IpvsService, dests) -> list[IpvsOp]:
    """NEW_DEST ops that leave the kernel list equal to `dests` (added in reverse)."""
    key = m.nested("IPVS_CMD_ATTR_SERVICE", m.service_key_attrs(svc))
    return [op_add_dest(svc, d, key) for d in reversed(tuple(dests))]


def op_add_daemon(d: SyncDaemon) -> IpvsOp:
    """NEW_DAEMON: start a sync master or backup thread."""
    return IpvsOp(m.CMD_NEW_DAEMON, m.payload(daemon=m.daemon_attrs(d)), f"start sync {d.state} on {d.interface}", daemon=d)


def op_del_daemon(d: SyncDaemon) -> IpvsOp:
    """DEL_DAEMON: stop the sync master or backup thread."""
    return IpvsOp(m.CMD_DEL_DAEMON, m.payload(daemon=m.daemon_attrs(d, full=False)), f"stop sync {d.state}", daemon=d)


def op_set_timeouts(t: IpvsTimeouts) -> IpvsOp:
    """SET_CONFIG: tcp / tcp_fin / udp timeouts (0 = unchanged)."""
    return IpvsOp(m.CMD_SET_CONFIG, m.payload(extra=m.timeout_attrs(t)), f"set timeouts tcp {t.tcp} tcp_fin {t.tcp_fin} udp {t.udp}")


def op_zero(svc: IpvsService | None = None) -> IpvsOp:
    """ZERO: reset the counters of one service, or of all services."""
    body = m.payload(service=m.service_key_attrs(svc)) if svc else b""
    return IpvsOp(m.CMD_ZERO, body, f"zero counters of {svc.key if svc else 'all services'}", svc)


def op_flush() -> IpvsOp:
    """FLUSH: delete every service and dest."""
    return IpvsOp(m.CMD_FLUSH, b"", "flush all services")


def explain(op: IpvsOp, code: int, extack: str = "") -> str:
    """A user-facing reason for a kernel error on `op`."""
    svc, cmd = op.service, op.cmd
    if code == errno.EPERM:
        reason = "permission denied (needs root / CAP_NET_ADMIN)"
    elif code == errno.ENOENT and cmd in (m.CMD_NEW_SERVICE, m.CMD_SET_SERVICE) and svc:
        reason = f'scheduler "{svc.scheduler}" not available (modprobe ip_vs_{svc.scheduler})'
    elif code == errno.EEXIST and cmd == m.CMD_NEW_SERVICE:
        reason = "the service already exists"
    elif code == errno.ESRCH and svc is not None:
        reason = f"service {svc.key} does not exist"
    elif code == errno.EEXIST and cmd == m.CMD_NEW_DEST:
        reason = "the dest already exists"
    elif code == errno.ENOENT and cmd in (m.CMD_SET_DEST, m.CMD_DEL_DEST):
        reason = "the dest does not exist"
    elif code == errno.EEXIST and cmd == m.CMD_NEW_DAEMON:
        reason = f"a sync {op.daemon.state} daemon is already running"
    elif code == errno.ENODEV and cmd == m.CMD_NEW_DAEMON:
        reason = f'interface "{op.daemon.interface}" does not exist'
    elif code == errno.ESRCH and cmd == m.CMD_DEL_DAEMON:
        reason = f"no sync {op.daemon.state} daemon is running"
    elif code == errno.EAFNOSUPPORT:
        reason = "address family not supported by this kernel's IPVS"
    elif code == errno.EINVAL and cmd in (m.CMD_NEW_DEST, m.CMD_SET_DEST):
        reason = (
            "invalid dest: its address is not unicast in this namespace (is lo up, with a route?) "
            "or forward/weight/threshold/tunnel settings are invalid (mh allows at most 4093 dests)"
        )
    elif code == errno.EINVAL:
        reason = "invalid argument"
    else:
        reason = f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"
    if extack:
        reason += f" ({extack})"
    return f"cannot {op.what}: {reason}"


class IpvsSocket:
    """The IPVS of one network namespace (None = current), over generic netlink."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self.genl = GenlSocket(m.GENL_NAME, netns)
        self._decoders: dict[frozenset, LayoutDecoder] = {}
        self._dest_decoder: DestDumpDecoder | None = None

    def close(self) -> None:
        """Close the netlink socket."""
        self.genl.close()

    def __enter__(self) -> "IpvsSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def writes(self) -> int:
        """Change requests sent so far on this socket."""
        return self.genl.writes

    # ------------------------------------------------------------------ changes

    def _encode(self, op: IpvsOp) -> bytes:
        return m.encode_request(op.cmd, op.body, self.genl.family_id, self.genl.next_seq(), ACK_FLAGS)

    def execute(self, ops, window: int = 256) -> None:
        """Run ops in order (pipelined); raise NetlinkOperationError for the first failure.

        Requests after the failing one within the same window may already have run.
        """
        ops = list(ops)
        errors = self.genl.pipeline([self._encode(op) for op in ops], window=window)
        if errors:
            err = errors[0]
            raise NetlinkOperationError(explain(ops[err.index], err.code, err.extack))

    def add_service(self, svc: IpvsService) -> None:
        """Create a service (its dests are not added)."""
        self.execute([op_add_service(svc)])

    def set_service(self, svc: IpvsService) -> None:
        """Change scheduler, flags, persistence and netmask of an existing service."""
        self.execute([op_set_service(svc)])

    def del_service(self, svc: IpvsService) -> None:
        """Delete a service and its dests."""
        self.execute([op_del_service(svc)])

    def add_dest(self, svc: IpvsService, dest: IpvsDest) -> None:
        """Add one dest (at the head of the kernel list)."""
        self.execute([op_add_dest(svc, dest)])

    def set_dest(self, svc: IpvsService, dest: IpvsDest) -> None:
        """Change one dest's settings in place."""
        self.execute([op_set_dest(svc, dest)])

    def del_dest(self, svc: IpvsService, dest: IpvsDest) -> None:
        """Remove one dest."""
        self.execute([op_del_dest(svc, dest)])

    def set_dests_in_order(self, svc: IpvsService, dests) -> None:
        """Add dests (none present yet) so that the kernel list order equals `dests`."""
        self.execute(ops_add_dests_in_order(svc, dests))

    def add_daemon(self, daemon: SyncDaemon) -> None:
        """Start a sync daemon."""
        self.execute([op_add_daemon(daemon)])

    def del_daemon(self, daemon: SyncDaemon) -> None:
        """Stop the sync daemon of `daemon.state`."""
        self.execute([op_del_daemon(daemon)])

    def set_timeouts(self, timeouts: IpvsTimeouts) -> None:
        """Set tcp/tcp_fin/udp timeouts (0 leaves a value unchanged)."""
        if m.timeout_attrs(timeouts):
            self.execute([op_set_timeouts(timeouts)])

    def zero(self, svc: IpvsService | None = None) -> None:
        """Zero the counters of one service (or of all)."""
        self.execute([op_zero(svc)])

    def flush(self) -> None:
        """Delete every service."""
        self.execute([op_flush()])

    # ------------------------------------------------------------------ reads

    def _decoder(self, skip: frozenset) -> LayoutDecoder:
        decoder = self._decoders.get(skip)
        if decoder is None:
            decoder = self._decoders[skip] = LayoutDecoder(m.SCHEMA, skip)
        return decoder

    def _dump(self, cmd: int, body: bytes = b"", flags: int = DUMP_FLAGS, skip: frozenset = frozenset()) -> list[dict]:
        data = m.encode_request(cmd, body, self.genl.family_id, self.genl.next_seq(), flags)
        try:
            replies = self.genl.dump(data)
        except KernelError as err:
            raise NetlinkOperationError(f"cannot read IPVS state: {err}") from err
        decoder = self._decoder(skip)
        return [m.decode_message(chunk, offset, decoder=decoder)[1] for chunk, offset in replies]

    def _raw_services(self, stats: bool = False) -> list[dict]:
        skip = frozenset() if stats else m.NO_STATS
        return [r["service"] for r in self._dump(m.CMD_GET_SERVICE, skip=skip) if "service" in r]

    def _raw_dests(self, svc: IpvsService, stats: bool = False) -> list[dict]:
        skip = frozenset() if stats else m.NO_STATS
        try:
            replies = self._dump(m.CMD_GET_DEST, m.payload(service=m.service_key_attrs(svc)), skip=skip)
        except NetlinkOperationError as err:
            raise NetlinkOperationError(f"cannot list dests of {svc.key}: {err.__cause__}") from err
        return [r["dest"] for r in replies if "dest" in r]

    def _dests(self, svc: IpvsService, af: int, key: bytes | None = None) -> tuple[IpvsDest, ...]:
        """Dests of one service, decoded by the fast path (`fastdecode`); `key`: encoded key."""
        if key is None:
            key = m.payload(service=m.service_key_attrs(svc))
        data = m.encode_request(m.CMD_GET_DEST, key, self.genl.family_id, self.genl.next_seq(), DUMP_FLAGS)
        try:
            runs = self.genl.dump_runs(data)
        except KernelError as err:
            raise NetlinkOperationError(f"cannot list dests of {svc.key}: {err}") from err
        if self._dest_decoder is None:
            self._dest_decoder = DestDumpDecoder()
        return tuple(self._dest_decoder.decode(runs, af))

    def services(self, with_dests: bool = True) -> tuple[IpvsService, ...]:
        """Every service, in the kernel's dump order, with dests in kernel list order."""
        out = []
        # Observing creates ~2 objects per dest and nothing cyclic: the cyclic collector would
        # only rescan the growing heap again and again (~10-20 % of an observe).
        with cyclic_gc_paused():
            for raw in self._raw_services():
                svc = service_from_kernel(raw, None)
                if with_dests:
                    svc = service_with_dests(svc, self._dests(svc, raw.get("af", socket.AF_INET)))
                out.append(svc)
        return tuple(out)

    def dests(self, svc: IpvsService) -> tuple[IpvsDest, ...]:
        """Dests of one service in kernel list order (what mh/sh walk)."""
        return self._dests(svc, socket.AF_INET6 if svc.family == 6 else socket.AF_INET)

    def daemons(self) -> tuple[SyncDaemon, ...]:
        """Running sync daemons (master first)."""
        found = [m.daemon_from(r["daemon"]) for r in self._dump(m.CMD_GET_DAEMON) if "daemon" in r]
        return tuple(sorted(found, key=lambda d: d.state != "master"))

    def timeouts(self) -> IpvsTimeouts:
        """Current tcp / tcp_fin / udp timeouts in seconds."""
        (reply,) = self._dump(m.CMD_GET_CONFIG, flags=NLM_F_REQUEST)
        return IpvsTimeouts(tcp=reply.get("timeout_tcp", 0), tcp_fin=reply.get("timeout_tcp_fin", 0), udp=reply.get("timeout_udp", 0))

    def state(self) -> IpvsState:
        """Services (with dests), daemons and timeouts."""
        return IpvsState(services=self.services(), daemons=self.daemons(), timeouts=self.timeouts())

    def service_stats(self) -> dict[str, IpvsStats]:
        """Counters of every service, by service key."""
        return {m.service_from(raw).key: IpvsStats(**m.stats_from(raw)) for raw in self._raw_services(stats=True)}

    def dest_stats(self, svc: IpvsService) -> dict[str, IpvsStats]:
        """Counters and active/inactive/persistent connections of each dest, by dest key."""
        out = {}
        af = socket.AF_INET6 if svc.family == 6 else socket.AF_INET
        for raw in self._raw_dests(svc, stats=True):
            conns = dict(active_conns=raw.get("active_conns", 0), inact_conns=raw.get("inact_conns", 0), persist_conns=raw.get("persist_conns", 0))
            out[m.dest_from(raw, af).key] = IpvsStats(**m.stats_from(raw), **conns)
        return out
