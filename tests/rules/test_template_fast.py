"""Simple `if`/`when` expressions run as plain Python closures: same values, same errors as Jinja's code."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from reactor.engine.engine import StaticVM
from reactor.engine.view import names_for
from reactor.errors import Position, TemplateError
from reactor.model.catalog import default_catalog
from reactor.rules.template import ENV, Expression, compile_expression

FAST = [
    "event.data.device == 'a'",
    "event.data['node-name'] == 'n0'",
    "'a' == event.data.device",
    "event.data.device in ['a', 'b']",
    "event.data.device not in ('a',)",
    "event.data.missing == 1",
    "event.data.size > 10",
    "event.data.size >= 10 and event.data.size < 100",
    "event.data.size <= 10 or event.data.size != 20",
    "not event.data.flag",
    "not (event.data.flag and event.data.device == 'a')",
    "event.data.flag is defined",
    "event.data.nothing is undefined",
    "event.data.nothing is not defined",
    "event.data.device is none",
    "vm.status != 'paused' or vm.name == 'vm1'",
    "vm.labels.env == 'prod'",
    "vm.labels['tier'] in ['web', 'db']",
    "event.name == 'BLOCK_IO_ERROR' and event.vm == 'vm1'",
    "rule.name == 'r'",
    "foo == 1",
    "range is defined",
    "event.data.items == 1",
    "event.data.__class__ == 1",
    "event.data.size > 'a'",
    "event.data.nested.deep == 1",
    "event.data.nested['deep'] == [1, 2]",
    "vars.threshold.count == 3",
    "now.year > 2000",
    "event.data.device == none",
    "event.data.device",
    "true",
    "{{ event.data.device == 'a' }}",
]
SLOW_ONLY = ["event.data.device | upper == 'A'", "event.data.size * 2 > 10", "event.data.device ~ 'x' == 'ax'",
             "1 < event.data.size < 100"]

DATA: list[dict[str, Any]] = [
    {"device": "a", "node-name": "n0", "size": 5, "flag": True, "nested": {"deep": 1}},
    {"device": "b", "size": 50, "flag": False, "nested": {"deep": [1, 2]}},
    {"device": None, "size": 20.0, "nested": {}},
    {"device": 1, "size": "x", "flag": 0, "nested": None},
    {"size": 100},
    {},
]


def outcome(expr: Expression, names: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", expr.evaluate(names)
    except TemplateError as err:
        return "error", str(err)


@pytest.mark.parametrize("text", FAST + SLOW_ONLY)
def test_the_fast_path_gives_what_jinja_gives(text: str) -> None:
    fast = compile_expression(text, Position("r.yaml", 1, 1))
    assert (fast._fast is not None) == (text in FAST), "which expressions take the fast path"
    src = text.strip()
    if src.startswith("{{"):
        src = src[2:-2]
    slow = Expression(text, ENV.compile_expression(src, undefined_to_none=False))
    catalog = default_catalog()
    for data, (vm_name, labels) in itertools.product(DATA, [("vm1", {"env": "prod", "tier": "web"}), ("vm2", {})]):
        event = catalog.make_event({"event": "BLOCK_IO_ERROR", "data": data}, vm=vm_name)
        vm = StaticVM(vm_name, labels, status="paused" if data.get("flag") else "running")
        names = names_for(event, vm, "r", 1.7e9, {"threshold": {"count": 3}})
        assert outcome(fast, names) == outcome(slow, names), data
