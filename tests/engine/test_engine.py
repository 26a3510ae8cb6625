"""The engine against RULES.md: throttle, modes, step keys, templates, failures, emit, dry run, exec.

Most tests replay QMP event lines on a virtual clock (a ``sleep: 10s`` takes no
real time); step timeouts and exec use the real clock and real processes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reactor.actions.action import ActionContext, action
from reactor.actions.registry import Registry, builtin_registry
from reactor.engine.clock import RealClock, VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.errors import ActionError
from reactor.model.catalog import default_catalog
from reactor.rules.loader import load_rules_text

PY = sys.executable
ARGV_SCRIPT = "import json, sys; print(json.dumps(sys.argv[1:]))"


def line(name: str, data: Mapping[str, Any] | None = None, *, t: float = 1000.0, vm: str = "vm0") -> str:
    secs = int(t)
    return json.dumps({"event": name, "data": dict(data or {}), "vm": vm,
                       "timestamp": {"seconds": secs, "microseconds": round((t - secs) * 1e6)}})


def io(device: str = "d0", **more: Any) -> dict[str, Any]:
    return {"device": device, "operation": "write", "action": "stop", "reason": "Input/output error", **more}


class Replayed:
    """What a replay produced: the output records and the engine."""

    def __init__(self, engine: Engine, records: list[dict[str, Any]]) -> None:
        self.engine = engine
        self.records = records

    def of(self, type_: str, rule: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_ and (rule is None or r["rule"] == rule)]

    def steps(self, rule: str | None = None) -> list[tuple[str, str, float]]:
        """(action, status, time) of every step record."""
        return [(r["action"], r["status"], r["time"]) for r in self.of("step", rule)]

    def outcomes(self, rule: str) -> dict[str, int]:
        return {status: n for (name, status), n in self.engine.run_outcomes.items() if name == rule}


async def play(rules: str, lines: list[str], *, registry: Registry | None = None, dry_run: bool = False,
               labels: Callable[[str], Mapping[str, str]] | None = None) -> Replayed:
    rs = load_rules_text([("e.yaml", textwrap.dedent(rules))], registry=registry)
    clock = VirtualClock()
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=records.append, dry_run=dry_run, labels=labels)
    result = await replay(lines, engine, clock)
    assert result.errors == []
    return Replayed(engine, records)


async def live(rules: str, events: list[tuple[str, dict[str, Any]]], *, registry: Registry | None = None,
               dry_run: bool = False, deadline: float = 10.0) -> Replayed:
    """Dispatch ``events`` on the real clock in a session and wait until every run ended."""
    rs = load_rules_text([("e.yaml", textwrap.dedent(rules))], registry=registry)
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=RealClock(), output=records.append, dry_run=dry_run)
    catalog = default_catalog()
    async with engine.session():
        for name, data in events:
            engine.dispatch(catalog.make_event({"event": name, "data": data}, vm="vm0"))
        async with asyncio.timeout(deadline):
            while engine.runs_in_flight or len(engine.bus):
                engine.drain_bus()
                await asyncio.sleep(0.005)
    return Replayed(engine, records)


# ------------------------------------------------------------------ a test-only action


@dataclass(frozen=True)
class FlakyArgs:
    fail: int = 0          # fail this many attempts, then succeed
    key: str = "k"


@dataclass(frozen=True)
class AwaitArgs:
    event: str
    timeout: float = 5.0


async def _await_event(ctx: ActionContext, args: AwaitArgs) -> str:
    got = await ctx.wait_for(args.event, timeout=args.timeout)
    return f"{got.name}@{got.timestamp:g}"


def flaky_registry() -> tuple[Registry, Counter[str]]:
    """A copy of the built-in registry plus ``flaky``, which counts its attempts."""
    calls: Counter[str] = Counter()

    async def flaky(ctx: ActionContext, args: FlakyArgs) -> int:
        calls[args.key] += 1
        if calls[args.key] <= args.fail:
            raise ActionError(f"attempt {calls[args.key]} failed")
        return calls[args.key]

    reg = builtin_registry().copy()
    reg.add(action("flaky", mutating=False)(flaky))
    reg.add(action("await_event", mutating=False)(_await_event))
    return reg, calls


# ------------------------------------------------------------------ throttle


async def test_throttle_per_vm_sliding_window() -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            throttle: {max: 2, within: 1h}
            actions: [{log: x}]
        """
    evs = [line("STOP", t=1000, vm="a"), line("STOP", t=1010, vm="a"), line("STOP", t=1020, vm="a"),
           line("STOP", t=1030, vm="b"), line("STOP", t=4601, vm="a"), line("STOP", t=4605, vm="a")]
    r = await play(rules, evs)
    assert [(m["vm"], m["time"]) for m in r.of("match")] == [("a", 1000), ("a", 1010), ("b", 1030), ("a", 4601)]
    # at 4601 the window (1001, 4601] holds only 1010; at 4605 it holds 1010 and 4601
    assert [(m["vm"], m["time"]) for m in r.of("throttled")] == [("a", 1020), ("a", 4605)]
    assert "throttle: 2 per 3600s" in r.of("throttled")[0]["reason"]


