"""What an import finds: virtual services, their real servers, and notes on what did not carry over.

Both importers (keepalived.conf, `ipvsadm -S -n`) produce an `Imported`; `to_topology` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Note:
    """A source line lvscluster cannot express (`unsupported`) or expresses differently (`approximated`)."""

    where: str  # FILE:LINE
    text: str  # the source, as written
    reason: str
    kind: Literal["unsupported", "approximated"] = "unsupported"

    @property
    def line(self) -> str:
        label = "not imported" if self.kind == "unsupported" else "approximated"
        return f"{self.where}: {label}: {self.text}: {self.reason}"


@dataclass
class Dest:
    """A real server of a virtual service."""

    address: str
    port: int
    weight: int = 1
    health: dict[str, Any] | None = None  # a topology `health` mapping
    where: str = ""


@dataclass
class VService:
    """One IPVS virtual service as the source describes it."""

    protocol: str  # tcp udp sctp fwmark
    address: str | None
    port: int = 0
    fwmark: int = 0
    scheduler: str = "wlc"
    flags: list[str] = field(default_factory=list)
    persistence: int = 0
    netmask: int | None = None  # prefix length, None = the whole address
    forward: str = "nat"
    tunnel: str | None = None
    tunnel_port: int | None = None
    dests: list[Dest] = field(default_factory=list)
    quorum: int | None = None
    sorry: tuple[str, int | None] | None = None
    where: str = ""
    origin: str = ""  # the source line that made it, for a comment

    @property
    def label(self) -> str:
        """`tcp 10.0.0.1:80` or `fwmark 5`."""
        return f"fwmark {self.fwmark}" if self.protocol == "fwmark" else f"{self.protocol} {self.address}:{self.port}"


@dataclass
class Imported:
    """Everything one import found."""

    source: str  # the file it came from
    kind: str  # "keepalived" or "ipvsadm"
    services: list[VService] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    directors: int = 2
    directors_why: str = "keepalived pairs are usually two directors"
    sync: dict[str, Any] | None = None  # topology `defaults.sync` (interface: the LAN link)
    timeouts: dict[str, int] | None = None  # topology `defaults.timeouts`

    def note(self, where: object, text: str, reason: str, approximated: bool = False) -> None:
        """Record a note once (a virtual_server_group repeats its settings for every entry)."""
        note = Note(str(where), text, reason, "approximated" if approximated else "unsupported")
        if note not in self.notes:
            self.notes.append(note)
