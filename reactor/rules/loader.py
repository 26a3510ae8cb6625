"""The rule loader: rule files in, a checked :class:`~reactor.rules.rule.RuleSet` out.

Loading is all-or-nothing.  Every file is parsed and every rule checked
against the event catalog and the action registry; every problem is
collected with its ``PATH:LINE:COL`` and, if there is any, :class:`LoadError`
is raised with all of them in file order and nothing is returned.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reactor.actions.action import ActionSpec, Steps
from reactor.actions.registry import Registry, builtin_registry
from reactor.errors import LoadError, Position, RuleError, SourceError
from reactor.model.catalog import Catalog, default_catalog
from reactor.model.catalog.commands import CommandCatalog, default_commands
from reactor.model.catalog.schema import EventSchema, FieldSpec, TypeSpec
from reactor.model.duration import parse_duration
from reactor.rules.arguments import compile_arguments
from reactor.rules.command import check_command_call
from reactor.rules.matcher import check_event_names, compile_event_match, compile_match
from reactor.rules.rule import Correlation, Predicate, Retry, Rule, RuleSet, Step, Threshold, Throttle, VMSelector
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match, parse
from reactor.rules.template import RULE_NAMES, Expression, compile_expression

__all__ = ["CORRELATION_KEYS", "RULE_KEYS", "STEP_KEYS", "find_rule_files", "load_rules", "load_rules_text"]

log = logging.getLogger(__name__)

RULE_KEYS = ("name", "description", "on", "vms", "match", "if", "after", "count", "unless", "throttle", "threshold",
             "mode", "max_queued", "max_parallel", "enabled", "actions")
#: The keys of each correlation over time (``after``, ``count``, ``unless``).
CORRELATION_KEYS = {"after": ("event", "match", "within", "per"), "count": ("min", "within", "per"),
                    "unless": ("event", "match", "within", "per")}
STEP_KEYS = ("timeout", "retry", "on_error", "register", "when")
MODES = ("single", "queued", "parallel", "restart")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ANY = TypeSpec(kind="any")


def find_rule_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[RuleError]]:
    """Every ``*.yaml``/``*.yml`` below each directory (recursively, sorted), or the file itself."""
    files: list[Path] = []
    errors: list[RuleError] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleError(Position(str(path), 1, 1), "no such rules file or directory"))
    unique: dict[Path, Path] = {}   # a file reached twice (a directory given twice...) is read once
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), errors


class _FileRules:
    def __init__(self, path: str, items: list[MapNode]) -> None:
        self.path = path
        self.items = items


class _Loader:
    def __init__(self, catalog: Catalog, registry: Registry, commands: CommandCatalog | None) -> None:
        self.catalog = catalog
        self.registry = registry
        self._commands = commands
        self.errors: list[RuleError] = []
        self.names: dict[str, Position] = {}

    @property
    def commands(self) -> CommandCatalog:
        """The QMP command catalog, read when a step first needs it."""
        if self._commands is None:
            self._commands = default_commands()
        return self._commands

    def err(self, pos: Position, msg: str) -> None:
        self.errors.append(RuleError(pos, msg))

    # -- files ------------------------------------------------------------------------------

    def parse_file(self, text: str, path: str) -> _FileRules:
        problems: list[SourceError] = []   # keys left out (duplicates): reported with every other error
        try:
            root = parse(text, path, RuleError, problems=problems)
        except SourceError as err:
            problems.append(err)
            root = None
        self.errors.extend(e if isinstance(e, RuleError) else RuleError(e.position, e.message) for e in problems)
        if problems and root is None:
            return _FileRules(path, [])
        if root is None:
            log.warning("%s: empty rules file", path)
            return _FileRules(path, [])
        if not isinstance(root, MapNode):
            self.err(root.pos, f"expected a mapping with one key 'rules:', got {root.kind}")
            return _FileRules(path, [])
        for key in root.entries:
            if key != "rules":
                hint = " (did you mean 'rules'?)" if close_match(key, ["rules"]) else ""
                self.err(root.key_pos(key), f"unknown top-level key {key!r}{hint}; a rules file has only 'rules:'")
        rules = root.get("rules")
        if rules is None:
            if "rules" not in root:
                self.err(root.pos, "missing 'rules:' (a list of rules)")
            return _FileRules(path, [])
        if isinstance(rules, ScalarNode) and rules.value is None:
            log.warning("%s: 'rules:' is empty", path)
            return _FileRules(path, [])
        if not isinstance(rules, SeqNode):
            self.err(rules.pos, f"'rules' must be a list of rules, got {rules.kind}")
            return _FileRules(path, [])
        items = []
        for item in rules:
            if isinstance(item, MapNode):
                items.append(item)
            else:
                self.err(item.pos, f"a rule must be a mapping, got {item.kind}")
        return _FileRules(path, items)

    # -- emitted events ---------------------------------------------------------------------

    def collect_emitted(self, files: list[_FileRules]) -> dict[str, set[str]]:
        """Event names (and data keys) that rules emit, so `on:` may name them."""
        out: dict[str, set[str]] = {}
        for f in files:
            for rule in f.items:
                steps = rule.get("actions")
                if not isinstance(steps, SeqNode):
                    continue
                for step in _step_nodes(steps):
                    node = step.get("emit")
                    if node is None:
                        continue
                    name: Any = None
                    keys: set[str] = set()
                    if isinstance(node, ScalarNode):
                        name = node.value
                    elif isinstance(node, MapNode):
                        ev = node.get("event")
                        name = ev.value if isinstance(ev, ScalarNode) else None
                        data = node.get("data")
                        if isinstance(data, MapNode):
                            keys = set(data.entries)
                    if isinstance(name, str) and "{" not in name:
                        out.setdefault(name, set()).update(keys)
        return out

    def add_emitted(self, emitted: dict[str, set[str]]) -> None:
        for name, keys in sorted(emitted.items()):
            if name in self.catalog and not self.catalog.get(name).builtin:  # type: ignore[union-attr]
                continue  # a QMP event name: keep QEMU's schema
            existing = self.catalog.get(name)
            if existing is not None:
                keys = keys | set(existing.fields)
            fields = {k: FieldSpec(name=k, type=_ANY, optional=True, doc="set by an emit step") for k in sorted(keys)}
            self.catalog = self.catalog.with_event(
                EventSchema(name=name, fields=fields, doc="emitted by a rule", versions=(), builtin=True)
            )

    # -- rules ------------------------------------------------------------------------------

    def rule(self, node: MapNode, index: int) -> Rule | None:
        n_errors = len(self.errors)
        for key in node.entries:
            if key not in RULE_KEYS:
                hint = close_match(key, list(RULE_KEYS))
                self.err(node.key_pos(key), f"unknown rule key {key!r}"
                         + (f" (did you mean {hint!r}?)" if hint else f"; rule keys: {', '.join(RULE_KEYS)}"))
        name = self.rule_name(node)
        on_names, schemas = self.on(node)
        vms = self.vms(node.get("vms")) if "vms" in node else None
        match: Predicate | None = None
        literals: dict[str, tuple[Any, ...]] = {}
        mnode = node.get("match")
        written = mnode is not None and not (isinstance(mnode, ScalarNode) and mnode.value is None)
        if mnode is not None and written and (on_names is None or schemas is not None):
            match, literals = compile_match(mnode, schemas, self.catalog.resolve, self.catalog.suggest_field,
                                            self.errors)
        cond = self.expression(node, "if")
        corr = {form: self.correlation(node.get(form), form, schemas) for form in CORRELATION_KEYS if form in node}
        throttle = self.throttle(node.get("throttle"), schemas) if "throttle" in node else None
        threshold = self.threshold(node.get("threshold"), schemas) if "threshold" in node else None
        mode = self.choice(node, "mode", MODES, "single")
        max_queued = self.positive_int(node, "max_queued", 10)
        max_parallel = self.positive_int(node, "max_parallel", 10)
        enabled = self.boolean(node, "enabled", True)
        description = self.string(node, "description", "")
        steps = self.steps(node)
        if len(self.errors) > n_errors or name is None or steps is None:
            return None
        return Rule(
            name=name, pos=node.pos, on=on_names, steps=steps, description=description, vms=vms,
            match=match, literals=literals, match_source=mnode.plain() if mnode is not None else None,
            condition=cond, throttle=throttle, threshold=threshold, after=corr.get("after"),
            count=corr.get("count"), unless=corr.get("unless"), mode=mode,  # type: ignore[arg-type]
            max_queued=max_queued, max_parallel=max_parallel, enabled=enabled, index=index,
        )

    def rule_name(self, node: MapNode) -> str | None:
        n = node.get("name")
        if n is None:
            self.err(node.pos, "rule has no 'name'")
            return None
        if not isinstance(n, ScalarNode) or not isinstance(n.value, str):
            self.err(n.pos, f"rule name must be a string, got {n.kind}")
            return None
        if not NAME_RE.match(n.value):
            self.err(n.pos, f"invalid rule name {n.value!r}: use lower case letters, digits, '_', '.', '-' "
                            "(starting with a letter or digit)")
            return None
        first = self.names.get(n.value)
        if first is not None:
            self.err(n.pos, f"duplicate rule name {n.value!r} (first defined at {first})")
            return None
        self.names[n.value] = n.pos
        return n.value

    def on(self, node: MapNode) -> tuple[frozenset[str] | None, list[EventSchema] | None]:
        """(event names or None for "*", their schemas or None when unchecked)."""
        on = node.get("on")
        if on is None:
            self.err(node.pos, "rule has no 'on' (an event name, a list of names, or \"*\")")
            return frozenset(), []
        if isinstance(on, SeqNode) and not on.items:
            self.err(on.pos, "'on' must name at least one event")
            return frozenset(), []
        return check_event_names(on, self.catalog, self.errors, wildcard=True)

    def vms(self, node: Node | None) -> VMSelector | None:
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return None
        if isinstance(node, MapNode):
            if not node.entries:   # as `vms: []` is: a selector that says nothing is a mistake, not "every VM"
                self.err(node.pos, "vms: an empty mapping selects nothing; give names and/or labels, or leave "
                                   "vms out for every VM")
            for key in node.entries:
                if key not in ("names", "labels"):
                    hint = close_match(key, ["names", "labels"])
                    self.err(node.key_pos(key), f"vms: unknown key {key!r}"
                             + (f" (did you mean {hint!r}?)" if hint else "; use 'names' and 'labels'"))
            names = self.globs(node.get("names")) if "names" in node else ()
            labels: dict[str, str] = {}
            lab = node.get("labels")
            if lab is not None:
                if not isinstance(lab, MapNode):
                    self.err(lab.pos, f"vms.labels must be a mapping of label: value, got {lab.kind}")
                else:
                    for k, v in lab.items():
                        if not isinstance(v, ScalarNode) or v.value is None or isinstance(v.value, (list, dict)):
                            self.err(v.pos, f"label {k!r} must have a scalar value, got {v.kind}")
                        else:
                            labels[k] = str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
            return VMSelector(names=names or (), labels=labels)
        return VMSelector(names=self.globs(node), labels={})

    def globs(self, node: Node | None) -> tuple[str, ...]:
        if node is None:
            return ()
        items = list(node.items) if isinstance(node, SeqNode) else [node]
        if not items:
            self.err(node.pos, "vms: an empty list matches no VM; list VM name globs, or leave 'vms' out")
            return ()
        out = []
        for i in items:
            if isinstance(i, ScalarNode) and isinstance(i.value, (str, int)) and not isinstance(i.value, bool):
                out.append(str(i.value))
            else:
                self.err(i.pos, f"vms: expected a VM name glob, got {i.kind}")
        return tuple(out)

    def expression(self, node: MapNode, key: str) -> Expression | None:
        sub = node.get(key)
        if sub is None:
            return None
        if not isinstance(sub, ScalarNode) or not isinstance(sub.value, str):
            self.err(sub.pos, f"'{key}' must be an expression string, got {sub.kind}")
            return None
        try:
            return compile_expression(sub.value, sub.text_pos, f"'{key}'", names=RULE_NAMES)
        except RuleError as err:
            self.errors.append(err)
            return None

    def duration(self, node: Node, what: str, *, positive: bool = False) -> float | None:
        value = node.plain()
        try:
            secs = parse_duration(value)
        except ValueError as err:
            self.err(node.pos, f"{what}: {err}")
            return None
        if positive and secs <= 0:
            self.err(node.pos, f"{what}: must be greater than zero")
            return None
        return secs

    def throttle(self, node: Node | None, schemas: list[EventSchema] | None) -> Throttle | None:
        mnode, mx, secs = self.window(node, "throttle", "max", ["max", "within", "per"])
        if mnode is None:
            return None
        per = self.event_keys(mnode.get("per"), "throttle.per", schemas, ("vm",))
        if mx is None or secs is None or per is None:
            return None
        return Throttle(max=mx, within=secs, per=per)

    def window(self, node: Node | None, what: str, count_key: str,
               keys: list[str]) -> tuple[MapNode | None, int | None, float | None]:
        """What throttle and threshold share: a mapping of ``keys`` with a positive ``count_key`` and ``within``.

        Returns the mapping (None when it is not one), the count and the seconds (None where invalid).
        """
        if not isinstance(node, MapNode):
            self.err(node.pos if node is not None else Position("?", 1, 1),  # an empty list is falsy
                     f"{what} must be a mapping {{{', '.join(keys)}}}")
            return None, None, None
        for key in node.entries:
            if key not in keys:
                hint = close_match(key, keys)
                self.err(node.key_pos(key), f"{what}: unknown key {key!r}"
                         + (f" (did you mean {hint!r}?)" if hint else f"; keys: {', '.join(keys)}"))
        count: int | None = None
        cnode = node.get(count_key)
        if cnode is None:
            self.err(node.pos, f"{what}: missing {count_key!r}")
        elif not (isinstance(cnode, ScalarNode) and type(cnode.value) is int and cnode.value >= 1):
            self.err(cnode.pos, f"{what}.{count_key}: expected a positive integer, got {cnode.plain()!r}")
        else:
            count = int(cnode.value)
        within = node.get("within")
        secs = None
        if within is None:
            self.err(node.pos, f"{what}: missing 'within'")
        else:
            secs = self.duration(within, f"{what}.within", positive=True)
        return node, count, secs

    def event_keys(self, node: Node | None, what: str, schemas: list[EventSchema] | None,
                   default: tuple[str, ...]) -> tuple[str, ...] | None:
        """A key list of throttle/threshold: ``vm``, ``host`` or ``data.<path>`` (checked against ``on``)."""
        if node is None:
            return default
        keys: list[str] = []
        ok = True
        for i in list(node.items) if isinstance(node, SeqNode) else [node]:
            v = i.plain()
            if v in ("vm", "host"):
                keys.append(v)
            elif isinstance(v, str) and v.startswith("data.") and len(v) > 5:
                path = v[5:]
                for s in schemas or []:
                    if self.catalog.resolve(s.name, path) is None:
                        hint = self.catalog.suggest_field(s.name, path)
                        self.err(i.pos, f"{what}: {s.name} has no field {path!r}"
                                 + (f" (did you mean 'data.{hint}'?)" if hint else ""))
                        ok = False
                keys.append(v)
            else:
                self.err(i.pos, f"{what}: expected 'vm', 'host' or 'data.<field path>', got {v!r}")
                ok = False
        return tuple(keys) if ok else None

    def correlation(self, node: Node | None, form: str, schemas: list[EventSchema] | None) -> Correlation | None:
        """``after``/``unless`` ``{event, match, within, per}`` or ``count`` ``{min, within, per}``."""
        keys = list(CORRELATION_KEYS[form])
        if form == "count":
            mnode, n, secs = self.window(node, "count", "min", keys)
            if mnode is None:
                return None
            per = self.event_keys(mnode.get("per"), "count.per", schemas, ("vm",))
            if n is None or secs is None or per is None:
                return None
            return Correlation(form="count", within=secs, per=per, min=n, pos=mnode.pos)
        if not isinstance(node, MapNode):
            self.err(node.pos if node is not None else Position("?", 1, 1),
                     f"{form} must be a mapping {{{', '.join(keys)}}}")
            return None
        n_errors = len(self.errors)
        for key in node.entries:
            if key not in keys:
                hint = close_match(key, keys)
                self.err(node.key_pos(key), f"{form}: unknown key {key!r}"
                         + (f" (did you mean {hint!r}?)" if hint else f"; keys: {', '.join(keys)}"))
        names, own = self.correlated_events(node, form)
        match: Predicate | None = None
        cnode = node.get("match")
        written = cnode is not None and not (isinstance(cnode, ScalarNode) and cnode.value is None)
        if cnode is not None and written and names:
            match, _ = compile_match(cnode, own, self.catalog.resolve, self.catalog.suggest_field, self.errors)
        within = node.get("within")
        secs = None
        if within is None:
            self.err(node.pos, f"{form}: missing 'within' (how long to look, e.g. 30s)")
        else:
            secs = self.duration(within, f"{form}.within", positive=True)
        # a key must exist in the trigger's events and in the correlated ones (both sides compute it)
        per = self.event_keys(node.get("per"), f"{form}.per", (schemas or []) + own, ("vm",))
        if len(self.errors) > n_errors or secs is None or per is None or not names:
            return None
        return Correlation(form=form, within=secs, per=per, events=frozenset(names),  # type: ignore[arg-type]
                           match=match, match_source=cnode.plain() if written and cnode is not None else None,
                           pos=node.pos)

    def correlated_events(self, node: MapNode, form: str) -> tuple[list[str], list[EventSchema]]:
        """The ``event`` of ``after``/``unless``: a name or a list of names from the catalog (no "*")."""
        ev = node.get("event")
        if ev is None:
            self.err(node.pos, f"{form}: missing 'event' (an event name or a list of names)")
            return [], []
        for item in ev.items if isinstance(ev, SeqNode) else [ev]:
            if isinstance(item, ScalarNode) and item.value == "*":
                self.err(item.pos, f"{form}.event: name the events (\"*\" is not allowed here)")
                return [], []
        names, schemas = check_event_names(ev, self.catalog, self.errors, what=f"{form}.event")
        return sorted(names or ()), list(schemas or ())

    def threshold(self, node: Node | None, schemas: list[EventSchema] | None) -> Threshold | None:
        mnode, count, secs = self.window(node, "threshold", "count", ["count", "within", "distinct", "per"])
        if mnode is None:
            return None
        distinct = self.event_keys(mnode.get("distinct"), "threshold.distinct", schemas, ("host", "vm"))
        per = self.event_keys(mnode.get("per"), "threshold.per", schemas, ())
        if count is None or secs is None or distinct is None or per is None:
            return None
        return Threshold(count=count, within=secs, distinct=distinct, per=per)

    def choice(self, node: MapNode, key: str, choices: Sequence[str], default: str) -> str:
        sub = node.get(key)
        if sub is None:
            return default
        v = sub.plain()
        if v not in choices:
            hint = close_match(str(v), list(choices))
            self.err(sub.pos, f"{key}: {v!r} is not one of {', '.join(choices)}"
                     + (f" (did you mean {hint!r}?)" if hint else ""))
            return default
        return str(v)

    def positive_int(self, node: MapNode, key: str, default: int) -> int:
        sub = node.get(key)
        if sub is None:
            return default
        v = sub.plain()
        if type(v) is not int or v < 1:
            self.err(sub.pos, f"{key}: expected a positive integer, got {v!r}")
            return default
        return v

    def boolean(self, node: MapNode, key: str, default: bool) -> bool:
        sub = node.get(key)
        if sub is None:
            return default
        v = sub.plain()
        if not isinstance(v, bool):
            self.err(sub.pos, f"{key}: expected true or false, got {v!r}")
            return default
        return v

    def string(self, node: MapNode, key: str, default: str) -> str:
        sub = node.get(key)
        if sub is None:
            return default
        v = sub.plain()
        if not isinstance(v, str):
            self.err(sub.pos, f"{key}: expected a string, got {sub.kind}")
            return default
        return v

    # -- steps ------------------------------------------------------------------------------

    def steps(self, node: MapNode) -> tuple[Step, ...] | None:
        acts = node.get("actions")
        if acts is None:
            self.err(node.pos, "rule has no 'actions' (a list of steps)")
            return None
        if not isinstance(acts, SeqNode) or not acts.items:
            self.err(acts.pos, "'actions' must be a non-empty list of steps")
            return None
        steps = []
        ok = True
        for i, s in enumerate(acts):
            step = self.step(s, i)
            if step is None:
                ok = False
            else:
                steps.append(step)
        return tuple(steps) if ok else None

    def nested_steps(self, node: Node, what: str) -> Steps | None:
        """A list of steps inside an action's arguments (``resume: {probe: [...]}``), checked like ``actions``."""
        if not isinstance(node, SeqNode):
            self.err(node.pos, f"{what}: expected a list of steps, got {node.kind}")
            return None
        n_errors = len(self.errors)
        steps = [self.step(s, i) for i, s in enumerate(node)]
        if len(self.errors) > n_errors:
            return None
        return Steps(s for s in steps if s is not None)

    def step(self, node: Node, index: int) -> Step | None:
        if isinstance(node, ScalarNode) and isinstance(node.value, str):
            spec = self.registry.get(node.value)
            if spec is None:
                self.unknown_action(node.value, node.pos)
            else:
                self.err(node.pos, f"a step is a mapping: write '{spec.name}: ARGUMENTS', not a bare name")
            return None
        if not isinstance(node, MapNode):
            self.err(node.pos, f"a step must be a mapping with one action, got {node.kind}")
            return None
        action_keys = [k for k in node.entries if k not in STEP_KEYS]
        if not action_keys:
            self.err(node.pos, f"step has no action; actions: {', '.join(self.registry.names())}")
            return None
        n_errors = len(self.errors)
        specs: list[tuple[str, ActionSpec]] = []
        for k in action_keys:
            spec = self.registry.get(k)
            if spec is None:
                self.unknown_action(k, node.key_pos(k))
            else:
                specs.append((k, spec))
        if len(specs) > 1:
            self.err(node.key_pos(specs[1][0]), f"a step has exactly one action; found {specs[0][0]!r} and "
                                                f"{specs[1][0]!r} (use two steps)")
        if len(self.errors) > n_errors or not specs:
            return None
        key, spec = specs[0]
        value = node.get(key)
        assert value is not None
        args = compile_arguments(spec, value, node.key_pos(key), self.errors, steps=self.nested_steps,
                                 names=RULE_NAMES)
        if args is not None:
            self.references(spec, value, node.key_pos(key))
        timeout = None
        if "timeout" in node:
            t = node.get("timeout")
            assert t is not None
            timeout = self.duration(t, "timeout", positive=True)
        retry = self.retry(node.get("retry")) if "retry" in node else None
        on_error = self.choice(node, "on_error", ("stop", "continue"), "stop")
        register = None
        reg = node.get("register")
        if reg is not None:
            if isinstance(reg, ScalarNode) and isinstance(reg.value, str) and VAR_RE.match(reg.value):
                register = reg.value
            else:
                self.err(reg.pos, f"register: expected a variable name (letters, digits, _), got {reg.plain()!r}")
        when = self.expression(node, "when")
        if len(self.errors) > n_errors or args is None:
            return None
        return Step(index=index, action=spec, args=args, pos=node.pos, timeout=timeout, retry=retry,
                    on_error=on_error, register=register, when=when)  # type: ignore[arg-type]

    def references(self, spec: ActionSpec, value: Node, key_pos: Position) -> None:
        """Check the events and QMP command a step's arguments name against the catalogs."""
        def arg(name: str | None) -> Node | None:
            if name is None:
                return None
            if isinstance(value, MapNode):
                return value.get(name)
            return value if name == spec.shorthand else None

        if spec.events is not None and (names := arg(spec.events[0])) is not None:
            compile_event_match(names, arg(spec.events[1]), self.catalog, self.errors, what=spec.name,
                                at=key_pos, templates=True)
        if spec.command is not None and (command := arg(spec.command[0])) is not None:
            check_command_call(command, arg(spec.command[1]), self.commands, self.errors, what=spec.name)

    def unknown_action(self, name: str, pos: Position) -> None:
        hint = close_match(name, self.registry.names() + list(STEP_KEYS))
        self.err(pos, f"unknown action {name!r}" + (f" (did you mean {hint!r}?)" if hint else
                                                    f"; actions: {', '.join(self.registry.names())}"))

    def retry(self, node: Node | None) -> Retry | None:
        if not isinstance(node, MapNode):
            assert node is not None
            self.err(node.pos, "retry must be a mapping {attempts, backoff, max_backoff}")
            return None
        keys = ("attempts", "backoff", "max_backoff")
        for key in node.entries:
            if key not in keys:
                hint = close_match(key, list(keys))
                self.err(node.key_pos(key), f"retry: unknown key {key!r}"
                         + (f" (did you mean {hint!r}?)" if hint else "; keys: attempts, backoff, max_backoff"))
        att = node.get("attempts")
        attempts = 3
        if att is not None:
            v = att.plain()
            if type(v) is not int or v < 1:
                self.err(att.pos, f"retry.attempts: expected a positive integer, got {v!r}")
            else:
                attempts = v
        b = node.get("backoff")
        backoff = self.duration(b, "retry.backoff") if b is not None else 1.0
        mb = node.get("max_backoff")
        max_backoff = self.duration(mb, "retry.max_backoff") if mb is not None else 60.0
        if backoff is None or max_backoff is None:
            return None
        return Retry(attempts=attempts, backoff=backoff, max_backoff=max_backoff)


