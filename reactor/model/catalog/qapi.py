"""A reader for QEMU's QAPI schema files (``qapi/*.json``), enough for the catalog.

QAPI files are JSON-like: single-quoted strings, ``#`` comments, and doc
comment blocks between two ``##`` lines whose first line names the symbol
(``# @BLOCK_IO_ERROR:``).  :func:`load_schema` reads every ``*.json`` file of a
directory into a :class:`Schema`: the definitions (``event``, ``command``,
``struct``, ``union``, ``alternate``, ``enum``) by name, and the parsed doc of each symbol.

Only the generator uses this module; it never runs in the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactor.errors import CatalogError

__all__ = ["Definition", "Doc", "Schema", "load_schema", "parse_doc", "parse_exprs"]

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|'(?P<str>(?:[^'\\\n]|\\.)*)'|(?P<punct>[{}\[\]:,])|(?P<word>true|false)""",
    re.VERBOSE,
)

_META = ("event", "struct", "union", "alternate", "enum", "command", "include", "pragma")


@dataclass(frozen=True, slots=True)
class Doc:
    """The doc comment of one symbol: free text, member docs, and the ``Since:`` value."""

    body: str = ""
    members: dict[str, str] = field(default_factory=dict)
    since: str = ""


@dataclass(frozen=True, slots=True)
class Definition:
    """One top-level QAPI definition: its meta-type (``event``...), name and expression."""

    meta: str
    name: str
    expr: dict[str, Any]
    file: str


@dataclass(slots=True)
class Schema:
    """Every definition and doc found in one QEMU version's ``qapi/`` directory."""

    defs: dict[str, Definition] = field(default_factory=dict)
    docs: dict[str, Doc] = field(default_factory=dict)

    def events(self) -> list[Definition]:
        """The event definitions, sorted by name."""
        return sorted((d for d in self.defs.values() if d.meta == "event"), key=lambda d: d.name)

    def commands(self) -> list[Definition]:
        """The command definitions, sorted by name."""
        return sorted((d for d in self.defs.values() if d.meta == "command"), key=lambda d: d.name)


def parse_exprs(text: str, path: str = "<qapi>") -> list[dict[str, Any]]:
    """Parse the top-level expressions of one QAPI file."""
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise CatalogError(f"{path}:{line}: cannot parse QAPI text {text[pos:pos + 20]!r}")
        if m.group("str") is not None:
            tokens.append(("v", m.group("str").replace("\\'", "'").replace("\\\\", "\\"), pos))
        elif m.group("punct") is not None:
            tokens.append(("p", m.group("punct"), pos))
        elif m.group("word") is not None:
            tokens.append(("v", m.group("word") == "true", pos))
        pos = m.end()

    i = 0

    def fail(msg: str) -> CatalogError:
        at = tokens[i][2] if i < len(tokens) else len(text)
        return CatalogError(f"{path}:{text.count(chr(10), 0, at) + 1}: {msg}")

    def expect(p: str) -> None:
        nonlocal i
        if i >= len(tokens) or tokens[i][:2] != ("p", p):
            raise fail(f"expected {p!r}")
        i += 1

    def value() -> Any:
        nonlocal i
        if i >= len(tokens):
            raise fail("unexpected end of file")
        kind, val, _ = tokens[i]
        if kind == "v":
            i += 1
            return val
        if val == "{":
            i += 1
            obj: dict[str, Any] = {}
            while tokens[i][:2] != ("p", "}"):
                key = value()
                if not isinstance(key, str):
                    raise fail("object key must be a string")
                expect(":")
                obj[key] = value()
                if tokens[i][:2] == ("p", ","):
                    i += 1
            i += 1
            return obj
        if val == "[":
            i += 1
            arr: list[Any] = []
            while tokens[i][:2] != ("p", "]"):
                arr.append(value())
                if tokens[i][:2] == ("p", ","):
                    i += 1
            i += 1
            return arr
        raise fail(f"unexpected {val!r}")

    exprs: list[dict[str, Any]] = []
    while i < len(tokens):
        expr = value()
        if not isinstance(expr, dict):
            raise fail("a top-level expression must be an object")
        exprs.append(expr)
    return exprs


_MEMBER = re.compile(r"^@([\w-]+):\s*(.*)$")
_SECTION = re.compile(r"^(Since|Returns|Errors|Examples?|Notes?|TODO|Features|Example|Caveats?)s?:\s*(.*)$")


def _para(lines: list[str]) -> str:
    """Join lines into paragraphs (blank lines separate them), collapsing whitespace."""
    paras: list[str] = []
    cur: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(" ".join(cur).split()))
            cur = []
    return "\n\n".join(paras)


def parse_doc(lines: list[str]) -> tuple[str, Doc]:
    """Parse the lines of one doc block (``#`` prefixes removed); returns (symbol, doc).

    The first line is ``@SYMBOL:``.  Free text up to the first member or section
    is the body; ``@member: text`` lines (with indented continuations) are member
    docs until a section (``Since:``, ``Features:``, an rST directive...) starts.
    """
    if not lines:
        return "", Doc()
    m = _MEMBER.match(lines[0].strip())
    if m is None:
        return "", Doc()  # a free-form doc block (section headings)
    symbol = m.group(1)
    body: list[str] = [m.group(2)] if m.group(2) else []
    members: dict[str, list[str]] = {}
    since = ""
    state = "body"  # body | member | done
    current = ""
    for raw in lines[1:]:
        line = raw.rstrip()
        stripped = line.strip()
        sec = _SECTION.match(stripped) if not line.startswith(" ") else None
        if sec is not None:
            if sec.group(1) == "Since":
                since = sec.group(2).strip().rstrip(".")
            state = "done"
            continue
        if stripped.startswith(".. ") and not line.startswith(" "):
            state = "done"
            continue
        mem = _MEMBER.match(line)
        if mem is not None and state != "done":
            state = "member"
            current = mem.group(1)
            members[current] = [mem.group(2)]
            continue
        if state == "body":
            body.append(line)
        elif state == "member":
            if not stripped:
                state = "after-member"
            else:
                members[current].append(line)
    return symbol, Doc(
        body=_para(body),
        members={k: _para(v) for k, v in members.items()},
        since=since,
    )


def _docs(text: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    cur: list[str] | None = None
    for line in text.splitlines():
        if line.rstrip() == "##":
            if cur is None:
                cur = []
            else:
                blocks.append(cur)
                cur = None
        elif cur is not None:
            if line.startswith("# "):
                cur.append(line[2:])
            elif line.startswith("#"):
                cur.append(line[1:])
            else:
                cur = None  # not a doc block after all
    return blocks


def load_schema(directory: Path) -> Schema:
    """Read every ``*.json`` QAPI file in ``directory`` (sorted by name)."""
    schema = Schema()
    files = sorted(directory.glob("*.json"))
    if not files:
        raise CatalogError(f"{directory}: no QAPI files")
    for path in files:
        text = path.read_text(encoding="utf-8")
        for block in _docs(text):
            symbol, doc = parse_doc(block)
            if symbol:
                schema.docs[symbol] = doc
        for expr in parse_exprs(text, str(path)):
            meta = next((k for k in _META if k in expr), None)
            if meta is None:
                raise CatalogError(f"{path}: unknown QAPI expression {sorted(expr)}")
            if meta in ("include", "pragma"):
                continue
            name = expr[meta]
            schema.defs[name] = Definition(meta=meta, name=name, expr=expr, file=path.name)
    return schema
