"""Correlation state across ``kill -9``: pending ``unless`` matches and counts, with the real daemon.

As in tests/ops/test_restart.py, ``reactor run`` is a subprocess watching a fake
QMP server that outlives it; the rule's action is a QMP command the fake
records (``query-uuid``), so "exactly one run" is counted where it lands.  A
pending match is re-armed with the time it has left when the daemon comes
back before its deadline (one run, at the deadline; or one cancellation), and
runs once, flagged ``late``, when it comes back after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from fakeqmp import FakeQMP
from restart_fixtures import Daemons, count, daemons, read_runs, until, write_config

__all__ = ["daemons"]

RULES = """
rules:
  - name: paused-too-long
    on: STOP
    unless: {{event: RESUME, within: {within}}}
    actions:
      - qmp: {{execute: query-uuid}}
  - name: third-reset
    on: RESET
    count: {{min: 3, within: 1h}}
    actions:
      - qmp: {{execute: query-kvm}}
"""


def rows(state: Path, form: str) -> int:
    try:
        con = sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(con.execute("SELECT COUNT(*) FROM correlation WHERE form = ?", (form,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def fake_vm(tmp_path: Path, alerts: list[float]) -> FakeQMP:
    def alert(_args: dict[str, Any]) -> dict[str, Any]:
        alerts.append(time.time())
        return {}

    return FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running",
                   handlers={"query-uuid": alert, "query-kvm": lambda _a: {}})


async def start_with_pending(tmp_path: Path, daemons: list[Daemons], fake: FakeQMP, within: str) -> tuple[
        Daemons, float]:
    cfg = write_config(tmp_path, [fake], RULES.format(within=within))
    d = Daemons(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    d.start()
    await fake.wait_sessions(1, timeout=20)
    t0 = time.time()
    fake.emit("STOP")
    await until(lambda: rows(tmp_path / "state", "unless") == 1, 10, "the pending match on disk")
    await asyncio.to_thread(d.kill9)
    await fake.wait_no_sessions()
    return d, t0


async def stop(d: Daemons) -> None:
    assert d.proc is not None
    d.proc.terminate()
    assert await asyncio.to_thread(d.proc.wait, 20) == 0


async def test_kill_9_while_pending_then_restart_before_the_deadline_runs_once_at_it(
    tmp_path: Path, daemons: list[Daemons]
) -> None:
    alerts: list[float] = []
    async with fake_vm(tmp_path, alerts) as fake:
        d, t0 = await start_with_pending(tmp_path, daemons, fake, "6s")
        d.start()
        await fake.wait_sessions(1, timeout=20)
        assert alerts == []
        await until(lambda: alerts, 15, "the run at the deadline")
        assert alerts[0] >= t0 + 6 - 0.05      # re-armed with the time it had left, not started afresh
        assert alerts[0] < t0 + 6 + 3
        await asyncio.sleep(1.0)
        await stop(d)
        d.start()                               # a further restart does not run it again
        await fake.wait_sessions(1, timeout=20)
        await asyncio.sleep(1.0)
        await stop(d)
    assert len(alerts) == 1
    runs = [r for r in read_runs(tmp_path / "state") if r.rule == "paused-too-long"]
    assert [(r.outcome, r.status) for r in runs] == [("pending", "elapsed"), ("started", "ok")]
    assert rows(tmp_path / "state", "unless") == 0


async def test_kill_9_while_pending_then_restart_and_resume_cancels_once(
    tmp_path: Path, daemons: list[Daemons]
) -> None:
    alerts: list[float] = []
    async with fake_vm(tmp_path, alerts) as fake:
        d, _ = await start_with_pending(tmp_path, daemons, fake, "8s")
        d.start()
        await fake.wait_sessions(1, timeout=20)
        await asyncio.sleep(0.5)
        fake.emit("RESUME")
        await until(lambda: rows(tmp_path / "state", "unless") == 0, 10, "the cancellation on disk")
        await asyncio.sleep(8.0)                # past the old deadline: nothing runs
        await stop(d)
    assert alerts == []
    runs = [r for r in read_runs(tmp_path / "state") if r.rule == "paused-too-long"]
    assert [(r.outcome, r.status) for r in runs] == [("pending", "cancelled")]
    assert runs[0].error is not None and "cancelled by RESUME from vm1" in runs[0].error


async def test_kill_9_while_pending_then_restart_after_the_deadline_runs_once_late(
    tmp_path: Path, daemons: list[Daemons]
) -> None:
    alerts: list[float] = []
    async with fake_vm(tmp_path, alerts) as fake:
        d, t0 = await start_with_pending(tmp_path, daemons, fake, "2s")
        await asyncio.sleep(max(0.0, t0 + 3 - time.time()))   # the deadline passes while reactor is down
        d.start()
        await until(lambda: alerts, 20, "the late run")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(d.kill9)                      # a kill after it ran: not run again
        await fake.wait_no_sessions()
        d.start()
        await fake.wait_sessions(1, timeout=20)
        await asyncio.sleep(1.0)
        await stop(d)
    assert len(alerts) == 1
    runs = [r for r in read_runs(tmp_path / "state") if r.rule == "paused-too-long"]
    assert [(r.outcome, r.status) for r in runs] == [("pending", "late"), ("late", "ok")]


async def test_a_kill_9_the_instant_the_deadline_run_acts_does_not_run_it_again(
    tmp_path: Path, daemons: list[Daemons]
) -> None:
    """The fake SIGKILLs the daemon when the alert reaches it (the worst moment: the action is out, the
    daemon dead): the pending match's end was on disk before the run acted, so a restart does not repeat it."""
    alerts: list[float] = []
    d: Daemons | None = None

    def alert(_args: dict[str, Any]) -> dict[str, Any]:
        alerts.append(time.time())
        assert d is not None and d.proc is not None
        os.kill(d.proc.pid, signal.SIGKILL)
        return {}

    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running", handlers={"query-uuid": alert}) as fake:
        cfg = write_config(tmp_path, [fake], RULES.format(within="1s"))
        d = Daemons(cfg, tmp_path / "daemon.log")
        daemons.append(d)
        d.start()
        await fake.wait_sessions(1, timeout=20)
        fake.emit("STOP")
        await until(lambda: alerts, 15, "the run at the deadline")
        await asyncio.to_thread(d.proc.wait, 10)   # type: ignore[union-attr]
        await fake.wait_no_sessions()
        d.start()
        await fake.wait_sessions(1, timeout=20)
        await asyncio.sleep(1.5)
        await stop(d)
    assert len(alerts) == 1
    runs = [r for r in read_runs(tmp_path / "state") if r.rule == "paused-too-long"]
    assert [(r.outcome, r.status) for r in runs] == [("pending", "elapsed"), ("started", "interrupted")]


async def test_counts_survive_kill_9(tmp_path: Path, daemons: list[Daemons]) -> None:
    third: list[float] = []
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running",
                       handlers={"query-kvm": lambda _a: third.append(time.time())}) as fake:
        cfg = write_config(tmp_path, [fake], RULES.format(within="1m"))
        d = Daemons(cfg, tmp_path / "daemon.log")
        daemons.append(d)
        for i in range(2):
            d.start()
            await fake.wait_sessions(1, timeout=20)
            fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
            await until(lambda i=i: rows(tmp_path / "state", "count") == i + 1, 10, f"count {i + 1} on disk")
            await asyncio.to_thread(d.kill9)
            await fake.wait_no_sessions()
        d.start()
        await fake.wait_sessions(1, timeout=20)
        fake.emit("RESET", {"guest": True, "reason": "guest-reset"})   # the 3rd, across two kills
        await until(lambda: third, 10, "the run on the 3rd RESET")
        await stop(d)
    assert len(third) == 1 and count(fake, "query-kvm") == 1
    assert rows(tmp_path / "state", "count") == 0
