"""``match`` conditions compiled to predicates, and the index that picks candidate rules.

A ``match`` mapping becomes one closure over an event's ``data`` at load time,
after every path and literal was checked against the schema of every event
the rule listens to.  At run time the :class:`Matcher` finds candidate rules
by event name, then by VM name and by one literal ``field: value`` where
rules use them, so its cost does not grow with rules written for other events
or other VMs.

Absent fields: ``exists: false``, ``ne`` and ``not_in`` hold for an absent
optional field; every other test fails on it.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reactor.errors import Position, RuleError
from reactor.model.catalog.catalog import Catalog
from reactor.model.catalog.schema import EventSchema, TypeSpec
from reactor.model.event import Event
from reactor.rules.rule import Predicate, Rule
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match, kind_of

__all__ = [
    "OPERATORS",
    "EventMatch",
    "Matcher",
    "check_event_names",
    "compile_event_match",
    "compile_match",
    "explain_match",
    "literal_problem",
]

OPERATORS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "regex", "glob", "contains", "exists")
COMBINATORS = ("any", "all", "not")
_MISSING: Any = object()


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]

        def get1(data: Mapping[str, Any]) -> Any:
            return data.get(key, _MISSING)

        return get1

    def get(data: Mapping[str, Any]) -> Any:
        value: Any = data
        for p in parts:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(p, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    return get


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse True with 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _op(op: str, get: Callable[[Mapping[str, Any]], Any], lit: Any) -> Predicate:
    m = _MISSING
    if op == "eq":
        if isinstance(lit, bool):
            return lambda d: get(d) is lit
        return lambda d: _same(get(d), lit)
    if op == "ne":
        return lambda d: (v := get(d)) is m or not _same(v, lit)
    if op in ("in", "not_in"):
        lits = list(lit)
        try:
            pool: Any = frozenset(x for x in lits if not isinstance(x, bool) and x is not None)
            flags = [x for x in lits if isinstance(x, bool) or x is None]
            hashable = True
        except TypeError:
            hashable = False

        def one_of(v: Any) -> bool:
            if hashable and not isinstance(v, bool) and v is not None:
                try:
                    return v in pool
                except TypeError:
                    return False
            if hashable:
                return any(v is f for f in flags)
            return any(_same(v, x) for x in lits)

        if op == "in":
            return lambda d: (v := get(d)) is not m and one_of(v)
        return lambda d: (v := get(d)) is m or not one_of(v)
    if op in ("lt", "le", "gt", "ge"):
        cmps: dict[str, Callable[[Any], bool]] = {
            "lt": lambda a: a < lit, "le": lambda a: a <= lit, "gt": lambda a: a > lit, "ge": lambda a: a >= lit}
        cmp = cmps[op]
        if isinstance(lit, str):
            return lambda d: isinstance(v := get(d), str) and cmp(v)
        return lambda d: _num(v := get(d)) and cmp(v)
    if op == "regex":
        rx = re.compile(lit)
        return lambda d: isinstance(v := get(d), str) and rx.search(v) is not None
    if op == "glob":
        return lambda d: isinstance(v := get(d), str) and fnmatch.fnmatchcase(v, lit)
    if op == "contains":
        def contains(d: Mapping[str, Any]) -> bool:
            v = get(d)
            if isinstance(v, str):
                return isinstance(lit, str) and lit in v
            if isinstance(v, list):
                return any(_same(x, lit) for x in v)
            if isinstance(v, Mapping):
                return lit in v
            return False
        return contains
    if op == "exists":
        want = bool(lit)
        return lambda d: (get(d) is not m) is want
    raise AssertionError(op)


# --- load-time checking -------------------------------------------------------------------

def literal_problem(ts: TypeSpec, value: Any) -> str | None:
    """Why ``value`` cannot be a value of ``ts`` (None when it can)."""
    k = ts.kind
    if k == "any":
        return None
    if k == "alternate":
        probs = [literal_problem(c, value) for c in ts.choices]
        return None if not ts.choices or any(p is None for p in probs) else f"{value!r} does not fit {ts}"
    if k == "enum":
        if not isinstance(value, str):
            return f"expected one of {', '.join(ts.values)}, got {kind_of(value)} {value!r}"
        if ts.values and value not in ts.values:
            hint = close_match(value, ts.values)
            return f"{value!r} is not one of {', '.join(ts.values)}" + (f" (did you mean {hint!r}?)" if hint else "")
        return None
    if _KIND_CHECKS[k](value):
        return None
    return f"expected {_KIND_WANTED[k]}, got {kind_of(value)} {value!r}"


#: built once (not per literal: a 1,000-rule file checks thousands)
_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _num,
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
}
_KIND_WANTED: dict[str, str] = {"str": "a string", "int": "an integer", "number": "a number",
                                "bool": "a boolean (true/false)", "null": "null", "object": "a mapping",
                                "array": "a list"}


class _Compiler:
    def __init__(self, schemas: list[EventSchema] | None, resolve: Callable[[str, str], TypeSpec | None],
                 suggest: Callable[[str, str], str | None], errors: list[RuleError]) -> None:
        self.schemas = schemas
        self.resolve = resolve
        self.suggest = suggest
        self.errors = errors

    def err(self, pos: Position, msg: str) -> None:
        self.errors.append(RuleError(pos, msg))

    def types(self, path: str, pos: Position) -> list[tuple[str, TypeSpec]] | None:
        """The field's type in each event of `on`; None when unchecked ("*"); [] after an error."""
        if self.schemas is None:
            return None
        out = []
        ok = True
        for schema in self.schemas:
            ts = self.resolve(schema.name, path)
            if ts is None:
                hint = self.suggest(schema.name, path)
                fields = ", ".join(schema.fields) or "none"
                extra = f" (did you mean {hint!r}?)" if hint else f"; its fields: {fields}"
                self.err(pos, f"{schema.name} has no field {path!r}{extra}")
                ok = False
            else:
                out.append((schema.name, ts))
        return out if ok else []

    def check_lit(self, types: list[tuple[str, TypeSpec]] | None, value: Any, pos: Position, path: str) -> bool:
        if not types:
            return True
        for ev, ts in types:
            prob = literal_problem(ts, value)
            if prob:
                where = f" in {ev}" if self.schemas and len(self.schemas) > 1 else ""
                self.err(pos, f"{path}{where}: {prob}")
                return False
        return True

    def mapping(self, node: Node) -> Predicate | None:
        if not isinstance(node, MapNode):
            self.err(node.pos, f"match: expected a mapping of field tests, got {node.kind}")
            return None
        preds = []
        for key, sub in node.items():
            kpos = node.key_pos(key)
            p = self.combinator(key, sub) if key in COMBINATORS else self.field(key, kpos, sub)
            if p is not None:
                preds.append(p)
        return _all(preds)

    def combinator(self, key: str, node: Node) -> Predicate | None:
        if key == "not" and isinstance(node, MapNode):
            items: list[Node] = [node]
        elif isinstance(node, SeqNode):
            items = list(node.items)
            if not items:
                self.err(node.pos, f"{key}: expected a non-empty list of match mappings")
                return None
        else:
            what = "a mapping or a list of mappings" if key == "not" else "a list of match mappings"
            self.err(node.pos, f"{key}: expected {what}, got {node.kind}")
            return None
        subs = [self.mapping(n) for n in items]
        if any(s is None for s in subs):
            return None
        ps = [s for s in subs if s is not None]
        if key == "any":
            return lambda d: any(p(d) for p in ps)
        if key == "all":
            return _all(ps)
        return lambda d: not any(p(d) for p in ps)

    def field(self, path: str, kpos: Position, node: Node) -> Predicate | None:
        if not path or any(not p for p in path.split(".")):
            self.err(kpos, f"match: {path!r} is not a field path")
            return None
        types = self.types(path, kpos)
        if types == []:
            return None
        get = _getter(path)
        if isinstance(node, ScalarNode):
            if not self.check_lit(types, node.value, node.pos, path):
                return None
            return _op("eq", get, node.value)
        if isinstance(node, SeqNode):
            values = node.plain()
            ok = all(self.check_lit(types, n.plain(), n.pos, path) for n in node.items)
            return _op("in", get, values) if ok else None
        assert isinstance(node, MapNode)
        if len(node) != 1:
            self.err(node.pos, f"{path}: a test mapping takes exactly one operator ({', '.join(OPERATORS)}),"
                               f" got {len(node)}")
            return None
        ((op, arg),) = node.items()
        opos = node.key_pos(op)
        if op not in OPERATORS:
            hint = close_match(op, list(OPERATORS))
            self.err(opos, f"{path}: unknown operator {op!r}" + (f" (did you mean {hint!r}?)" if hint else
                                                                 f"; operators: {', '.join(OPERATORS)}"))
            return None
        value = arg.plain()
        if op in ("eq", "ne"):
            if not self.check_lit(types, value, arg.pos, path):
                return None
        elif op in ("in", "not_in"):
            if not isinstance(arg, SeqNode):
                self.err(arg.pos, f"{path}: {op} takes a list, got {arg.kind}")
                return None
            if not all(self.check_lit(types, n.plain(), n.pos, path) for n in arg.items):
                return None
        elif op in ("lt", "le", "gt", "ge"):
            if not (_num(value) or isinstance(value, str)):
                self.err(arg.pos, f"{path}: {op} takes a number, got {kind_of(value)} {value!r}")
                return None
            for _ev, ts in types or []:
                if ts.kind not in ("int", "number", "str", "any", "alternate") or (
                    ts.kind == "str" and not isinstance(value, str)) or (
                    ts.kind in ("int", "number") and not _num(value)):
                    self.err(arg.pos, f"{path}: {op} cannot compare {ts} with {kind_of(value)} {value!r}")
                    return None
        elif op in ("regex", "glob"):
            if not isinstance(value, str):
                self.err(arg.pos, f"{path}: {op} takes a string pattern, got {kind_of(value)}")
                return None
            if op == "regex":
                try:
                    re.compile(value)
                except re.error as err:
                    self.err(arg.pos, f"{path}: invalid regex {value!r}: {err}")
                    return None
            for ev, ts in types or []:
                if ts.kind not in ("str", "enum", "any", "alternate"):
                    self.err(arg.pos, f"{path}: {op} needs a string field, but it is {ts} in {ev}")
                    return None
        elif op == "contains":
            for ev, ts in types or []:
                if ts.kind == "array" and ts.items is not None:
                    if not self.check_lit([(ev, ts.items)], value, arg.pos, path):
                        return None
                elif ts.kind == "str":
                    if not isinstance(value, str):
                        self.err(arg.pos, f"{path}: contains on a string takes a string, got {kind_of(value)}")
                        return None
                elif ts.kind not in ("any", "object", "alternate"):
                    self.err(arg.pos, f"{path}: contains needs a string, list or mapping field, but it is {ts}")
                    return None
        elif op == "exists" and not isinstance(value, bool):
            self.err(arg.pos, f"{path}: exists takes true or false, got {kind_of(value)} {value!r}")
            return None
        return _op(op, get, value)


