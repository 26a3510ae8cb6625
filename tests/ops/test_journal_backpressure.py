"""The journal keeps up with replay, and its pending bound behaves as documented (docs/reliability.md).

* ``reactor replay`` gives the loop a turn as it goes, so the journal writes
  during the replay and a replay of far more rows than the pending bound
  journals every one of them;
* when the journal stalls, replay waits for it (backpressure) and loses
  nothing; when it writes nothing for ``--journal-wait`` seconds, replay goes
  on, and exits 4 saying how many rows were dropped;
* the daemon never waits: past the bound it sheds rows, counts them in
  ``/metrics`` and ``/api/status``, logs the episode, keeps handling events,
  and writes what it kept once the journal can write again.

A stalled journal here is a real one: another SQLite connection holds the
database's write lock (as a backup tool or a stuck reader-writer would), so
every write of the journal waits out its busy timeout and fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from fakeqmp import FakeQMP
from polling import eventually
from ports import free_port

from reactor.daemon.config import parse_config
from reactor.daemon.daemon import Daemon, serve
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.ops.journal import Journal
from reactor.rules.loader import load_rules_text

LOG_RULE = """
rules:
  - name: logstop
    on: STOP
    actions:
      - log: "stopped {{ vm.name }}"
"""


def stops(n: int) -> Iterator[str]:
    for i in range(n):
        yield json.dumps({"event": "STOP", "data": {}, "vm": f"vm{i % 7}",
                          "timestamp": {"seconds": 1_700_000_000 + i // 1000, "microseconds": (i % 1000) * 1000}})


def counts(path: Path) -> dict[str, int]:
    """Rows on disk, seen by an independent connection."""
    con = sqlite3.connect(path)
    try:
        out = {t: int(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("events", "runs")}
        # steps are folded into their run's row (schema 2); the steps table holds an older reactor's
        out["steps"] = int(con.execute("SELECT COALESCE(SUM(json_array_length(steps)), 0) FROM runs").fetchone()[0]
                           + con.execute("SELECT COUNT(*) FROM steps").fetchone()[0])
        out["runs_ok"] = int(con.execute("SELECT COUNT(*) FROM runs WHERE status = 'ok'").fetchone()[0])
        return out
    finally:
        con.close()


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock from another connection (the journal stalls until released)."""
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("ROLLBACK")
    finally:
        con.close()


def engine_for(journal: Journal) -> tuple[Engine, VirtualClock]:
    clock = VirtualClock()
    rules = load_rules_text([("r.yaml", textwrap.dedent(LOG_RULE))])
    return Engine(rules, clock=clock, journal=journal), clock


async def test_a_replay_past_the_pending_bound_journals_every_row(tmp_path: Path) -> None:
    """3,000 matching events are 12,000 rows (event, run, step, end), six times the bound."""
    db = tmp_path / "journal.db"
    n = 3000
    async with Journal(db, record_events="all", max_pending=2000, batch_rows=200) as journal:
        engine, clock = engine_for(journal)
        result = await replay(stops(n), engine, clock)
        assert result.events == n and result.errors == []
        assert journal.stats.flushes >= 2   # written during the replay, not only at close
    assert journal.stats.dropped == 0
    assert journal.stats.written == 4 * n
    assert counts(db) == {"events": n, "runs": n, "steps": n, "runs_ok": n}