async def test_throttle_per_data_path() -> None:
    rules = """
        rules:
          - name: t
            on: BLOCK_IO_ERROR
            throttle: {max: 1, within: 10m, per: [vm, data.device]}
            actions: [{log: x}]
        """
    evs = [line("BLOCK_IO_ERROR", io("d0"), t=1000), line("BLOCK_IO_ERROR", io("d1"), t=1001),
           line("BLOCK_IO_ERROR", io("d0"), t=1002), line("BLOCK_IO_ERROR", io("d0"), t=1003, vm="other")]
    r = await play(rules, evs)
    assert [(m["vm"], m["data"]["device"]) for m in r.of("match")] == [("vm0", "d0"), ("vm0", "d1"),
                                                                        ("other", "d0")]
    assert [m["time"] for m in r.of("throttled")] == [1002]


# ------------------------------------------------------------------ modes


SLOW = """
    rules:
      - name: slow
        on: STOP
        mode: {mode}
        max_queued: 1
        max_parallel: 2
        actions:
          - sleep: 10s
          - log: "done {{{{ event.timestamp.second }}}}"
    """


def stops(*times: float, vm: str = "vm0") -> list[str]:
    return [line("STOP", t=t, vm=vm) for t in times]


async def test_mode_single_drops_while_running() -> None:
    r = await play(SLOW.format(mode="single"), stops(1000, 1001, 1002) + stops(1003, vm="vm1") + stops(1020))
    assert [(m["vm"], m["time"]) for m in r.of("match")] == [("vm0", 1000), ("vm1", 1003), ("vm0", 1020)]
    assert [d["time"] for d in r.of("dropped")] == [1001, 1002]
    assert r.outcomes("slow") == {"ok": 3, "dropped": 2}


async def test_mode_queued_runs_after_with_a_bound() -> None:
    r = await play(SLOW.format(mode="queued"), stops(1000, 1001, 1002))
    assert [m["time"] for m in r.of("queued")] == [1001]
    assert [d["time"] for d in r.of("dropped")] == [1002]
    # the queued run starts when the first ends, and sees its own event
    assert [m["time"] for m in r.of("match")] == [1000, 1010]
    assert [rec["result"] for rec in r.of("step") if rec["action"] == "log"] == ["done 40", "done 41"]


async def test_mode_parallel_bounded() -> None:
    r = await play(SLOW.format(mode="parallel"), stops(1000, 1001, 1002, 1015))
    assert [m["time"] for m in r.of("match")] == [1000, 1001, 1015]
    assert [d["time"] for d in r.of("dropped")] == [1002]
    assert r.of("dropped")[0]["reason"] == "mode parallel: 2 runs in progress already (max_parallel)"
    assert [(a, t) for a, s, t in r.steps() if a == "log"] == [("log", 1010), ("log", 1011), ("log", 1025)]


async def test_mode_restart_cancels_the_running_one() -> None:
    r = await play(SLOW.format(mode="restart"), stops(1000, 1004))
    assert [m["time"] for m in r.of("match")] == [1000, 1004]
    assert r.steps() == [("sleep", "cancelled", 1000), ("sleep", "ok", 1004), ("log", "ok", 1014)]
    assert r.outcomes("slow") == {"cancelled": 1, "ok": 1}


# ------------------------------------------------------------------ step keys