def _all(preds: list[Predicate]) -> Predicate:
    if not preds:
        return lambda d: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda d: a(d) and b(d)
    return lambda d: all(p(d) for p in preds)


def compile_match(
    node: Node,
    schemas: list[EventSchema] | None,
    resolve: Callable[[str, str], TypeSpec | None],
    suggest: Callable[[str, str], str | None],
    errors: list[RuleError],
) -> tuple[Predicate | None, dict[str, tuple[Any, ...]]]:
    """Compile a ``match`` node; also return its top-level literal equalities for indexing."""
    n = len(errors)
    pred = _Compiler(schemas, resolve, suggest, errors).mapping(node)
    literals: dict[str, tuple[Any, ...]] = {}
    if isinstance(node, MapNode) and len(errors) == n:
        for key, sub in node.items():
            if key in COMBINATORS:
                continue
            if isinstance(sub, ScalarNode) and _hashable_lit(sub.value):
                literals[key] = (sub.value,)
            elif isinstance(sub, SeqNode) and all(isinstance(i, ScalarNode) and _hashable_lit(i.plain())
                                                  for i in sub.items):
                literals[key] = tuple(sub.plain())
    return (pred if len(errors) == n else None), literals


def check_event_names(
    node: Node, catalog: Catalog, errors: list[RuleError], *, what: str = "", wildcard: bool = False,
    templates: bool = False,
) -> tuple[frozenset[str] | None, list[EventSchema] | None]:
    """Check an event name or a list of names against ``catalog``.

    Returns (the names, their schemas); (None, None) for ``"*"`` when ``wildcard``
    allows it; schemas None when a name is a template (``templates`` allows
    ``{{ }}``), which leaves a ``match`` on them unchecked.  Problems go to
    ``errors`` at the name's position, prefixed with ``what`` (``"wait_for: "``);
    valid names are still returned so that later checks can go on.
    """
    pre = f"{what}: " if what else ""
    items: list[Node] = list(node.items) if isinstance(node, SeqNode) else [node]
    if not items:
        errors.append(RuleError(node.pos, f"{pre}expected at least one event name"))
        return frozenset(), []
    names: list[str] = []
    schemas: list[EventSchema] | None = []
    for item in items:
        if not isinstance(item, ScalarNode) or not isinstance(item.value, str):
            errors.append(RuleError(item.pos, f"{pre}an event name must be a string, got {item.kind}"))
            continue
        name = item.value
        if name == "*" and wildcard:
            if len(items) > 1:
                errors.append(RuleError(item.pos, f"{pre}\"*\" matches every event; do not list it with other names"))
            return None, None
        if templates and "{{" in name:
            schemas = None
            continue
        schema = catalog.get(name)
        if schema is None:
            hint = catalog.suggest(name)
            errors.append(RuleError(item.pos, f"{pre}unknown event {name!r}" + (
                f" (did you mean {hint!r}?)" if hint else "; see `reactor events` for the catalog")))
            continue
        if name not in names:
            names.append(name)
            if schemas is not None:
                schemas.append(schema)
    return frozenset(names), schemas


