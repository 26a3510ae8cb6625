"""Templates and ``if``/``when`` expressions: native values, strict undefined, sandbox, bounds, positions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from reactor.engine.engine import StaticVM
from reactor.engine.view import names_for
from reactor.errors import LoadError, Position, RuleError, TemplateError
from reactor.model.catalog import default_catalog
from reactor.rules.loader import load_rules_text
from reactor.rules.template import compile_expression, compile_template, is_template

HERE = Position("t.yaml", 3, 7)


def names(**data: Any) -> dict[str, Any]:
    event = default_catalog().make_event(
        {"event": "BLOCK_IO_ERROR", "timestamp": {"seconds": 1_700_000_000, "microseconds": 250_000},
         "data": {"device": "d0", "operation": "write", "action": "stop", "reason": "Input/output error", **data}},
        vm="web-1")
    vm = StaticVM("web-1", {"env": "prod"}, status="io-error")
    return names_for(event, vm, "my-rule", 1_700_000_100.0, {"out": {"rc": 3, "lines": ["a", "b"]}})


def render(text: str, **data: Any) -> Any:
    return compile_template(text, HERE).render(names(**data))


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ vm.name }}", "web-1"),
    ("{{ 40 + 2 }}", 42),
    ("  {{ 40 + 2 }}  ", 42),
    ("n={{ 40 + 2 }}", "n=42"),
    ("{{ event.data.device }}/{{ event.name }}", "d0/BLOCK_IO_ERROR"),
    ("{{ event.data['node-name'] | default('none') }}", "none"),
    ("{{ vars.out }}", {"rc": 3, "lines": ["a", "b"]}),
    ("{{ vars.out.lines | join(',') }}", "a,b"),
    ("{{ vm.labels.env }} {{ vm.status }} {{ rule.name }}", "prod io-error my-rule"),
    ("{{ event.timestamp.isoformat() }}", "2023-11-14T22:13:20.250000+00:00"),
    ("{{ (now - event.timestamp).total_seconds() }}", 99.75),
    ("{{ event | tojson }}", '{"event":"BLOCK_IO_ERROR","data":{"device":"d0","operation":"write","action":"stop",'
                             '"reason":"Input/output error"},"timestamp":{"seconds":1700000000,"microseconds":250000},'
                             '"vm":"web-1"}'),
    ("{{ '{\"a\": 1}' | from_json }}", {"a": 1}),
    ("{% if vm.status == 'io-error' %}stuck{% else %}fine{% endif %}", "stuck"),
    ("{{ event.data.missing is defined }}", False),
])
def test_render(text: str, expected: Any) -> None:
    assert render(text) == expected


def test_event_timestamp_is_a_utc_datetime() -> None:
    ts = render("{{ event.timestamp }}")
    assert isinstance(ts, dt.datetime) and ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("text", [
    "{{ vars.nothing }}",
    "value: {{ vars.nothing }}",
    "{{ event.data.nope }}",
    "{{ event.data.nope.deeper }}",
    "{{ nosuchname }}",
    "{{ vm.nam }}",
    "{% for x in vars.nope %}{{ x }}{% endfor %}",
    "{{ vars.nothing | upper }}",
])
def test_undefined_is_an_error_never_empty(text: str) -> None:
    with pytest.raises(TemplateError, match="undefined"):
        render(text)


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ event.__class__ }}",
    "{{ event._e }}",
    "{{ vm._vm.execute }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ vars.out.lines.append('x') }}",
    "{{ vars.out.update({'rc': 0}) }}",
])
def test_sandbox_blocks_internals_and_mutation(text: str) -> None:
    with pytest.raises(TemplateError):
        render(text)
    assert names()["vars"]["out"] == {"rc": 3, "lines": ["a", "b"]}


@pytest.mark.parametrize("text", [
    "{{ 'x' * 100000000 }}",
    "{{ [0] * 100000000 }}",
    "{{ range(1000000000) | list | length }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
    "{{ 10 ** 1000000 }}",
])
def test_rendering_is_bounded(text: str) -> None:
    with pytest.raises(TemplateError, match=r"limit|budget"):
        render(text)


def test_event_data_is_never_rendered_as_a_template() -> None:
    assert render("{{ event.data.reason }}", reason="{{ 7 * 7 }}") == "{{ 7 * 7 }}"
    assert render("r={{ event.data.reason }}", reason="{% raw %}") == "r={% raw %}"


def test_is_template() -> None:
    assert is_template("a {{ b }}") and is_template("{% if x %}y{% endif %}")
    assert not is_template("plain") and not is_template("{ not: a template }") and not is_template(3)


def test_template_syntax_errors_at_the_node_position() -> None:
    with pytest.raises(RuleError) as info:
        compile_template("{{ vm.name", HERE)
    assert str(info.value).startswith("t.yaml:3:7: template syntax error: unexpected end of template")
    with pytest.raises(RuleError) as info:
        compile_template("first line\nsecond {{ x | nosuchfilter }}", HERE)
    assert info.value.position == Position("t.yaml", 4, 7)   # a later line starts where the text does
    assert "No filter named 'nosuchfilter'" in info.value.message


def test_a_template_error_in_a_block_scalar_is_at_its_line_and_where_its_text_starts() -> None:
    text = ("rules:\n  - name: a\n    on: STOP\n    actions:\n      - log:\n          message: |\n"
            "            line one {{ event.name }}\n            line two {{ event.data. }}\n")
    with pytest.raises(LoadError) as info:
        load_rules_text([("r.yaml", text)])
    (err,) = info.value.errors
    assert err.position == Position("r.yaml", 8, 13), str(err)


@pytest.mark.parametrize(("text", "expected"), [
    ("event.data.reason != 'No space left on device'", True),
    ("{{ vm.status == 'io-error' }}", True),
    ("vm.labels.env == 'staging'", False),
    ("event.data.missing is not defined and rule.name == 'my-rule'", True),
    ("vars.out.rc > 2 and 'b' in vars.out.lines", True),
    ("event.timestamp.year == 2023 and now > event.timestamp", True),
])
def test_expressions(text: str, expected: bool) -> None:
    assert compile_expression(text, HERE).test(names()) is expected


def test_expression_errors() -> None:
    with pytest.raises(RuleError) as info:
        compile_expression("event.data.x ==", HERE, "'if'")
    assert str(info.value).startswith("t.yaml:3:7: 'if' syntax error:")
    # unknown tests and filters are found when rules load, not when an event arrives
    with pytest.raises(RuleError, match="No test named 'nosuchtest'"):
        compile_expression("event.data.reason is nosuchtest", HERE)
    with pytest.raises(RuleError, match="No filter named 'nofilter'"):
        compile_expression("event.data.reason | nofilter", HERE)
    with pytest.raises(TemplateError, match="undefined"):
        compile_expression("vars.nope.deeper", HERE).test(names())
    with pytest.raises(TemplateError, match="undefined"):
        compile_expression("nosuchname", HERE).test(names())
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        compile_expression("1 / 0", HERE).test(names())