def _step_nodes(steps: SeqNode) -> list[MapNode]:
    """The step mappings of a list, with those nested in their arguments (``resume: {probe: [...]}``)."""
    out: list[MapNode] = []
    for step in steps:
        if not isinstance(step, MapNode):
            continue
        out.append(step)
        for key, args in step.items():
            if key in STEP_KEYS or not isinstance(args, MapNode):
                continue
            for _, value in args.items():
                if isinstance(value, SeqNode) and any(isinstance(i, MapNode) for i in value):
                    out.extend(_step_nodes(value))
    return out


def load_rules_text(
    files: Sequence[tuple[str, str]], *, catalog: Catalog | None = None, registry: Registry | None = None,
    commands: CommandCatalog | None = None,
) -> RuleSet:
    """Load rules from ``(path, text)`` pairs; raises :class:`LoadError` with every problem."""
    loader = _Loader(catalog if catalog is not None else default_catalog(),
                     registry if registry is not None else builtin_registry(), commands)
    parsed = [loader.parse_file(text, path) for path, text in files]
    emitted = loader.collect_emitted(parsed)
    loader.add_emitted(emitted)
    rules: list[Rule] = []
    index = 0
    for f in parsed:
        for item in f.items:
            r = loader.rule(item, index)
            index += 1
            if r is not None:
                rules.append(r)
    if loader.errors:
        unique = {(str(e.position), e.message): e for e in loader.errors}   # one problem found twice, once
        raise LoadError(sorted(unique.values(), key=_order(files)))
    return RuleSet(rules=tuple(rules), sources=tuple(p for p, _ in files), emitted=frozenset(emitted))


def _order(files: Sequence[tuple[str, str]]) -> Any:
    rank = {p: i for i, (p, _) in enumerate(files)}

    def key(e: SourceError) -> tuple[int, int, int]:
        if e.position is None:
            return (-1, 0, 0)
        return (rank.get(e.position.path, -1), e.position.line, e.position.col)

    return key


def load_rules(
    paths: Iterable[str | Path], *, catalog: Catalog | None = None, registry: Registry | None = None,
    commands: CommandCatalog | None = None,
) -> RuleSet:
    """Load every rule file under ``paths``; raises :class:`LoadError` listing every problem."""
    files, errors = find_rule_files(paths)
    texts: list[tuple[str, str]] = []
    for f in files:
        try:
            texts.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            errors.append(RuleError(Position(str(f), 1, 1), f"cannot read: {err}"))
    if errors:
        raise LoadError(list(errors))
    return load_rules_text(texts, catalog=catalog, registry=registry, commands=commands)
