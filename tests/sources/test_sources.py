"""Event sources: the sources: config section (positions), cron schedules, the timer, SourceRunner restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from reactor.daemon.config import parse_config
from reactor.errors import LoadError
from reactor.plugin import SourceContext, source
from reactor.sources import TIMER, CronSchedule, SourceEntry, SourceRunner, TimerConfig
from reactor.testing import FakeDaemon, make_event, run_rules, run_source


def config_errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(LoadError) as info:
        parse_config(textwrap.dedent(text), tmp_path / "reactor.yaml")
    return [str(e).replace(str(tmp_path) + "/", "") for e in info.value.errors]


def test_sources_section_parses(tmp_path: Path) -> None:
    cfg = parse_config(textwrap.dedent("""
        sources:
          - timer: {name: nightly, cron: "0 2 * * *", timezone: UTC}
          - timer: {name: paused-check, every: 1m, vm: [web-1, web-2]}
        """), tmp_path / "reactor.yaml")
    entries = cfg.section("sources")
    assert [e.label for e in entries] == ["timer:nightly", "timer:paused-check"]
    assert entries[1].config.every == 60.0
    assert entries[1].config.vm == ["web-1", "web-2"]


@pytest.mark.parametrize(("body", "error"), [
    ("  - timr: {name: x, every: 1m}", "reactor.yaml:3:5: sources: unknown source 'timr' (did you mean 'timer'?)"),
    ("  - timer: {name: x, every: soon}", "reactor.yaml:3:29: sources: timer: argument 'every': expected a "
                                         "duration like 5s, 500ms, 10m, 1h, 1d, not 'soon'"),
    ("  - timer: {name: x, evry: 1m}", "reactor.yaml:3:22: sources: timer: unknown argument 'evry' "
                                      "(did you mean 'every'?)"),
    ("  - timer: {name: x}", "reactor.yaml:3:12: sources: timer: give exactly one of 'every' and 'cron'"),
    ("  - timer: {name: x, cron: '@daily', timezone: Mars/Base}", "reactor.yaml:3:48: sources: timer: timezone: "
                                                                "unknown time zone 'Mars/Base'"),
    ("  - timer: {name: x, cron: '61 * * * *'}", "reactor.yaml:3:12: sources: timer: cron minute: 61 is "
                                                "outside 0-59"),
    ("  - timer: {name: x, every: 1m, timezone: UTC}", "reactor.yaml:3:12: sources: timer: timezone only "
                                                            "applies to 'cron'"),
    ("  - timer: {name: '{{ vm.name }}', every: 1m}", "reactor.yaml:3:12: sources: timer: templates ({{ }}) are "
                                                     "not allowed in a source's configuration"),
    ("  - timer: {name: x, every: 1m}\n  - timer: {name: x, every: 2m}",
     "reactor.yaml:4:5: sources: timer:x is configured twice (first at"),
    ("  - timer", "reactor.yaml:3:5: sources: each source is a mapping with one key"),
])
def test_sources_section_errors_point_at_the_value(tmp_path: Path, body: str, error: str) -> None:
    errors = config_errors("host: h\nsources:\n" + body + "\n", tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(error), errors[0]


def test_sources_must_be_a_list(tmp_path: Path) -> None:
    assert config_errors("sources: {timer: {}}\n", tmp_path) == [
        "reactor.yaml:1:10: sources: expected a list of sources, got mapping"]


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()   # type: ignore[misc]


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("0 2 * * *", utc(2024, 3, 1, 1, 0), utc(2024, 3, 1, 2, 0)),
    ("0 2 * * *", utc(2024, 3, 1, 2, 0), utc(2024, 3, 2, 2, 0)),
    ("*/15 * * * *", utc(2024, 3, 1, 1, 7, 30), utc(2024, 3, 1, 1, 15)),
    ("30 4 1 * *", utc(2024, 2, 15), utc(2024, 3, 1, 4, 30)),
    ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
    ("0 9 * * mon-fri", utc(2024, 3, 2, 12), utc(2024, 3, 4, 9)),      # Saturday -> Monday
    ("0 0 13 * fri", utc(2024, 9, 1), utc(2024, 9, 6)),                # either day field (cron's OR)
    ("@hourly", utc(2024, 3, 1, 1, 59, 59), utc(2024, 3, 1, 2, 0)),
    ("0 0 * jan,jul 7", utc(2024, 1, 1, 12), utc(2024, 1, 7)),          # 7 is Sunday
])
def test_cron_next(expr: str, after: float, expected: float) -> None:
    assert CronSchedule(expr, dt.UTC).next_after(after) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("* * * *", "expected 5 fields"), ("5-1 * * * *", "runs backwards"), ("*/0 * * * *", "step"),
    ("* * * foo *", "'foo' is not a number"), ("0 0 31 2 *", "never fires"),
])
def test_cron_errors(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronSchedule(expr, dt.UTC).next_after(0.0)


async def test_timer_every_and_immediately() -> None:
    events = await run_source("timer", {"name": "t", "every": "10m", "immediately": True, "vm": "web-1"},
                              start=1000.0, until=1000.0 + 1800)
    assert [(e.timestamp - 1000, e.data["count"]) for e in events] == [(0, 1), (600, 2), (1200, 3), (1800, 4)]
    assert {(e.name, e.vm, e.host, e.data["name"]) for e in events} == {("REACTOR_TIMER", "web-1", "test-host", "t")}
    assert all(e.valid for e in events)


async def test_timer_cron_in_a_time_zone() -> None:
    start = utc(2024, 7, 1)     # Paris is UTC+2 in July: 02:00 Paris is 00:00 UTC
    events = await run_source("timer", {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris"},
                              start=start, until=start + 2 * 86400 + 1)
    assert [e.timestamp for e in events] == [start + 86400, start + 2 * 86400]   # strictly after the start


async def test_timer_events_drive_rules() -> None:
    ticks = await run_source("timer", {"name": "paused-check", "every": "1m", "vm": ["web-1", "web-2"]},
                             until=180)
    out = await run_rules("""
        rules:
          - name: check-paused
            on: REACTOR_TIMER
            match: {name: paused-check}
            if: "vm.status == 'paused'"
            actions: [{log: "{{ vm.name }} still paused"}]
        """, [make_event("STOP", vm="web-2", at=0), *ticks])
    assert [(c.vm, c.args["message"]) for c in out.calls] == [("web-2", "web-2 still paused")] * 3


@dataclass(frozen=True)
class FlakyConfig:
    name: str
    fail: int = 2


attempts: dict[str, int] = {}


@source("flaky")
async def flaky(ctx: SourceContext, config: FlakyConfig) -> None:
    n = attempts[config.name] = attempts.get(config.name, 0) + 1
    if n <= config.fail:
        raise RuntimeError(f"attempt {n} failed")
    ctx.emit("FLAKY_OK", {"attempt": n}, vm="x")


async def test_runner_restarts_a_failing_source_with_backoff() -> None:
    entries = [SourceEntry(spec=flaky, config=FlakyConfig(name="a"), label="flaky:a"),
               SourceEntry(spec=flaky, config=FlakyConfig(name="b", fail=0), label="flaky:b")]
    async with FakeDaemon() as daemon:
        runner = SourceRunner(daemon, entries)
        runner.backoff_first = 0.02
        await runner.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(daemon.emitted) == 2:
                break
        await runner.aclose()
    assert sorted((e.name, e.data["attempt"]) for e in daemon.emitted) == [("FLAKY_OK", 1), ("FLAKY_OK", 3)]
    assert runner.restarts == {"flaky:a": 2}
    assert runner.failures == {"flaky:a": "RuntimeError: attempt 2 failed"}


async def test_runner_close_cancels_running_sources() -> None:
    async with FakeDaemon() as daemon:
        runner = SourceRunner(daemon, [SourceEntry(spec=TIMER, config=TimerConfig(name="t", every=3600.0),
                                                   label="timer:t")])
        await runner.start()
        await asyncio.sleep(0.05)
        assert len(runner._tasks) == 1
        await asyncio.wait_for(runner.aclose(), 2)
        assert not runner._tasks


async def test_daemon_runs_configured_timer_into_rules_and_journal(tmp_path: Path) -> None:
    from reactor.daemon.daemon import Daemon
    from reactor.ops.journal import Journal

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "tick.yaml").write_text(textwrap.dedent("""
        rules:
          - name: on-tick
            on: REACTOR_TIMER
            match: {name: fast}
            actions: [{log: "tick {{ event.data.count }}"}]
        """))
    cfg = parse_config(textwrap.dedent("""
        rules: rules/
        host: h1
        sources:
          - timer: {name: fast, every: 1s, immediately: true}
        """), tmp_path / "reactor.yaml")
    daemon = Daemon(cfg, grace=1.0)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 10)
    await asyncio.sleep(1.3)
    daemon.stop()
    await asyncio.wait_for(task, 10)
    async with Journal(tmp_path / "state" / "journal.db") as j:
        runs = j.runs(rule="on-tick")
    assert sorted(r.steps[0].result for r in runs) == ["tick 1", "tick 2"]
    assert {(r.vm, r.status) for r in runs} == {("reactor", "ok")}
