"""Error types and the exit codes the CLI maps them to (0 ok, 1 failure, 2 usage)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LAB_OVERLOADED = 3  # scaletest: the lab could not keep up, so the result says nothing about the cluster


class LvsClusterError(Exception):
    """Base of every error lvscluster reports to a user: its message is shown as is."""

    exit_code = EXIT_FAILURE


class TopologyError(LvsClusterError):
    """The topology file is invalid; `problems` holds every `FILE:LINE: path: message` line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NetlinkOperationError(LvsClusterError):
    """A netlink request failed; the message names the object and what to do about it."""


class ApplyError(LvsClusterError):
    """Applying a plan failed on one node; the other nodes were left as they were."""


class EnvironmentProblem(LvsClusterError):
    """The machine lacks something lvscluster needs (root, a kernel module, a program)."""


class CommandFailed(LvsClusterError):
    """A command (or an FRR vty socket command) failed; the message holds it and its output."""

    def __init__(self, argv: list[str], returncode: int, output: str):
        self.argv, self.returncode, self.output = argv, returncode, output
        detail = output.strip() or "(no output)"
        super().__init__(f"{' '.join(argv)} exited {returncode}: {detail}")
