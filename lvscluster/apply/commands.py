"""The one chokepoint for external commands: argument lists only, optional netns, dry-run.

No shell string is ever built from topology values; every program lvscluster starts goes
through `run`, so a dry run can show the commands instead of running them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from lvscluster.errors import CommandFailed, EnvironmentProblem  # CommandFailed: imported from here too


@dataclass
class Runner:
    """Runs commands, or only records them when `dry_run` is set."""

    dry_run: bool = False
    recorded: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], *, netns: str | None = None, input: str | None = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `argv` (inside `netns` if given); raise CommandFailed on a non-zero exit when `check`."""
        full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
        self.recorded.append(full)
        if self.dry_run:
            return subprocess.CompletedProcess(full, 0, "", "")
        if shutil.which(full[0]) is None and not full[0].startswith("/"):
            raise EnvironmentProblem(f"{full[0]} is not installed (needed for: {' '.join(argv)})")
        try:
            done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandFailed(full, -1, f"timed out after {timeout} s") from None
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"cannot run {full[0]}: {exc}") from None
        if check and done.returncode != 0:
            raise CommandFailed(full, done.returncode, done.stderr + done.stdout)
        return done

    def vty(self, path, lines: list[str]) -> list[str]:
        """Send `lines` to an FRR daemon's vty socket at `path` (`apply.frrvty`), recorded as
        `vty PATH LINE...` like a command; nothing is sent in a dry run."""
        self.recorded.append(["vty", str(path), *lines])
        if self.dry_run:
            return []
        from lvscluster.apply.frrvty import run_commands

        return run_commands(path, lines)


DEFAULT_RUNNER = Runner()