@dataclass(frozen=True, slots=True)
class EventMatch:
    """An event-name list with a ``match`` on their data, checked against the catalog."""

    #: The literal event names (templated ones left out).
    names: frozenset[str]
    #: Their schemas; None when a name is a template (the match was not checked).
    schemas: list[EventSchema] | None
    #: The compiled ``match`` (None when there is none).
    match: Predicate | None
    #: The top-level literal equalities of ``match`` (for indexing).
    literals: dict[str, tuple[Any, ...]]


def compile_event_match(
    names: Node | None, match: Node | None, catalog: Catalog, errors: list[RuleError], *,
    what: str, at: Position, templates: bool = False,
) -> EventMatch | None:
    """Check (and compile) event names plus a ``match`` on their data, as ``on``/``match`` are checked.

    The one helper for every place that names events and matches their data
    (``wait_for``'s ``event``/``match``, rule keys such as ``after``/``unless``):
    unknown names and field paths, operators and literal types are reported to
    ``errors`` at their ``PATH:LINE:COL`` with "did you mean" hints, prefixed
    with ``what`` (``wait_for: unknown event 'RESUMED' (did you mean 'RESUME'?)``,
    ``wait_for.match: RESUME has no field 'foo'``).  ``at`` is where to report a
    missing name list.  Returns None when anything was wrong.
    """
    n = len(errors)
    if names is None or (isinstance(names, ScalarNode) and names.value is None):
        errors.append(RuleError(at, f"{what}: missing the event name (or a list of names)"))
        return None
    got, schemas = check_event_names(names, catalog, errors, what=what, templates=templates)
    pred: Predicate | None = None
    literals: dict[str, tuple[Any, ...]] = {}
    if match is not None and not (isinstance(match, ScalarNode) and match.value is None) and len(errors) == n:
        mine: list[RuleError] = []
        pred, literals = compile_match(match, schemas, catalog.resolve, catalog.suggest_field, mine)
        errors.extend(RuleError(e.position, f"{what}.match: {e.message}") for e in mine)
    if len(errors) > n:
        return None
    return EventMatch(names=got or frozenset(), schemas=schemas, match=pred, literals=literals)