async def test_step_timeout_on_a_sleep() -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - sleep: 5s
                timeout: 100ms
              - log: never
        """
    t0 = time.monotonic()
    r = await live(rules, [("STOP", {})])
    assert time.monotonic() - t0 < 2
    (step,) = r.of("step")
    assert (step["action"], step["status"], step["error"]) == ("sleep", "timeout", "timed out after 0.1s")
    assert r.outcomes("t") == {"failed": 1}


async def test_step_timeout_kills_a_slow_exec(tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    rules = f"""
        rules:
          - name: t
            on: STOP
            actions:
              - exec: {{argv: [{PY}, -c, "import time, pathlib; time.sleep(1.5); pathlib.Path('{marker}').touch()"]}}
                timeout: 300ms
        """
    t0 = time.monotonic()
    r = await live(rules, [("STOP", {})])
    assert time.monotonic() - t0 < 1.4
    assert [(s["status"], s["error"]) for s in r.of("step")] == [("timeout", "timed out after 0.3s")]
    await asyncio.sleep(1.6)
    assert not marker.exists(), "the process outlived its step"


async def test_exec_own_timeout_argument() -> None:
    rules = f"""
        rules:
          - name: t
            on: STOP
            actions:
              - exec: {{argv: [{PY}, -c, "import time; time.sleep(5)"], timeout: 200ms}}
        """
    t0 = time.monotonic()
    r = await live(rules, [("STOP", {})])
    assert time.monotonic() - t0 < 2
    assert [(s["status"], s["error"]) for s in r.of("step")] == [
        ("timeout", f"exec '{PY}' did not finish within 0.2s (killed)")]


async def test_retry_with_backoff_until_success() -> None:
    reg, calls = flaky_registry()
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - flaky: {fail: 2}
                retry: {attempts: 3, backoff: 1s}
                register: attempts
              - log: "took {{ vars.attempts }} attempts"
        """
    r = await play(rules, stops(1000), registry=reg)
    assert calls["k"] == 3
    # backoff doubles: 1s then 2s; the next step starts at 1003
    assert [(s["action"], s["status"], s["result"], s["time"]) for s in r.of("step")] == [
        ("flaky", "ok", 3, 1000), ("log", "ok", "took 3 attempts", 1003)]


async def test_retry_gives_up_after_attempts_and_caps_backoff() -> None:
    reg, calls = flaky_registry()
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - flaky: {fail: 100}
                retry: {attempts: 4, backoff: 10s, max_backoff: 15s}
          - name: failed
            on: REACTOR_ACTION_FAILED
            actions: [{log: x}]
        """
    r = await play(rules, stops(1000), registry=reg)
    assert calls["k"] == 4
    (step,) = r.of("step", "t")
    assert (step["status"], step["error"]) == ("failed", "attempt 4 failed")
    assert [m["time"] for m in r.of("match", "failed")] == [1000 + 10 + 15 + 15]


async def test_retry_exec_false_counts_attempts(caplog: pytest.LogCaptureFixture) -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - exec: [/bin/false]
                retry: {attempts: 3, backoff: 1s}
        """
    r = await play(rules, stops(1000))
    assert [s["status"] for s in r.of("step")] == ["failed"]
    assert "exec '/bin/false' exited with 1" in r.of("step")[0]["error"]
    assert caplog.text.count("failed (attempt") == 2


async def test_on_error_continue_and_stop() -> None:
    reg, _ = flaky_registry()
    rules = """
        rules:
          - name: goes-on
            on: STOP
            actions:
              - flaky: {fail: 1, key: a}
                on_error: continue
              - log: after
          - name: stops
            on: STOP
            actions:
              - flaky: {fail: 1, key: b}
              - log: never
        """
    r = await play(rules, stops(1000), registry=reg)
    assert [(a, s) for a, s, _ in r.steps("goes-on")] == [("flaky", "failed"), ("log", "ok")]
    assert [(a, s) for a, s, _ in r.steps("stops")] == [("flaky", "failed")]
    assert r.outcomes("goes-on") == {"ok": 1}
    assert r.outcomes("stops") == {"failed": 1}


async def test_register_and_vars_in_later_templates() -> None:
    rules = f"""
        rules:
          - name: t
            on: BLOCK_IO_ERROR
            actions:
              - exec: [{PY}, -c, "print('{{{{ event.data.device }}}}-x')"]
                register: out
              - log: "first"
                register: msg
              - log: "{{{{ vars.msg }}}} then {{{{ vars.out.stdout | trim }}}} rc={{{{ vars.out.returncode }}}}"
        """
    r = await play(rules, [line("BLOCK_IO_ERROR", io("disk9"))])
    assert [s["result"] for s in r.of("step")][1:] == ["first", "first then disk9-x rc=0"]


