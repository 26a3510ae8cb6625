"""Sandboxed Jinja2 templates and ``if``/``when`` expressions.

Templates and expressions are compiled once, when rules load, in Jinja2's
immutable sandbox (no access to Python internals, no mutation of event data,
no I/O).  Rendering is bounded: ``range`` and repetition share a per-render
budget and the output has a size limit, so a template cannot hang the engine
or build a gigabyte string.  An undefined name is an error, never "".

A template that is exactly one ``{{ expression }}`` renders to the
expression's native value (a number stays a number), as in Home Assistant.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jinja2
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import Position, RuleError, TemplateError

__all__ = ["Expression", "Limits", "Template", "compile_expression", "compile_template", "is_template", "to_jsonable"]

#: Bounds for one render.
MAX_OUTPUT = 1 << 20          # characters in a rendered string
MAX_ITERATIONS = 100_000      # range() items and repetitions per render
MAX_POWER_DIGITS = 10_000


class Limits:
    """A per-render budget (not thread-safe; rendering is on the event loop)."""

    budget = MAX_ITERATIONS


def _spend(n: int) -> None:
    Limits.budget -= n
    if Limits.budget < 0:
        raise TemplateError(f"template exceeded its budget of {MAX_ITERATIONS} iterations")


def _bounded_range(*args: int) -> Iterator[int]:
    r = range(*args)
    _spend(len(r))
    return iter(r)


def to_jsonable(value: Any) -> Any:
    """``orjson`` default: views and events become their QMP form, the rest str()."""
    to_qmp = getattr(value, "to_qmp", None)
    if callable(to_qmp):
        return to_qmp()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    opts = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=to_jsonable, option=opts).decode()


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+"])

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool):
                    if len(seq) * n > MAX_OUTPUT:
                        raise TemplateError("template tried to build a value over the size limit")
                    _spend(max(n, 0))
            return operator.mul(left, right)
        if operator_ == "**":
            if (isinstance(left, int) and isinstance(right, int) and right > 0 and left not in (0, 1, -1)
                    and right * math.log10(abs(left)) > MAX_POWER_DIGITS):
                raise TemplateError("template tried to compute a number over the size limit")
            return operator.pow(left, right)
        result = operator.add(left, right)
        if isinstance(result, (str, list)) and len(result) > MAX_OUTPUT:
            raise TemplateError("template tried to build a value over the size limit")
        return result


def _make_env() -> _Env:
    env = _Env(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals["range"] = _bounded_range
    env.filters["tojson"] = _tojson
    env.filters["to_json"] = _tojson
    env.filters["from_json"] = orjson.loads
    return env


ENV = _make_env()
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%|\{#).)*)\}\}\s*$", re.S)


def is_template(value: object) -> bool:
    """Whether a string argument is a template (contains ``{{`` or ``{%``)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _syntax_error(err: jinja2.TemplateSyntaxError, text: str, pos: Position, what: str) -> RuleError:
    line = pos.line + max((err.lineno or 1) - 1, 0)
    col = pos.col if line == pos.line else 1
    return RuleError(Position(pos.path, line, col), f"{what} syntax error: {err.message}")


def _render_error(err: Exception, what: str) -> TemplateError:
    if isinstance(err, TemplateError):
        return err
    if isinstance(err, jinja2.UndefinedError):
        return TemplateError(f"{what}: undefined: {err.message}")
    if isinstance(err, jinja2.exceptions.SecurityError):
        return TemplateError(f"{what}: not allowed in the sandbox: {err}")
    return TemplateError(f"{what}: {type(err).__name__}: {err}")


def _undefined_name(value: jinja2.Undefined) -> str:
    name = getattr(value, "_undefined_name", None)
    return repr(name) if name else "a value"


class Template:
    """A compiled string template."""

    __slots__ = ("_fn", "native", "source")

    def __init__(self, source: str, fn: Callable[[Mapping[str, Any]], Any], native: bool) -> None:
        self.source = source
        self._fn = fn
        self.native = native

    def render(self, names: Mapping[str, Any]) -> Any:
        """Render with ``names``; raises TemplateError (never returns "" for undefined)."""
        Limits.budget = MAX_ITERATIONS
        try:
            out = self._fn(names)
        except Exception as err:
            raise _render_error(err, f"template {self.source!r}") from err
        if isinstance(out, str) and len(out) > MAX_OUTPUT:
            raise TemplateError(f"template {self.source!r}: output over {MAX_OUTPUT} characters")
        if isinstance(out, jinja2.Undefined):
            raise TemplateError(f"template {self.source!r}: {_undefined_name(out)} is undefined")
        return out

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class Expression:
    """A compiled boolean-ish expression (``if``, ``when``)."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: Callable[..., Any]) -> None:
        self.source = source
        self._fn = fn

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        Limits.budget = MAX_ITERATIONS
        try:
            value = self._fn(**names)
        except Exception as err:
            raise _render_error(err, f"expression {self.source!r}") from err
        if isinstance(value, jinja2.Undefined):
            raise TemplateError(f"expression {self.source!r}: {_undefined_name(value)} is undefined")
        return value

    def test(self, names: Mapping[str, Any]) -> bool:
        return bool(self.evaluate(names))

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(text: str, pos: Position, what: str = "expression") -> Expression:
    """Compile ``text`` (Jinja2 expression syntax); RuleError at ``pos`` on a syntax error."""
    src = text.strip()
    if src.startswith("{{") and src.endswith("}}"):
        src = src[2:-2]
    try:
        fn = ENV.compile_expression(src, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, text, pos, what) from err
    return Expression(text, fn)


def compile_template(text: str, pos: Position) -> Template:
    """Compile a template string; one bare ``{{ expr }}`` keeps its native type."""
    m = _SINGLE.match(text)
    try:
        if m:
            expr = ENV.compile_expression(m.group("expr"), undefined_to_none=False)
            return Template(text, lambda names: expr(**names), native=True)
        tmpl = ENV.from_string(text)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, text, pos, "template") from err
    return Template(text, tmpl.render, native=False)
