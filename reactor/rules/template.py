"""Sandboxed Jinja2 templates and ``if``/``when`` expressions.

Templates and expressions are compiled once, when rules load, in Jinja2's
immutable sandbox (no access to Python internals, no mutation of event data,
no I/O).  Rendering is bounded: ``range`` and repetition share a per-render
budget, and every way of growing a string (``*``, ``+``, ``~``, ``%``, the
output of loops, ``str`` methods such as ``center``/``zfill``/``replace``/
``format``/``join``, and the filters ``center``, ``indent``, ``replace``,
``format``, ``join``, ``batch``, ``slice``) is checked *before* it allocates,
so a template cannot hang the engine or build a gigabyte string.  An
undefined name is an error, never "".

A template that is exactly one ``{{ expression }}`` renders to the
expression's native value (a number stays a number), as in Home Assistant.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import operator
import re
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.filters
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox
import jinja2.utils
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reactor.errors import Position, RuleError, TemplateError
from reactor.rules.source import close_match

__all__ = ["RULE_NAMES", "Expression", "Limits", "Template", "compile_expression", "compile_template", "is_template",
           "to_jsonable"]

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


def _too_big(size: int) -> None:
    if size > MAX_OUTPUT:
        raise TemplateError("template tried to build a value over the size limit")


#: A width or precision in a ``%`` or ``{}`` format string, or one taken from the arguments
#: (``%*d``, ``{:>{w}}``).
_FORMAT_WIDTH = re.compile(r"\d{7,}|\*|\{[^{}]+\{")


def _check_format(fmt: object, args: Iterable[Any] = ()) -> None:
    """Refuse format strings whose widths would build a huge string (``'%0999999999d'``)."""
    if not isinstance(fmt, str):
        return
    for m in _FORMAT_WIDTH.finditer(fmt):
        if m.group()[0].isdigit() or any(_is_int(a) and a > MAX_OUTPUT for a in args):
            _too_big(MAX_OUTPUT + 1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _joined_size(items: Iterable[Any], sep: str = "") -> int:
    n = total = 0
    for item in items:
        n += 1
        total += len(item) if isinstance(item, str) else 32
        if total > MAX_OUTPUT:
            break
    return total + max(n - 1, 0) * len(sep)


def _bounded_concat(pieces: Iterable[Any]) -> str:
    """``environment.concat`` (a template's output) and ``~``: stop as soon as the size limit is passed."""
    out: list[str] = []
    size = 0
    for piece in pieces:
        text = piece if isinstance(piece, str) else str(piece)
        size += len(text)
        _too_big(size)
        out.append(text)
    return "".join(out)


_STR_WIDTH_METHODS = frozenset(["center", "ljust", "rjust", "zfill", "expandtabs"])


def _check_str_call(receiver: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Size checks for ``str`` methods called from a template, before they allocate."""
    if name in _STR_WIDTH_METHODS:
        width = args[0] if args else next(iter(kwargs.values()), 0)
        if _is_int(width):
            factor = receiver.count("\t") if name == "expandtabs" else 1
            _too_big(width * factor)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = receiver.count(args[0]) if args[0] else len(receiver) + 1
        _too_big(len(receiver) + hits * max(len(args[1]) - len(args[0]), 0))
    elif name == "join" and args:
        _too_big(_joined_size(args[0], receiver))
    elif name in ("format", "format_map"):
        _check_format(receiver, [*args, *kwargs.values()])


def _filter(original: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    """Wrap a built-in filter with a pre-check of its arguments (keeps Jinja's pass_* marks)."""

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    return bounded


def _check_center(value: Any, width: int = 80) -> None:
    _too_big(width if _is_int(width) else 0)


def _check_indent(s: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    lines = str(s).count("\n") + 1
    _too_big(len(str(s)) + lines * (width if _is_int(width) else len(str(width))))


def _check_format_filter(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_format(value, [*args, *kwargs.values()])


def _check_count(value: Any, count: Any = 0, *args: Any, **kwargs: Any) -> None:
    if _is_int(count):
        _spend(max(count, 0))


def _replace_filter(s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text = str(s)
    old_s, new_s = str(old), str(new)
    _check_str_call(text, "replace", (old_s, new_s), {})
    return text.replace(old_s, new_s, -1 if count is None else count)


def _join_filter(value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    if attribute is not None:
        items = [ENV.getitem(item, attribute) for item in items]
    _too_big(_joined_size((str(i) for i in items), str(d)))
    return str(d).join(str(i) for i in items)


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 100 or max > 1000 or min > max:
        _too_big(MAX_OUTPUT + 1)
    return str(jinja2.utils.generate_lorem_ipsum(n, html, min, max))


class _CodeGen(jinja2.compiler.CodeGenerator):
    """``a ~ b`` joins through the environment's bounded concatenation instead of ``str_join``."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _CodeGen
    concat = staticmethod(_bounded_concat)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, str):
            _check_str_call(receiver, getattr(__obj, "__name__", ""), args, kwargs)
        elif getattr(__obj, "__name__", "") in ("format", "format_map") and callable(
                getattr(__obj, "__wrapped__", None)):  # the sandbox's wrapped str.format
            _check_format(getattr(__obj.__wrapped__, "__self__", None), [*args, *kwargs.values()])
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            _too_big(len(result))
        return result

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "%":
            if isinstance(left, str):
                _check_format(left, right if isinstance(right, (tuple, list)) else [right])
            return operator.mod(left, right)
        if operator_ == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > MAX_POWER_DIGITS * 4:
                    raise TemplateError("template tried to compute a number over the size limit")
                return operator.mul(left, right)
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool):
                    size = len(seq) * n if isinstance(seq, str) else _joined_size(seq) * n
                    if size > MAX_OUTPUT or len(seq) * n > MAX_OUTPUT:
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
    env.globals["lipsum"] = _bounded_lipsum
    env.filters["center"] = _filter(jinja2.filters.do_center, _check_center)
    env.filters["indent"] = _filter(jinja2.filters.do_indent, _check_indent)
    env.filters["format"] = _filter(jinja2.filters.do_format, _check_format_filter)
    env.filters["batch"] = _filter(jinja2.filters.do_batch, _check_count)
    env.filters["slice"] = _filter(jinja2.filters.sync_do_slice, _check_count)
    env.filters["replace"] = _replace_filter
    env.filters["join"] = _join_filter
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
    # the text's line; its column is where the text starts (a block scalar's lines all start there)
    line = pos.line + max((err.lineno or 1) - 1, 0)
    return RuleError(Position(pos.path, line, pos.col), f"{what} syntax error: {err.message}")


def _render_error(err: Exception, what: str) -> TemplateError:
    if isinstance(err, TemplateError):
        return err
    if isinstance(err, jinja2.UndefinedError):
        return TemplateError(f"{what}: undefined: {err.message}")
    if isinstance(err, jinja2.exceptions.SecurityError):
        return TemplateError(f"{what}: not allowed in the sandbox: {err}")
    return TemplateError(f"{what}: {type(err).__name__}: {err}")


def _undefined_text(value: jinja2.Undefined) -> str:
    """Why a value is undefined, as Jinja2 says it: StrictUndefined (and the sandbox's stand-in for an
    unsafe attribute) raise it on any use."""
    try:
        str(value)
    except jinja2.exceptions.SecurityError as err:
        return f"not allowed in the sandbox: {err}"
    except jinja2.UndefinedError as err:
        return f"undefined: {err.message or 'a value'}"
    return "undefined: a value"


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
            raise TemplateError(f"template {self.source!r}: {_undefined_text(out)}")
        return out

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class Expression:
    """A compiled boolean-ish expression (``if``, ``when``).

    Simple expressions (comparisons of ``event.data.x``, ``vm.status``... with
    literals, joined by ``and``/``or``/``not``, ``is defined``/``is none``)
    are also compiled to plain Python closures that do what Jinja's compiled
    code does (the same sandboxed attribute and item lookups, the same
    undefined values), without a Jinja context per evaluation.
    """

    __slots__ = ("_fast", "_fn", "_literals", "source")

    def __init__(self, source: str, fn: Callable[..., Any] | None,
                 fast: Callable[[Mapping[str, Any]], Any] | None = None,
                 literals: Mapping[str, tuple[Any, ...]] | None = None) -> None:
        if fn is None and fast is None:
            raise ValueError("an Expression needs Jinja's compiled code or the fast path")
        self.source = source
        self._fn = fn
        self._fast = fast
        self._literals = dict(literals or {})

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        Limits.budget = MAX_ITERATIONS
        try:
            value = self._fast(names) if self._fast is not None else self._fn(**names)  # type: ignore[misc]
        except Exception as err:
            raise _render_error(err, f"expression {self.source!r}") from err
        if isinstance(value, jinja2.Undefined):
            raise TemplateError(f"expression {self.source!r}: {_undefined_text(value)}")
        return value

    def test(self, names: Mapping[str, Any]) -> bool:
        return bool(self.evaluate(names))

    def data_literals(self) -> dict[str, tuple[Any, ...]]:
        """The ``event.data.KEY == LITERAL`` and ``event.data.KEY in [LITERALS]`` tests this expression
        requires (its top-level ``and`` conjuncts): with KEY present and not one of those values, the
        expression is false.  For the matcher's index; empty when there is nothing to index.  Found
        by :func:`compile_expression` from the tree it parsed (every engine built on the rules asks
        again: a reload, each replay)."""
        return dict(self._literals)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _data_key(node: jinja2.nodes.Node) -> str | None:
    """``KEY`` when ``node`` is ``event.data.KEY`` or ``event.data['KEY']``."""
    if isinstance(node, jinja2.nodes.Getattr):
        key, parent = node.attr, node.node
    elif isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const) \
            and isinstance(node.arg.value, str):
        key, parent = node.arg.value, node.node
    else:
        return None
    if (isinstance(parent, jinja2.nodes.Getattr) and parent.attr == "data"
            and isinstance(parent.node, jinja2.nodes.Name) and parent.node.name == "event"):
        return key
    return None


def _index_literal(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _conjunct_literals(node: jinja2.nodes.Node, out: dict[str, tuple[Any, ...]]) -> None:
    if isinstance(node, jinja2.nodes.And):
        _conjunct_literals(node.left, out)
        _conjunct_literals(node.right, out)
        return
    if not isinstance(node, jinja2.nodes.Compare) or len(node.ops) != 1:
        return
    op = node.ops[0]
    left, right = node.expr, op.expr
    if op.op == "eq":
        if _data_key(left) is None:
            left, right = right, left
        key = _data_key(left)
        if key is not None and isinstance(right, jinja2.nodes.Const) and _index_literal(right.value):
            values: tuple[Any, ...] = (right.value,)
        else:
            return
    elif op.op == "in":
        key = _data_key(left)
        if key is None or not isinstance(right, (jinja2.nodes.List, jinja2.nodes.Tuple)) or not right.items:
            return
        if not all(isinstance(i, jinja2.nodes.Const) and _index_literal(i.value) for i in right.items):
            return
        values = tuple(i.value for i in right.items)  # type: ignore[attr-defined]
    else:
        return
    if key in out:   # `a == 1 and a == 2`: what both allow
        values = tuple(v for v in out[key] if v in values)
    out[key] = values


#: The names a rule's ``if``, ``when`` and step templates are rendered with (RULES.md; ``vars``: what earlier
#: steps registered, and what correlations and thresholds give).
RULE_NAMES: frozenset[str] = frozenset(["event", "vm", "rule", "now", "vars"])
#: Names Jinja itself provides inside a template: its globals, and those of loops and macros.
_JINJA_NAMES: frozenset[str] = frozenset([*ENV.globals, "loop", "caller", "varargs", "kwargs", "self"])


def _check_names(tree: jinja2.nodes.Node, names: Collection[str], pos: Position, what: str) -> None:
    """RuleError at ``pos`` for the first name ``tree`` reads that is neither in ``names`` nor set in it."""
    read: list[str] = []
    set_here: set[str] = set()
    node_t, name_t = jinja2.nodes.Node, jinja2.nodes.Name
    stack: list[jinja2.nodes.Node] = [tree]
    while stack:   # the tree's nodes, by their fields (Node.find_all's nested generators cost ~3x this walk)
        x = stack.pop()
        if type(x) is name_t:
            if x.ctx == "load":
                if x.name not in names and x.name not in _JINJA_NAMES:
                    read.append(x.name)
            else:   # store, param
                set_here.add(x.name)
            continue
        for f in x.fields:
            v = getattr(x, f, None)
            if isinstance(v, node_t):
                stack.append(v)
            elif isinstance(v, list):
                stack.extend(i for i in v if isinstance(i, node_t))
    for name in read:
        if name not in set_here:
            hint = close_match(name, sorted(names))
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise RuleError(pos, f"{what}: unknown name {name!r}{extra}; the names are {', '.join(sorted(names))}")


def compile_expression(text: str, pos: Position, what: str = "expression", *,
                       names: Collection[str] | None = None) -> Expression:
    """Compile ``text`` (Jinja2 expression syntax); RuleError at ``pos`` on a syntax error, and (with
    ``names``) on a name that is not one of them."""
    src = text.strip()
    if src.startswith("{{") and src.endswith("}}"):
        src = src[2:-2]
    fast: _Fast | None = None
    literals: dict[str, tuple[Any, ...]] = {}
    try:
        parser = jinja2.parser.Parser(ENV, src, state="variable")
        tree = parser.parse_expression()
        if parser.stream.eos:
            if names is not None:
                _check_names(tree, names, pos, what)
            fast = _fast(tree)
            _conjunct_literals(tree, literals)
    except jinja2.TemplateSyntaxError:
        fast = None
    if fast is not None:   # parsed whole, no filter or test to resolve: Jinja's code generation is not needed
        return Expression(text, None, fast, literals)
    try:
        fn = ENV.compile_expression(src, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, text, pos, what) from err
    return Expression(text, fn, literals=literals)


_Fast = Callable[[Mapping[str, Any]], Any]

_METHODS = (types.MethodType, types.BuiltinMethodType)


_PLAIN: dict[tuple[type, str], bool] = {}


def _plain_property(cls: type, attr: str) -> bool:
    """``attr`` is a property of ``cls`` that the sandbox lets a template read as is (``event.data``,
    ``vm.status``): public, not an internal attribute, not a mutating method of a known mutable type."""
    known = _PLAIN.get((cls, attr))
    if known is not None:
        return known
    ok = False
    if any(isinstance(c.__dict__.get(attr), property) for c in cls.__mro__):
        probe: Any
        try:
            probe = object.__new__(cls)
        except TypeError:
            probe = None
        ok = probe is not None and not jinja2.sandbox.is_internal_attribute(probe, attr) \
            and not jinja2.sandbox.modifies_known_mutable(probe, attr)
    _PLAIN[(cls, attr)] = ok
    return ok

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le, "gt": operator.gt,
    "gteq": operator.ge, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}


def _fast(node: jinja2.nodes.Node) -> _Fast | None:
    """A closure computing ``node`` as Jinja's generated code would, or None outside the simple subset."""
    n = jinja2.nodes
    if isinstance(node, n.Const):
        value = node.value
        return lambda ns: value
    if isinstance(node, (n.List, n.Tuple)):
        if not all(isinstance(i, n.Const) for i in node.items):
            return None
        items = [i.value for i in node.items]  # type: ignore[attr-defined]
        if isinstance(node, n.Tuple):
            tup = tuple(items)
            return lambda ns: tup
        return lambda ns: list(items)
    if isinstance(node, n.Name) and node.ctx == "load":
        name = node.name
        undefined, globals_ = ENV.undefined, ENV.globals

        def load(ns: Mapping[str, Any]) -> Any:
            try:
                return ns[name]
            except KeyError:   # as Jinja resolves a name: the call's names, then the globals
                return globals_[name] if name in globals_ else undefined(name=name)
        return load
    if isinstance(node, n.Getattr):
        a = _fast(node.node)
        if a is None:
            return None
        obj, attr, getattr_ = a, node.attr, ENV.getattr
        if attr.startswith("_"):
            return lambda ns: getattr_(obj(ns), attr)

        def get_attribute(ns: Mapping[str, Any]) -> Any:
            o = obj(ns)
            if _plain_property(type(o), attr):   # what the sandbox allows, without its per-call checks
                try:
                    value = getattr(o, attr)
                except AttributeError:
                    return getattr_(o, attr)
                if not isinstance(value, _METHODS):
                    return value
            return getattr_(o, attr)
        return get_attribute
    if isinstance(node, n.Getitem) and isinstance(node.arg, n.Const):
        a = _fast(node.node)
        if a is None:
            return None
        item, key, getitem = a, node.arg.value, ENV.getitem

        def get_item(ns: Mapping[str, Any]) -> Any:
            o = item(ns)
            try:   # the sandbox's getitem tries this first too
                return o[key]
            except (TypeError, LookupError):
                return getitem(o, key)
        return get_item
    if isinstance(node, (n.And, n.Or)):
        a, b = _fast(node.left), _fast(node.right)
        if a is None or b is None:
            return None
        left, right = a, b
        if isinstance(node, n.And):
            return lambda ns: left(ns) and right(ns)
        return lambda ns: left(ns) or right(ns)
    if isinstance(node, n.Not):
        a = _fast(node.node)
        if a is None:
            return None
        operand = a
        return lambda ns: not operand(ns)
    if isinstance(node, n.Compare) and len(node.ops) == 1 and node.ops[0].op in _COMPARE:
        a, b = _fast(node.expr), _fast(node.ops[0].expr)
        if a is None or b is None:
            return None
        left, right = a, b
        op = _COMPARE[node.ops[0].op]
        return lambda ns: op(left(ns), right(ns))
    if isinstance(node, n.Test) and not node.args and not node.kwargs and node.dyn_args is None \
            and node.dyn_kwargs is None and node.name in ("defined", "undefined", "none"):
        a = _fast(node.node)
        if a is None:
            return None
        inner = a
        if node.name == "none":
            return lambda ns: inner(ns) is None
        if node.name == "defined":
            return lambda ns: not isinstance(inner(ns), jinja2.Undefined)
        return lambda ns: isinstance(inner(ns), jinja2.Undefined)
    return None


def compile_template(text: str, pos: Position, *, names: Collection[str] | None = None) -> Template:
    """Compile a template string; one bare ``{{ expr }}`` keeps its native type.  With ``names``, a name
    the template reads that is not one of them (nor set in it) is a RuleError at ``pos``."""
    m = _SINGLE.match(text)
    try:
        if m:
            if names is not None:
                _check_names(jinja2.parser.Parser(ENV, m.group("expr"), state="variable").parse_expression(),
                             names, pos, "template")
            expr = ENV.compile_expression(m.group("expr"), undefined_to_none=False)
            return Template(text, lambda values: expr(**values), native=True)
        source: str | jinja2.nodes.Template = text
        if names is not None:
            source = ENV.parse(text)
            _check_names(source, names, pos, "template")
        tmpl = ENV.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, text, pos, "template") from err
    return Template(text, tmpl.render, native=False)
