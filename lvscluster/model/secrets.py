"""Secrets in the topology (OSPF keys, BGP passwords): referenced, never written in the file.

A `Secret` names a file (its first line is the secret; a relative path is relative to the
topology file) or an environment variable, and is read when the topology loads, so a missing
key is a `FILE:LINE` error before anything is planned. Its value never appears in a dump of
the model (a deployed snapshot keeps the reference), in `repr`, or in anything lvscluster
prints: `redact_frr` masks the FRR lines that carry one.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

REDACTED = "<redacted>"
SECRET_FILE_MAX = 64 * 1024  # bytes: a key file, not a disk image
# FRR config lines that carry a secret, with the secret as the last group
_SECRET_LINES = (
    re.compile(r"^(\s*ip ospf message-digest-key \d+ md5 )(\S+)(.*)$"),
    re.compile(r"^(\s*ip ospf authentication-key )(\S+)(.*)$"),
    re.compile(r"^(\s*ipv6 ospf6 authentication key-id \d+ hash-algo \S+ key )(\S+)(.*)$"),  # OSPFv3 trailer
    re.compile(r"^(\s*neighbor \S+ password )(\S+)(.*)$"),
    re.compile(r'^(\s*md5-password ")([^"]*)(".*)$'),  # ExaBGP
)


def _first_line(path: str) -> str:
    """The first line of a secret file: a regular file of at most SECRET_FILE_MAX bytes (never a
    device such as /dev/zero, which has no end, or a FIFO, which would block until written)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"secret file {path} is not a regular file")
        if info.st_size > SECRET_FILE_MAX:
            raise ValueError(f"secret file {path} is {info.st_size} bytes; a secret file holds at most {SECRET_FILE_MAX}")
        text = os.read(fd, SECRET_FILE_MAX + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read secret file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        os.close(fd)
    lines = text.splitlines()[:1]
    return lines[0].strip() if lines else ""


class Secret(BaseModel):
    """`{file: PATH}` or `{env: NAME}`: where to read a secret when the topology loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str | None = None
    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    _value: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _absolute(cls, data: Any, info: ValidationInfo) -> Any:
        """A relative `file` is relative to the topology file (the loader passes its directory)."""
        base = (info.context or {}).get("base") if info else None
        if isinstance(data, dict) and isinstance(data.get("file"), str) and base and not os.path.isabs(data["file"]):
            return {**data, "file": str((Path(base) / data["file"]).resolve())}
        return data

    @model_validator(mode="after")
    def _read(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("a secret is {file: PATH} or {env: NAME}: exactly one of them")
        if self.file is not None:
            value = _first_line(self.file)
            where = f"secret file {self.file}"
        else:
            if self.env not in os.environ:
                raise ValueError(f"environment variable {self.env} (a secret) is not set")
            value, where = os.environ[self.env].strip(), f"environment variable {self.env}"
        if not value:
            raise ValueError(f"{where} is empty")
        if any(c.isspace() for c in value) or '"' in value:
            raise ValueError(f"{where}: the secret may not contain spaces or quotes (FRR takes it as one word)")
        self._value = value
        return self

    @property
    def value(self) -> str:
        """The secret itself: for rendering only, never for printing."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({'file=' + repr(self.file) if self.file else 'env=' + repr(self.env)})"

    __str__ = __repr__


def redact_frr(text: str) -> str:
    """FRR (or ExaBGP) config text with every secret (OSPF/OSPFv3 key, BGP password) replaced by <redacted>."""
    out = []
    for line in text.splitlines(keepends=True):
        for pattern in _SECRET_LINES:
            match = pattern.match(line.rstrip("\n"))
            if match:
                line = match.group(1) + REDACTED + match.group(3) + ("\n" if line.endswith("\n") else "")
                break
        out.append(line)
    return "".join(out)


def holds_secret(text: str) -> bool:
    """True when FRR config text carries a secret (such a file is written mode 0600)."""
    return redact_frr(text) != text
