"""Checking an event's data against its schema, fast.

:func:`compile_check` turns an event's fields into one Python function (built
once, with ``exec``, the way :mod:`dataclasses` builds ``__init__``) that answers
"does this data fit?" without allocating.  Only when it says no does
:func:`find_problems` walk the data again to say what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reactor.model.catalog.schema import FieldSpec, TypeSpec

__all__ = ["Check", "TypeLookup", "compile_check", "find_problems"]

#: A compiled check: True when the data fits.
Check = Callable[[Mapping[str, Any]], bool]

#: Finds a named object type's full definition (to follow recursive references).
TypeLookup = Callable[[str], TypeSpec | None]

_MISSING = object()


class _Compiler:
    def __init__(self, lookup: TypeLookup) -> None:
        self.lookup = lookup
        self.ns: dict[str, Any] = {"_M": _MISSING, "_Mapping": Mapping, "_objs": {}}
        self.src: list[str] = []
        self.n = 0
        self.refs: set[str] = set()

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"_{prefix}{self.n}"

    def expr(self, t: TypeSpec, x: str) -> str:
        """A boolean expression checking the value in variable ``x``."""
        k = t.kind
        if k == "str":
            return f"isinstance({x}, str)"
        if k == "int":
            return f"({x}.__class__ is int or (isinstance({x}, int) and {x}.__class__ is not bool))"
        if k == "number":
            return f"({x}.__class__ is float or {x}.__class__ is int or (isinstance({x}, (int, float)) and {x}.__class__ is not bool))"  # noqa: E501
        if k == "bool":
            return f"({x} is True or {x} is False)"
        if k == "null":
            return f"{x} is None"
        if k == "any":
            return "True"
        if k == "enum":
            name = self._name("e")
            self.ns[name] = frozenset(t.values)
            return f"{x} in {name}"
        if k == "array":
            fn = self._name("a")
            item = self.expr(t.items, "i") if t.items is not None else "True"
            self.src += [
                f"def {fn}(x):",
                "    if not isinstance(x, (list, tuple)): return False",
                "    for i in x:",
                f"        if not ({item}): return False",
                "    return True",
            ]
            return f"{fn}({x})"
        if k == "alternate":
            return "(" + " or ".join(self.expr(c, x) for c in t.choices) + ")" if t.choices else "True"
        # object
        fields = t.fields
        if not fields and t.name is not None:
            full = self.lookup(t.name)
            if full is not None and full.fields:
                self.refs.add(t.name)
                return f"(isinstance({x}, dict) or isinstance({x}, _Mapping)) and _objs[{t.name!r}]({x})"
        fn = self._name("o")
        self.object_fn(fn, fields)
        return f"(isinstance({x}, dict) or isinstance({x}, _Mapping)) and {fn}({x})"

    def object_fn(self, fn: str, fields: Mapping[str, FieldSpec]) -> None:
        body: list[str] = []
        required = sum(1 for f in fields.values() if not f.optional)
        counted = required
        body.append("    try:")
        if any(f.optional for f in fields.values()):
            body.append(f"        n = {required}")
            counted = -1
        for name, f in fields.items():
            check = self.expr(f.type, "x")
            if f.optional:
                body += [
                    f"        x = d.get({name!r}, _M)",
                    "        if x is not _M:",
                    f"            if not ({check}): return False",
                    "            n += 1",
                ]
            else:
                body += [f"        x = d[{name!r}]", f"        if not ({check}): return False"]
        body.append(f"        return len(d) == {'n' if counted < 0 else counted}")
        body.append("    except (KeyError, TypeError):")
        body.append("        return False")
        self.src += [f"def {fn}(d):", *body]

    def build(self, fields: Mapping[str, FieldSpec]) -> Check:
        self.object_fn("check", fields)
        # named types referenced recursively: compile their full definitions too
        done: dict[str, str] = {}
        while pending := sorted(self.refs - done.keys()):
            for ref in pending:
                full = self.lookup(ref)
                done[ref] = self._name("r")
                self.object_fn(done[ref], full.fields if full is not None else {})
        code = "\n".join(self.src)
        exec(compile(code, "<reactor.model.catalog check>", "exec"), self.ns)
        self.ns["_objs"].update({ref: self.ns[fn] for ref, fn in done.items()})
        check: Check = self.ns["check"]
        return check

def compile_check(fields: Mapping[str, FieldSpec], lookup: TypeLookup = lambda _: None) -> Check:
    """A function telling, fast, whether data fits ``fields`` exactly."""
    return _Compiler(lookup).build(fields)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_problem(t: TypeSpec, value: Any, where: str, lookup: TypeLookup, out: list[str]) -> None:
    k = t.kind
    ok: bool
    if k == "str":
        ok = isinstance(value, str)
    elif k == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif k == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif k == "bool":
        ok = isinstance(value, bool)
    elif k == "null":
        ok = value is None
    elif k == "any":
        ok = True
    elif k == "enum":
        if isinstance(value, str) and value not in t.values:
            out.append(f"field '{where}': {value!r} is not one of {', '.join(t.values)}")
            return
        ok = isinstance(value, str)
    elif k == "array":
        if isinstance(value, (list, tuple)):
            if t.items is not None:
                for i, item in enumerate(value):
                    _type_problem(t.items, item, f"{where}[{i}]", lookup, out)
            return
        ok = False
    elif k == "alternate":
        ok = any(not _problems_of(c, value, lookup) for c in t.choices) if t.choices else True
    else:  # object
        if isinstance(value, Mapping):
            fields = t.fields
            if not fields and t.name is not None:
                full = lookup(t.name)
                fields = full.fields if full is not None else fields
            _fields_problems(fields, value, f"{where}.", lookup, out)
            return
        ok = False
    if not ok:
        out.append(f"field '{where}': expected {t}, got {type(value).__name__} {_show(value)}")


def _problems_of(t: TypeSpec, value: Any, lookup: TypeLookup) -> list[str]:
    out: list[str] = []
    _type_problem(t, value, "value", lookup, out)
    return out


def _fields_problems(
    fields: Mapping[str, FieldSpec], data: Mapping[str, Any], prefix: str, lookup: TypeLookup, out: list[str]
) -> None:
    for name, f in fields.items():
        if name in data:
            _type_problem(f.type, data[name], f"{prefix}{name}", lookup, out)
        elif not f.optional:
            out.append(f"missing required field '{prefix}{name}'")
    for name in data:
        if name not in fields:
            out.append(f"unknown field '{prefix}{name}'")


def find_problems(
    fields: Mapping[str, FieldSpec], data: Mapping[str, Any], lookup: TypeLookup = lambda _: None
) -> tuple[str, ...]:
    """Every way ``data`` does not fit ``fields`` (empty when it fits)."""
    out: list[str] = []
    _fields_problems(fields, data, "", lookup, out)
    return tuple(out)
