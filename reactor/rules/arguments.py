"""Action arguments: checked against the action's dataclass at load, rendered per run.

:func:`compile_arguments` turns the YAML node under an action key into an
:class:`Arguments` plan.  Literal values are converted and checked at load
(errors at the value's ``PATH:LINE:COL``); values containing templates are
compiled at load and converted after rendering.  When a step has no templates
at all, the dataclass instance is built once, at load.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from reactor.actions.action import ActionSpec, Duration, Steps
from reactor.errors import ArgumentErrors, Position, ProblemKey, RuleError, TemplateError
from reactor.model.duration import parse_duration
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match, kind_of
from reactor.rules.template import Template, compile_template, is_template

__all__ = ["Arguments", "compile_arguments", "convert", "describe_type", "redact"]

_MISSING = object()
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authori[sz]ation|api[-_]?key|cookie", re.I)
REDACTED = "***"


def describe_type(hint: Any) -> str:
    """A short human name for a type hint (for errors and `reactor plugins`)."""
    if hint is Duration:
        return "duration"
    if hint is Steps:
        return "list of steps"
    if hint in (Any, object):
        return "any"
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(hint, hint.__name__)
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(hint))
    if origin in (list, typing.Sequence, tuple):
        args = get_args(hint)
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, Mapping, typing.Mapping):
        args = get_args(hint)
        return f"mapping of {describe_type(args[1])}" if len(args) == 2 else "mapping"
    return str(hint)


def convert(hint: Any, value: Any, *, rendered: bool = False) -> Any:
    """Convert a plain value to ``hint``; ValueError with a user-facing message.

    ``rendered`` values came out of a template: text may then stand for a
    number, a boolean or a duration.
    """
    if hint in (Any, object):
        return value
    if hint is Duration:
        return Duration(parse_duration(value))
    if hint is Steps:
        if isinstance(value, Steps):
            return value
        raise ValueError("a list of steps is compiled by the rule loader (write it in a rule)")
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        present = [opt for opt in options if opt is not type(None)]
        if len(present) == 1:  # `T | None` with a value: T's own, more precise, error
            return convert(present[0], value, rendered=rendered)
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return convert(opt, value, rendered=rendered)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"expected {describe_type(hint)}, got {kind_of(value)} {value!r}")
    if origin is Literal:
        choices = get_args(hint)
        if value in choices and not isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(str(c) for c in choices)}")
    if origin in (list, typing.Sequence, tuple):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {kind_of(value)}")
        (item,) = get_args(hint)[:1] or (Any,)
        items = []
        for i, v in enumerate(value):
            try:
                items.append(convert(item, v, rendered=rendered))
            except ValueError as err:
                raise ValueError(f"[{i}]: {err}") from err
        return items
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {kind_of(value)}")
        args = get_args(hint)
        vt = args[1] if len(args) == 2 else Any
        entries = {}
        for k, v in value.items():
            try:
                entries[str(k)] = convert(vt, v, rendered=rendered)
            except ValueError as err:
                raise ValueError(f"{k}: {err}") from err
        return entries
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {kind_of(value)}")
        return _construct(hint, value, rendered)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if rendered and value is not None:
            return str(value)
        raise ValueError(f"expected a string, got {kind_of(value)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if rendered and isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
            return value.strip().lower() in ("true", "yes")
        raise ValueError(f"expected a boolean, got {kind_of(value)} {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if rendered and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {kind_of(value)} {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if rendered and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {kind_of(value)} {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ValueError(f"expected {describe_type(hint)}, got {kind_of(value)}")


def _construct(cls: type, value: Mapping[str, Any], rendered: bool) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            try:
                kwargs[f.name] = convert(hints[f.name], value[f.name], rendered=rendered)
            except ValueError as err:
                raise ValueError(f"{f.name}: {err}") from err
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing required argument {f.name!r}")
    unknown = set(value) - set(hints)
    if unknown:
        raise ValueError(f"unknown argument {sorted(unknown)[0]!r}")
    return cls(**kwargs)


# --- compiled values -------------------------------------------------------------------

class _Tree:
    """A value with templates inside: rendered to plain data per run."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def render(self, names: Mapping[str, Any]) -> Any:
        return _render(self.value, names)


