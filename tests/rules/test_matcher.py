"""``match``, ``vms`` and ``if`` through the engine on a virtual clock; the matcher's index."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Mapping
from typing import Any

import pytest

from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.model.catalog import default_catalog
from reactor.rules.loader import load_rules_text
from reactor.rules.matcher import Matcher

IO = {"device": "virtio0", "node-name": "d0", "operation": "write", "action": "stop", "reason": "Input/output error"}


def line(name: str, data: Mapping[str, Any] | None = None, *, t: float = 1000.0, vm: str = "vm0") -> str:
    secs = int(t)
    return json.dumps({"event": name, "data": dict(data or {}), "vm": vm,
                       "timestamp": {"seconds": secs, "microseconds": round((t - secs) * 1e6)}})


async def matches(rules: str, lines: list[str], labels: Mapping[str, Mapping[str, str]] | None = None,
                  ) -> list[tuple[str, str, str]]:
    """(rule, vm, event) of every run started when ``lines`` are replayed through ``rules``."""
    rs = load_rules_text([("m.yaml", textwrap.dedent(rules))])
    clock = VirtualClock()
    out: list[dict[str, Any]] = []
    lab = labels or {}
    engine = Engine(rs, clock=clock, output=out.append, labels=lambda vm: lab.get(vm, {}))
    result = await replay(lines, engine, clock)
    assert result.errors == []
    return [(r["rule"], r["vm"], r["event"]) for r in out if r["type"] == "match"]


async def fires(match: str, data: Mapping[str, Any], on: str = "BLOCK_IO_ERROR") -> bool:
    rules = f"""
        rules:
          - name: m
            on: {on}
            match: {match}
            actions: [{{log: hit}}]
        """
    return bool(await matches(rules, [line(on, data)]))


def io(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {**IO, **changes}
    return {k: v for k, v in data.items() if v is not None}


JOB = {"type": "backup", "device": "job0", "len": 100, "offset": 40, "speed": 0}

#: (match as flow YAML, event data, should the rule fire)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("{operation: write}", io(), True),
    ("{operation: write}", io(operation="read"), False),
    ("{operation: write, action: stop}", io(), True),
    ("{operation: write, action: report}", io(), False),
    ("{operation: [read, write]}", io(), True),
    ("{operation: [read]}", io(), False),
    ("{operation: {eq: write}}", io(), True),
    ("{operation: {ne: write}}", io(), False),
    ("{nospace: {ne: true}}", io(nospace=False), True),
    ("{nospace: {ne: true}}", io(nospace=True), False),
    ("{nospace: {ne: true}}", io(), True),
    ("{nospace: false}", io(), False),
    ("{nospace: false}", io(nospace=False), True),
    ("{action: {in: [stop, report]}}", io(), True),
    ("{action: {in: [ignore, report]}}", io(), False),
    ("{action: {not_in: [ignore, report]}}", io(), True),
    ("{action: {not_in: [stop]}}", io(), False),
    ("{node-name: {not_in: [d0]}}", io(**{"node-name": None}), True),
    ("{node-name: d0}", io(), True),
    ("{node-name: d0}", io(**{"node-name": None}), False),
    ("{reason: {regex: 'out.*err'}}", io(), True),
    ("{reason: {regex: '^output'}}", io(), False),
    ("{device: {glob: 'virtio*'}}", io(), True),
    ("{device: {glob: 'ide*'}}", io(), False),
    ("{reason: {contains: output}}", io(), True),
    ("{reason: {contains: space}}", io(), False),
    ("{nospace: {exists: false}}", io(), True),
    ("{nospace: {exists: false}}", io(nospace=False), False),
    ("{nospace: {exists: true}}", io(nospace=False), True),
    ("{nospace: {exists: true}}", io(), False),
    ("{qom-path: {regex: x}}", io(), False),          # absent: every other test fails
    ("{any: [{operation: read}, {action: stop}]}", io(), True),
    ("{any: [{operation: read}, {action: report}]}", io(), False),
    ("{all: [{operation: write}, {action: stop}]}", io(), True),
    ("{all: [{operation: write}, {action: report}]}", io(), False),
    ("{not: {operation: read}}", io(), True),
    ("{not: {operation: write}}", io(), False),
    ("{not: [{operation: read}, {action: report}]}", io(), True),
    ("{not: [{operation: read}, {action: stop}]}", io(), False),
    ("{any: [{not: {action: stop}}, {all: [{operation: write}, {reason: {glob: 'Input*'}}]}]}", io(), True),
    ("{any: [{not: {action: stop}}, {all: [{operation: write}, {reason: {glob: 'No*'}}]}]}", io(), False),
    ("{operation: write, not: {any: [{nospace: true}, {device: {glob: 'ide*'}}]}}", io(nospace=False), True),
]

JOB_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("{len: 100}", JOB, True),
    ("{len: {lt: 100}}", JOB, False),
    ("{len: {le: 100}}", JOB, True),
    ("{offset: {gt: 40}}", JOB, False),
    ("{offset: {ge: 40}}", JOB, True),
    ("{offset: {lt: 40.5}}", JOB, True),
    ("{speed: {in: [0, 1]}}", JOB, True),
    ("{type: {glob: 'back*'}, error: {exists: false}}", JOB, True),
    ("{error: {ne: boom}}", JOB, True),
    ("{error: {contains: boom}}", {**JOB, "error": "it went boom"}, True),
]


@pytest.mark.parametrize(("match", "data", "expected"), CASES, ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
async def test_operator_on_block_io_error(match: str, data: dict[str, Any], expected: bool) -> None:
    assert await fires(match, data) is expected


@pytest.mark.parametrize(("match", "data", "expected"), JOB_CASES, ids=[c[0] for c in JOB_CASES])
async def test_operator_on_block_job_completed(match: str, data: dict[str, Any], expected: bool) -> None:
    assert await fires(match, data, on="BLOCK_JOB_COMPLETED") is expected


async def test_nested_paths_and_dashes() -> None:
    data = {"server": {"host": "0.0.0.0", "service": "5900", "family": "ipv4", "websocket": False},
            "client": {"host": "10.0.0.7", "service": "40000", "family": "ipv4", "websocket": False}}
    assert await fires("{client.host: {glob: '10.*'}, client.family: ipv4}", data, on="VNC_CONNECTED")
    assert not await fires("{client.host: 127.0.0.1}", data, on="VNC_CONNECTED")
    tray = {"device": "ide1-cd0", "id": "cd0", "tray-open": True}
    assert await fires("{tray-open: true}", tray, on="DEVICE_TRAY_MOVED")
    assert not await fires("{tray-open: false}", tray, on="DEVICE_TRAY_MOVED")


async def test_contains_on_a_list_field() -> None:
    data = {"errors": ["a.yaml:1:1: boom", "b"]}
    assert await fires("{errors: {contains: b}}", data, on="REACTOR_RULES_RELOADED")
    assert not await fires("{errors: {contains: c}}", data, on="REACTOR_RULES_RELOADED")


async def test_true_is_not_one_on_a_wildcard_rule() -> None:
    rules = """
        rules:
          - name: one
            on: "*"
            match: {x: 1}
            actions: [{log: hit}]
        """
    got = await matches(rules, [line("MY_EVENT", {"x": True}), line("MY_EVENT", {"x": 1}, t=1001)])
    assert got == [("one", "vm0", "MY_EVENT")]


async def test_on_list_and_star() -> None:
    rules = """
        rules:
          - name: pause
            on: [STOP, RESUME]
            actions: [{log: x}]
          - name: everything
            on: "*"
            actions: [{log: x}]
        """
    got = await matches(rules, [line("STOP"), line("RESUME", t=1001), line("POWERDOWN", t=1002)])
    assert got == [("pause", "vm0", "STOP"), ("everything", "vm0", "STOP"), ("pause", "vm0", "RESUME"),
                   ("everything", "vm0", "RESUME"), ("everything", "vm0", "POWERDOWN")]


async def test_vms_globs_lists_and_labels() -> None:
    rules = """
        rules:
          - name: web
            on: STOP
            vms: "web-*"
            actions: [{log: x}]
          - name: some
            on: STOP
            vms: ["web-1", "db-?"]
            actions: [{log: x}]
          - name: prod-db
            on: STOP
            vms: {names: ["db-*"], labels: {env: prod}}
            actions: [{log: x}]
          - name: prod
            on: STOP
            vms: {labels: {env: prod, tier: "1"}}
            actions: [{log: x}]
        """
    labels = {"db-1": {"env": "prod", "tier": "2"}, "db-22": {"env": "prod", "tier": "1"},
              "web-2": {"env": "prod", "tier": "1"}}
    evs = [line("STOP", vm=v, t=1000 + i) for i, v in enumerate(["web-1", "web-2", "db-1", "db-22", "other"])]
    got = await matches(rules, evs, labels=labels)
    assert got == [("web", "web-1", "STOP"), ("some", "web-1", "STOP"),
                   ("web", "web-2", "STOP"), ("prod", "web-2", "STOP"),
                   ("some", "db-1", "STOP"), ("prod-db", "db-1", "STOP"),
                   ("prod-db", "db-22", "STOP"), ("prod", "db-22", "STOP")]


async def test_if_true_false_and_error(caplog: pytest.LogCaptureFixture) -> None:
    rules = """
        rules:
          - name: full
            on: BLOCK_IO_ERROR
            if: "event.data.reason == 'No space left on device' and vm.status == 'io-error'"
            actions: [{log: x}]
          - name: broken
            on: BLOCK_IO_ERROR
            if: "event.data.nosuchfield.deeper > 1"
            actions: [{log: x}]
          - name: divides
            on: BLOCK_IO_ERROR
            if: "1 / (event.data.reason | length - 18)"
            actions: [{log: x}]
          - name: names
            on: BLOCK_IO_ERROR
            if: >-
              rule.name == 'names' and event.name == 'BLOCK_IO_ERROR' and event.vm == 'vm0'
              and event.timestamp.year == 1970 and now.year == 1970 and vm.name == 'vm0'
              and vm.labels.env == 'prod'
            actions: [{log: x}]
          - name: after
            on: STOP
            actions: [{log: x}]
        """
    evs = [line("BLOCK_IO_ERROR", io(reason="No space left on device")),
           line("BLOCK_IO_ERROR", io(), t=1001),   # 'divides': len 18 -> division by zero
           line("STOP", t=1002)]
    got = await matches(rules, evs, labels={"vm0": {"env": "prod"}})
    assert got == [("full", "vm0", "BLOCK_IO_ERROR"), ("divides", "vm0", "BLOCK_IO_ERROR"),
                   ("names", "vm0", "BLOCK_IO_ERROR"), ("names", "vm0", "BLOCK_IO_ERROR"),
                   ("after", "vm0", "STOP")]
    assert "'if' failed" in caplog.text and "broken" in caplog.text


async def test_if_cannot_reach_python_internals() -> None:
    rules = """
        rules:
          - name: escape
            on: STOP
            if: "event.__class__.__mro__ or event._e or ''.__class__"
            actions: [{log: x}]
        """
    assert await matches(rules, [line("STOP")]) == []


async def test_disabled_rules_never_match() -> None:
    rules = """
        rules:
          - name: disabled
            on: STOP
            enabled: false
            actions: [{log: x}]
        """
    assert await matches(rules, [line("STOP")]) == []


def _many_rules(n: int) -> str:
    out = ["rules:"]
    events = ["RESUME", "SHUTDOWN", "POWERDOWN", "RESET", "SUSPEND", "WAKEUP"]
    for i in range(n):
        ev = events[i % len(events)]
        out.append(f"  - name: r{i}\n    on: {ev}\n    vms: vm-{i}\n    actions: [{{log: x}}]")
    # rules for the event of interest, but for other VMs, or testing another value of a field
    for i in range(n // 10):
        out.append(f"  - name: io-other-vm-{i}\n    on: BLOCK_IO_ERROR\n    vms: [other-{i}]\n"
                   f"    actions: [{{log: x}}]")
    for i in range(n // 10):
        out.append(f"  - name: io-dev-{i}\n    on: BLOCK_IO_ERROR\n    match: {{device: disk{i}}}\n"
                   f"    actions: [{{log: x}}]")
    out.append("  - name: wanted-vm\n    on: BLOCK_IO_ERROR\n    vms: web-1\n    actions: [{log: x}]")
    out.append("  - name: wanted-dev\n    on: BLOCK_IO_ERROR\n    match: {device: disk7, operation: write}\n"
               "    actions: [{log: x}]")
    out.append("  - name: wanted-glob\n    on: BLOCK_IO_ERROR\n    vms: web-*\n    actions: [{log: x}]")
    out.append("  - name: wanted-all\n    on: '*'\n    actions: [{log: x}]")
    return "\n".join(out) + "\n"


def test_matcher_index_with_10000_rules() -> None:
    rs = load_rules_text([("big.yaml", _many_rules(10_000))])
    assert len(rs) == 12_004
    matcher = Matcher(rs.rules)
    event = default_catalog().make_event(
        {"event": "BLOCK_IO_ERROR", "data": io(device="disk7"), "timestamp": {"seconds": 1, "microseconds": 0}},
        vm="web-1")
    names = [r.name for r in matcher.candidates(event)]
    # the index leaves only rules that can match (a glob selector is checked afterwards)
    assert sorted(names) == ["io-dev-7", "wanted-all", "wanted-dev", "wanted-glob", "wanted-vm"]
    assert names == sorted(names, key=lambda n: rs.get(n).index)  # type: ignore[union-attr]
    other = default_catalog().make_event({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}},
                                         vm="vm-6")
    assert [r.name for r in matcher.candidates(other)] == ["r6", "wanted-all"]
    nobody = default_catalog().make_event({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}},
                                          vm="x")
    assert [r.name for r in matcher.candidates(nobody)] == ["wanted-all"]
    t0 = time.perf_counter()
    for _ in range(10_000):
        matcher.candidates(event)
    assert time.perf_counter() - t0 < 0.5   # ~microseconds per event, independent of the 12,000 rules
