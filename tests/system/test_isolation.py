"""Isolation: a plugin that raises, hangs past its timeout, ignores cancellation or calls sys.exit
cannot stall other rules or VMs, nor take the engine down; what happened is in the journal.

These run on the real clock (timeouts are real) with a real SQLite journal.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reactor.engine.clock import RealClock
from reactor.engine.engine import ABANDON_GRACE, Engine, abandoned_actions
from reactor.ops.journal import Journal
from reactor.plugin import ActionContext, action
from reactor.testing import load_test_rules, make_event

#: Set to let the stubborn actions end (so no task outlives its test).
release = asyncio.Event()


@dataclass(frozen=True)
class NoArgs:
    pass


@action("stubborn", mutating=False)
async def stubborn(ctx: ActionContext, args: NoArgs) -> None:
    """Ignores cancellation until the test releases it."""
    while not release.is_set():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


@action("raiser", mutating=False)
async def raiser(ctx: ActionContext, args: NoArgs) -> None:
    raise RuntimeError("plugin bug")


@action("exiter", mutating=False)
async def exiter(ctx: ActionContext, args: NoArgs) -> None:
    sys.exit(3)


@action("hang", mutating=False)
async def hang(ctx: ActionContext, args: NoArgs) -> None:
    await asyncio.sleep(3600)


PLUGINS = [stubborn, raiser, exiter, hang]

RULES = """
rules:
  - name: bad
    on: STOP
    vms: web-1
    actions:
      - {ACTION}
      - log: after
  - name: good-same-vm
    on: STOP
    vms: web-1
    actions: [{sleep: 50ms}, {log: fine}]
  - name: good-other-vm
    on: STOP
    vms: db-1
    actions: [{log: fine}]
"""


@pytest.fixture(autouse=True)
async def _release() -> Any:
    release.clear()
    yield
    release.set()   # let abandoned actions end before the test's loop closes
    for _ in range(200):
        if not abandoned_actions():
            break
        await asyncio.sleep(0.01)


async def drive(rules: str, journal: Journal | None, *, settle: float = 5.0,
                stop_after: float | None = None, grace: float = 30.0) -> tuple[Engine, list[dict[str, Any]], float]:
    rs = load_test_rules(textwrap.dedent(rules), actions=PLUGINS)
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=RealClock(), journal=journal,
                    output=lambda r: records.append({**r, "seen": time.monotonic()}))
    t0 = time.monotonic()
    task = asyncio.create_task(engine.run(grace=grace))
    await asyncio.sleep(0)
    for vm in ("web-1", "db-1"):
        engine.submit(make_event("STOP", vm=vm, at=time.time()))
    if stop_after is not None:
        await asyncio.sleep(stop_after)
        engine.stop()
        await asyncio.wait_for(task, settle)
        return engine, records, time.monotonic() - t0
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if engine.stats["matches"] >= 3 and engine.runs_in_flight == 0:
            break
    elapsed = time.monotonic() - t0
    engine.stop()
    await asyncio.wait_for(task, settle)
    return engine, records, elapsed


def done(records: list[dict[str, Any]], rule: str) -> list[tuple[str, str]]:
    return [(r["action"], r["status"]) for r in records if r["type"] == "step" and r["rule"] == rule]


@pytest.fixture
async def journal(tmp_path: Path) -> Any:
    async with Journal(tmp_path / "journal.db", record_events="matched") as j:
        yield j


async def test_raising_plugin_fails_its_run_only(journal: Journal) -> None:
    _engine, records, _ = await drive(RULES.replace("{ACTION}", "raiser: {}"), journal)
    assert done(records, "bad") == [("raiser", "failed")]
    assert done(records, "good-same-vm") == [("sleep", "ok"), ("log", "ok")]
    assert done(records, "good-other-vm") == [("log", "ok")]
    await journal.flush()
    (run,) = journal.runs(rule="bad")
    assert run.status == "failed"
    assert run.steps[0].error == "RuntimeError: plugin bug"


async def test_sys_exit_in_a_plugin_fails_the_step_not_the_engine(journal: Journal) -> None:
    _engine, records, _ = await drive(RULES.replace("{ACTION}", "exiter: {}"), journal)
    assert done(records, "bad") == [("exiter", "failed")]
    assert done(records, "good-other-vm") == [("log", "ok")]
    await journal.flush()
    (run,) = journal.runs(rule="bad")
    assert "SystemExit" in (run.steps[0].error or "")


async def test_hanging_plugin_times_out_without_stalling_others(journal: Journal) -> None:
    engine, records, elapsed = await drive(RULES.replace("{ACTION}", "{hang: {}, timeout: 300ms}"), journal)
    assert done(records, "bad") == [("hang", "timeout")]
    assert done(records, "good-same-vm") == [("sleep", "ok"), ("log", "ok")]
    ends = {r["rule"]: r["seen"] for r in records if r["type"] == "step"}
    assert ends["good-same-vm"] < ends["bad"] and ends["good-other-vm"] < ends["bad"]  # not held up
    assert elapsed < 2.0
    assert engine.stats["steps_abandoned"] == 0     # it obeyed cancellation


async def test_plugin_ignoring_cancellation_is_abandoned_and_recorded(journal: Journal) -> None:
    t0 = time.monotonic()
    engine, records, elapsed = await drive(RULES.replace("{ACTION}", "{stubborn: {}, timeout: 200ms}"), journal)
    assert done(records, "bad") == [("stubborn", "timeout")]
    assert done(records, "good-same-vm") == [("sleep", "ok"), ("log", "ok")]
    assert done(records, "good-other-vm") == [("log", "ok")]
    assert 0.2 + ABANDON_GRACE - 0.1 < elapsed < 0.2 + ABANDON_GRACE + 1.0
    assert engine.stats["steps_abandoned"] == 1
    assert len(abandoned_actions()) == 1
    await journal.flush()
    (run,) = journal.runs(rule="bad")
    assert run.status == "failed"
    assert run.steps[0].status == "timeout"
    assert "ignored cancellation" in (run.steps[0].error or "")
    assert "abandoned" in (run.steps[0].error or "")
    release.set()
    for _ in range(100):
        if not abandoned_actions():
            break
        await asyncio.sleep(0.02)
    assert abandoned_actions() == []
    assert time.monotonic() - t0 < 5


async def test_stop_is_not_held_up_by_a_plugin_ignoring_cancellation(journal: Journal) -> None:
    # no step timeout: only the shutdown's cancellation can end it, and the action ignores that
    engine, records, elapsed = await drive(RULES.replace("{ACTION}", "stubborn: {}"), journal,
                                           stop_after=0.3, grace=0.2)
    assert elapsed < 0.3 + 0.2 + ABANDON_GRACE + 1.0
    assert done(records, "bad") == [("stubborn", "cancelled")]
    assert done(records, "good-other-vm") == [("log", "ok")]
    assert engine.stats["steps_abandoned"] == 1
    await journal.flush()
    (run,) = journal.runs(rule="bad")
    assert run.status == "cancelled"