async def test_when_skips_runs_and_fails() -> None:
    rules = """
        rules:
          - name: t
            on: BLOCK_IO_ERROR
            actions:
              - log: skipped
                when: "event.data.device == 'other'"
              - log: ran
                when: "vm.status == 'io-error' and event.data.device == 'd0'"
              - log: broken
                when: "vars.nothing.here"
              - log: never
        """
    r = await play(rules, [line("BLOCK_IO_ERROR", io("d0"))])
    got = [(s["result"] if s["status"] == "ok" else None, s["status"]) for s in r.of("step")]
    assert got == [(None, "skipped"), ("ran", "ok"), (None, "failed")]
    assert "when:" in r.of("step")[2]["error"]


async def test_a_run_whose_steps_were_all_skipped_is_recorded_as_skipped(tmp_path: Path) -> None:
    rules = """
        rules:
          - name: t
            on: BLOCK_IO_ERROR
            actions:
              - log: one
                when: "event.data.device == 'other'"
              - log: two
                when: "event.data.device == 'other'"
          - name: partly
            on: BLOCK_IO_ERROR
            actions:
              - log: one
                when: "event.data.device == 'other'"
              - log: two
        """
    rs = load_rules_text([("e.yaml", textwrap.dedent(rules))])
    from reactor.ops.journal import Journal

    async with Journal(tmp_path / "journal.db") as journal:
        clock = VirtualClock()
        engine = Engine(rs, clock=clock, journal=journal)
        await replay([line("BLOCK_IO_ERROR", io("d0")), line("BLOCK_IO_ERROR", io("other"), t=1001)], engine, clock)
        await journal.flush()
        history = [(r.rule, r.status) for r in reversed(journal.runs())]
    assert history == [("t", "skipped"), ("partly", "ok"), ("t", "ok"), ("partly", "ok")]
    assert engine.run_outcomes[("t", "skipped")] == 1 and engine.run_outcomes[("t", "ok")] == 1   # the metrics
    assert engine.run_outcomes[("partly", "ok")] == 2
    # in a dry run too: nothing was skipped for the dry run's sake, the rule's own `when` skipped it all
    r = await play(rules, [line("BLOCK_IO_ERROR", io("d0"))], dry_run=True)
    assert r.outcomes("t") == {"skipped": 1}


# ------------------------------------------------------------------ templates and failures


async def test_undefined_template_name_fails_the_step_and_emits_action_failed() -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - log: ok
              - log: "vm {{ vm.name }} reason {{ event.data.reason }}"
              - log: never
          - name: on-failure
            on: REACTOR_ACTION_FAILED
            match: {rule: t, action: log, step: 1}
            actions:
              - log: "{{ event.data.rule }}/{{ event.data.step }} failed on {{ event.vm }}: {{ event.data.error }}"
        """
    r = await play(rules, stops(1000, vm="web-1"))
    steps = r.of("step", "t")
    assert [(s["status"], s["result"]) for s in steps] == [("ok", "ok"), ("failed", None)]
    assert "undefined" in steps[1]["error"] and "reason" in steps[1]["error"]
    assert r.outcomes("t") == {"failed": 1}
    (m,) = r.of("match", "on-failure")
    assert m["vm"] == "web-1" and m["data"]["action"] == "log" and m["data"]["step"] == 1
    (said,) = r.of("step", "on-failure")
    assert said["result"].startswith("t/1 failed on web-1: ")


async def test_undefined_in_a_native_template_is_not_an_empty_value() -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - emit: {event: DERIVED, data: {x: "{{ vars.missing }}"}}
          - name: d
            on: DERIVED
            actions: [{log: x}]
        """
    r = await play(rules, stops(1000))
    assert [s["status"] for s in r.of("step", "t")] == ["failed"]
    assert r.of("match", "d") == []


