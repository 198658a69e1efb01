"""FRR's daemon vty sockets, spoken directly: the commands vtysh would send, without starting vtysh.

Every FRR daemon listens on `<run dir>/<daemon>.vty`. vtysh connects, sends each command line
ended by a NUL, and reads the answer up to a four-byte trailer: three NULs, then the command's
status (0: success; 2: unknown command, ...). Under software emulation a vtysh process spends
~1.4 s of CPU building its command tree before it sends anything; over the socket a drain's five
lines take ~0.1 s. Used for small changes to one daemon (a drain's OSPF cost); the result is read
back and checked by the caller, as after vtysh.
"""

from __future__ import annotations

import socket
from pathlib import Path

from lvscluster.errors import CommandFailed

TRAILER = b"\0\0\0"


def run_commands(path: Path, lines: list[str], timeout: float = 10) -> list[str]:
    """Send `lines` (after `enable`) to the daemon listening on `path`; returns each answer.
    Stops at the first command the daemon refuses (as vtysh does) with CommandFailed naming it."""
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            for line in ["enable", *lines]:
                status, answer = _command(sock, line)
                if status != 0:
                    raise CommandFailed(["vty", str(path), line], status, answer)
                answers.append(answer)
        except OSError as exc:
            raise CommandFailed(["vty", str(path)], -1, f"{exc.strerror or exc}") from None
    return answers[1:]


def _command(sock: socket.socket, line: str) -> tuple[int, str]:
    sock.sendall(line.encode() + b"\0")
    answer = b""
    while not (len(answer) >= 4 and answer[-4:-1] == TRAILER):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"the daemon closed the vty socket after {line!r}")
        answer += chunk
    return answer[-1], answer[:-4].decode(errors="replace")