def _render(value: Any, names: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(names)
    if isinstance(value, list):
        return [_render(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, names) for k, v in value.items()}
    return value


def _compile_tree(node: Node, names: Collection[str] | None) -> tuple[Any, bool]:
    """(value with Templates in place of template strings, has_templates)."""
    if isinstance(node, ScalarNode):
        if is_template(node.value):
            return compile_template(node.value, node.text_pos, names=names), True
        return node.value, False
    if isinstance(node, SeqNode):
        items = [_compile_tree(n, names) for n in node.items]
        return [v for v, _ in items], any(t for _, t in items)
    assert isinstance(node, MapNode)
    entries = {k: _compile_tree(v, names) for k, v in node.items()}
    return {k: v for k, (v, _) in entries.items()}, any(t for _, t in entries.values())


_ITEM = re.compile(r"^\[(\d+)\]: ")


def _node_at(node: Node, msg: str) -> Position:
    """Best position for a conversion error: the (nested) list item or key it names."""
    if isinstance(node, MapNode):
        key, sep, rest = msg.partition(": ")
        sub = node.get(key) if sep else None
        if sub is not None:
            return _node_at(sub, rest)
    elif isinstance(node, SeqNode):
        m = _ITEM.match(msg)
        if m and int(m.group(1)) < len(node.items):
            return _node_at(node.items[int(m.group(1))], msg[m.end():])
    return node.pos


class Arguments:
    """The compiled arguments of one step."""

    __slots__ = ("fields", "raw", "shown", "spec", "static")

    def __init__(self, spec: ActionSpec, fields: dict[str, Any], static: Any, raw: Any) -> None:
        self.spec = spec
        #: field name -> converted literal, or a _Tree to render per run
        self.fields = fields
        #: the dataclass instance when no field has a template, else None
        self.static = static
        #: the arguments as written (for dry runs and `reactor check --verbose`)
        self.raw = raw
        #: the static arguments with secrets redacted (computed once)
        self.shown = redact(spec, static) if static is not None else None

    def build(self, names: Mapping[str, Any]) -> Any:
        """The dataclass instance for one run; TemplateError when rendering fails."""
        if self.static is not None:
            return self.static
        values: dict[str, Any] = {}
        for key, value in self.fields.items():
            if isinstance(value, _Tree):
                rendered = value.render(names)
                try:
                    values[key] = convert(self.spec.hints[key], rendered, rendered=True)
                except ValueError as err:
                    raise TemplateError(f"argument {key!r}: {err}") from err
            else:
                values[key] = value
        args = self.spec.args(**values)
        if self.spec.check is not None:
            try:
                self.spec.check(args)
            except ValueError as err:
                raise TemplateError(f"{self.spec.name}: {err}") from err
        return args


#: Compiles a list of steps (the loader's): the node, what it is for errors; None after appending errors.
StepsCompiler = Callable[[Node, str], Steps | None]


def _steps_hint(hint: Any) -> bool:
    return hint is Steps or (get_origin(hint) in (Union, types.UnionType) and Steps in get_args(hint))


def compile_arguments(spec: ActionSpec, node: Node, key_pos: Position, errors: list[RuleError], *,
                      steps: StepsCompiler | None = None, names: Collection[str] | None = None) -> Arguments | None:
    """Compile the value under action key ``spec.name``; append problems to ``errors``.

    Fields typed :class:`~reactor.actions.action.Steps` are compiled by ``steps`` (the loader's step
    compiler), so nested steps are checked like a rule's.  With ``names``, a template reading another
    name is an error.
    """
    n_before = len(errors)
    fields = {f.name: f for f in dataclasses.fields(spec.args)}
    mapping = _written(spec, node)
    if mapping is None:
        errors.append(RuleError(node.pos, f"{spec.name}: expected a mapping of arguments, got {node.kind}"))
        return None
    out: dict[str, Any] = {}
    hinted: set[str] = set()
    for key, sub in mapping.items():
        if key not in fields:
            hint = close_match(key, list(fields))
            if hint is not None:
                hinted.add(hint)
            where = node.key_pos(key) if isinstance(node, MapNode) else sub.pos
            errors.append(RuleError(
                where,
                f"{spec.name}: unknown argument {key!r}"
                + (f" (did you mean {hint!r}?)" if hint else f"; arguments are: {', '.join(fields)}"),
            ))
            continue
        if _steps_hint(spec.hints[key]):
            if isinstance(sub, ScalarNode) and sub.value is None:
                out[key] = Steps()
                continue
            if steps is None:
                errors.append(RuleError(sub.pos, f"{spec.name}: argument {key!r}: nested steps are not "
                                                 "supported here"))
                continue
            compiled = steps(sub, f"{spec.name}.{key}")
            if compiled is not None:
                out[key] = compiled
            continue
        try:
            value, templated = _compile_tree(sub, names)
        except RuleError as err:
            errors.append(err)
            continue
        if templated:
            out[key] = _Tree(value)
            continue
        try:
            out[key] = convert(spec.hints[key], sub.plain())
        except ValueError as err:
            errors.append(RuleError(_node_at(sub, str(err)), f"{spec.name}: argument {key!r}: {err}"))
    for name, f in fields.items():
        if name in hinted:
            continue  # already reported as "unknown argument ... (did you mean NAME?)"
        if name not in mapping and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(RuleError(key_pos, f"{spec.name}: missing required argument {name!r}"))
    if len(errors) > n_before:
        _check_the_rest(spec, out, node, errors)
        return None
    static = None
    if not any(isinstance(v, _Tree) for v in out.values()):
        try:
            static = spec.args(**out)
        except (TypeError, ValueError) as err:
            errors.append(RuleError(key_pos, f"{spec.name}: {err}"))
            return None
        if spec.check is not None:
            try:
                spec.check(static)
            except ValueError as err:
                errors.extend(_check_errors(spec, err, node))
                return None
    return Arguments(spec, out, static, node.plain())


def _check_the_rest(spec: ActionSpec, good: dict[str, Any], node: Node, errors: list[RuleError]) -> None:
    """The action's own check over the arguments that compiled, the others at their defaults, so that
    one load reports every mistake (``attempts: 0`` next to a bad ``settle``); skipped when an argument
    without a default failed, or one is a template (checked per run)."""
    if spec.check is None or any(isinstance(v, _Tree) for v in good.values()):
        return
    try:
        partial = spec.args(**good)
    except (TypeError, ValueError):
        return
    try:
        spec.check(partial)
    except ValueError as err:
        # a problem about an argument that failed (so is at its default here) is not the rule's
        failed = frozenset(_written(spec, node) or ()) - set(good)
        errors.extend(_check_errors(spec, err, node, failed))


def _written(spec: ActionSpec, node: Node) -> dict[str, Node] | None:
    """The arguments the step writes, by name (its scalar form under the shorthand); None when ``node``
    is neither a mapping nor a form the action takes."""
    if isinstance(node, MapNode):
        return dict(node.items())
    if isinstance(node, ScalarNode) and node.value is None:
        return {}
    return {spec.shorthand: node} if spec.shorthand is not None else None


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _keys(key: ProblemKey) -> tuple[str, ...]:
    return () if key is None else (key,) if isinstance(key, str) else tuple(key)


def _argument(path: str) -> str:
    """The argument a problem key's path starts with (``event`` of ``event[1]``)."""
    m = _PATH_PART.match(path)
    return (m.group(2) or "") if m else ""


def _problem_at(spec: ActionSpec, node: Node, key: ProblemKey, msg: str) -> Position:
    """Where a problem of an :class:`ArgumentErrors` is: the value its (first written) key names."""
    written = _written(spec, node) or {}
    for path in _keys(key):
        parts = _PATH_PART.findall(path)
        if not parts or not parts[0][1] or parts[0][1] not in written:
            continue
        name = parts[0][1]
        sub = written[name]
        for index, part in parts[1:]:
            nxt = (sub.items[int(index)] if index and isinstance(sub, SeqNode) and int(index) < len(sub.items)
                   else sub.get(part) if part and isinstance(sub, MapNode) else None)
            if nxt is None:
                return sub.pos
            sub = nxt
        if len(parts) == 1 and msg.startswith(f"{name}: "):
            return _node_at(sub, msg[len(name) + 2:])   # "match: x: ..." still finds key x
        return sub.pos
    return _node_at(node, msg)


def _check_errors(spec: ActionSpec, err: ValueError, node: Node,
                  skip: frozenset[str] = frozenset()) -> list[RuleError]:
    """The load errors of what an action's ``check`` raised: one per problem of an
    :class:`ArgumentErrors` (but those about an argument in ``skip``), else one."""
    if not isinstance(err, ArgumentErrors) or not err.problems:
        return [RuleError(_node_at(node, str(err)), f"{spec.name}: {err}")]
    return [RuleError(_problem_at(spec, node, key, msg), f"{spec.name}: {msg}")
            for key, msg in err.problems
            if not any(_argument(path) in skip for path in _keys(key))]


def redact(spec: ActionSpec, args: Any) -> Any:
    """The arguments as plain data with secrets replaced by ``***``."""
    if dataclasses.is_dataclass(args) and not isinstance(args, type):
        out = {}
        for f in dataclasses.fields(args):
            value = getattr(args, f.name)
            if f.metadata.get("secret") or _SECRET_KEY.search(f.name):
                out[f.name] = REDACTED if value is not None else None
            else:
                out[f.name] = _redact_value(value)
        return out
    return _redact_value(args)


def _redact_value(value: Any) -> Any:
    if isinstance(value, Steps):
        return [step.describe() for step in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _redact_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _redact_value(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value
