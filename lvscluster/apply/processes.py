"""Processes lvscluster starts and stops: liveness (zombies count as dead), graceful kill, and
daemons forked from this process."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn
from pathlib import Path


def stat_fields(pid: int | str) -> tuple[str, list[str]] | None:
    """/proc/PID/stat as (command, the fields after it: state first, so field N of proc(5) is
    [N - 3]); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    command, _, rest = text.rpartition(") ")
    return command[command.find("(") + 1:], rest.split()


def alive(pid: int) -> bool:
    """True when `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    found = stat_fields(pid)
    return bool(found and found[1]) and found[1][0] != "Z"


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names
    one process, so a signal never reaches another that reused the pid. None: no such process."""
    found = stat_fields(pid)
    try:
        return int(found[1][19]) if found else None
    except (IndexError, ValueError):
        return None


def signal_if_same(pid: int, started: int | None, signum: int) -> bool:
    """Send `signum` to `pid` only while it is the process that started at `started`; True if sent."""
    if started is None or start_time(pid) != started:
        return False
    try:
        os.kill(pid, signum)
    except OSError:
        return False
    return True


def terminate(pids: list[int], timeout: float = 3) -> None:
    """SIGTERM every pid, wait up to `timeout` seconds, then SIGKILL what is left."""
    _signal(pids, signal.SIGTERM)
    _signal(_wait_gone(pids, timeout), signal.SIGKILL)


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            continue


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for the processes to be gone; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if alive(pid)]
    return left


def kill_and_wait(pids: list[int], timeout: float = 5) -> list[int]:
    """SIGKILL every pid, then wait up to `timeout` seconds for them to be gone; returns the ones
    still alive then (a process stuck in the kernel)."""
    _signal(pids, signal.SIGKILL)
    return _wait_gone(pids, timeout)


def fork_daemon(run: Callable[[], None], log: Path) -> int:
    """Run `run()` in a daemon forked from this process (its own session, stdin from /dev/null,
    stdout and stderr appended to `log`, no other file of ours); returns the daemon's pid.

    Forked, not started: the daemon has everything this process imported, where a new Python
    importing lvscluster costs ~30 s of CPU under a VM's software emulation. Whatever `run`
    raises is written to the log; the daemon's exit code is as `run_forked_child` says.
    """
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            pid = int(pipe.read() or 0)
        os.waitpid(first, 0)  # the intermediate child exits at once: the daemon is nobody's child here
        return pid
    try:
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        os.write(write_end, str(os.getpid()).encode())
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, 65536)  # the parent's sockets, pipes and locks stay the parent's
        os.chdir("/")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        logging.root.handlers.clear()  # the parent's handlers (a test runner's capture) are not ours
    except BaseException:
        traceback.print_exc()  # to the log when the failure came after it was opened
        exit_forked_child(1)
    run_forked_child(run, 0, 1, 2)


def run_forked_child(run: Callable[[], None], stdin: int, stdout: int, stderr: int) -> NoReturn:
    """In a child just forked: make `stdin`, `stdout` and `stderr` its fds 0-2 (and `sys.stdin`,
    `sys.stdout`, `sys.stderr`, line-buffered), run `run()`, and end the child with its exit code:
    SystemExit's, 130 for Ctrl-C, 1 (with the traceback on stderr) for any other exception, else 0."""
    code = 1
    try:
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            if fd != target:
                os.dup2(fd, target)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        exit_forked_child(code)


def exit_forked_child(code: int) -> NoReturn:
    """End a forked child: flush its streams, then leave without the parent's exit handlers
    (atexit, a test runner's teardown), which are not the child's to run."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
