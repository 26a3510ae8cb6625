"""Generate the event catalog from QEMU's QAPI schema files.

Usage::

    python -m reactor.model.catalog.generate            # write events.json and reactor/model/catalog/events.py
    python -m reactor.model.catalog.generate --check    # exit 1 if the committed files are stale

Input: ``reactor/model/catalog/sources/VERSION/*.json``, the ``qapi/`` directory of
each supported QEMU release as Debian ships it (patches applied), committed so
that generation is offline and reproducible (docs/catalog.md says how they were
fetched).  Output (both committed): ``reactor/model/catalog/events.json`` and
``reactor/model/catalog/events.py`` (typed event classes).  The same input always gives
byte-identical output.

How types are written (see docs/catalog.md): every QAPI type is expanded in
place; a struct already being expanded on the current path (a recursive type)
becomes ``{"kind": "object", "name": NAME, "fields": {}}`` and is followed by
name.  A union becomes an object: its base members plus every branch's members,
the latter optional.  Across versions an event has the union of its members; a
member's type is the newest version's, except that enum values and object
members are merged over all versions; a member missing from some version that
has its event is optional.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reactor.errors import CatalogError
from reactor.model.catalog.builtin import BUILTIN_EVENTS
from reactor.model.catalog.catalog import Catalog
from reactor.model.catalog.qapi import Doc, Schema, load_schema
from reactor.model.catalog.schema import EventSchema, TypeSpec, event_from_json, event_to_json

__all__ = [
    "EVENT_ATTRS",
    "VERSIONS",
    "build_catalog",
    "class_name",
    "main",
    "python_name",
    "render_events_py",
    "render_json",
]

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
JSON_OUT = HERE / "events.json"
PY_OUT = HERE / "events.py"

#: The QEMU versions the catalog covers, oldest first (directories under sources/).
VERSIONS: tuple[str, ...] = ("7.2", "10.2")

#: Attribute names of reactor.model.event.Event that a property must not shadow.
EVENT_ATTRS = frozenset(
    {"name", "data", "timestamp", "vm", "host", "seq", "problems", "valid", "time", "id", "to_qmp", "NAME"}
)

_INTS = {"int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "size"}
_SIMPLE = {"str": "str", "number": "number", "bool": "bool", "null": "null", "any": "any"}
_QTYPE = ["none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool"]

Json = dict[str, Any]


# ---------------------------------------------------------------- expansion


def _doc_text(doc: Doc | None) -> str:
    if doc is None:
        return ""
    return doc.body + (f"\n\nSince: {doc.since}" if doc.since else "")


def _member_type(value: Any) -> Any:
    return value["type"] if isinstance(value, dict) else value


class _Expander:
    """Expands the QAPI types of one version into the events.json form."""

    def __init__(self, schema: Schema, version: str) -> None:
        self.schema = schema
        self.version = version

    def type(self, ref: Any, stack: tuple[str, ...]) -> Json:
        if isinstance(ref, list):
            if len(ref) != 1:
                raise CatalogError(f"{self.version}: bad array type {ref!r}")
            return {"kind": "array", "name": None, "items": self.type(ref[0], stack)}
        if not isinstance(ref, str):
            raise CatalogError(f"{self.version}: bad type {ref!r}")
        if ref in _INTS:
            return {"kind": "int", "name": ref}
        if ref in _SIMPLE:
            return {"kind": _SIMPLE[ref], "name": ref}
        if ref == "QType":
            return {"kind": "enum", "name": ref, "values": list(_QTYPE)}
        d = self.schema.defs.get(ref)
        if d is None:
            raise CatalogError(f"{self.version}: unknown QAPI type {ref!r}")
        if d.meta == "enum":
            values = [v["name"] if isinstance(v, dict) else v for v in d.expr.get("data", [])]
            return {"kind": "enum", "name": ref, "values": values}
        if d.meta == "alternate":
            choices = [self.type(_member_type(v), stack) for v in d.expr["data"].values()]
            return {"kind": "alternate", "name": ref, "choices": choices}
        if ref in stack:
            return {"kind": "object", "name": ref, "fields": {}}
        return {"kind": "object", "name": ref, "fields": self.object_fields(ref, (*stack, ref))}

    def members(self, data: Mapping[str, Any], owner: str, stack: tuple[str, ...]) -> Json:
        doc = self.schema.docs.get(owner)
        out: Json = {}
        for key, value in data.items():
            name = key[1:] if key.startswith("*") else key
            out[name] = {
                "type": self.type(_member_type(value), stack),
                "optional": key.startswith("*"),
                "doc": doc.members.get(name, "") if doc else "",
                "versions": [self.version],
            }
        return out

    def object_fields(self, name: str, stack: tuple[str, ...]) -> Json:
        d = self.schema.defs[name]
        out: Json = {}
        base = d.expr.get("base")
        if isinstance(base, str):
            out.update(self.object_fields(base, stack))
        elif isinstance(base, dict):
            out.update(self.members(base, name, stack))
        if d.meta == "struct":
            out.update(self.members(d.expr.get("data", {}), name, stack))
        elif d.meta == "union":
            disc = d.expr["discriminator"]
            branches: dict[str, list[str]] = {}
            for value, branch in d.expr["data"].items():
                for fname, f in self.object_fields(_member_type(branch), stack).items():
                    if fname not in out:
                        out[fname] = {**f, "optional": True}
                        branches[fname] = []
                    if fname in branches:
                        branches[fname].append(value)
            for fname, values in branches.items():
                doc = out[fname]["doc"]
                out[fname]["doc"] = f"{doc} (only when {disc} is {' or '.join(values)})".strip()
        else:
            raise CatalogError(f"{self.version}: {name} is a {d.meta}, not an object type")
        return out

    def event(self, name: str) -> Json:
        d = self.schema.defs[name]
        data = d.expr.get("data", {})
        if isinstance(data, str):
            fields = self.object_fields(data, (data,))
            doc = self.schema.docs.get(data)
            if doc is not None:  # the struct's own doc, unless the event documents it
                for fname, f in fields.items():
                    f["doc"] = f["doc"] or doc.members.get(fname, "")
        else:
            fields = self.members(data, name, ())
        return {"doc": _doc_text(self.schema.docs.get(name)), "versions": [self.version], "fields": fields}


# ---------------------------------------------------------------- merging


def _merge_type(newer: Json, older: Json) -> Json:
    if newer["kind"] != older["kind"]:
        return newer
    out = dict(newer)
    if newer["kind"] == "enum":
        out["values"] = newer["values"] + [v for v in older["values"] if v not in newer["values"]]
    elif newer["kind"] == "object":
        if not newer["fields"] or not older["fields"]:
            out["fields"] = newer["fields"] or older["fields"]
        else:
            out["fields"] = _merge_fields(newer["fields"], older["fields"])
    elif newer["kind"] == "array":
        out["items"] = _merge_type(newer["items"], older["items"])
    return out


def _merge_fields(newer: Json, older: Json) -> Json:
    """Merge the members of one place (event or object) from two versions."""
    out: Json = {}
    for name, f in newer.items():
        o = older.get(name)
        if o is None:
            out[name] = {**f, "optional": True}
        else:
            out[name] = {
                "type": _merge_type(f["type"], o["type"]),
                "optional": f["optional"] or o["optional"],
                "doc": f["doc"] or o["doc"],
                "versions": sorted(set(o["versions"]) | set(f["versions"]), key=_vkey),
            }
    for name, o in older.items():
        if name not in out:
            out[name] = {**o, "optional": True}
    return out


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def build_catalog(sources: Path = SOURCES, versions: tuple[str, ...] = VERSIONS) -> Json:
    """The merged catalog (events.json form) from the QAPI files of ``versions``."""
    merged: Json = {}
    for version in versions:
        schema = load_schema(sources / version)
        exp = _Expander(schema, version)
        for d in schema.events():
            ev = exp.event(d.name)
            old = merged.get(d.name)
            if old is None:
                merged[d.name] = ev
            else:
                merged[d.name] = {
                    "doc": ev["doc"] or old["doc"],
                    "versions": old["versions"] + ev["versions"],
                    "fields": _merge_fields(ev["fields"], old["fields"]),
                }
    return {"qemu_versions": list(versions), "events": {n: merged[n] for n in sorted(merged)}}


def render_json(catalog: Json) -> str:
    """events.json's text: stable key order, one trailing newline."""
    return json.dumps(catalog, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- events.py


def class_name(event: str) -> str:
    """``BLOCK_IO_ERROR`` → ``BlockIoError``."""
    return "".join(p.capitalize() for p in re.split(r"[_\-]+", event) if p)


def python_name(member: str) -> str:
    """A QMP member name as a Python attribute: dashes → underscores; keywords and
    names of :class:`reactor.model.event.Event` attributes get a trailing underscore."""
    name = member.replace("-", "_").replace(".", "_")
    if keyword.iskeyword(name) or name in EVENT_ATTRS:
        name += "_"
    return name


def _docstring(text: str, indent: str) -> list[str]:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip() or "(undocumented)"
    width = 104 - len(indent)
    out: list[str] = []
    for i, para in enumerate(text.split("\n\n")):
        if i:
            out.append("")
        out.extend(textwrap.wrap(para, width=width, break_on_hyphens=False) or [""])
    if len(out) == 1 and len(out[0]) + 6 <= width:
        line = out[0][:-1] + '\\"' if out[0].endswith('"') else out[0]
        return [f'{indent}"""{line}"""']
    return [f'{indent}"""{out[0]}', *[f"{indent}{x}" if x else "" for x in out[1:]], f'{indent}"""']


class _PyWriter:
    def __init__(self, reserved: set[str]) -> None:
        self.aliases: dict[str, str] = {}  # enum alias name -> code
        self.typeddicts: dict[str, str] = {}  # name -> code
        self.shapes: dict[str, str] = {}  # name -> json of the shape (to detect clashes)
        self.order: list[str] = []  # definition order (dependencies first)
        self.reserved = reserved
        self.pending: set[str] = set()

    def _unique(self, base: str, shape: str, table: Mapping[str, str]) -> tuple[str, bool]:
        """The name to use for a type called ``base`` with ``shape``; True if it exists."""
        name = base if base not in self.reserved else f"{base}Data"
        n = 2
        while name in self.shapes and self.shapes[name] != shape:
            name = f"{base}{n}"
            n += 1
        return name, name in self.shapes

    def annotation(self, t: TypeSpec) -> str:
        k = t.kind
        if k == "str":
            return "str"
        if k == "int":
            return "int"
        if k == "number":
            return "float"
        if k == "bool":
            return "bool"
        if k == "null":
            return "None"
        if k == "any":
            return "Any"
        if k == "array":
            return f"list[{self.annotation(t.items)}]" if t.items is not None else "list[Any]"
        if k == "alternate":
            return " | ".join(dict.fromkeys(self.annotation(c) for c in t.choices)) or "Any"
        if k == "enum":
            return self.enum(t)
        return self.typeddict(t)

    def enum(self, t: TypeSpec) -> str:
        shape = json.dumps(list(t.values))
        name, exists = self._unique(t.name or "Enum", shape, self.aliases)
        if exists:
            return name
        self.shapes[name] = shape
        lits = [json.dumps(v) for v in t.values]
        code = f"{name} = Literal[{', '.join(lits)}]"
        if len(code) > 110:
            code = f"{name} = Literal[\n" + "".join(f"    {x},\n" for x in lits) + "]"
        self.aliases[name] = code
        self.order.append(name)
        return name

    def typeddict(self, t: TypeSpec) -> str:
        base = t.name or "Object"
        if not t.fields and (base in self.shapes or base in self.pending):
            # a recursive reference (or an empty struct): refer by name
            return f'"{base}"' if base in self.pending else base
        shape = json.dumps(sorted((n, str(f.type), f.optional) for n, f in t.fields.items()))
        name, exists = self._unique(base, shape, self.typeddicts)
        if exists:
            return name
        self.pending.add(name)
        members = [(fname, self.annotation(f.type), f.optional) for fname, f in t.fields.items()]
        self.pending.discard(name)
        self.shapes[name] = shape
        if all(m[0].isidentifier() and not keyword.iskeyword(m[0]) for m in members):
            code = f"class {name}(TypedDict):\n" + (
                "".join(f"    {m}: {f'NotRequired[{a}]' if opt else a}\n" for m, a, opt in members)
                or "    pass\n"
            )
            code = code.rstrip("\n")
        else:
            entries = [f"{json.dumps(m)}: {f'NotRequired[{a}]' if opt else a}" for m, a, opt in members]
            body = "".join(f"        {x},\n" for x in entries)
            code = f'{name} = TypedDict(\n    "{name}",\n    {{\n{body}    }},\n)'
        self.typeddicts[name] = code
        self.order.append(name)
        return name


def render_events_py(catalog: Json) -> str:
    """The text of reactor/model/catalog/events.py for ``catalog`` plus reactor's built-in events."""
    from reactor.model.catalog.libvirt import with_libvirt_events  # libvirt's typed events get classes too

    base: dict[str, EventSchema] = {n: event_from_json(n, e) for n, e in catalog["events"].items()}
    base.update(BUILTIN_EVENTS)
    full = with_libvirt_events(Catalog(base, qemu_versions=tuple(catalog["qemu_versions"])))
    events: dict[str, EventSchema] = {n: s for n in full.names() if (s := full.get(n)) is not None}
    names = sorted(events)
    classes = {n: class_name(n) for n in names}
    if len(set(classes.values())) != len(classes):
        raise CatalogError("two events map to the same class name")
    w = _PyWriter(set(classes.values()) | {"Event", "EVENT_CLASSES"})
    bodies: list[str] = []
    for n in names:
        e = events[n]
        cls = classes[n]
        if n.startswith("LIBVIRT_"):
            where = f"libvirt's domain event ``{n}``"
        else:
            where = f"reactor's own event ``{n}``" if e.builtin else f"QMP event ``{n}``"
        if e.versions:
            where += f" (QEMU {', '.join(e.versions)})"
        lines = [f"class {cls}(Event):"]
        lines += _docstring(f"{e.doc}\n\n{where}.", "    ")
        lines += ["", "    __slots__ = ()", f'    NAME: ClassVar[str] = "{n}"']
        seen: set[str] = set()
        for fname, f in e.fields.items():
            attr = python_name(fname)
            if attr in seen:
                raise CatalogError(f"{n}: two members map to the attribute {attr!r}")
            seen.add(attr)
            ann = w.annotation(f.type)
            if f.optional:
                ret = f"{ann} | None" if ann not in ("None", "Any") else ann
                get = f"self.data.get({json.dumps(fname)})"
            else:
                ret = ann
                get = f"self.data[{json.dumps(fname)}]"
            doc = f.doc or "(undocumented)"
            if f.versions and e.versions and tuple(f.versions) != tuple(e.versions):
                doc += f" (QEMU {', '.join(f.versions)})"
            lines += ["", "    @property", f"    def {attr}(self) -> {ret}:"]
            lines += _docstring(doc, "        ")
            lines += [f"        v: {ret} = {get}", "        return v"]
        bodies.append("\n".join(lines))

    exported = sorted(
        [*classes.values(), *w.order, "EVENT_CLASSES"],
        key=lambda x: (0 if x.isupper() else 1 if x[0].isupper() else 2, x),
    )
    out = [
        "# @generated by reactor/model/catalog/generate.py from the QAPI files: DO NOT EDIT.",
        "# Regenerate with `python -m reactor.model.catalog.generate`; tests/test_catalog.py checks it is fresh.",
        '"""Typed event classes, one per catalog event.  GENERATED: do not edit.',
        "",
        "Regenerate with ``python -m reactor.model.catalog.generate`` (from the QAPI files",
        "under reactor/model/catalog/sources/).  Each class subclasses :class:`reactor.model.event.Event`;",
        "its properties read ``data`` (QMP member names, dashes → underscores).  Optional",
        "members read as None when absent.  Enum types are ``Literal`` aliases and object",
        "types are ``TypedDict``s named after their QAPI type.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any, ClassVar, Literal, NotRequired, TypedDict",
        "",
        "from reactor.model.event import Event",
        "",
        "__all__ = [",
        *[f'    "{x}",' for x in exported],
        "]",
        "",
    ]
    out.append("\n\n\n".join(w.aliases.get(name) or w.typeddicts[name] for name in w.order))
    out += ["", ""]
    out.append("\n\n\n".join(bodies))
    out += ["", "", "#: Every typed event class, by QMP event name."]
    out.append("EVENT_CLASSES: dict[str, type[Event]] = {")
    out += [f'    "{n}": {classes[n]},' for n in names]
    out.append("}")
    text = "\n".join(out) + "\n"
    if "Any" not in text.split("from reactor.model.event", 1)[1].replace("ClassVar", ""):
        text = text.replace("from typing import Any, ", "from typing import ", 1)
    return text


# ---------------------------------------------------------------- main


def _check_roundtrip(catalog: Json) -> None:
    """The JSON form survives loading into dataclasses and back."""
    for name, e in catalog["events"].items():
        back = event_to_json(event_from_json(name, e))
        back.pop("builtin")
        if back != e:
            raise CatalogError(f"{name}: events.json does not round-trip through EventSchema")


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) events.json and reactor/model/catalog/events.py."""
    ap = argparse.ArgumentParser(
        prog="python -m reactor.model.catalog.generate", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed output is stale")
    ap.add_argument("--sources", type=Path, default=SOURCES, help="directory with one qapi dir per version")
    args = ap.parse_args(argv)
    catalog = build_catalog(args.sources)
    _check_roundtrip(catalog)
    outputs = {JSON_OUT: render_json(catalog), PY_OUT: render_events_py(catalog)}
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    events = catalog["events"].values()
    counts = {v: sum(v in e["versions"] for e in events) for v in catalog["qemu_versions"]}
    if args.check:
        for p in stale:
            print(f"stale: {p}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(outputs[p], encoding="utf-8")
    summary = ", ".join(f"QEMU {v}: {n}" for v, n in counts.items())
    print(f"{len(catalog['events'])} events ({summary}); wrote {len(stale)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
