"""`python -m lvscluster.apply.exabgp_bridge DIR`: the API process ExaBGP runs for a director.

It watches `DIR/routes` (written by deploy and the agent) and tells ExaBGP, on its stdout, to
announce what is new or changed and withdraw what is gone, one prefix at a time: a changed
route (an AS path prepended for a drain) is announced over the old one, never withdrawn first.
After ExaBGP acknowledges the commands (`done` on stdin) it records them in `DIR/announced`.
It exits when ExaBGP closes its stdin (ExaBGP stopped); a new ExaBGP starts a new bridge, which
announces everything again.
"""

from __future__ import annotations

import os
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


class LineReader:
    """Lines from a file descriptor, read unbuffered: `select` sees every line not yet returned.

    (A text stream reads ahead: two `done` answers arriving together left the second in its
    buffer, where `select` on the descriptor never saw it, and the bridge waited for it in vain.)
    """

    def __init__(self, fd: int):
        self.fd, self.pending, self.closed = fd, b"", False

    def readline(self, timeout: float) -> str | None:
        """The next line, "" once the other end closed, None when none came within `timeout` s."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            if self.closed:
                return ""
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                if not self.pending:
                    return ""
                self.pending += b"\n"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode(errors="replace") + "\n"


def _acknowledged(reader: LineReader, count: int) -> tuple[bool, bool]:
    """Read ExaBGP's answers to `count` commands: (all `done`, stdin still open)."""
    ok, deadline = True, time.monotonic() + ACK_TIMEOUT
    while count:
        line = reader.readline(max(0.0, deadline - time.monotonic()))
        if line is None:
            break
        if not line:
            return False, False
        if line.strip() in ("done", "error"):
            ok = ok and line.strip() == "done"
            count -= 1
    return ok and count == 0, True


def run_bridge(directory: Path, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Follow `directory/routes` until ExaBGP closes stdin."""
    routes, record = directory / "routes", directory / "announced"
    reader = LineReader(stdin.fileno())
    announced: dict[str, str] = {}
    write_atomic(record, "")
    while True:
        wanted = _wanted(routes)
        todo = commands(announced, wanted)
        if todo:
            stdout.write("".join(f"{c}\n" for c in todo))
            stdout.flush()
            ok, open_ = _acknowledged(reader, len(todo))
            if not open_:
                return
            if ok:
                announced = wanted
                write_atomic(record, "".join(f"{announced[p]}\n" for p in sorted(announced)))
            else:
                sys.stderr.write(f"exabgp-bridge: ExaBGP did not confirm {todo}; retrying\n")
                announced = {}  # announce everything again next round
        if reader.readline(POLL) == "":
            return  # ExaBGP went away


if __name__ == "__main__":  # what ExaBGP runs: a light start (no CLI imports; ~25 s less under emulation)
    run_bridge(Path(sys.argv[1]))
