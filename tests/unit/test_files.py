"""Files written whole: readers never see half a file, and writers in two threads do not collide."""

from __future__ import annotations

import threading
from pathlib import Path

from lvscluster.files import write_atomic


def test_two_threads_replacing_one_file_never_fail_and_leave_one_whole_text(tmp_path: Path) -> None:
    """An agent records its verdict from its checks' loop and from its convergence thread at
    once; with one temporary name for both, one writer removed or renamed the other's file and a
    check task died of it (the CI's agents test: d2 never saw rs2's UDP port go down)."""
    path, errors = tmp_path / "record.json", []

    def writer(name: str) -> None:
        try:
            for i in range(300):
                write_atomic(path, f"{name} {i}\n" * 50)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("loop", "converge")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = set(path.read_text().splitlines())
    assert len(lines) == 1 and lines <= {"loop 299", "converge 299"}, lines
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left