async def test_emit_fires_another_rule_on_the_same_vm_with_native_values() -> None:
    rules = """
        rules:
          - name: first
            on: BLOCK_IO_ERROR
            actions:
              - sleep: 2s
              - emit: {event: RESUMED_BY_REACTOR, data: {why: "{{ event.name }}", n: "{{ 40 + 2 }}"}}
          - name: second
            on: RESUMED_BY_REACTOR
            match: {why: BLOCK_IO_ERROR}
            actions:
              - log: "{{ event.data.n + 1 }}"
        """
    r = await play(rules, [line("BLOCK_IO_ERROR", io(), vm="web-3")])
    (m,) = r.of("match", "second")
    assert (m["vm"], m["time"], m["data"]) == ("web-3", 1002, {"why": "BLOCK_IO_ERROR", "n": 42})
    assert [s["result"] for s in r.of("step", "second")] == ["43"]


async def test_a_failing_run_does_not_stop_the_engine() -> None:
    rules = """
        rules:
          - name: bad
            on: STOP
            actions: [{exec: [/nonexistent/program]}]
          - name: good
            on: RESUME
            actions: [{log: x}]
        """
    r = await play(rules, [*stops(1000), line("RESUME", t=1001)])
    assert "/nonexistent/program" in r.of("step", "bad")[0]["error"]
    assert [s["status"] for s in r.of("step", "good")] == ["ok"]


# ------------------------------------------------------------------ dry run


async def test_dry_run_records_mutating_steps_and_does_not_run_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rules = f"""
        rules:
          - name: t
            on: STOP
            actions:
              - log: "about to touch {{{{ vm.name }}}}"
              - exec: [/usr/bin/touch, "{marker}"]
              - emit: DERIVED
          - name: d
            on: DERIVED
            actions: [{{log: derived}}]
        """
    r = await play(rules, stops(1000), dry_run=True)
    assert [(a, s) for a, s, _ in r.steps("t")] == [("log", "ok"), ("exec", "dry-run"), ("emit", "ok")]
    assert r.of("step", "t")[1]["args"]["argv"] == ["/usr/bin/touch", str(marker)]
    assert not marker.exists()
    assert r.outcomes("t") == {"dry-run": 1}
    assert [s["status"] for s in r.of("step", "d")] == ["ok"]
    r = await play(rules, stops(1000))
    assert marker.exists() and r.outcomes("t") == {"ok": 1}


# ------------------------------------------------------------------ exec


async def test_exec_never_uses_a_shell() -> None:
    nasty = ["a; touch /tmp/reactor-pwned", "$(id)", "`id`", "two words", "line1\nline2", "*", "'q'\"q\"", ""]
    rules = {"rules": [{
        "name": "t", "on": "BLOCK_IO_ERROR",
        "actions": [{"exec": {"argv": [PY, "-c", ARGV_SCRIPT, *nasty, "{{ event.data.reason }}",
                                       "x{{ event.data.device }}y"]}}],
    }]}
    evil = "$(rm -rf ~); `reboot` | cat && echo"
    r = await play(json.dumps(rules), [line("BLOCK_IO_ERROR", io("d 0;ls", reason=evil))])
    (step,) = r.of("step")
    assert step["status"] == "ok", step["error"]
    assert json.loads(step["result"]["stdout"]) == [*nasty, evil, "xd 0;lsy"]
    assert not await asyncio.to_thread(Path("/tmp/reactor-pwned").exists)


