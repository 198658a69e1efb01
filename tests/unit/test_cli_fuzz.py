"""Mutated command lines never produce a traceback: exit 0, 1 (a clear error) or 2 (usage).

Only the commands that touch nothing on the machine are fuzzed (validate, schema, render into a
temporary directory, plan --offline, genhash of a malformed URL); the others take the same typer
argument handling and the same error mapping (`lvscluster.cli.main`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lvscluster.cli import app
from lvscluster.errors import LvsClusterError

ROOT = Path(__file__).parent.parent.parent
FILES = [str(ROOT / "topology" / "demo.lvs.yml"), str(ROOT / "tests" / "errors" / "references.lvs.yml"),
         str(ROOT / "tests" / "errors" / "health.lvs.yml"), "/nonexistent.lvs.yml", str(ROOT), "-", ""]
COMMANDS = [["validate"], ["schema"], ["render"], ["plan", "--offline"], ["genhash"]]
WORDS = ["--json", "-o", "--output", "--against", "--help", "--timeout", "0", "-1", "x" * 300, "--offline",
         "http://", "ftp://x", "http://[::1", "--verify-tls", "--", "=", "\x00", "ü"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(COMMANDS),
       st.lists(st.one_of(st.sampled_from(FILES), st.sampled_from(WORDS), st.text(max_size=12)), max_size=5))
def test_mutated_command_lines_exit_cleanly(command: list[str], words: list[str]) -> None:
    with tempfile.TemporaryDirectory() as out:
        argv = [*command, *words]
        if command == ["render"]:
            argv += ["-o", out]  # never write anywhere else
        if command == ["genhash"]:
            argv = [w for w in argv if not w.startswith(("http://", "https://")) or "[" in w]  # no network
        result = CliRunner().invoke(app, argv)
    exc = result.exception
    if isinstance(exc, LvsClusterError):  # main() turns these into a message and exit 1
        assert str(exc).strip() and exc.exit_code in (1, 2)
        return
    assert exc is None or isinstance(exc, SystemExit), (argv, repr(exc))
    assert result.exit_code in (0, 1, 2), (argv, result.output)
