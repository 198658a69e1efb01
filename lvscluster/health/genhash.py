"""The digest an http/https check compares: MD5 of a page's body, fetched as the check fetches it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from lvscluster.health.checks import CheckFailed, describe_error, http_get, md5_hex


def redact_url(url: str) -> str:
    """The URL as it may be printed: any `user:password@` replaced by `***@`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{tail}"


async def fetch_digest(url: str, *, verify_tls: bool = False, timeout: float = 5.0) -> tuple[int, str, int]:
    """GET an http:// or https:// URL; returns (HTTP status, MD5 hex of the body, body length).

    Raises ValueError for a URL that is not http(s)://HOST[:PORT]/..., and CheckFailed (its
    message says why, e.g. "connect refused", "timeout after 5.0 s") when the fetch fails.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(url)!r} is not an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{redact_url(url)!r} has an invalid port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]  # the Host header: no user:password@
    try:
        async with asyncio.timeout(timeout):
            response = await http_get(parts.hostname, port, path, host=host, tls=parts.scheme == "https",
                                      verify_tls=verify_tls)
    except Exception as exc:
        raise CheckFailed(describe_error(exc, timeout)) from exc
    body = response.body or b""
    return response.status, md5_hex(body), len(body)