async def test_exec_stdin_env_and_failure_message() -> None:
    script = ("import json, os, sys; e = json.load(sys.stdin); "
              "print(json.dumps([e['event'], e['vm'], e['data']['device'], os.environ['REACTOR_RULE'], "
              "os.environ['REACTOR_VM'], os.environ['REACTOR_EVENT'], os.environ.get('EXTRA'), "
              "sorted(os.environ)]))")
    rules = {"rules": [
        {"name": "t", "on": "BLOCK_IO_ERROR",
         "actions": [{"exec": {"argv": [PY, "-c", script], "env": {"EXTRA": "{{ vm.name }}"}}}]},
        {"name": "stdin", "on": "STOP",
         "actions": [{"exec": {"argv": [PY, "-c", "import sys; print(sys.stdin.read().upper())"],
                               "stdin": "hello {{ vm.name }}"}}]},
        {"name": "fails", "on": "RESUME",
         "actions": [{"exec": [PY, "-c", "import sys; sys.stderr.write('first\\nbad thing\\n'); sys.exit(3)"]}]},
        {"name": "unchecked", "on": "RESUME",
         "actions": [{"exec": {"argv": [PY, "-c", "import sys; sys.exit(3)"], "check": False}}]},
    ]}
    r = await play(json.dumps(rules), [line("BLOCK_IO_ERROR", io("d7"), vm="web-1"),
                                       line("STOP", t=1001, vm="web-1"), line("RESUME", t=1002)])
    out = json.loads(r.of("step", "t")[0]["result"]["stdout"])
    assert out[:7] == ["BLOCK_IO_ERROR", "web-1", "d7", "t", "web-1", "BLOCK_IO_ERROR", "web-1"]
    assert set(out[7]) <= {"PATH", "REACTOR_VM", "REACTOR_RULE", "REACTOR_EVENT", "EXTRA", "LC_CTYPE"}
    assert r.of("step", "stdin")[0]["result"]["stdout"] == "HELLO WEB-1\n"
    (failed,) = r.of("step", "fails")
    assert (failed["status"], failed["error"]) == ("failed", f"exec '{PY}' exited with 3: bad thing")
    (unchecked,) = r.of("step", "unchecked")
    assert (unchecked["status"], unchecked["result"]["returncode"]) == ("ok", 3)


# ------------------------------------------------------------------ ordering


async def test_per_vm_arrival_order_through_the_bus() -> None:
    rules = """
        rules:
          - name: t
            on: RTC_CHANGE
            mode: parallel
            max_parallel: 1000
            actions: [{log: x}]
        """
    rs = load_rules_text([("e.yaml", textwrap.dedent(rules))])
    records: list[dict[str, Any]] = []
    n = 300
    all_done = asyncio.Event()
    steps = Counter[str]()

    def output(record: dict[str, Any]) -> None:
        records.append(record)
        steps[record["type"]] += 1
        if steps["step"] == 3 * n:
            all_done.set()

    engine = Engine(rs, clock=RealClock(), output=output)
    catalog = default_catalog()
    task = asyncio.create_task(engine.run(), name="engine")
    try:
        for i in range(n):
            for vm in ("a", "b", "c"):
                engine.submit(catalog.make_event(
                    {"event": "RTC_CHANGE", "data": {"offset": i, "qom-path": "/rtc"},
                     "timestamp": {"seconds": 1000 + i, "microseconds": 0}}, vm=vm))
            if i % 50 == 0:
                await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await all_done.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for vm in ("a", "b", "c"):
        offsets = [r["data"]["offset"] for r in records if r["type"] == "match" and r["vm"] == vm]
        assert offsets == list(range(n))
    assert sum(engine.bus.dropped.values()) == 0


async def test_dispatch_outside_a_session_is_an_error() -> None:
    rs = load_rules_text([("e.yaml", "rules:\n  - name: t\n    on: STOP\n    actions: [{log: x}]\n")])
    engine = Engine(rs, clock=VirtualClock())
    event = default_catalog().make_event({"event": "STOP"}, vm="vm0")
    with pytest.raises(RuntimeError, match="session"):
        engine.dispatch(event)


async def test_a_failing_failure_handler_does_not_loop(caplog: pytest.LogCaptureFixture) -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions: [{log: "{{ vars.x }}"}]
          - name: handler
            on: REACTOR_ACTION_FAILED
            actions: [{log: "{{ vars.y }}"}]
        """
    async with asyncio.timeout(5):
        r = await play(rules, stops(1000))
    assert [m["rule"] for m in r.of("match")] == ["t", "handler"]
    assert r.engine.stats["events"] == 2
    assert "not emitting REACTOR_ACTION_FAILED" in caplog.text


async def test_failure_is_logged_with_the_rendered_arguments(caplog: pytest.LogCaptureFixture) -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - exec: {argv: [/bin/false, "{{ vm.name }}-arg"], env: {TOKEN: s3cret}}
        """
    r = await play(rules, stops(1000, vm="web-9"))
    (step,) = r.of("step")
    assert step["args"]["argv"] == ["/bin/false", "web-9-arg"]
    failed = [rec.getMessage() for rec in caplog.records if "failed:" in rec.getMessage()]
    assert len(failed) == 1 and "web-9-arg" in failed[0] and "exited with 1" in failed[0]
    assert "s3cret" not in caplog.text


