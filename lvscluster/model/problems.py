"""A validation problem and how its location is printed (`vips[0].services[1].port`).

A problem is an error (the topology cannot work: `validate` exits 1) or, with `warning=True`, a
setting that is merely pointless (ignored by the mode in use, a secret others can read): printed
as `FILE:LINE: path: warning: message`, and the topology is still valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.:-]+$")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (a path into the document) and what."""

    loc: Loc
    message: str
    warning: bool = False


def once(problems: list[Problem]) -> list[Problem]:
    """The first problem at each place (a rule that checks per service or per director finds a
    shared setting's problem once for each)."""
    seen: set[Loc] = set()
    out = []
    for problem in problems:
        if problem.loc not in seen:
            seen.add(problem.loc)
            out.append(problem)
    return out


def format_path(loc: Loc) -> str:
    """`("vips", 0, "services", 1, "port")` -> `vips[0].services[1].port`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"
