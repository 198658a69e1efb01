"""keepalived.conf as statements: keyword, arguments, optional block, each with its FILE:LINE.

Follows keepalived's own reader (lib/parser.c) where it matters for IPVS configurations:
`!` and `#` start a comment anywhere outside double quotes (`\\!`, `\\#` are literal),
`include PATTERN` reads the files a glob matches (sorted, relative to the including file's
directory), `$NAME=value` defines a parameter used as `$NAME` or `${NAME}`, a definition whose
lines end in `\\` is a multi-line one (each line a line where it is used), `@ID` / `@^ID` lines
are kept only when the config id matches / does not match, and `{` `}` may stand on their own
lines or inside one. A trailing `\\` continues nothing else: keepalived reads the next line as a
line of its own, so such a line is refused. What it cannot follow (`~SEQ`/`~LST`) is returned as
skipped lines, never dropped silently.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lvscluster.errors import LvsClusterError

MAX_INCLUDE_DEPTH = 20
_PARAM_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_DEFINITION_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class ConfError(LvsClusterError):
    """keepalived.conf cannot be read; the message starts with FILE:LINE."""


@dataclass(frozen=True, order=True)
class Where:
    """A place in the configuration: file (as given or as the include names it) and line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Statement:
    """`keyword arg...` on one line, with the `{ ... }` block that follows it, if any."""

    words: list[str]
    where: Where
    block: list[Statement] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Skipped:
    """A line the reader did not use, and why."""

    where: Where
    text: str
    reason: str


@dataclass
class Config:
    """The statements of a whole configuration (includes expanded) and the lines skipped."""

    statements: list[Statement]
    skipped: list[Skipped] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def decomment(text: str) -> tuple[str, bool]:
    """The line without its comment and surrounding blanks, and whether it ends in a continuation."""
    out, quote, i = [], False, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            quote = not quote
        elif char == "\\":
            if i + 1 == len(text):
                return "".join(out).strip(), True
            if not quote and text[i + 1] in "#!":
                out.append(text[i + 1])
                i += 2
                continue
            out.append(text[i: i + 2])
            i += 2
            continue
        elif char in "!#" and not quote:
            break
        out.append(char)
        i += 1
    return "".join(out).strip(), False


def tokens(text: str, where: Where) -> list[str]:
    """Words of a line: blanks separate them, double quotes group them, `{` and `}` stand alone."""
    words, current, quote, started = [], [], False, False
    for char in text:
        if char == '"':
            quote, started = not quote, True
        elif quote:
            current.append(char)
        elif char in " \t\r":
            if started:
                words.append("".join(current))
            current, started = [], False
        elif char in "{}":
            if started:
                words.append("".join(current))
            words.append(char)
            current, started = [], False
        else:
            current.append(char)
            started = True
    if quote:
        raise ConfError(f"{where}: unterminated quote in {text.strip()!r}")
    if started:
        words.append("".join(current))
    return words