async def test_throttle_windows_survive_a_restart_through_the_journal(tmp_path: Path) -> None:
    from reactor.ops.journal import Journal

    rules = """
        rules:
          - name: t
            on: STOP
            throttle: {max: 2, within: 1h}
            actions: [{log: x}]
        """
    rs = load_rules_text([("e.yaml", textwrap.dedent(rules))])

    async def session(times: list[float]) -> tuple[list[dict[str, Any]], list[Any]]:
        async with Journal(tmp_path / "journal.db") as journal:
            clock = VirtualClock()
            out: list[dict[str, Any]] = []
            engine = Engine(rs, clock=clock, journal=journal, output=out.append)
            engine.throttles.load(journal.load_throttle(min(times) - 3600))
            await replay(stops(*times), engine, clock)
            await journal.flush()
            return out, journal.runs(rule="t", status="throttled")

    out, throttled = await session([1000, 1001])
    assert [o["type"] for o in out] == ["match", "step", "match", "step"] and throttled == []
    out, throttled = await session([1002, 4601])     # a restart: 1002 is the third within the hour
    assert [(o["type"], o["time"]) for o in out if o["type"] != "step"] == [("throttled", 1002), ("match", 4601)]
    assert len(throttled) == 1


async def test_wait_for_counts_events_since_the_previous_step_began() -> None:
    reg, _ = flaky_registry()
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - sleep: 2s
              - await_event: {event: RESUME, timeout: 5}
        """
    # RESUME at 1001 came while the sleep ran: it counts; vm1's RESUME before its STOP does not
    evs = [line("RESUME", t=999, vm="vm1"), line("STOP", t=1000), line("STOP", t=1000, vm="vm1"),
           line("RESUME", t=1001), line("RESUME", t=1001, vm="other")]
    r = await play(rules, evs, registry=reg)
    by_vm = {s["vm"]: (s["status"], s["result"], s["error"]) for s in r.of("step") if s["action"] == "await_event"}
    assert by_vm == {"vm0": ("ok", "RESUME@1001", None),
                     "vm1": ("timeout", None, "no RESUME from vm1 within 5s")}


async def test_the_step_after_a_wait_for_runs_when_its_event_comes_even_as_the_last_line() -> None:
    rules = """
        rules:
          - name: t
            on: STOP
            actions:
              - wait_for: {event: RESUME, timeout: 30s}
              - log: "resumed at {{ now.timestamp() }}"
        """
    for tail in ([], [line("STOP", t=1200, vm="other")]):   # the RESUME last, or an unrelated event after it
        r = await play(rules, [line("STOP", t=1000), line("RESUME", t=1001), *tail])
        got = [(s["vm"], s["action"], s["status"], s["time"]) for s in r.of("step")]
        assert got[:2] == [("vm0", "wait_for", "ok", 1000.0), ("vm0", "log", "ok", 1001.0)], got
        assert r.of("step")[1]["result"] == "resumed at 1001.0"
        if tail:   # other's wait times out at 1230, on the virtual clock, after the end of the input
            assert got[2:] == [("other", "wait_for", "failed", 1200.0)], got


async def test_a_queued_run_sees_the_events_since_its_own_trigger() -> None:
    """The second STOP's run waits in the queue while the first runs; the RESUME that ends the first
    came after the second STOP, so the second run's wait finds it at once."""
    reg, _ = flaky_registry()
    rules = """
        rules:
          - name: t
            on: STOP
            mode: queued
            actions:
              - await_event: {event: RESUME, timeout: 5}
        """
    evs = [line("RESUME", t=999), line("STOP", t=1000), line("STOP", t=1000.5), line("RESUME", t=1001)]
    r = await play(rules, evs, registry=reg)
    got = [(s["status"], s["result"]) for s in r.of("step") if s["action"] == "await_event"]
    assert got == [("ok", "RESUME@1001"), ("ok", "RESUME@1001")]


def test_engine_keeps_the_bus_it_is_given() -> None:
    """An empty Bus is falsy (it has a length): the engine must still use the one passed in, limits and all."""
    from reactor.engine.bus import Bus

    bus = Bus(per_vm=7, total=11)
    engine = Engine(load_rules_text([("r.yaml", "rules: []\n")]), bus=bus)
    assert engine.bus is bus and engine.bus.per_vm == 7 and engine.bus.total == 11
