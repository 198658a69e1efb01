"""FRR backend: run zebra/ospfd/bfdd for one node (a `-N` pathspace) and load its config.

Each node gets its own pathspace, so many FRR instances (one per lab namespace) share one
machine: config in `/etc/frr/<pathspace>/`, sockets and pid files in `/var/run/frr/<pathspace>/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

from lvscluster.apply.commands import DEFAULT_RUNNER, CommandFailed, Runner
from lvscluster.apply.processes import alive, terminate
from lvscluster.errors import ApplyError, EnvironmentProblem

FRR_BIN = Path("/usr/lib/frr")
ETC = Path("/etc/frr")
RUN = Path("/var/run/frr")
DAEMONS = ("zebra", "bfdd", "ospfd")  # start order: zebra first, then the protocols
ALL_DAEMONS = ("zebra", "bfdd", "ospfd", "ospf6d", "bgpd", "staticd")  # what stop and daemon_pids look for


def pathspace_for(name: str) -> str:
    """A valid `-N` pathspace for a namespace name: FRR refuses dots and slashes (`demo.d1` -> `demo+d1`)."""
    return name.replace(".", "+").replace("/", "+")


def config_dir(pathspace: str) -> Path:
    """Where the pathspace's frr.conf and vtysh.conf live."""
    return ETC / pathspace


def run_dir(pathspace: str) -> Path:
    """Where the pathspace's vty sockets and pid files live."""
    return RUN / pathspace


def _own_by_frr(path: Path) -> None:
    try:
        user = pwd.getpwnam("frr")
    except KeyError:
        raise EnvironmentProblem("FRR is not installed (no 'frr' user): apt-get install frr") from None
    os.chown(path, user.pw_uid, user.pw_gid)


def start(pathspace: str, netns: str | None, daemons: tuple[str, ...] = DAEMONS, runner: Runner = DEFAULT_RUNNER,
          timeout: float = 20, wait: bool = True) -> None:
    """Start the daemons (not already running) in `netns`, each with `-N pathspace`; wait for their
    vty sockets unless `wait` is False (then call `wait_ready`, e.g. after starting many nodes)."""
    if not (FRR_BIN / "zebra").exists():
        raise EnvironmentProblem(f"{FRR_BIN / 'zebra'} not found: apt-get install frr")
    for directory in (config_dir(pathspace), run_dir(pathspace)):
        directory.mkdir(parents=True, exist_ok=True)
        _own_by_frr(directory)
    vtysh_conf = config_dir(pathspace) / "vtysh.conf"
    if not vtysh_conf.exists():
        vtysh_conf.write_text("service integrated-vtysh-config\n")
    for daemon in daemons:
        if running(pathspace, daemon):
            continue
        pid_file = run_dir(pathspace) / f"{daemon}.pid"
        argv = [str(FRR_BIN / daemon), "-d", "-N", pathspace, "-A", "127.0.0.1", "-i", str(pid_file)]
        if daemon == "zebra":
            argv += ["-s", "90000000"]
        runner.run(argv, netns=netns)
    if wait and not runner.dry_run:
        wait_ready(pathspace, daemons, timeout)


def restart_dead(pathspace: str, netns: str | None, daemons: tuple[str, ...], runner: Runner = DEFAULT_RUNNER) -> list[str]:
    """Start again the daemons of a pathspace that died (a crash, a kill -9), after clearing the
    pid file and vty socket they left; returns their names. Started empty: the caller reloads the config."""
    dead = [d for d in daemons if not running(pathspace, d)]
    for daemon in dead:
        for leftover in (f"{daemon}.pid", f"{daemon}.vty"):
            (run_dir(pathspace) / leftover).unlink(missing_ok=True)
    if dead:
        start(pathspace, netns, daemons=tuple(d for d in daemons if d in dead), runner=runner)
    return dead