class _Reader:
    def __init__(self, config_id: str | None):
        self.config_id = config_id
        self.params: dict[str, str] = {}
        self.lines: list[tuple[Where, list[str]]] = []
        self.skipped: list[Skipped] = []
        self.files: list[str] = []
        self.open: list[Path] = []
        self.expanding = 0  # multi-line definitions being expanded, one inside another

    def read_file(self, path: Path, shown: str, where: Where | None) -> None:
        resolved = path.resolve()
        if resolved in self.open:
            raise ConfError(f"{where}: include {shown} includes itself")
        if len(self.open) >= MAX_INCLUDE_DEPTH:
            raise ConfError(f"{where}: includes nest deeper than {MAX_INCLUDE_DEPTH}")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            prefix = f"{where}: include " if where else ""
            raise ConfError(f"{prefix}{shown}: cannot read: {exc.strerror or exc}") from None
        self.open.append(resolved)
        self.files.append(shown)
        multiline: tuple[str, list[str]] | None = None  # a `$NAME= \\` definition being read
        for number, raw in enumerate(text.splitlines(), 1):
            line, continued = decomment(raw)
            where = Where(shown, number)
            if multiline is not None:
                if line:
                    multiline[1].append(line)
                if not continued:
                    self.params[multiline[0]] = "\n".join(multiline[1])
                    multiline = None
                continue
            definition = _DEFINITION_RE.match(line) if continued else None
            if definition:
                first = definition.group(2).strip()
                multiline = (definition.group(1), [first] if first else [])
            elif continued:
                raise ConfError(f"{where}: {raw.strip()!r}: keepalived continues only a $NAME= definition with a "
                                f"trailing '\\'; it reads this line and the next as separate lines (the next as a "
                                f"keyword of its own); join them")
            else:
                self.line(line, where, path.parent)
        if multiline is not None:
            self.params[multiline[0]] = "\n".join(multiline[1])
        self.open.pop()

    def line(self, line: str, where: Where, directory: Path) -> None:
        if not line:
            return
        if line.startswith("@"):
            head, rest = (line.split(None, 1) + [""])[:2]
            negated = head.startswith("@^")
            ident = head[2:] if negated else head[1:]
            if (ident == self.config_id) == negated or not rest:
                self.skipped.append(Skipped(where, line, f"for config id {ident!r}" if not negated
                                            else f"not for config id {ident!r}"))
                return
            line = rest.strip()
        definition = _DEFINITION_RE.match(line)
        if definition:
            self.params[definition.group(1)] = definition.group(2).strip()
            return
        if line.startswith("~"):
            self.skipped.append(Skipped(where, line, "~SEQ/~LST sequences are not expanded; write the lines out"))
            return
        if "$" in line:
            line = self.substitute(line, where)
            if "\n" in line:  # a multi-line definition: each of its lines is a line here
                if self.expanding >= MAX_INCLUDE_DEPTH:
                    raise ConfError(f"{where}: multi-line definitions nest deeper than {MAX_INCLUDE_DEPTH}")
                self.expanding += 1
                for part in line.split("\n"):
                    self.line(part.strip(), where, directory)
                self.expanding -= 1
                return
        words = tokens(line, where)
        if words and words[0] == "include":
            self.include(words, where, directory)
            return
        self.lines.append((where, words))

    def substitute(self, line: str, where: Where) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.params:
                raise ConfError(f"{where}: ${name} is not defined (define it with ${name}=VALUE before use)")
            return self.params[name]

        return _PARAM_RE.sub(value, line)

    def include(self, words: list[str], where: Where, directory: Path) -> None:
        if len(words) != 2:
            raise ConfError(f"{where}: include takes one file name or pattern, got {' '.join(words[1:])!r}")
        pattern = words[1]
        full = pattern if Path(pattern).is_absolute() else str(directory / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            if glob.has_magic(pattern):
                self.skipped.append(Skipped(where, f"include {pattern}", "the pattern matches no file"))
                return
            raise ConfError(f"{where}: include {pattern}: no such file")
        base = Path(where.file).parent
        for match in matches:
            shown = match if Path(pattern).is_absolute() else os.path.normpath(base / Path(match).relative_to(directory))
            self.read_file(Path(match), shown, where)


def parse_statements(lines: list[tuple[Where, list[str]]]) -> list[Statement]:
    """Group words into statements and blocks; unbalanced braces are FILE:LINE errors."""
    root: list[Statement] = []
    stack: list[tuple[list[Statement], Statement | None]] = [(root, None)]
    for where, words in lines:
        current: list[str] = []
        for word in words + ["\n"]:
            if word in ("{", "}", "\n") and current:
                stack[-1][0].append(Statement(current, where))
                current = []
            if word == "{":
                siblings = stack[-1][0]
                if not siblings or siblings[-1].block is not None:
                    raise ConfError(f"{where}: '{{' without a keyword before it")
                siblings[-1].block = []
                stack.append((siblings[-1].block, siblings[-1]))
            elif word == "}":
                if len(stack) == 1:
                    raise ConfError(f"{where}: '}}' closes nothing (one too many)")
                stack.pop()
            elif word != "\n":
                current.append(word)
    if len(stack) > 1:
        opened = stack[-1][1]
        raise ConfError(f"{opened.where}: '{opened.text} {{' is never closed (a '}}' is missing)")
    return root


def block_of(stmt: Statement) -> list[Statement]:
    """The `{ ... }` block of a keyword keepalived reads one for (virtual_server, real_server, a
    checker, url, global_defs...). Without `{` on its line or the next, keepalived reports "Missing
    '{'" and takes the lines AFTER it, up to the enclosing block's `}`, as its block: the rest of
    the enclosing block is then read at the wrong level (a `real_server ADDR PORT` line without
    braces swallows the next real servers and ends its virtual_server early). Refused here."""
    if stmt.block is None:
        raise ConfError(f"{stmt.where}: {stmt.text!r} has no '{{ }}' block: keepalived would read the lines "
                        f"after it, up to the enclosing block's '}}', as its block and the rest of that block "
                        f"at the wrong level; write '{stmt.text} {{ ... }}' (an empty block is fine)")
    return stmt.block


def read_config(path: Path | str, config_id: str | None = None) -> Config:
    """Read a keepalived.conf and every file it includes."""
    reader = _Reader(config_id)
    path = Path(path)
    reader.read_file(path, str(path), None)
    return Config(parse_statements(reader.lines), reader.skipped, reader.files)
