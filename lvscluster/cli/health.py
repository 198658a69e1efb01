"""`lvscluster genhash`: the MD5 digest of a page's body, for an http/https health check."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from lvscluster.cli.common import err, out
from lvscluster.errors import EXIT_FAILURE


def genhash(
    url: Annotated[str, typer.Argument(help="The page to fetch: http://HOST[:PORT]/PATH or https://...",
                                       show_default=False)],
    verify_tls: Annotated[bool, typer.Option("--verify-tls", help="Check the server's TLS certificate "
                                             "(the https check does only with `verify_tls: true`).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds the fetch may take.", min=0.001)] = 5.0,
) -> None:
    """Print the MD5 digest of a page's body, for a `health: {type: http, digest: ...}` check, like keepalived's genhash.

    Example: `lvscluster genhash http://10.2.0.4/health`

    Fetches the URL once, as the check does (HTTP/1.1 GET, `Connection: close`), and prints `MD5SUM = <hex>`, the HTTP status and the body length. Run it against each real server: pages that differ per server (a host name, a date) have no single digest.

    Exits 0 for a 2xx answer. For any other status the digest is printed all the same (a check may expect that status with `expect_status`) and the command exits 1; it exits 1 too when the page cannot be fetched.
    """
    from lvscluster.health.checks import CheckFailed
    from lvscluster.health.genhash import fetch_digest, redact_url

    shown = redact_url(url)  # never repeat a user:password@ from the URL
    if shown != url:
        err.print(f"genhash: note: the user:password in {shown} is not sent (the http check sends no credentials)",
                  markup=False)

    try:
        status, digest, length = asyncio.run(fetch_digest(url, verify_tls=verify_tls, timeout=timeout))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="URL") from None
    except CheckFailed as exc:
        err.print(f"genhash: cannot fetch {shown}: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILURE) from None
    out.print(f"MD5SUM = {digest}", markup=False)
    out.print(f"HTTP status: {status}", markup=False)
    out.print(f"Body length: {length} bytes", markup=False)
    if not 200 <= status < 300:
        err.print(f"genhash: HTTP {status} is not a 2xx answer; a check with this digest also needs "
                  f"expect_status: [{status}]", markup=False)
        raise typer.Exit(EXIT_FAILURE)
