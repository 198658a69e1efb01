"""keepalived's checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK, UDP_CHECK) as `health`.

keepalived retries a failed check `retry` times, `delay_before_retry` apart, then removes the
real server, and puts it back on the first success. lvscluster's agent checks every `interval`
and quiesces after `fall` failures in a row: `fall` = retry + 1, `rise` = 1.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass, replace
from typing import Any

from lvscluster.migrate.confparse import ConfError, Statement, block_of
from lvscluster.model.topology import DNS_RECORDS

CHECKERS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "exec",
            "DNS_CHECK": "dns", "UDP_CHECK": "udp", "PING_CHECK": None, "SMTP_CHECK": None,
            "FILE_CHECK": None, "BFD_CHECK": None}
DEFAULT_RETRY = {"dns": 3, "exec": 0}  # keepalived's; every other checker retries once
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
CHECK_NOTES = {
    "connect_ip": "checks go to the real server's own address",
    "bindto": "checks leave from the director's own address",
    "bind_port": "checks leave from any source port",
    "bind_if": "checks leave by the route to the real server",
    "fwmark": "checks are not marked",
    "warmup": "checks start at once",
    "alpha": "real servers start healthy and are checked at once",
    "log_all_failures": "the agent logs every change of state",
    "misc_dynamic": "the exit code cannot set a weight: 0 is healthy, anything else a failure",
    "user": "the agent runs the command as its own user",
    "http_protocol": "the agent speaks HTTP/1.1 with a Host header",
    "enable_sni": "https sends the `host` as server name",
    "fast_recovery": "`rise` successes bring a server back",
    "tls_compliant": "the agent closes TLS properly",
    "min_reply_length": "a udp check matches `expect` text only",
    "max_reply_length": "a udp check matches `expect` text only",
}


@dataclass
class HealthDefaults:
    """Timings a virtual server or real server block passes down to its checkers."""

    delay_loop: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    connect_timeout: float | None = None
    virtualhost: str | None = None

    def child(self) -> HealthDefaults:
        return replace(self)

    def take(self, stmt: Statement) -> bool:
        """Record `stmt` when it is a timing keyword; False when it is something else."""
        key = "retry" if stmt.keyword == "nb_get_retry" else stmt.keyword
        if key not in ("delay_loop", "retry", "delay_before_retry", "connect_timeout", "virtualhost"):
            return False
        if len(stmt.words) < 2:
            raise ConfError(f"{stmt.where}: {stmt.keyword} needs a value")
        if key == "virtualhost":
            self.virtualhost = stmt.words[1]
            return True
        try:
            value = float(stmt.words[1])
        except ValueError:
            raise ConfError(f"{stmt.where}: {stmt.keyword}: {stmt.words[1]!r} is not a number") from None
        if value < 0 or (key == "retry" and value != int(value)):
            raise ConfError(f"{stmt.where}: {stmt.keyword}: {stmt.words[1]} is not a valid count or time")
        setattr(self, key, int(value) if key == "retry" else value)
        return True


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _text(hexdata: str, stmt: Statement) -> str | None:
    """keepalived's hex payload as text, or None when it is not printable ASCII."""
    try:
        data = bytes.fromhex(hexdata)
    except ValueError:
        raise ConfError(f"{stmt.where}: {stmt.keyword}: {hexdata!r} is not hex data") from None
    text = data.decode("ascii", errors="replace")
    return text if all(c in string.printable and c not in "\r\x0b\x0c" for c in text) else None


def _status_codes(stmt: Statement) -> list[int]:
    codes = []
    for token in stmt.args:
        low, _, high = token.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ConfError(f"{stmt.where}: status_code: {token!r} is not a code or a range of codes")
        codes.extend(range(int(low), int(high or low) + 1))
    return codes


def _url(block: Statement, health: dict, imported) -> None:
    for sub in block_of(block):
        if sub.keyword == "path" and len(sub.words) > 1:
            health["path"] = sub.words[1]
        elif sub.keyword == "digest" and len(sub.words) > 1:
            health["digest"] = sub.words[1].lower()
        elif sub.keyword == "status_code":
            health["expect_status"] = _status_codes(sub)
        elif sub.keyword == "virtualhost" and len(sub.words) > 1:
            health["host"] = sub.words[1]
        else:
            imported.note(sub.where, sub.text, "an http check matches the status and digest only")


