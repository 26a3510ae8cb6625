"""Action arguments: checked against the action's dataclass at load, converted after rendering, redacted."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from reactor.actions.action import ActionContext, Duration, action
from reactor.actions.registry import Registry, builtin_registry
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine, StaticVM
from reactor.engine.replay import replay
from reactor.engine.view import names_for
from reactor.errors import LoadError, TemplateError
from reactor.model.catalog import default_catalog
from reactor.rules.arguments import REDACTED, Arguments, convert, describe_type, redact
from reactor.rules.loader import load_rules_text


@dataclass(frozen=True)
class Inner:
    host: str
    port: int = 80


@dataclass(frozen=True)
class ProbeArgs:
    name: str
    count: int = 1
    ratio: float = 1.0
    flag: bool = False
    wait: Duration = Duration(5.0)  # noqa: RUF009 (NewType: no call at run time)
    level: Literal["low", "high"] = "low"
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None
    inner: Inner | None = None
    anything: Any = None
    password: str | None = None


async def _probe(ctx: ActionContext, args: ProbeArgs) -> ProbeArgs:
    return args


PROBE = action("probe", shorthand="name", mutating=False)(_probe)


def registry() -> Registry:
    reg = builtin_registry().copy()
    reg.add(PROBE)
    return reg


def step_args(value: str) -> Arguments:
    text = f"rules:\n  - name: r\n    on: BLOCK_IO_ERROR\n    actions:\n      - probe: {value}\n"
    (rule,) = load_rules_text([("a.yaml", text)], registry=registry()).rules
    return rule.steps[0].args


def load_error(value: str) -> list[str]:
    text = f"rules:\n  - name: r\n    on: BLOCK_IO_ERROR\n    actions:\n      - probe: {value}\n"
    with pytest.raises(LoadError) as info:
        load_rules_text([("a.yaml", text)], registry=registry())
    return [str(e) for e in info.value.errors]


def run_names(**data: Any) -> dict[str, Any]:
    event = default_catalog().make_event(
        {"event": "BLOCK_IO_ERROR", "timestamp": {"seconds": 100, "microseconds": 0},
         "data": {"device": "d0", "operation": "write", "action": "stop", "reason": "r", **data}}, vm="web-1")
    return names_for(event, StaticVM("web-1"), "r", 100.0, {"n": 7, "word": "high"})


def test_literal_arguments_are_converted_once_at_load() -> None:
    args = step_args("{name: x, count: 3, ratio: 2, flag: true, wait: 1m, level: high, tags: [a, 1], "
                     "limits: {a: 1}, maybe: null, inner: {host: h}, anything: [1, {b: 2}]}")
    assert args.static == ProbeArgs(name="x", count=3, ratio=2.0, flag=True, wait=Duration(60.0), level="high",
                                    tags=["a", "1"], limits={"a": 1}, maybe=None, inner=Inner("h", 80),
                                    anything=[1, {"b": 2}])
    assert args.build(run_names()) is args.static
    assert step_args("just-a-name").static == ProbeArgs(name="just-a-name")


def test_templated_arguments_are_rendered_then_converted() -> None:
    args = step_args("{name: '{{ vm.name }}', count: '{{ vars.n * 2 }}', ratio: '{{ vars.n }}.5', "
                     "flag: '{{ vars.n > 1 }}', wait: '{{ vars.n }}s', level: '{{ vars.word }}', "
                     "tags: ['{{ event.data.device }}', fixed], inner: {host: '{{ vm.name }}', port: '80{{ 8 }}'}}")
    assert args.static is None
    assert args.build(run_names()) == ProbeArgs(name="web-1", count=14, ratio=7.5, flag=True, wait=Duration(7.0),
                                                level="high", tags=["d0", "fixed"], inner=Inner("web-1", 808))


@pytest.mark.parametrize(("value", "message"), [
    ("{name: x, count: '{{ vars.word }}'}", "argument 'count': expected an integer, got string 'high'"),
    ("{name: x, wait: '{{ vars.word }}'}", "argument 'wait': expected a duration"),
    ("{name: x, level: '{{ vars.n }}'}", "argument 'level': 7 is not one of low, high"),
    ("{name: '{{ vars.missing }}'}", "undefined"),
])
def test_rendered_value_of_the_wrong_type_fails_the_step(value: str, message: str) -> None:
    args = step_args(value)
    with pytest.raises(TemplateError, match=message):
        args.build(run_names())


@pytest.mark.parametrize(("value", "error"), [
    ("{count: 3}", "a.yaml:5:9: probe: missing required argument 'name'"),
    ("{name: x, cont: 3}", "a.yaml:5:26: probe: unknown argument 'cont' (did you mean 'count'?)"),
    ("{name: x, zzz: 3}", "a.yaml:5:26: probe: unknown argument 'zzz'; arguments are: name, count, ratio, flag, "
                          "wait, level, tags, limits, maybe, inner, anything, password"),
    ("{name: x, count: 1.5}", "a.yaml:5:33: probe: argument 'count': expected an integer, got number 1.5"),
    ("{name: x, count: true}", "a.yaml:5:33: probe: argument 'count': expected an integer, got boolean True"),
    ("{name: x, ratio: fast}", "a.yaml:5:33: probe: argument 'ratio': expected a number, got string 'fast'"),
    ("{name: x, flag: 1}", "a.yaml:5:32: probe: argument 'flag': expected a boolean, got integer 1"),
    ("{name: [x]}", "a.yaml:5:23: probe: argument 'name': expected a string, got list"),
    ("{name: x, tags: a}", "a.yaml:5:32: probe: argument 'tags': expected a list, got string"),
    ("{name: x, tags: [a, [b]]}", "a.yaml:5:36: probe: argument 'tags': [1]: expected a string, got list"),
    ("{name: x, limits: {a: x}}", "a.yaml:5:38: probe: argument 'limits': a: expected an integer, got string 'x'"),
    ("{name: x, inner: {port: 1}}", "a.yaml:5:33: probe: argument 'inner': missing required argument 'host'"),
    ("{name: x, inner: {host: h, port: p}}", "a.yaml:5:49: probe: argument 'inner': port: expected an integer, "
                                             "got string 'p'"),
    ("{name: x, maybe: many}", "a.yaml:5:33: probe: argument 'maybe': expected an integer, got string 'many'"),
    ("{name: x, level: medium}", "a.yaml:5:33: probe: argument 'level': 'medium' is not one of low, high"),
    ("{name: x, wait: -5s}", "a.yaml:5:32: probe: argument 'wait': expected a duration like 5s, 500ms, 10m, 1h, "
                             "1d, not '-5s'"),
    ("[a, b]", "a.yaml:5:16: probe: argument 'name': expected a string, got list"),
])
def test_load_time_errors_at_the_value(value: str, error: str) -> None:
    assert load_error(value) == [error]


@pytest.mark.parametrize(("hint", "value", "expected"), [
    (Duration, "500ms", 0.5), (Duration, 3, 3.0), (Duration, "1d", 86400.0),
    (str, 5, "5"), (int | None, None, None), (list[int], [1, 2], [1, 2]), (dict[str, str], {"a": "b"}, {"a": "b"}),
    (Literal["a", "b"], "b", "b"), (Any, {"x": [1]}, {"x": [1]}),
])
def test_convert(hint: Any, value: Any, expected: Any) -> None:
    assert convert(hint, value) == expected


@pytest.mark.parametrize(("hint", "value", "rendered", "expected"), [
    (int, " 42 ", True, 42), (float, "1.5", True, 1.5), (bool, "yes", True, True), (bool, "False", True, False),
    (str, None, False, ValueError), (str, ["a"], True, "['a']"), (int, "42", False, ValueError),
    (bool, "true", False, ValueError), (Literal[1, 2], True, False, ValueError),
])
def test_convert_rendered_text(hint: Any, value: Any, rendered: bool, expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            convert(hint, value, rendered=rendered)
    else:
        assert convert(hint, value, rendered=rendered) == expected


def test_describe_type() -> None:
    assert describe_type(Duration) == "duration"
    assert describe_type(list[str]) == "list of string"
    assert describe_type(dict[str, int]) == "mapping of integer"
    assert describe_type(int | None) == "integer or null"
    assert describe_type(Literal["a", "b"]) == "one of a, b"
    assert describe_type(Any) == "any"


def test_redact_hides_secrets() -> None:
    args = ProbeArgs(name="x", password="hunter2", anything={"api_key": "k", "Authorization": "Bearer t",
                                                             "nested": [{"token": "t", "ok": 1}]})
    shown = redact(PROBE, args)
    assert shown["password"] == REDACTED and shown["name"] == "x"
    assert shown["anything"] == {"api_key": REDACTED, "Authorization": REDACTED,
                                 "nested": [{"token": REDACTED, "ok": 1}]}
    assert redact(PROBE, ProbeArgs(name="x"))["password"] is None


async def test_the_journal_and_output_see_rendered_redacted_arguments() -> None:
    rules = textwrap.dedent("""\
        rules:
          - name: r
            on: STOP
            actions:
              - probe: {name: "{{ vm.name }}", password: "{{ vm.name }}-secret", count: "{{ 2 }}"}
        """)
    rs = load_rules_text([("a.yaml", rules)], registry=registry())
    clock = VirtualClock()
    out: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=out.append)
    ev = json.dumps({"event": "STOP", "timestamp": {"seconds": 5, "microseconds": 0}, "vm": "db-1"})
    await replay([ev], engine, clock)
    (step,) = [r for r in out if r["type"] == "step"]
    assert step["status"] == "ok"
    assert step["args"]["name"] == "db-1" and step["args"]["count"] == 2 and step["args"]["password"] == REDACTED
    assert step["result"] == ProbeArgs(name="db-1", count=2, password="db-1-secret")