def _hashable_lit(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def explain_match(node_value: Any, data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Which entries of a ``match`` mapping (as plain data) fail for ``data``, with values."""
    failures: list[str] = []
    if not isinstance(node_value, Mapping):
        return failures
    for key, want in node_value.items():
        if key in ("any", "all"):
            subs = want if isinstance(want, list) else [want]
            results = [explain_match(s, data) for s in subs]
            if key == "any" and all(results):
                failures.append(f"any: none of {len(subs)} held ({'; '.join(r[0] for r in results if r)})")
            if key == "all":
                failures.extend(f for r in results for f in r)
            continue
        if key == "not":
            subs = want if isinstance(want, list) else [want]
            for s in subs:
                if not explain_match(s, data):
                    failures.append(f"not: {s!r} held")
            continue
        value = _getter(key)(data)
        shown = "absent" if value is _MISSING else repr(value)
        if isinstance(want, Mapping) and len(want) == 1:
            ((op, lit),) = want.items()
            ok = _op(op, _getter(key), lit)(data) if op in OPERATORS else False
            if not ok:
                failures.append(f"{key}: {op} {lit!r} failed (value {shown})")
        elif isinstance(want, list):
            if not _op("in", _getter(key), want)(data):
                failures.append(f"{key}: not one of {want!r} (value {shown})")
        elif not _op("eq", _getter(key), want)(data):
            failures.append(f"{key}: expected {want!r} (value {shown})")
    return failures


class Matcher:
    """Finds the rules an event matches, without looking at rules for other events.

    Per event name (plus ``"*"`` rules) the matcher keeps an index on the VM
    name (rules whose ``vms`` are plain names) and on the one data field that
    most of that event's rules test for equality with literals, in ``match``
    or in an ``if`` (``event.data.device == 'vda'``, ``... in ['a', 'b']``,
    as ``and`` conjuncts), so at 10,000 rules an event only meets the rules
    that could match it.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.enabled)
        by_event: dict[str, list[Rule]] = {}
        wildcard: list[Rule] = []
        for r in self.rules:
            if r.on is None:
                wildcard.append(r)
            else:
                for name in r.on:
                    by_event.setdefault(name, []).append(r)
        self._wild = _Bucket(wildcard)
        self._buckets = {name: _Bucket(rs) for name, rs in by_event.items()}

    def candidates(self, event: Event) -> list[Rule]:
        b = self._buckets.get(event.name)
        if b is None:
            return self._wild.candidates(event) if self._wild.size else []
        if not self._wild.size:
            return b.candidates(event)
        out = b.candidates(event) + self._wild.candidates(event)
        out.sort(key=_by_index)
        return out

    def listening(self, name: str) -> list[Rule]:
        """Every enabled rule that listens to event ``name`` (for `explain`)."""
        b = self._buckets.get(name)
        out = (list(b.rules) if b else []) + list(self._wild.rules)
        out.sort(key=_by_index)
        return out


def _by_index(r: Rule) -> int:
    return r.index


def _if_literals(rule: Rule) -> dict[str, tuple[Any, ...]]:
    return rule.condition.data_literals() if rule.condition is not None else {}


class _Bucket:
    """The rules for one event name, indexed by VM name, then (for each VM's rules and for the others)
    by the data field whose literal tests narrow them most."""

    def __init__(self, rules: list[Rule], *, by_vm: bool = True) -> None:
        self.rules = rules
        self.size = len(rules)
        self.by_vm: dict[str, _Bucket] = {}
        rest: list[Rule] = []
        per_vm: dict[str, list[Rule]] = {}
        for r in rules:
            names = r.vms.literal_names() if by_vm and r.vms is not None else None
            if names:
                for n in names:
                    per_vm.setdefault(n, []).append(r)
            else:
                rest.append(r)
        # one VM's rules are indexed by their own most selective field in turn
        self.by_vm = {n: _Bucket(rs, by_vm=False) for n, rs in per_vm.items()}
        # the literals of `match` and those an `if` requires (`event.data.KEY == 'x'`, `... in [...]`)
        tests = {id(r): _if_literals(r) for r in rest}
        counts = Counter(k for r in rest for k in sorted({*(r.literals or {}), *tests[id(r)]}) if "." not in k)
        self.field: str | None = None
        self.get: Callable[[Mapping[str, Any]], Any] | None = None
        self.by_value: dict[Any, list[Rule]] = {}
        #: rules indexed by an `if` literal: candidates too when the field is absent, a bool or unhashable
        #: (their `if` then decides, and reports its errors, as without the index)
        self.loose: list[Rule] = []
        self.rest = rest
        if counts:
            top, uses = min(((k, n) for k, n in counts.items() if n >= 4),
                            key=lambda kn: self._cost(kn[0], rest, tests), default=("", 0))
            if uses >= 4:
                self.field = top
                self.get = _getter(top)
                rest2 = []
                for r in rest:
                    lits = (r.literals or {}).get(top)
                    if lits is None:
                        lits = tests[id(r)].get(top)
                        if lits is not None:
                            self.loose.append(r)
                    if lits is None:
                        rest2.append(r)
                    else:
                        for v in lits:
                            self.by_value.setdefault(v, []).append(r)
                self.rest = rest2

    @staticmethod
    def _cost(key: str, rules: list[Rule], tests: Mapping[int, Mapping[str, tuple[Any, ...]]]) -> int:
        """Candidates an event meets at worst with the index on ``key``: the rules that do not test
        it, plus the largest group of rules testing it for one value (the most selective field wins)."""
        per_value: Counter[Any] = Counter()
        without = 0
        for r in rules:
            lits = (r.literals or {}).get(key)
            if lits is None:
                lits = tests[id(r)].get(key)
            if lits is None:
                without += 1
            else:
                per_value.update(lits)
        return without + max(per_value.values(), default=0)

    def candidates(self, event: Event) -> list[Rule]:
        parts: list[list[Rule]] = []
        if self.by_vm:
            sub = self.by_vm.get(event.vm)
            if sub is not None:
                mine = sub.candidates(event)
                if mine:
                    parts.append(mine)
        if self.get is not None:
            v = self.get(event.data)
            if v is not _MISSING and not isinstance(v, bool):
                try:
                    got = self.by_value.get(v)
                except TypeError:
                    got = self.loose
                if got:
                    parts.append(got)
            elif self.loose:
                parts.append(self.loose)
        if self.rest:
            parts.append(self.rest)
        if not parts:
            return []
        if len(parts) == 1:
            return parts[0]
        out = [r for p in parts for r in p]
        out.sort(key=_by_index)
        return out
