"""The matcher's index: literals of `match` and of `if` narrow the candidates, never the matches.

For every event, the rules the indexed matcher offers and that then pass
(``vms``, ``match``, ``if``) are exactly those that pass among every rule
listening to the event; a rule whose ``if`` fails with an error (a field
missing) is still offered, so its error is reported as without the index.
"""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

from reactor.engine.engine import StaticVM
from reactor.engine.view import names_for
from reactor.errors import TemplateError
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.rules.loader import load_rules_text
from reactor.rules.matcher import Matcher
from reactor.rules.rule import Rule

RULES = """
rules:
  - {name: m-a, on: BLOCK_IO_ERROR, match: {device: a}, actions: [{log: x}]}
  - {name: m-b, on: BLOCK_IO_ERROR, match: {device: b}, actions: [{log: x}]}
  - {name: m-ab, on: BLOCK_IO_ERROR, match: {device: [a, b]}, actions: [{log: x}]}
  - {name: m-c, on: BLOCK_IO_ERROR, match: {device: c}, actions: [{log: x}]}
  - name: if-a
    on: BLOCK_IO_ERROR
    if: "event.data.device == 'a'"
    actions: [{log: x}]
  - name: if-item-reversed
    on: BLOCK_IO_ERROR
    if: "'b' == event.data['device'] and vm.status != 'shutdown'"
    actions: [{log: x}]
  - name: if-in
    on: BLOCK_IO_ERROR
    if: "event.data.device in ['a', 'c'] and event.data.operation == 'read'"
    actions: [{log: x}]
  - name: if-number
    on: BLOCK_IO_ERROR
    if: "event.data.device == 1"
    actions: [{log: x}]
  - name: if-or-not-indexed
    on: BLOCK_IO_ERROR
    if: "event.data.device == 'z' or event.data.operation == 'write'"
    actions: [{log: x}]
  - name: if-never
    on: BLOCK_IO_ERROR
    if: "event.data.device == 'a' and event.data.device == 'b'"
    actions: [{log: x}]
  - name: vm1-if-a
    on: BLOCK_IO_ERROR
    vms: [vm1]
    if: "event.data.device == 'a'"
    actions: [{log: x}]
  - name: vm1-m-b
    on: BLOCK_IO_ERROR
    vms: [vm1]
    match: {device: b}
    actions: [{log: x}]
  - {name: vm1-m-c, on: BLOCK_IO_ERROR, vms: [vm1], match: {device: c}, actions: [{log: x}]}
  - {name: vm1-m-d, on: BLOCK_IO_ERROR, vms: [vm1], match: {device: d}, actions: [{log: x}]}
  - {name: vm1-m-e, on: BLOCK_IO_ERROR, vms: [vm1], match: {device: e}, actions: [{log: x}]}
"""


def outcome(rule: Rule, event: Event, vm: StaticVM) -> bool | str:
    if rule.vms is not None and not rule.vms.matches(event.vm, vm.labels):
        return False
    if rule.match is not None and not rule.match(event.data):
        return False
    if rule.condition is None:
        return True
    try:
        return rule.condition.test(names_for(event, vm, rule.name, 0.0, {}))
    except TemplateError:
        return "error"


def test_indexed_candidates_give_the_same_matches_and_errors_as_every_rule() -> None:
    rules = load_rules_text([("r.yaml", textwrap.dedent(RULES))])
    matcher = Matcher(rules.rules)
    catalog = default_catalog()
    devices: list[Any] = ["a", "b", "c", "d", "z", 1, 1.0, True, False, None, ["a"], {"a": 1}, "missing"]
    checked = 0
    for device, operation, vm_name in itertools.product(devices, ["read", "write", "missing"], ["vm1", "vm2"]):
        data: dict[str, Any] = {"action": "report", "reason": "x", "node-name": "n0"}
        if device != "missing":
            data["device"] = device
        if operation != "missing":
            data["operation"] = operation
        event = catalog.make_event({"event": "BLOCK_IO_ERROR", "data": data}, vm=vm_name)
        vm = StaticVM(vm_name)
        offered = matcher.candidates(event)
        assert len({r.name for r in offered}) == len(offered)   # no rule twice
        assert [r.index for r in offered] == sorted(r.index for r in offered)   # in definition order
        want = {r.name: o for r in matcher.listening(event.name) if (o := outcome(r, event, vm)) is not False}
        got = {r.name: o for r in offered if (o := outcome(r, event, vm)) is not False}
        assert got == want, (device, operation, vm_name)
        checked += 1
    assert checked == len(devices) * 3 * 2


def test_the_index_narrows_the_candidates_at_scale() -> None:
    """1,000 rules on one event, a fifth of them testing their value in an `if`: an event meets a few."""
    lines = ["rules:"]
    for i in range(1000):
        test = (f"    if: \"event.data.device == 'd{i}'\"" if i % 5 == 4 else f"    match: {{device: d{i}}}")
        lines += [f"  - name: r{i}", "    on: BLOCK_IO_ERROR", test, "    actions: [{log: x}]"]
    matcher = Matcher(load_rules_text([("r.yaml", "\n".join(lines) + "\n")]).rules)
    event = default_catalog().make_event({"event": "BLOCK_IO_ERROR", "data": {
        "device": "d504", "operation": "read", "action": "report", "reason": "x", "node-name": "n"}}, vm="vm1")
    assert [r.name for r in matcher.candidates(event)] == ["r504"]
