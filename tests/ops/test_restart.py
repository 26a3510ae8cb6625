"""Restart safety: ``kill -9`` of the real daemon in the middle of runs, then a restart.

``reactor run`` is a subprocess here (a SIGKILL must hit a whole process),
watching fake QMP servers (tests/fakeqmp.py) that live in the test process
and so outlast every daemon: what a fake received across all the restarts
(``fake.commands``) is the ground truth for "was a 4th ``cont`` sent".  The
journal is read afterwards by a separate reader, as ``reactor history``
would.

Guarantees (docs/reliability.md, "Restart safety"):

* the journal opens intact after any number of ``kill -9`` (SQLite WAL:
  ``PRAGMA integrity_check`` is ``ok``);
* runs in flight at the kill are marked ``interrupted`` at the next start,
  never lost and never run again (one run per triggering event);
* throttle windows hold across restarts, even when the kill lands right
  after the throttled command reached QEMU;
* QoS 1 MQTT messages queued while the broker was down are delivered after
  a ``kill -9`` and a restart, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from broker import Broker, fresh_broker
from fakeqmp import FakeQMP
from restart_fixtures import Daemons, count, daemons, read_runs, until, write_config

__all__ = ["daemons", "fresh_broker"]


# --- helpers ----------------------------------------------------------------------------------


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


# --- kill/restart cycles --------------------------------------------------------------------------

CYCLE_RULES = """
rules:
  - name: resume
    on: STOP
    throttle: {max: 3, within: 1h}
    actions:
      - qmp: cont
  - name: slow
    on: RESET
    actions:
      - sleep: 1h
      - log: never reached
"""

CYCLES = 6


async def test_kill_9_cycles_keep_throttle_windows_and_mark_runs_interrupted(
    tmp_path: Path, daemons: list[Daemons]
) -> None:
    """Six ``kill -9``/restart cycles, each with a run in flight and a STOP.

    The fake SIGKILLs the daemon the instant a ``cont`` reaches it (the worst
    moment for the throttle window: the command is out, the daemon dead).  The
    rule allows 3 ``cont`` per hour: exactly 3 arrive over the 6 cycles.
    """
    d: Daemons | None = None

    def cont(_args: dict[str, Any]) -> dict[str, Any]:
        assert d is not None and d.proc is not None
        os.kill(d.proc.pid, signal.SIGKILL)  # the command is out; the daemon dies before its reply
        return {}

    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running", handlers={"cont": cont}) as fake:
        cfg = write_config(tmp_path, [fake], CYCLE_RULES)
        d = Daemons(cfg, tmp_path / "daemon.log")
        daemons.append(d)
        for cycle in range(CYCLES):
            d.start()
            await fake.wait_sessions(1, timeout=20)
            fake.emit("RESET", {"guest": True, "reason": "guest-reset"})  # a run that sleeps for an hour
            conts = count(fake, "cont")
            fake.emit("STOP")
            if cycle < 3:
                await until(lambda conts=conts: count(fake, "cont") > conts, 10, f"cont in cycle {cycle}")
            else:
                await asyncio.sleep(1.0)  # time enough to send one, were the window lost
            await asyncio.to_thread(d.kill9)
            await fake.wait_no_sessions()
        assert count(fake, "cont") == 3, fake.commands

        # a last start: it marks what the last kill interrupted; then stop it gracefully
        d.start()
        await fake.wait_sessions(1, timeout=20)
        assert d.proc is not None
        d.proc.terminate()
        assert await asyncio.to_thread(d.proc.wait, 20) == 0
    assert count(fake, "cont") == 3

    db = tmp_path / "state" / "journal.db"
    assert integrity(db) == "ok"
    runs = read_runs(tmp_path / "state")
    slow = [r for r in runs if r.rule == "slow"]
    # one run per RESET: none lost, none run again; every one interrupted by a kill
    assert len(slow) == CYCLES, [(r.id, r.status) for r in slow]
    assert all(r.status == "interrupted" and r.ended is not None for r in slow), [(r.id, r.status) for r in slow]
    resume = [r for r in runs if r.rule == "resume"]
    started = [r for r in resume if r.outcome not in ("throttled",)]
    throttled = [r for r in resume if r.outcome == "throttled"]
    assert len(started) == 3, [(r.id, r.status, r.outcome) for r in resume]
    assert len(throttled) >= 1  # what reached the disk before a kill: the last cycles' STOPs
    log = (tmp_path / "daemon.log").read_text()
    assert "marked interrupted" in log


# --- the MQTT outbox -----------------------------------------------------------------------------

OUTBOX_RULES = """
rules:
  - name: notify
    on: RTC_CHANGE
    mode: parallel
    max_parallel: 100
    actions:
      - mqtt: {topic: "outbox/{{ vm.name }}", payload: "{{ event.data.offset }}", qos: 1}
"""


@contextlib.asynccontextmanager
async def subscriber(port: int, topic: str, into: list[bytes]) -> AsyncIterator[None]:
    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="restart-sub") as client:
            await client.subscribe(topic, qos=1)
            ready.set()
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                into.append(m.payload)

    ready = asyncio.Event()
    task = asyncio.create_task(run(), name="test.subscriber")
    async with asyncio.timeout(10):
        await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pending_outbox(state: Path) -> int:
    con = sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.mqtt
async def test_outbox_queued_before_kill_9_is_delivered_after_restart(
    tmp_path: Path, daemons: list[Daemons], fresh_broker: Broker
) -> None:
    """QoS 1 messages queued while the broker is down survive ``kill -9`` and arrive, in order."""
    await asyncio.to_thread(fresh_broker.stop)
    n = 40
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake:
        cfg = write_config(tmp_path, [fake], OUTBOX_RULES,
                           extra=f"mqtt:\n  main: {{host: 127.0.0.1, port: {fresh_broker.port}}}\n")
        d = Daemons(cfg, tmp_path / "daemon.log")
        daemons.append(d)
        d.start()
        await fake.wait_sessions(1, timeout=20)
        for i in range(n):
            fake.emit("RTC_CHANGE", {"offset": i, "qom-path": "/machine/rtc"})
        state = tmp_path / "state"
        await until(lambda: pending_outbox(state) >= n, 10, "the outbox rows on disk")
        await asyncio.to_thread(d.kill9)

        await asyncio.to_thread(fresh_broker.start)
        got: list[bytes] = []
        async with subscriber(fresh_broker.port, "outbox/#", got):
            d.start()
            await until(lambda: len(got) >= n, 20, f"{n} messages (got {len(got)})")
            await until(lambda: pending_outbox(state) == 0, 10, "the outbox to empty")
            assert d.proc is not None
            d.proc.terminate()
            assert await asyncio.to_thread(d.proc.wait, 20) == 0
    assert [int(p) for p in got] == list(range(n))