async def test_replay_waits_for_a_stalled_journal_instead_of_dropping(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    n = 500   # 2,000 rows; the bound is 400
    async with Journal(db, record_events="all", max_pending=400, batch_rows=50, flush_interval=0.05) as journal:
        engine, clock = engine_for(journal)
        with write_lock(db):
            task = asyncio.create_task(replay(stops(n), engine, clock))
            await eventually(lambda: journal.pending >= journal.high_water, timeout=5)
            seen = engine.stats["events"]
            await asyncio.sleep(0.5)
            assert engine.stats["events"] == seen < n   # replay is waiting for the journal
            assert journal.stats.dropped == 0 and journal.pending <= journal.max_pending
            assert not task.done()
        result = await asyncio.wait_for(task, 30)
        assert result.events == n
    assert journal.stats.dropped == 0
    assert counts(db) == {"events": n, "runs": n, "steps": n, "runs_ok": n}


def test_replay_exits_4_and_says_how_many_rows_the_journal_dropped(tmp_path: Path) -> None:
    """The journal stalls for good: replay waits --journal-wait seconds, goes on, and reports the loss."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(textwrap.dedent(LOG_RULE))
    db = tmp_path / "journal.db"
    reactor = Path(sys.executable).with_name("reactor")
    proc = subprocess.Popen(
        [str(reactor), "replay", "-", "--rules", str(tmp_path / "rules"), "--journal", str(db), "--json",
         "--journal-wait", "0.5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    lines = list(stops(200))
    proc.stdin.write(lines[0] + "\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["type"] == "match"   # the journal is open
    with write_lock(db):
        _, err = proc.communicate("\n".join(lines[1:]) + "\n", timeout=60)
    assert proc.returncode == 4, err
    dropped = [line for line in err.splitlines() if "the journal dropped" in line]
    assert len(dropped) == 1, err
    n = int(dropped[0].split("dropped ")[1].split()[0])
    on_disk = counts(db)
    assert n > 0 and on_disk["events"] + on_disk["runs"] + on_disk["steps"] + n >= 3 * 200


# ---------------------------------------------------------------- the daemon

RESUME = """
rules:
  - name: resume
    on: STOP
    mode: parallel
    max_parallel: 1000
    actions:
      - qmp: cont
"""


@contextlib.asynccontextmanager
async def daemon_with(tmp: Path, journal: str) -> AsyncIterator[tuple[Daemon, FakeQMP, str]]:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "r.yaml").write_text(RESUME)
    port = free_port()
    async with FakeQMP(tmp / "vm1.qmp", name="vm1", status="running") as fake:
        text = (f"rules: {tmp / 'rules'}\nstate_dir: {tmp / 'state'}\njournal: {journal}\n"
                f"vms:\n  - {{name: vm1, qmp: {fake.address}}}\nhttp: {{listen: '127.0.0.1:{port}'}}\n")
        daemon = Daemon(parse_config(text, tmp / "reactor.yaml"), watch=False, grace=2.0)
        task = asyncio.create_task(serve(daemon, install_signals=False), name="test.daemon")
        try:
            async with asyncio.timeout(10):
                await daemon.ready.wait()
            await eventually(lambda: (vm := daemon.fleet.get("vm1") if daemon.fleet else None) and vm.connected)
            yield daemon, fake, f"http://127.0.0.1:{port}"
        finally:
            daemon.stop()
            async with asyncio.timeout(30):
                await task


async def test_the_daemon_sheds_past_the_bound_counts_reports_and_keeps_handling_events(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactor.ops.journal")
    n = 150   # 4 rows each (events: all): 600 rows, the bound is 200
    async with daemon_with(tmp_path, "{events: all, max_pending: 200}") as (daemon, fake, url), \
            aiohttp.ClientSession() as client:
        journal = daemon.journal
        await journal.flush()
        with write_lock(tmp_path / "state" / "journal.db"):
            for _ in range(n):
                fake.emit("STOP")
                await asyncio.sleep(0.002)
            # the daemon does not wait for the journal: every STOP gets its cont
            await eventually(lambda: sum(c == "cont" for c, _ in fake.commands) >= n, timeout=15)
            assert journal.pending <= journal.max_pending + journal.max_pending // 10
            async with client.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
            async with client.get(f"{url}/api/status") as resp:
                status = (await resp.json())["journal"]
            dropped = journal.stats.dropped_by_kind
            assert dropped.get("event", 0) > 0 and dropped.get("run", 0) > 0
            assert status["dropped"] == journal.stats.dropped > 0
            assert f'reactor_journal_dropped_rows_total{{kind="run"}} {float(dropped["run"])}' in metrics
            assert "new rows are dropped and counted" in caplog.text
        # writable again: what was kept is written, every kept run with its end
        await eventually(lambda: journal.healthy and journal.pending == 0, timeout=20)
        await eventually(lambda: "rows were dropped meanwhile" in caplog.text, timeout=5)
        on_disk = counts(tmp_path / "state" / "journal.db")
        assert on_disk["runs"] + journal.stats.dropped_by_kind["run"] == n
        assert on_disk["runs_ok"] == on_disk["runs"] == on_disk["steps"] > 0
