"""YAML with positions: the only module that touches raw YAML.

:func:`parse` turns a YAML document into a tree of :class:`Node` objects that
remember where they stood (1-based line and column), so every later check can
say ``rules/vm.yaml:12:5: message``.  Duplicate keys and non-string keys are
errors; YAML syntax errors carry the parser's own position.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import yaml

from reactor.errors import Position, SourceError

__all__ = ["MapNode", "Node", "ScalarNode", "SeqNode", "close_match", "kind_of", "parse"]

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


class Node:
    """A YAML node: ``pos`` is where it starts."""

    __slots__ = ("pos",)

    def __init__(self, pos: Position) -> None:
        self.pos = pos

    def plain(self) -> Any:
        """The node as plain Python data (dicts, lists, scalars)."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """``mapping``, ``list``, or the scalar's Python type name, for messages."""
        raise NotImplementedError


class ScalarNode(Node):
    __slots__ = ("tag", "text_pos", "value")

    def __init__(self, pos: Position, value: Any, tag: str, text_pos: Position | None = None) -> None:
        super().__init__(pos)
        self.value = value
        self.tag = tag
        #: where the text itself starts: the line after ``|``/``>`` for block scalars, else ``pos``
        self.text_pos = text_pos or pos

    def plain(self) -> Any:
        return self.value

    @property
    def kind(self) -> str:
        return kind_of(self.value)

    def __repr__(self) -> str:
        return f"ScalarNode({self.value!r} @ {self.pos})"


class SeqNode(Node):
    __slots__ = ("items",)

    def __init__(self, pos: Position, items: list[Node]) -> None:
        super().__init__(pos)
        self.items = items

    def plain(self) -> list[Any]:
        return [i.plain() for i in self.items]

    @property
    def kind(self) -> str:
        return "list"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    key_pos: Position
    value: Node


class MapNode(Node):
    __slots__ = ("entries",)

    def __init__(self, pos: Position, entries: dict[str, Entry]) -> None:
        super().__init__(pos)
        self.entries = entries

    def plain(self) -> dict[str, Any]:
        return {k: e.value.plain() for k, e in self.entries.items()}

    @property
    def kind(self) -> str:
        return "mapping"

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Node | None:
        e = self.entries.get(key)
        return None if e is None else e.value

    def key_pos(self, key: str) -> Position:
        e = self.entries.get(key)
        return self.pos if e is None else e.key_pos

    def items(self) -> Iterator[tuple[str, Node]]:
        for k, e in self.entries.items():
            yield k, e.value


