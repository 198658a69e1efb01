"""A validation problem and how its location is printed (`vips[0].services[1].port`)."""

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
