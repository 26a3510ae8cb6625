"""The catalog's data model: the type of a field, a field, an event's schema.

These are frozen, slotted dataclasses built from ``events.json`` (see
:func:`type_from_json`) or written by hand for reactor's own events.  A
``TypeSpec`` of kind ``object`` that stands for a recursive reference has no
fields; :meth:`reactor.model.catalog.Catalog.resolve` follows it by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "EMPTY_FIELDS",
    "EventSchema",
    "FieldSpec",
    "Kind",
    "TypeSpec",
    "event_from_json",
    "event_to_json",
    "type_from_json",
    "type_to_json",
]

Kind = Literal["str", "int", "number", "bool", "null", "any", "enum", "object", "array", "alternate"]

#: An empty, read-only field mapping (the default for types without fields).
EMPTY_FIELDS: Mapping[str, FieldSpec] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """The type of a value: a kind plus what that kind needs.

    ``name`` is the QAPI type name (``BlockErrorAction``, ``int64``) or None for
    anonymous types; ``values`` the enum values; ``fields`` an object's members
    (keyed by QMP name); ``items`` an array's element type; ``choices`` an
    alternate's branches.
    """

    kind: Kind
    name: str | None = None
    values: tuple[str, ...] = ()
    fields: Mapping[str, FieldSpec] = field(default_factory=lambda: EMPTY_FIELDS, hash=False)
    items: TypeSpec | None = None
    choices: tuple[TypeSpec, ...] = ()

    def __str__(self) -> str:
        if self.kind == "array":
            return f"array of {self.items}" if self.items is not None else "array"
        if self.kind == "alternate":
            return " | ".join(str(c) for c in self.choices) or "alternate"
        if self.kind in ("enum", "object") and self.name:
            return f"{self.kind} {self.name}"
        if self.kind == "int" and self.name and self.name != "int":
            return f"int ({self.name})"
        return self.kind


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One member of an event's data (or of a nested object), keyed by its QMP name."""

    name: str
    type: TypeSpec
    optional: bool = False
    doc: str = ""
    versions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventSchema:
    """An event: its name, data members, doc, the QEMU versions that have it.

    ``builtin`` is True for reactor's own events (and those added with
    :meth:`reactor.model.catalog.Catalog.with_event` by rules or plugins), False for
    QEMU's.
    """

    name: str
    fields: Mapping[str, FieldSpec] = field(default_factory=lambda: EMPTY_FIELDS, hash=False)
    doc: str = ""
    versions: tuple[str, ...] = ()
    builtin: bool = False


def type_from_json(obj: Mapping[str, Any]) -> TypeSpec:
    """Build a :class:`TypeSpec` from its ``events.json`` form."""
    items = obj.get("items")
    return TypeSpec(
        kind=obj["kind"],
        name=obj.get("name"),
        values=tuple(obj.get("values", ())),
        fields=_fields_from_json(obj.get("fields")),
        items=type_from_json(items) if items is not None else None,
        choices=tuple(type_from_json(c) for c in obj.get("choices", ())),
    )


def _fields_from_json(obj: Mapping[str, Any] | None) -> Mapping[str, FieldSpec]:
    if not obj:
        return EMPTY_FIELDS
    return MappingProxyType(
        {
            name: FieldSpec(
                name=name,
                type=type_from_json(f["type"]),
                optional=bool(f.get("optional", False)),
                doc=f.get("doc", ""),
                versions=tuple(f.get("versions", ())),
            )
            for name, f in obj.items()
        }
    )


def event_from_json(name: str, obj: Mapping[str, Any], *, builtin: bool = False) -> EventSchema:
    """Build an :class:`EventSchema` from its ``events.json`` form."""
    return EventSchema(
        name=name,
        fields=_fields_from_json(obj.get("fields")),
        doc=obj.get("doc", ""),
        versions=tuple(obj.get("versions", ())),
        builtin=builtin,
    )


def type_to_json(t: TypeSpec) -> dict[str, Any]:
    """The ``events.json`` form of a type (only the keys its kind uses)."""
    out: dict[str, Any] = {"kind": t.kind, "name": t.name}
    if t.kind == "enum":
        out["values"] = list(t.values)
    elif t.kind == "object":
        out["fields"] = _fields_to_json(t.fields)
    elif t.kind == "array":
        out["items"] = type_to_json(t.items) if t.items is not None else {"kind": "any", "name": None}
    elif t.kind == "alternate":
        out["choices"] = [type_to_json(c) for c in t.choices]
    return out


def _fields_to_json(fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    return {
        n: {"type": type_to_json(f.type), "optional": f.optional, "doc": f.doc, "versions": list(f.versions)}
        for n, f in fields.items()
    }


def event_to_json(e: EventSchema) -> dict[str, Any]:
    """The ``events.json`` form of an event (plus ``builtin``)."""
    return {
        "doc": e.doc,
        "versions": list(e.versions),
        "builtin": e.builtin,
        "fields": _fields_to_json(e.fields),
    }
