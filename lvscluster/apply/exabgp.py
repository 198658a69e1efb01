"""ExaBGP on a director (`announcer: exabgp`): its files, its process, what it announced.

Each director's ExaBGP lives in one directory (`/run/lvscluster/exabgp/<netns or host>/`):

    exabgp.conf   the rendered config (mode 0600 when it holds a BGP password)
    routes        the routes to announce, one `route ...` line each (deploy and the agent write it)
    announced     the routes ExaBGP has confirmed, written by the API process (`exabgp-bridge`)
    exabgp.pid    exabgp.log

ExaBGP runs the bridge as its API process; the bridge turns changes of `routes` into
`announce` / `withdraw` commands. So a withdrawal by the agent is one file write, and observing
a director reads `announced`: what its peers were told, not what was asked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lvscluster.apply.processes import terminate
from lvscluster.errors import ApplyError, EnvironmentProblem
from lvscluster.files import write_atomic
from lvscluster.model.secrets import holds_secret
from lvscluster.plan.render import EXABGP_DIR, LVSCLUSTER_COMMAND
from lvscluster.runfiles import exabgp_dir
from lvscluster.state import ExabgpState

CONFIG, ROUTES, ANNOUNCED, PID, LOG = "exabgp.conf", "routes", "announced", "exabgp.pid", "exabgp.log"
ANNOUNCE_TIMEOUT = 120.0  # seconds for ExaBGP to confirm a change (a cold start under emulation: ~30-60 s)


def directory(netns: str | None) -> Path:
    """The director's ExaBGP directory."""
    return exabgp_dir(netns)


def materialize(config: str, netns: str | None) -> str:
    """The rendered config with this machine's command and directory filled in."""
    bridge = f"{sys.executable} -m lvscluster.apply.exabgp_bridge"  # light: `lvscluster exabgp-bridge` loads the CLI
    return config.replace(f"{LVSCLUSTER_COMMAND} exabgp-bridge", bridge).replace(EXABGP_DIR, str(directory(netns)))


def pid(netns: str | None) -> int | None:
    """The running ExaBGP's process id, or None."""
    try:
        number = int((directory(netns) / PID).read_text().strip())
        state = Path(f"/proc/{number}/stat").read_text().rpartition(")")[2].split()[0]
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    # `ip netns exec` becoming ExaBGP has an empty cmdline for a moment; a zombie is gone
    return number if state != "Z" and (b"exabgp" in cmdline or not cmdline) else None


def _lines(path: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(line.strip() for line in path.read_text().splitlines() if line.strip()))
    except OSError:
        return ()


def observe(netns: str | None, desired: ExabgpState) -> ExabgpState | None:
    """ExaBGP as it runs: None when it does not; its config (the desired text when the file
    matches it) and the routes the bridge confirmed."""
    if pid(netns) is None:
        return None
    try:
        text = (directory(netns) / CONFIG).read_text()
    except OSError:
        text = ""
    config = desired.config if text == materialize(desired.config, netns) else "! the running configuration differs"
    return ExabgpState(config=config, routes=_lines(directory(netns) / ANNOUNCED))


def apply(netns: str | None, desired: ExabgpState) -> None:
    """Make ExaBGP announce `desired`: write the routes, write the config (start ExaBGP; restart
    it on a changed config), then wait until the bridge confirms the routes.

    A changed config (peers, password, hold time) restarts ExaBGP rather than reloading it: a
    reload would not give a new peer the routes already announced through the API. The director
    leaves the router's ECMP for the few seconds of the restart; its flows move and survive, as
    in a drain."""
    where = directory(netns)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(where / ROUTES, "".join(f"{r}\n" for r in desired.routes))
    text = materialize(desired.config, netns)
    running = pid(netns)
    changed = running is None or not (where / CONFIG).exists() or (where / CONFIG).read_text() != text
    if changed:
        write_atomic(where / CONFIG, text, mode=0o600 if holds_secret(text) else 0o644)
    if running is not None and changed:
        terminate([running], timeout=10)
        running = None
    if running is None:
        _start(netns)
    deadline = time.monotonic() + ANNOUNCE_TIMEOUT
    while _lines(where / ANNOUNCED) != tuple(sorted(desired.routes)) or not (where / ANNOUNCED).exists():
        if pid(netns) is None:
            raise ApplyError(f"ExaBGP stopped: {_log_tail(netns)}")
        if time.monotonic() > deadline:
            raise ApplyError(f"ExaBGP did not confirm its routes within {ANNOUNCE_TIMEOUT:g} s: {_log_tail(netns)}")
        time.sleep(0.1)


def _start(netns: str | None) -> None:
    where = directory(netns)
    exabgp = Path(sys.executable).with_name("exabgp")
    if not exabgp.exists() and not (exabgp := Path(shutil.which("exabgp") or "")).is_file():
        raise EnvironmentProblem("exabgp is not installed (pip install exabgp)")
    (where / ANNOUNCED).unlink(missing_ok=True)  # the new bridge writes it once ExaBGP runs it
    env = {**os.environ, "exabgp.daemon.user": "root", "exabgp.daemon.daemonize": "false",
           "exabgp.log.destination": str(where / LOG), "exabgp.api.ack": "true"}
    argv = [str(exabgp), "server", str(where / CONFIG)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]  # ip execs ExaBGP: the pid stays the same
    with open(where / LOG, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   start_new_session=True, cwd="/")
    write_atomic(where / PID, f"{process.pid}\n")


def stop(netns: str | None) -> None:
    """Stop ExaBGP (it closes its sessions: the peers drop its routes at once) and remove its files."""
    running = pid(netns)
    if running is not None:
        terminate([running], timeout=10)
    shutil.rmtree(directory(netns), ignore_errors=True)


def _log_tail(netns: str | None, lines: int = 5) -> str:
    try:
        tail = (directory(netns) / LOG).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "no log"
    return f"{directory(netns) / LOG}: " + " | ".join(t.strip() for t in tail)