def wait_ready(pathspace: str, daemons: tuple[str, ...] = DAEMONS, timeout: float = 20) -> None:
    """Wait until every daemon of the pathspace has its vty socket."""
    deadline = time.monotonic() + timeout
    while not all((run_dir(pathspace) / f"{d}.vty").exists() for d in daemons):
        if time.monotonic() > deadline:
            raise ApplyError(f"FRR daemons {', '.join(daemons)} for {pathspace} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


def daemon_pids(pathspace: str, daemons: tuple[str, ...] = ALL_DAEMONS) -> list[int]:
    """The process ids the daemons' pid files name (whether or not those processes still live)."""
    pids = []
    for daemon in daemons:
        try:
            pids.append(int((run_dir(pathspace) / f"{daemon}.pid").read_text().strip()))
        except (OSError, ValueError):
            continue
    return pids


def running(pathspace: str, daemon: str) -> bool:
    """True when the daemon's pid file names a live process (a zombie nobody reaped is dead)."""
    try:
        pid = int((run_dir(pathspace) / f"{daemon}.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    return alive(pid)


def stop(pathspace: str, daemons: tuple[str, ...] = ALL_DAEMONS, timeout: float = 5) -> None:
    """Stop the pathspace's daemons (SIGTERM, then SIGKILL) and remove its directories; idempotent."""
    terminate(daemon_pids(pathspace, daemons), timeout)
    for directory in (run_dir(pathspace), config_dir(pathspace)):
        _remove(directory)


def _remove(path: Path) -> None:
    """Remove a pathspace directory and its files, or a stale file in its place (a file that a
    daemon removes itself meanwhile, e.g. its pid file as it exits, is already gone, not an error)."""
    if path.is_dir() and not path.is_symlink():
        try:
            children = list(path.iterdir())
        except FileNotFoundError:
            return
        for child in children:
            _remove(child)
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()
    else:
        path.unlink(missing_ok=True)


def load_config(pathspace: str | None, text: str, runner: Runner = DEFAULT_RUNNER) -> None:
    """Add a whole frr.conf to the running daemons with `vtysh -f` (it removes nothing); any rejected line is an error."""
    with tempfile.NamedTemporaryFile("w", prefix="lvscluster-frr-", suffix=".conf", delete=False) as handle:
        handle.write(text)
    try:
        done = runner.run([*_vtysh(pathspace), "-f", handle.name], check=False)
    finally:
        os.unlink(handle.name)
    rejected = [line for line in (done.stdout + done.stderr).splitlines() if "% " in line]
    if done.returncode != 0 or rejected:
        raise CommandFailed(done.args, done.returncode, "\n".join(rejected) or done.stderr)


RELOAD = FRR_BIN / "frr-reload.py"
# Lines frr-reload always reports but that no config can change: FRR takes them from the machine.
_UNCHANGEABLE = ("hostname ", "no hostname ", "frr version ")


def _reload(pathspace: str | None, text: str, mode: str, runner: Runner) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", prefix="lvscluster-frr-", suffix=".conf", delete=False) as handle:
        handle.write(text)
    try:
        argv = ["python3", str(RELOAD), mode, "--stdout"] + (["-N", pathspace] if pathspace else []) + [handle.name]
        return runner.run(argv, check=False, timeout=120)
    finally:
        os.unlink(handle.name)


def _negate(line: str) -> str:
    return line[3:] if line.startswith("no ") else f"no {line}"


def removal_commands(current: list[tuple[str, ...]], wanted: list[tuple[str, ...]]) -> list[str]:
    """vtysh commands that remove what `current` has and `wanted` lacks, block by block: a whole
    block goes with `no BLOCK`, an interface's settings one by one (an active interface cannot be
    deleted, and vtysh stops at the first error; FRR shows no interface without settings), a line
    inside kept blocks with `no LINE` there. [] when nothing is to be removed.

    A best effort: `reload` checks the result and falls back to frr-reload (~6-40 s of Python
    under emulation against ~1 s of vtysh).
    """
    have, want = set(current), set(wanted)
    removed = sorted(have - want)
    gone = set(removed)
    commands = []
    for key in removed:
        if any(key[:depth] in gone for depth in range(1, len(key))):
            continue  # its block goes as a whole
        if len(key) == 1 and key[0].startswith("interface "):
            children = [k for k in removed if len(k) == 2 and k[0] == key[0]]
            commands += ["configure terminal", key[0], *(_negate(k[1]) for k in children), "end"]
        else:
            commands += ["configure terminal", *key[:-1], _negate(key[-1]), "end"]
    return commands


#: At most this many added lines go to vtysh as commands; more (a first deploy) are loaded with `vtysh -f`.
SMALL_CHANGE = 16
# Blocks other lines refer to by name: added first, so a reference never points at nothing
# (a BGP neighbour's `route-map X out` naming a route-map not yet there would deny every route).
_REFERENCED = ("route-map ", "ip prefix-list ", "bfd", "key chain ")


def addition_commands(current: list[tuple[str, ...]], text: str) -> list[str] | None:
    """vtysh commands that add what `text` has and `current` lacks, each line entered inside its
    blocks; referenced blocks (route-maps, prefix lists, BFD profiles) first, the rest in the file's
    order. [] when nothing is to be added; None when more than SMALL_CHANGE lines are (load the file)."""
    have = set(current)
    added = [key for key in config_lines(text) if key not in have]
    if len(added) > SMALL_CHANGE:
        return None
    added.sort(key=lambda key: not key[0].startswith(_REFERENCED))  # stable: file order otherwise
    return [command for key in added for command in ("configure terminal", *key, "end")]


def owning_daemon(keys: set[tuple[str, ...]]) -> str | None:
    """The one daemon every changed line belongs to (`ospfd` for a drain's `ip ospf cost`), so vtysh
    connects to it alone (~1 s less under emulation than connecting to every daemon); None: several."""
    def owner(key: tuple[str, ...]) -> str | None:
        if key[0] == "router ospf" or (key[0].startswith("interface ") and len(key) > 1 and key[1].startswith("ip ospf")):
            return "ospfd"
        if key[0] == "router ospf6" or (key[0].startswith("interface ") and len(key) > 1 and key[1].startswith("ipv6 ospf6")):
            return "ospf6d"
        if key[0].startswith("router bgp ") and len(key) > 1:
            return "bgpd"
        return None

    owners = {owner(key) for key in keys}
    return owners.pop() if len(owners) == 1 and None not in owners else None


def vty_socket(pathspace: str | None, daemon: str) -> Path:
    """Where `daemon` of the pathspace (None: the machine's FRR) listens for vtysh."""
    return (run_dir(pathspace) if pathspace else RUN) / f"{daemon}.vty"


def _open_socket(pathspace: str | None, daemon: str | None, runner: Runner) -> Path | None:
    """The vty socket of `daemon` when there is one to talk to (not in a dry run), else None."""
    socket = vty_socket(pathspace, daemon) if daemon and not runner.dry_run else None
    return socket if socket is not None and socket.exists() else None


def is_running(pathspace: str | None) -> bool:
    """True when zebra's vty socket of the pathspace (or the machine's FRR) exists."""
    return vty_socket(pathspace, "zebra").exists()


_NOT_CONFIG = ("Building configuration", "Current configuration", "end")
_EXITS = ("exit", "exit-address-family", "exit-vrf", "exit-vnc")


def config_shape(text: str) -> list[tuple[str, ...]]:
    """A config as FRR compares it: each line keyed by the blocks it sits in, order-free.

    `show running-config` sorts some block bodies (interface settings) its own way and adds
    banner lines; two configs with the same shape are the same configuration to frr-reload.
    """
    return sorted(set(config_lines(text)))  # a line twice is once to FRR (each daemon shows `hostname`)


def config_lines(text: str) -> list[tuple[str, ...]]:
    """Each config line keyed by the blocks it sits in (`("interface lo", "ip ospf cost 1000")`), in file order."""
    shape, stack = [], []  # stack: (indent, line) of the blocks the current line sits in
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("!") or line.startswith(_NOT_CONFIG) or line.startswith(_UNCHANGEABLE) \
                or line in _EXITS:
            continue
        indent = len(raw) - len(raw.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        shape.append((*(t for _, t in stack), line))
        stack.append((indent, line))
    return shape


def shape_delta(running: str, text: str) -> list[str]:
    """The lines to delete (`- line`) and add (`+ line`) to turn `running` into `text`, by shape:
    each changed line under the block it sits in, indented one space per level (frr-reload's form).

    Pure, so a plan names what differs without running frr-reload (~6 s of Python per node under
    emulation); `config_shape` equality is what deploy's idempotency already rests on.
    """
    have, want = set(config_shape(running)), set(config_shape(text))
    delta = []
    for sign, keys in (("-", have - want), ("+", want - have)):
        shown: set[tuple[str, ...]] = set()
        for key in sorted(keys):
            for depth in range(1, len(key) + 1):
                if key[:depth] not in shown:
                    shown.add(key[:depth])
                    delta.append(f"{sign} {' ' * (depth - 1)}{key[depth - 1]}")
    return delta


def config_delta(pathspace: str | None, text: str, runner: Runner = DEFAULT_RUNNER,
                 running: str | None = None) -> list[str] | None:
    """The lines frr-reload would delete (`- line`) or add (`+ line`) to reach `text`; None if FRR is not running.

    A running config (`running`, else read now) of the same shape needs no frr-reload run (~6 s
    of Python under emulation).
    """
    if not is_running(pathspace):
        return None
    if not runner.dry_run and config_shape(running or running_config(pathspace, runner)) == config_shape(text):
        return []
    done = _reload(pathspace, text, "--test", runner)
    if done.returncode != 0:
        raise CommandFailed(done.args, done.returncode, done.stderr or done.stdout)
    delta, sign = [], None
    for line in done.stdout.splitlines():
        if line.startswith("Lines To Delete"):
            sign = "-"
        elif line.startswith("Lines To Add"):
            sign = "+"
        elif sign and line.strip() and not set(line.strip()) <= {"="} and not line.startswith(_UNCHANGEABLE):
            delta.append(f"{sign} {line}")
    return delta


def reload(pathspace: str | None, text: str, runner: Runner = DEFAULT_RUNNER, running: str | None = None) -> None:
    """Apply `text` as the whole config (only the difference; daemons keep running).

    vtysh first: the lines to remove (`removal_commands`) and, for a small change (a drain's
    OSPF cost or AS-path prepend), the lines to add, in one vtysh run (~1 s under emulation), or
    straight over the daemon's vty socket when they all belong to one (`apply.frrvty`, ~0.1 s); a
    larger addition loads the whole file with `vtysh -f`; frr-reload (~6-40 s) only if the running
    config has not taken the wanted shape after that (after a socket change, the daemon's own
    running config is read back: the changed lines there, as wanted). `running` is the running
    config as last read (or as deploy last left it), if the caller has it. The result is checked
    either way.
    """
    if not is_running(pathspace):
        where = f"pathspace {pathspace}" if pathspace else "this machine"
        raise ApplyError(f"FRR is not running on {where} (no zebra vty socket): start FRR first")
    if runner.dry_run:
        _reload(pathspace, text, "--reload", runner)
        return
    wanted = config_shape(text)
    current = config_shape(running or running_config(pathspace, runner))
    try:
        commands = removal_commands(current, wanted)
        added = addition_commands(current, text)
        daemon = None
        if added is not None:  # a small change (a drain's cost): removals and additions in one vtysh
            commands += added
            daemon = owning_daemon(set(current) ^ set(wanted))
        socket = _open_socket(pathspace, daemon, runner)
        if commands and socket is not None:  # one daemon: straight to its socket
            runner.vty(socket, commands)
            if _holds_change(runner.vty(socket, ["show running-config"])[0], current, wanted):
                return  # read back from the daemon itself: no vtysh beside OSPF's reaction to it
        elif commands:
            vtysh = _vtysh(pathspace) + (["-d", daemon] if daemon else [])
            runner.run([*vtysh, *[x for c in commands for x in ("-c", c)]], check=False)
        if added is None:
            load_config(pathspace, text, runner)
        if config_shape(running_config(pathspace, runner)) == wanted:
            return
    except CommandFailed:
        pass  # frr-reload below knows FRR's special cases
    done = _reload(pathspace, text, "--reload", runner)
    left = shape_delta(running_config(pathspace, runner), text)
    if done.returncode != 0 or left:
        detail = "\n".join(left) or done.stderr.strip() or done.stdout.strip()[-2000:]
        raise CommandFailed(done.args, done.returncode, f"FRR did not take the configuration:\n{detail}")


def _holds_change(held: str, current: list[tuple[str, ...]], wanted: list[tuple[str, ...]]) -> bool:
    """True when one daemon's running config `held` has every line `wanted` adds to `current`
    and none it removes (a change `owning_daemon` gave to that daemon alone)."""
    have = set(config_shape(held))
    return set(wanted) - set(current) <= have and not (set(current) - set(wanted)) & have


def _vtysh(pathspace: str | None) -> list[str]:
    return ["vtysh", "-N", pathspace] if pathspace else ["vtysh"]


def running_config(pathspace: str | None, runner: Runner = DEFAULT_RUNNER) -> str:
    """`show running-config` of the pathspace's daemons (None: the machine's FRR).

    Under a pathspace each daemon is asked over its vty socket and the answers are joined after
    vtysh.conf (vtysh's own line): the same `config_shape` as vtysh's merged view, which costs
    a vtysh process (~1.4 s of CPU under emulation, and every agent reads it every round). vtysh
    when a socket does not answer (a daemon that died leaves its socket file)."""
    sockets = sorted(run_dir(pathspace).glob("*.vty")) if pathspace and not runner.dry_run else []
    if sockets:
        try:
            vtysh_conf = config_dir(pathspace) / "vtysh.conf"
            head = vtysh_conf.read_text() if vtysh_conf.exists() else ""
            return head + "".join(runner.vty(socket, ["show running-config"])[0] for socket in sockets)
        except (CommandFailed, OSError):
            pass
    return runner.run([*_vtysh(pathspace), "-c", "show running-config"]).stdout


def vtysh_json(pathspace: str | None, command: str, runner: Runner = DEFAULT_RUNNER, daemon: str | None = None) -> dict:
    """A `show ... json` command's answer, parsed; asked of `daemon` alone over its vty socket when
    it has one (no vtysh process: ~1.4 s of CPU under emulation, and an agent asks every round)."""
    socket = _open_socket(pathspace, daemon, runner)
    if socket is not None:
        return json.loads(runner.vty(socket, [command])[0] or "{}")
    return json.loads(runner.run([*_vtysh(pathspace), "-c", command]).stdout or "{}")
