"""Inside a lab VM: run the commands the host drops into the shared directory.

The host writes `<id>.req` (JSON: argv, stdin, cwd) atomically; the agent runs it with its
output going to `<id>.out` and `<id>.err` (so the host can show progress while it runs) and
finally writes `<id>.rc`. Requests run concurrently. A file named `shutdown` ends the agent,
and with it the VM (virtme-ng powers off when its command exits).

A request with `cli` instead of `argv` is an `lvscluster` command line. The agent imports
lvscluster once, in the background right after boot, and runs each such request in a
forked child: under software emulation over 9p a fresh Python needs ~25 s to import
pyroute2, pydantic and rich, a fork of the warm agent a few milliseconds.

Run by the VM itself: `python -m lvscluster.cli.vmagent DIR` (it runs lvscluster command lines,
so it lives with the CLI; the lab VM's host side, `lab.vmhost`, owns the protocol's names).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from lvscluster.apply.processes import exit_forked_child, run_forked_child
from lvscluster.files import write_atomic
from lvscluster.lab.vmhost import PROTOCOL, READY, SHUTDOWN

POLL_BUSY = 0.05  # seconds between looks at the shared directory just after a request came
POLL_IDLE = 0.5  # ... and once none came for a while: each look is a 9p round trip, which under
# software emulation cost ~20% of a vCPU at 0.05 s, taken from the lab the scaletest measures
BUSY_FOR = 3.0  # seconds after a request during which the agent keeps looking at POLL_BUSY


def next_poll(since_request: float, previous: float) -> float:
    """Seconds to wait before the next look: fast right after a request, then doubling to POLL_IDLE."""
    if since_request < BUSY_FOR:
        return POLL_BUSY
    return min(POLL_IDLE, previous * 2)


_warm = threading.Event()


def _preload() -> None:
    try:
        importlib.import_module("lvscluster.cli")  # the import is the point: forked children start warm
    finally:
        _warm.set()


def _fork_cli(request: dict, out: Path, err: Path) -> int:
    """Run `lvscluster <cli...>` in a forked child of the warm agent; returns its exit code."""
    _warm.wait()
    pid = os.fork()
    if pid == 0:  # child: become the command
        try:
            os.chdir(request.get("cwd") or "/")
            os.environ.update({"LVSCLUSTER_IN_VM": "1", **request.get("env", {})})
            streams = (os.open(os.devnull, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                       os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            sys.argv = ["lvscluster", *request["cli"]]
        except BaseException as exc:  # noqa: BLE001 - report anything, never return into the agent loop
            os.write(2, f"lvscluster vm agent: {exc!r}\n".encode())
            exit_forked_child(1)
        run_forked_child(_cli_main, *streams)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _cli_main() -> None:
    from lvscluster.cli import main
    from lvscluster.cli.common import reset_consoles

    reset_consoles()  # colour and width as the host asked, not as the agent started
    main()


def _run(directory: Path, request_id: str, request: dict) -> None:
    """Run one request; whatever happens, leave an exit code for the host."""
    out, err = directory / f"{request_id}.out", directory / f"{request_id}.err"
    try:
        code = _fork_cli(request, out, err) if "cli" in request else _spawn(request, out, err)
    except Exception as exc:  # noqa: BLE001 - the host must get an answer, not wait forever
        with open(err, "ab") as stderr:
            stderr.write(f"lvscluster vm agent: request failed: {exc!r}\n".encode())
        code = 1
    write_atomic(directory / f"{request_id}.rc", str(code))


def _spawn(request: dict, out: Path, err: Path) -> int:
    env = {**os.environ, "LVSCLUSTER_IN_VM": "1", **request.get("env", {})}
    try:
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(request["argv"], stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                                    cwd=request.get("cwd") or "/", env=env)
            proc.communicate(input=request.get("stdin", "").encode())
            return proc.returncode
    except OSError as exc:
        with open(err, "ab") as stderr:
            stderr.write(f"lvscluster vm agent: cannot run {request['argv'][0]}: {exc}\n".encode())
        return 127


def serve(directory: Path) -> None:
    """Run requests from `directory` until a `shutdown` file appears."""
    threading.Thread(target=_preload, daemon=True).start()
    write_atomic(directory / READY, json.dumps({"pid": os.getpid(), "protocol": PROTOCOL}) + "\n")  # the host reads it at once
    workers: list[threading.Thread] = []
    last_request, poll = time.monotonic(), POLL_BUSY
    while not (directory / SHUTDOWN).exists():
        for path in sorted(directory.glob("*.req")):
            request_id = path.stem
            running = path.with_suffix(".running")
            try:
                path.rename(running)
                request = json.loads(running.read_text())
            except (OSError, ValueError):
                continue
            worker = threading.Thread(target=_run, args=(directory, request_id, request), daemon=True)
            worker.start()
            workers.append(worker)
            last_request = time.monotonic()
        workers = [w for w in workers if w.is_alive()]
        poll = next_poll(time.monotonic() - last_request, poll)
        time.sleep(poll)
    for worker in workers:
        worker.join(timeout=5)


def main() -> None:
    """Entry point: `python -m lvscluster.cli.vmagent DIR`."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lvscluster.cli.vmagent DIR")
    serve(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
