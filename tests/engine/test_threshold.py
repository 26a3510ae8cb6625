"""`threshold`: a rule that runs once N distinct matches fell within a window (cross-host incidents).

Replayed on a virtual clock through the engine, checked at load time by the
loader, and shown by `explain`; the fleet test (tests/integrations/test_fleet_mqtt.py) runs
it across real hosts.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.explain import explain, format_verdicts
from reactor.engine.replay import replay
from reactor.errors import LoadError
from reactor.model.event import Event
from reactor.rules.loader import load_rules_text
from reactor.rules.rule import Threshold

INCIDENT = """
rules:
  - name: fleet-incident
    on: BLOCK_IO_ERROR
    match: {action: stop}
    threshold: {count: 3, within: 1m}
    actions:
      - log: "incident: {{ vars.threshold.count }} VMs: {{ vars.threshold.members | join(', ') }}"
        register: said
"""


def io_line(vm: str, host: str, t: float, action: str = "stop") -> str:
    secs = int(t)
    return json.dumps({"event": "BLOCK_IO_ERROR", "vm": vm, "host": host,
                       "data": {"device": "d0", "operation": "write", "action": action, "reason": "EIO"},
                       "timestamp": {"seconds": secs, "microseconds": round((t - secs) * 1e6)}})


async def play(rules: str, lines: list[str]) -> tuple[Engine, list[dict[str, Any]]]:
    rs = load_rules_text([("r.yaml", textwrap.dedent(rules))])
    clock = VirtualClock()
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=records.append)
    result = await replay(lines, engine, clock)
    assert result.errors == []
    return engine, records


def runs(records: list[dict[str, Any]], rule: str = "fleet-incident") -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "match" and r["rule"] == rule]


async def test_one_run_when_the_count_of_distinct_vms_is_reached() -> None:
    lines = [io_line("web-1", "host1", 1000), io_line("web-1", "host1", 1001),   # a repeat counts once
             io_line("web-2", "host2", 1002), io_line("db-1", "host3", 1003),     # the 3rd distinct: one run
             io_line("db-2", "host3", 1004), io_line("db-3", "host1", 1005)]      # counting starts anew
    engine, records = await play(INCIDENT, lines)
    matched = runs(records)
    assert [(m["vm"], m["time"]) for m in matched] == [("db-1", 1003.0)]
    steps = [r for r in records if r["type"] == "step" and r["rule"] == "fleet-incident"]
    assert steps[0]["status"] == "ok"
    assert steps[0]["args"]["message"] == "incident: 3 VMs: host1/web-1, host2/web-2, host3/db-1"
    outcomes = {k[1]: n for k, n in engine.run_outcomes.items() if k[0] == "fleet-incident"}
    assert outcomes["below_threshold"] == 5 and outcomes["ok"] == 1


async def test_same_vm_name_on_two_hosts_counts_twice_and_old_matches_leave_the_window() -> None:
    lines = [io_line("web-1", "host1", 1000), io_line("web-1", "host2", 1030),
             io_line("web-1", "host3", 1061),        # host1's match is 61 s old: out of the 1m window
             io_line("web-9", "host9", 1062)]        # 3 within the minute: host2, host3, host9
    _, records = await play(INCIDENT, lines)
    assert [(m["vm"], m["time"]) for m in runs(records)] == [("web-9", 1062.0)]


async def test_distinct_hosts_and_per_groups() -> None:
    rules = """
    rules:
      - name: hosts
        on: BLOCK_IO_ERROR
        threshold: {count: 2, within: 10m, distinct: host, per: [data.operation]}
        actions: [{log: "{{ vars.threshold.group }}: {{ vars.threshold.members }}"}]
    """
    lines = [io_line("a", "host1", 1000), io_line("b", "host1", 1001),   # two VMs, one host: not yet
             io_line("c", "host2", 1002)]                                # a second host: run
    read = json.loads(io_line("d", "host3", 1003))
    read["data"]["operation"] = "read"                                   # another group, counted apart
    lines.append(json.dumps(read))
    _, records = await play(rules, lines)
    assert [(m["vm"], m["time"]) for m in runs(records, "hosts")] == [("c", 1002.0)]
    step = next(r for r in records if r["type"] == "step")
    assert step["args"]["message"] == "write: ['host1', 'host2']"


async def test_threshold_then_throttle_gives_one_notification() -> None:
    rules = """
    rules:
      - name: incident
        on: BLOCK_IO_ERROR
        threshold: {count: 2, within: 1m}
        throttle: {max: 1, within: 1h, per: []}
        actions: [{log: incident}]
    """
    lines = [io_line(f"vm{i}", f"host{i % 3}", 1000 + i) for i in range(10)]
    engine, records = await play(rules, lines)
    assert len(runs(records, "incident")) == 1
    outcomes = {k[1]: n for k, n in engine.run_outcomes.items() if k[0] == "incident"}
    assert outcomes == {"below_threshold": 5, "ok": 1, "throttled": 4}


def test_loader_checks_threshold_with_positions() -> None:
    rs = load_rules_text([("ok.yaml", INCIDENT)])
    assert rs.rules[0].threshold == Threshold(count=3, within=60.0, distinct=("host", "vm"), per=())
    bad = textwrap.dedent("""
    rules:
      - name: a
        on: BLOCK_IO_ERROR
        threshold: {count: 0, within: soon, distinct: [data.devcie], per: [node], cuont: 2}
        actions: [{log: x}]
    """)
    with pytest.raises(LoadError) as err:
        load_rules_text([("bad.yaml", bad)])
    text = str(err.value)
    assert "bad.yaml:5:79: threshold: unknown key 'cuont' (did you mean 'count'?)" in text
    assert "bad.yaml:5:24: threshold.count: expected a positive integer, got 0" in text
    assert "bad.yaml:5:35: threshold.within: expected a duration" in text
    assert ("bad.yaml:5:52: threshold.distinct: BLOCK_IO_ERROR has no field 'devcie' (did you mean 'data.device'?)"
            in text)
    assert "bad.yaml:5:72: threshold.per: expected 'vm', 'host' or 'data.<field path>', got 'node'" in text
    with pytest.raises(LoadError, match="threshold: missing 'count'"):
        load_rules_text([("m.yaml", "rules:\n  - {name: a, on: STOP, threshold: {within: 1m}, actions: [{log: x}]}\n")])


def test_explain_says_a_match_is_counted() -> None:
    rs = load_rules_text([("r.yaml", INCIDENT)])
    event = Event("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "stop", "reason": "EIO"},
                  1000.0, "web-1", host="host1")
    verdicts = explain(event, rs)
    assert [v.outcome for v in verdicts] == ["counted"]
    text = format_verdicts(event, verdicts)
    assert "MATCH: counted toward its threshold" in text
    assert "runs once 3 distinct host+vm matched within 1m" in text
