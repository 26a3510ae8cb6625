"""The event catalog: every event reactor knows, its typed schema, and the typed events it makes.

:func:`~reactor.model.catalog.default.default_catalog` holds QEMU's events (from the generated
``events.json``) plus reactor's own; :meth:`Catalog.with_event` adds the names that rules
``emit`` and that plugins declare.  :meth:`Catalog.make_event` turns a QMP event
object into an instance of its generated class (:mod:`reactor.model.catalog.events`), a plain
:class:`~reactor.model.event.Event` for names it does not know; data that does not
fit is still delivered, with ``problems`` set, and counted in :class:`CatalogStats`.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reactor.errors import CatalogError, EventError
from reactor.model.catalog.events import EVENT_CLASSES
from reactor.model.catalog.schema import EventSchema, FieldSpec, TypeSpec, event_to_json
from reactor.model.catalog.validator import Check, compile_check, find_problems
from reactor.model.event import Event

__all__ = ["EVENTS_JSON", "Catalog", "CatalogStats"]

#: Where the generated catalog lives.
EVENTS_JSON = Path(__file__).resolve().parent / "events.json"


@dataclass(slots=True)
class CatalogStats:
    """What :meth:`Catalog.make_event` has seen: events that did not fit, unknown names.

    Shared by a catalog and every catalog derived from it with ``with_event``.
    """

    invalid: int = 0
    unknown: int = 0
    invalid_by_event: Counter[str] = field(default_factory=Counter)
    unknown_by_event: Counter[str] = field(default_factory=Counter)


class Catalog:
    """A read-only set of event schemas, with fast validation and typed event creation."""

    __slots__ = ("_checks", "_events", "_names", "_types", "qemu_versions", "stats")

    def __init__(
        self,
        events: Mapping[str, EventSchema],
        *,
        qemu_versions: tuple[str, ...] = (),
        stats: CatalogStats | None = None,
    ) -> None:
        self._events: Mapping[str, EventSchema] = MappingProxyType(dict(events))
        self._names = sorted(self._events)
        self._checks: dict[str, Check] = {}
        self._types: dict[str, TypeSpec] | None = None
        #: The QEMU versions whose events the catalog covers (oldest first).
        self.qemu_versions = qemu_versions
        #: Counters of invalid and unknown events made by :meth:`make_event`.
        self.stats = stats if stats is not None else CatalogStats()

    # ------------------------------------------------------------ lookup

    def names(self) -> list[str]:
        """Every event name, sorted."""
        return list(self._names)

    def get(self, name: str) -> EventSchema | None:
        """The schema of ``name``, or None."""
        return self._events.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._events

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    @property
    def invalid_count(self) -> int:
        """How many events made so far did not fit their schema."""
        return self.stats.invalid

    def with_event(self, schema: EventSchema) -> Catalog:
        """A new catalog with ``schema`` added (or replacing one of the same name)."""
        events = dict(self._events)
        events[schema.name] = schema
        new = Catalog(events, qemu_versions=self.qemu_versions, stats=self.stats)
        new._checks.update((k, v) for k, v in self._checks.items() if k != schema.name)
        return new

    def _named_type(self, name: str) -> TypeSpec | None:
        """The first full expansion of the object type ``name`` (for recursive references)."""
        if self._types is None:
            types: dict[str, TypeSpec] = {}

            def walk(t: TypeSpec) -> None:
                if t.kind == "object" and t.fields and t.name and t.name not in types:
                    types[t.name] = t
                for f in t.fields.values():
                    walk(f.type)
                if t.items is not None:
                    walk(t.items)
                for c in t.choices:
                    walk(c)

            for n in self._names:
                for f in self._events[n].fields.values():
                    walk(f.type)
            self._types = types
        return self._types.get(name)

    def _fields_at(self, t: TypeSpec) -> Mapping[str, FieldSpec]:
        if t.kind == "object" and not t.fields and t.name:
            full = self._named_type(t.name)
            if full is not None:
                return full.fields
        return t.fields

    def resolve(self, event_name: str, path: str) -> TypeSpec | None:
        """The type at dotted ``path`` in the data of ``event_name`` (None if absent).

        QMP names keep their dashes (``node-name``); a numeric segment steps into
        an array's items; a segment steps through an alternate's object branch.
        """
        schema = self._events.get(event_name)
        if schema is None or not path:
            return None
        fields: Mapping[str, FieldSpec] = schema.fields
        current: TypeSpec | None = None
        for seg in path.split("."):
            if current is not None:
                current = self._step(current, seg)
                if current is None:
                    return None
                continue
            f = fields.get(seg)
            if f is None:
                return None
            current = f.type
        return current

    def _step(self, t: TypeSpec, seg: str) -> TypeSpec | None:
        if t.kind == "array":
            return t.items if seg.isdigit() else None
        if t.kind == "alternate":
            for c in t.choices:
                found = self._step(c, seg)
                if found is not None:
                    return found
            return None
        if t.kind == "object":
            f = self._fields_at(t).get(seg)
            return f.type if f is not None else None
        return None

    def suggest(self, name: str) -> str | None:
        """The known event name closest to ``name`` (None if nothing is close)."""
        for candidate in (name, name.upper().replace("-", "_")):
            close = difflib.get_close_matches(candidate, self._names, n=1, cutoff=0.6)
            if close:
                return close[0]
        return None

    def suggest_field(self, event_name: str, path: str) -> str | None:
        """The existing field path of ``event_name`` closest to ``path`` (None if none is close)."""
        schema = self._events.get(event_name)
        if schema is None:
            return None
        prefix: list[str] = []
        fields: Mapping[str, FieldSpec] = schema.fields
        segs = path.split(".")
        for i, seg in enumerate(segs):
            f = fields.get(seg)
            if f is None:
                candidates = list(fields)
                variants = (seg, seg.replace("_", "-"), seg.lower().replace("_", "-"))
                for v in variants:
                    close = difflib.get_close_matches(v, candidates, n=1, cutoff=0.6)
                    if close:
                        return ".".join([*prefix, close[0], *segs[i + 1 :]])
                return None
            prefix.append(seg)
            fields = self._fields_at(f.type)
        return None  # the path exists

    # ------------------------------------------------------------ validation

    def _check(self, name: str, schema: EventSchema) -> Check:
        check = self._checks.get(name)
        if check is None:
            check = self._checks[name] = compile_check(schema.fields, self._named_type)
        return check

    def validate(self, name: str, data: Mapping[str, Any]) -> tuple[str, ...]:
        """How ``data`` does not fit event ``name``: missing required or unknown
        fields, wrong types, enum values out of range.  Empty when it fits or when
        the event is unknown."""
        check = self._checks.get(name)
        if check is None:
            schema = self._events.get(name)
            if schema is None:
                return ()
            check = self._check(name, schema)
        if check(data):
            return ()
        schema = self._events[name]
        return find_problems(schema.fields, data, self._named_type)

    def make_event(
        self, obj: Mapping[str, Any], *, vm: str = "vm0", host: str | None = None, seq: int = 0
    ) -> Event:
        """Turn a QMP event object into a typed event (a plain Event for unknown names).

        ``obj`` is ``{"event": NAME, "data": {...}?, "timestamp": {"seconds", "microseconds"}?}``;
        a missing timestamp means now.  Raises :class:`~reactor.errors.EventError`
        when ``obj`` is not shaped like a QMP event.
        """
        if obj.__class__ is not dict and not isinstance(obj, Mapping):
            raise EventError(f"a QMP event must be an object, not {type(obj).__name__}")
        name = obj.get("event")
        if (name.__class__ is not str or not name) and (not isinstance(name, str) or not name):
            raise EventError(f"a QMP event needs a string 'event' member, got {name!r}")
        data = obj.get("data")
        if data is None:
            if "data" in obj:
                raise EventError(f"{name}: 'data' must be an object, not null")
            data = {}
        elif data.__class__ is not dict and not isinstance(data, Mapping):
            raise EventError(f"{name}: 'data' must be an object, not {type(data).__name__}")
        ts = obj.get("timestamp")
        if ts.__class__ is dict and (secs := ts.get("seconds")).__class__ is int:
            usecs = ts.get("microseconds")
            timestamp = secs + usecs / 1e6 if usecs.__class__ is int else _timestamp(name, ts)
        elif ts is None and "timestamp" not in obj:
            timestamp = time.time()
        else:
            timestamp = _timestamp(name, ts)
        if not _MIN_TIME < timestamp < _MAX_TIME:  # also NaN; a datetime must be able to hold it
            raise EventError(f"{name}: timestamp {timestamp!r} is out of range")
        check = self._checks.get(name)
        if check is None:
            schema = self._events.get(name)
            if schema is not None:
                check = self._check(name, schema)
        problems = () if check is None or check(data) else self.validate(name, data)
        cls = EVENT_CLASSES.get(name)
        if cls is None:
            cls = Event
            if name not in self._events:
                self.stats.unknown += 1
                self.stats.unknown_by_event[name] += 1
        if problems:
            self.stats.invalid += 1
            self.stats.invalid_by_event[name] += 1
        return cls(name, data, timestamp, vm, host, seq, problems)

    # ------------------------------------------------------------ description

    def describe(self, name: str) -> str:
        """A human-readable description of one event: doc, fields, types, enums, versions."""
        schema = self._events.get(name)
        if schema is None:
            hint = self.suggest(name)
            return f"unknown event {name!r}" + (f" (did you mean {hint}?)" if hint else "")
        origin = "reactor" if schema.builtin else "QEMU " + ", ".join(schema.versions)
        lines = [f"{name}  ({origin})"]
        if schema.doc:
            lines += ["", *("  " + p for p in schema.doc.split("\n\n"))]
        lines.append("")
        if not schema.fields:
            lines.append("  (no data)")
        self._describe_fields(schema.fields, schema.versions, "  ", lines, set())
        return "\n".join(lines)

    def _describe_fields(
        self,
        fields: Mapping[str, FieldSpec],
        versions: tuple[str, ...],
        indent: str,
        lines: list[str],
        seen: set[str],
    ) -> None:
        for fname, f in fields.items():
            mark = "?" if f.optional else ""
            extra = ""
            if f.versions and tuple(f.versions) != tuple(versions):
                extra = f"  [QEMU {', '.join(f.versions)}]"
            lines.append(f"{indent}{fname}{mark}: {f.type}{extra}")
            if f.doc:
                lines.append(f"{indent}    {f.doc}")
            t = f.type
            while t.kind == "array" and t.items is not None:
                t = t.items
            if t.kind == "enum":
                lines.append(f"{indent}    values: {', '.join(t.values)}")
            elif t.kind == "object" and t.name not in seen:
                sub = self._fields_at(t)
                self._describe_fields(sub, f.versions, indent + "    ", lines, seen | {t.name or ""})

    def to_json(self, name: str | None = None) -> dict[str, Any]:
        """The catalog (or one event) as JSON-ready data, in events.json's shape."""
        if name is not None:
            schema = self._events.get(name)
            if schema is None:
                raise CatalogError(f"unknown event {name!r}")
            return {"name": name, **event_to_json(schema)}
        return {
            "qemu_versions": list(self.qemu_versions),
            "events": {n: event_to_json(self._events[n]) for n in self._names},
        }


#: Timestamps a datetime can hold (years 1 to 9999), in seconds since the epoch.
_MIN_TIME = -62135596800.0
_MAX_TIME = 253402300799.0


def _timestamp(name: str, ts: Any) -> float:
    """QMP's ``{"seconds", "microseconds"}`` as float seconds (the slow, checking path)."""
    if not isinstance(ts, Mapping):
        raise EventError(f"{name}: 'timestamp' must be an object, not {type(ts).__name__}")
    out = 0.0
    for key, scale in (("seconds", 1.0), ("microseconds", 1e-6)):
        v = ts.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise EventError(f"{name}: timestamp {key} must be a number, got {v!r}")
        out += v * scale
    return out