def kind_of(value: Any) -> str:
    """The kind of a YAML value, as messages name it: null, boolean, integer, number, string, list, mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``word`` (for "did you mean"), or None."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


_STR: Final = "tag:yaml.org,2002:str"
_MERGE: Final = "tag:yaml.org,2002:merge"


#: Where YAML 1.1 (PyYAML and libyaml alike) ends a line and an editor does not: NEL, LS, PS.
_YAML_ONLY_BREAKS: Final = ("\x85", "\u2028", "\u2029")
#: Where an editor ends a line.
_EDITOR_BREAK: Final = re.compile(r"\r\n|\r|\n")


class _Lines:
    """Positions as an editor shows them (lines end at ``\\n``, ``\\r\\n`` or ``\\r``).

    The parser's own line numbers run ahead of an editor's after each NEL, LS
    or PS in the text, which YAML 1.1 takes for line breaks; where the text
    has one, a position is worked out from the mark's character index instead.
    """

    __slots__ = ("lines", "path", "starts")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        if any(c in text for c in _YAML_ONLY_BREAKS):
            self.starts: list[int] | None = [0, *(m.end() for m in _EDITOR_BREAK.finditer(text))]
            self.lines = _EDITOR_BREAK.split(text)
        else:   # the usual text: the parser's lines are the editor's (splitlines splits at nothing else YAML allows)
            self.starts = None
            self.lines = text.splitlines()

    def at(self, mark: Any) -> Position:
        if self.starts is None:
            return Position(self.path, mark.line + 1, mark.column + 1)
        line = bisect.bisect_right(self.starts, mark.index)
        return Position(self.path, line, mark.index - self.starts[line - 1] + 1)


class _Builder:
    def __init__(self, lines: _Lines, error: type[SourceError], problems: list[SourceError] | None) -> None:
        self.path = lines.path
        self.lines = lines.lines
        self.at = lines.at if lines.starts is not None else None
        self.error = error
        self.problems = problems
        self.constructor = yaml.constructor.SafeConstructor()

    def problem(self, pos: Position, msg: str) -> None:
        """A mapping key that cannot be taken: kept in ``problems`` (the pair is left out) or raised."""
        if self.problems is None:
            raise self.error(pos, msg)
        self.problems.append(self.error(pos, msg))

    def pos(self, node: yaml.Node) -> Position:
        m = node.start_mark
        if self.at is None:   # _Lines.at, without its call per node
            return Position(self.path, m.line + 1, m.column + 1)
        return self.at(m)

    def build(self, node: yaml.Node) -> Node:
        if isinstance(node, yaml.MappingNode):
            entries: dict[str, Entry] = {}
            # merge keys (<<) are rare in rules; flatten them the way PyYAML does (its walk costs a
            # Python loop per mapping, so only where the composer resolved a key as a merge key)
            merged = 0   # how many pairs flatten_mapping put first, from the merged mappings
            if any(k.tag == _MERGE for k, _ in node.value):
                own = sum(1 for k, _ in node.value if k.tag != _MERGE)
                self.constructor.flatten_mapping(node)
                merged = len(node.value) - own
            from_merge: set[str] = set()
            for i, (knode, vnode) in enumerate(node.value):
                kpos = self.pos(knode)
                if not isinstance(knode, yaml.ScalarNode):
                    self.problem(kpos, "a mapping key must be a plain string")
                    continue
                # keys are taken as written: YAML 1.1 would make `on:` the boolean True
                key = str(knode.value)
                if i < merged:   # merged pairs: the last one counts (PyYAML orders them so)
                    from_merge.add(key)
                elif key in from_merge:   # a key written in the mapping overrides a merged one
                    from_merge.discard(key)
                elif key in entries:   # the first one is kept
                    first = entries[key].key_pos
                    self.problem(kpos, f"duplicate key {key!r} (first at line {first.line})")
                    continue
                entries[key] = Entry(key, kpos, self.build(vnode))
            return MapNode(self.pos(node), entries)
        if isinstance(node, yaml.SequenceNode):
            return SeqNode(self.pos(node), [self.build(n) for n in node.value])
        assert isinstance(node, yaml.ScalarNode)
        # a string is the node's own text (what SafeConstructor's construct_yaml_str returns); other tags
        # (int, bool, null, float, timestamp...) go through the constructor
        value = node.value if node.tag == _STR else self.constructor.construct_object(node)
        pos = self.pos(node)
        text_pos = None
        if node.style in ("|", ">"):
            line = pos.line + 1   # 1-based: the line after the indicator
            content = self.lines[line - 1] if line - 1 < len(self.lines) else ""
            text_pos = Position(self.path, line, len(content) - len(content.lstrip()) + 1)
        return ScalarNode(pos, value, node.tag, text_pos)


def parse(text: str, path: str, error: type[SourceError] = SourceError, *,
          problems: list[SourceError] | None = None) -> Node | None:
    """Parse one YAML document; None for an empty document.

    Raises ``error`` (a :class:`SourceError` subclass) with the position of
    the first YAML problem.  With ``problems``, keys that cannot be taken (a
    duplicate, a key that is not a string) go there instead, each left out of
    the tree, so that the caller reports them with the rest of its errors.
    """
    lines = _Lines(path, text)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = lines.at(mark) if mark else Position(path, 1, 1)
        problem = err.problem or err.context or "invalid YAML"
        ctx = f" ({err.context})" if err.context and err.problem else ""
        raise error(pos, f"YAML syntax error: {problem}{ctx}") from err
    except yaml.YAMLError as err:
        raise error(Position(path, 1, 1), f"YAML error: {err}") from err
    if root is None:
        return None
    try:
        return _Builder(lines, error, problems).build(root)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        pos = lines.at(mark) if mark else Position(path, 1, 1)
        raise error(pos, f"YAML error: {err.problem}") from err
