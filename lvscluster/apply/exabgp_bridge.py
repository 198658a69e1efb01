"""`lvscluster exabgp-bridge DIR`: the API process ExaBGP runs for a director.

It watches `DIR/routes` (written by deploy and the agent) and tells ExaBGP, on its stdout, to
announce what is new or changed and withdraw what is gone, one prefix at a time: a changed
route (an AS path prepended for a drain) is announced over the old one, never withdrawn first.
After ExaBGP acknowledges the commands (`done` on stdin) it records them in `DIR/announced`.
It exits when ExaBGP closes its stdin (ExaBGP stopped); a new ExaBGP starts a new bridge, which
announces everything again.
"""

from __future__ import annotations

import select
import sys
import time
from pathlib import Path
from typing import TextIO

from lvscluster.files import write_atomic

POLL = 0.2  # seconds between looks at the routes file
ACK_TIMEOUT = 10.0


def _wanted(path: Path) -> dict[str, str]:
    """{prefix: route line} from the routes file (empty when it is missing)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return {}
    return {line.split()[1]: line for line in lines if line.startswith("route ") and len(line.split()) > 1}


def commands(announced: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The ExaBGP API commands that take `announced` to `wanted` (withdrawals first)."""
    gone = [f"withdraw {announced[p]}" for p in sorted(announced) if p not in wanted]
    new = [f"announce {wanted[p]}" for p in sorted(wanted) if announced.get(p) != wanted[p]]
    return gone + new


def _acknowledged(stdin: TextIO, count: int) -> tuple[bool, bool]:
    """Read ExaBGP's answers to `count` commands: (all `done`, stdin still open)."""
    ok, deadline = True, time.monotonic() + ACK_TIMEOUT
    while count and time.monotonic() < deadline:
        ready, _, _ = select.select([stdin], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stdin.readline()
        if not line:
            return False, False
        if line.strip() in ("done", "error"):
            ok = ok and line.strip() == "done"
            count -= 1
    return ok and count == 0, True


def run_bridge(directory: Path, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Follow `directory/routes` until ExaBGP closes stdin."""
    routes, record = directory / "routes", directory / "announced"
    announced: dict[str, str] = {}
    write_atomic(record, "")
    while True:
        wanted = _wanted(routes)
        todo = commands(announced, wanted)
        if todo:
            stdout.write("".join(f"{c}\n" for c in todo))
            stdout.flush()
            ok, open_ = _acknowledged(stdin, len(todo))
            if not open_:
                return
            if ok:
                announced = wanted
                write_atomic(record, "".join(f"{announced[p]}\n" for p in sorted(announced)))
            else:
                sys.stderr.write(f"exabgp-bridge: ExaBGP did not confirm {todo}; retrying\n")
                announced = {}  # announce everything again next round
        ready, _, _ = select.select([stdin], [], [], POLL)
        if ready and not stdin.readline():
            return  # ExaBGP went away
