"""A validation problem and how its location is printed (`vips[0].services[1].port`)."""

from __future__ import annotations

from dataclasses import dataclass

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
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"