def _specific(kind: str, sub: Statement, health: dict, own: HealthDefaults, imported, urls: list) -> bool:
    """Handle a keyword only one checker type has; False when it is not one."""
    key = sub.keyword
    if kind in ("http", "https") and key == "url":
        urls.append(sub)
    elif kind in ("http", "https") and key == "sni_name" and len(sub.words) > 1:
        health.setdefault("host", sub.words[1])
    elif kind == "exec" and key == "misc_path" and len(sub.words) > 1:
        health["command"] = shlex.split(sub.words[1]) if len(sub.words) == 2 else sub.words[1:]
    elif kind == "exec" and key == "misc_timeout":
        own.connect_timeout = float(sub.words[1]) if len(sub.words) > 1 else None
    elif kind == "dns" and key == "type" and len(sub.words) > 1:
        if sub.words[1].upper() not in DNS_RECORDS:
            imported.note(sub.where, sub.text, f"record types: {', '.join(DNS_RECORDS)}")
        else:
            health["record"] = sub.words[1].upper()
    elif kind == "dns" and key == "name" and len(sub.words) > 1:
        health["query"] = sub.words[1]
    elif kind == "udp" and key == "payload" and len(sub.words) > 1:
        text = _text(sub.words[1], sub)
        if text is None:
            imported.note(sub.where, sub.text, "a udp check sends text; this payload is binary")
        else:
            health["send"] = text
    elif kind == "udp" and key == "require_reply":
        text = _text(sub.words[1], sub) if len(sub.words) > 1 else ""
        if text is None:
            imported.note(sub.where, sub.text, "a udp check expects text; this reply is binary")
        elif text:
            health["expect"] = text
    else:
        return False
    return True


def checker_health(check: Statement, inherited: HealthDefaults, service: dict, imported) -> dict[str, Any] | None:
    """A checker block as a topology `health` mapping, or None (noted) when it has no equivalent."""
    kind = CHECKERS[check.keyword]
    if kind is None:
        imported.note(check.where, check.keyword, "no such check type (tcp, http, https, udp, dns, exec)")
        return None
    health: dict[str, Any] = {"type": kind}
    own, urls = inherited.child(), []
    for sub in block_of(check):
        if sub.keyword == "connect_port":
            if len(sub.words) < 2 or not sub.words[1].isdigit() or not 1 <= int(sub.words[1]) <= 65535:
                raise ConfError(f"{sub.where}: connect_port needs a port 1-65535")
            health["port"] = int(sub.words[1])
        elif own.take(sub) or _specific(kind, sub, health, own, imported, urls):
            continue
        else:
            imported.note(sub.where, sub.text, CHECK_NOTES.get(sub.keyword, "no equivalent in a health check"))
    for index, url in enumerate(urls):
        if index:
            imported.note(url.where, url.text, "an http check GETs one path: the first url is used")
        else:
            _url(url, health, imported)
    if kind in ("http", "https"):
        host = health.get("host") or own.virtualhost or service.get("virtualhost")
        if host:
            health["host"] = host
        if "expect_status" not in health and "digest" not in health:
            imported.note(check.where, check.keyword, "keepalived accepts any 2xx status; this check expects 200",
                          approximated=True)
    if kind == "exec" and "command" not in health:
        raise ConfError(f"{check.where}: MISC_CHECK needs misc_path")
    if kind == "dns":
        health.setdefault("query", ".")
        health.setdefault("record", "SOA")
    if kind == "udp" and "expect" not in health:
        imported.note(check.where, check.keyword, "keepalived passes when no ICMP error comes back; the agent "
                      "waits for a reply", approximated=True)
    interval = own.delay_loop if own.delay_loop is not None else DEFAULT_DELAY_LOOP
    timeout = own.connect_timeout if own.connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT
    if kind == "exec" and own.connect_timeout is None:
        timeout = interval
    if interval <= 0:
        raise ConfError(f"{check.where}: {check.keyword}: delay_loop must be above 0")
    if timeout > interval or timeout <= 0:
        imported.note(check.where, check.keyword, f"timeout {_number(timeout)} s is not within the interval "
                      f"({_number(interval)} s): the interval is used", approximated=True)
        timeout = interval
    if own.delay_before_retry is not None and own.delay_before_retry != interval:
        imported.note(check.where, check.keyword, f"retries come every interval ({_number(interval)} s), not "
                      f"delay_before_retry ({_number(own.delay_before_retry)} s) apart", approximated=True)
    retry = own.retry if own.retry is not None else DEFAULT_RETRY.get(kind, 1)
    if retry + 1 > 100:
        imported.note(check.where, check.keyword, f"retry {retry}: at most 99 retries (fall 100)", approximated=True)
        retry = 99
    health.update(interval=_number(interval), timeout=_number(timeout), rise=1, fall=retry + 1)
    return health
