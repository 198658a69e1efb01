"""Every bad topology in tests/errors/ fails with exactly the messages in its .log file; a
`warnings_*` case is valid and warns with exactly those messages.

Set LVS_UPDATE_GOLDEN=1 to rewrite the .log files, then review the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvscluster.errors import TopologyError
from lvscluster.model.loader import parse_topology, parse_topology_with_warnings

CASES = sorted((Path(__file__).parent.parent / "errors").glob("*.lvs.yml"))


@pytest.mark.parametrize("case", CASES, ids=[c.name.removesuffix(".lvs.yml") for c in CASES])
def test_error_case(case: Path) -> None:
    if case.name.startswith("warnings_"):
        _, _, warnings = parse_topology_with_warnings(case.read_text(), case.name)
        got = "\n".join(warnings) + "\n"
        assert warnings and all(": warning: " in line for line in warnings)
    else:
        with pytest.raises(TopologyError) as caught:
            parse_topology(case.read_text(), case.name)
        got = "\n".join(caught.value.problems) + "\n"
    expected = case.with_name(case.name.removesuffix(".lvs.yml") + ".log")
    if os.environ.get("LVS_UPDATE_GOLDEN"):
        expected.write_text(got)
    assert got == expected.read_text()


def test_every_case_has_a_log() -> None:
    assert CASES, "no error cases found"
    for case in CASES:
        assert case.with_name(case.name.removesuffix(".lvs.yml") + ".log").exists(), case


def test_no_secret_case_repeats_its_secret() -> None:
    """The secret_* cases write secrets (hunter2, s3cret-pw) where they do not belong: no message
    may repeat them, whatever else it says."""
    cases = [c for c in CASES if c.name.startswith("secret_")]
    assert len(cases) >= 4
    for case in cases:
        log = case.with_name(case.name.removesuffix(".lvs.yml") + ".log").read_text()
        assert "hunter" not in log and "s3cret" not in log, case.name
