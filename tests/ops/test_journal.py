"""The journal against real SQLite files: batching, reading back, restarts, failing disks."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reactor.errors import JournalError
from reactor.ops.journal import (
    SCHEMA_VERSION,
    WAL_SIZE_LIMIT,
    EventRecord,
    Journal,
    OutboxMessage,
    ResumeRecord,
    RunRecord,
)


def _count(path: Path, table: str) -> int:
    """Rows on disk, seen by an independent connection."""
    con = sqlite3.connect(path)
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


async def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (state owned by the journal's own threads) until it holds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


# ---------------------------------------------------------------- ids, batching


async def test_ids_are_assigned_in_memory_and_continue_after_reopen(db: Path) -> None:
    async with Journal(db, flush_interval=60) as j:
        assert [j.record_event("STOP", "vm1", None, 1.0 + i, {"i": i}) for i in range(3)] == [1, 2, 3]
        assert j.start_run(rule="r", vm="vm1", event_id=1, event_name="STOP", started=1.0) == 1
        assert j.outbox_put("main", "t", b"x", 1, False) == 1
        assert j.stats.pending == 5
        assert j.stats.written == 0
    # aclose flushed everything
    assert _count(db, "events") == 3
    assert _count(db, "runs") == 1
    assert j.stats.written == 5
    assert j.stats.pending == 0

    async with Journal(db) as j:
        assert j.record_event("STOP", "vm1", None, 9.0, {}) == 4
        assert j.start_run(rule="r", vm="vm1", event_id=4, event_name="STOP", started=9.0) == 2
        assert j.outbox_put("main", "t", b"y", 1, False) == 2


async def test_flusher_writes_every_interval(db: Path) -> None:
    async with Journal(db, flush_interval=0.05) as j:
        j.record_event("STOP", "vm1", None, 1.0, {})
        await _wait_for(lambda: _count(db, "events") == 1)
        assert j.stats.flushes >= 1
        assert j.healthy


async def test_flusher_writes_early_when_the_batch_is_full(db: Path) -> None:
    async with Journal(db, flush_interval=60, batch_rows=100) as j:
        for i in range(250):
            j.record_event("STOP", "vm1", None, float(i), {"i": i})
        await _wait_for(lambda: _count(db, "events") >= 200)
        # one transaction per flush: far fewer flushes than rows
        assert 1 <= j.stats.flushes <= 5
        assert j.stats.flush_latency_last > 0


async def test_aclose_flushes_even_if_the_flusher_is_busy(db: Path) -> None:
    j = Journal(db, flush_interval=0.01, batch_rows=10)
    await j.__aenter__()
    for i in range(5000):
        j.record_event("STOP", "vm1", None, float(i), {"i": i})
    await asyncio.sleep(0)  # the flusher may be in the middle of a batch
    await j.aclose()
    assert _count(db, "events") == 5000
    assert j.stats.dropped == 0


async def test_recording_before_open_raises_and_after_close_counts_drops(db: Path) -> None:
    j = Journal(db)
    with pytest.raises(JournalError):
        j.record_event("STOP", "vm1", None, 1.0, {})
    async with j:
        pass
    j.record_event("STOP", "vm1", None, 1.0, {})
    j.end_run(1, status="ok", ended=2.0)
    assert j.stats.dropped == 2
    assert j.stats.dropped_by_kind == {"event": 1, "run_update": 1}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Journal(Path("x.db"), record_events="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Journal(Path("x.db"), max_pending=0)
    assert Journal(Path("x.db"), record_events="all").record_events == "all"


# ---------------------------------------------------------------- reading back


def _fill(j: Journal) -> dict[str, int]:
    e1 = j.record_event("BLOCK_IO_ERROR", "vm1", "h1", 100.0, {"device": "d0", "nospace": True},
                        problems=("reason: missing",))
    e2 = j.record_event("STOP", "vm2", None, 200.0, {})
    r1 = j.start_run(rule="on-io-error", vm="vm1", event_id=e1, event_name="BLOCK_IO_ERROR", started=100.5)
    j.record_step(r1, index=0, action="qmp", args={"command": "stop", "password": "***"}, status="ok",
                  result={"return": {}}, error=None, started=100.6, duration=0.25)
    j.record_step(r1, index=1, action="http", args={"url": "http://127.0.0.1/"}, status="failed",
                  result=None, error="connection refused", started=100.9, duration=0.5)
    j.end_run(r1, status="failed", ended=101.5, error="step 1 (http): connection refused")
    r2 = j.start_run(rule="on-stop", vm="vm2", event_id=e2, event_name="STOP", started=200.5)
    j.end_run(r2, status="ok", ended=201.0)
    r3 = j.start_run(rule="on-stop", vm="vm2", event_id=e2, event_name="STOP", started=200.6,
                     outcome="throttled")
    r4 = j.start_run(rule="on-io-error", vm="vm1", event_id=None, event_name="BLOCK_IO_ERROR",
                     started=300.0, outcome="queued")
    j.update_run(r4, status="running")
    return {"e1": e1, "e2": e2, "r1": r1, "r2": r2, "r3": r3, "r4": r4}


async def test_runs_steps_and_events_read_back_with_filters(db: Path) -> None:
    async with Journal(db, flush_interval=60) as j:
        ids = _fill(j)
        # queries see rows recorded a moment ago (they flush first)
        runs = await asyncio.to_thread(j.runs)
        assert [r.id for r in runs] == [ids["r4"], ids["r3"], ids["r2"], ids["r1"]]

        r1 = j.run(ids["r1"])
        assert isinstance(r1, RunRecord)
        assert (r1.rule, r1.vm, r1.status, r1.outcome) == ("on-io-error", "vm1", "failed", "started")
        assert (r1.started, r1.ended, r1.error) == (100.5, 101.5, "step 1 (http): connection refused")
        assert [s.index for s in r1.steps] == [0, 1]
        assert r1.steps[0].args == {"command": "stop", "password": "***"}
        assert r1.steps[0].result == {"return": {}}
        assert (r1.steps[1].status, r1.steps[1].error, r1.steps[1].duration) == (
            "failed", "connection refused", 0.5)
        assert r1.event == EventRecord(id=ids["e1"], name="BLOCK_IO_ERROR", vm="vm1", host="h1",
                                       timestamp=100.0, data={"device": "d0", "nospace": True},
                                       problems=("reason: missing",))

        r3 = j.run(ids["r3"])
        assert r3 is not None
        assert (r3.outcome, r3.status, r3.ended) == ("throttled", "throttled", 200.6)
        r4 = j.run(ids["r4"])
        assert r4 is not None
        assert (r4.outcome, r4.status, r4.event) == ("queued", "running", None)
        assert j.run(999) is None

        assert [r.id for r in j.runs(vm="vm1")] == [ids["r4"], ids["r1"]]
        assert [r.id for r in j.runs(rule="on-stop")] == [ids["r3"], ids["r2"]]
        assert [r.id for r in j.runs(status="ok")] == [ids["r2"]]
        assert [r.id for r in j.runs(since=200.55)] == [ids["r4"], ids["r3"]]
        assert [r.id for r in j.runs(limit=2)] == [ids["r4"], ids["r3"]]
        assert [r.id for r in j.runs(vm="vm2", rule="on-stop", status="throttled")] == [ids["r3"]]
        assert j.runs(with_steps=False)[-1].steps == ()

        assert [e.id for e in j.events()] == [ids["e2"], ids["e1"]]
        assert [e.id for e in j.events(vm="vm2")] == [ids["e2"]]
        assert [e.id for e in j.events(name="BLOCK_IO_ERROR")] == [ids["e1"]]
        assert [e.id for e in j.events(since=150.0)] == [ids["e2"]]
        assert len(j.events(limit=1)) == 1


async def test_values_that_are_not_json_are_stored_as_text(db: Path, tmp_path: Path) -> None:
    async with Journal(db) as j:
        data: dict[Any, Any] = {"path": tmp_path, "tags": {"b"}, "raw": b"\x00a", 3: "int key",
                                "nested": {"t": (1, 2)}}
        eid = j.record_event("X", "vm1", None, 1.0, types.MappingProxyType(data))
        rid = j.start_run(rule="r", vm="vm1", event_id=eid, event_name="X", started=1.0)
        j.record_step(rid, index=0, action="a", args=[object], status="ok", result=Path("/x"), error=None,
                      started=1.0, duration=0.0)
        run = j.run(rid)
    assert run is not None and run.event is not None
    assert run.event.data == {"path": str(tmp_path), "tags": ["b"], "raw": "\x00a", "3": "int key",
                              "nested": {"t": [1, 2]}}
    assert run.steps[0].args == [str(object)]
    assert run.steps[0].result == "/x"


async def test_rows_with_and_without_empty_columns_read_back_in_one_batch(db: Path) -> None:
    """Empty columns (no host, no problems; a run still going, without an event or an error) are written
    differently from filled ones; a batch that mixes them reads back as recorded."""
    async with Journal(db, flush_interval=60) as j:
        shapes = [(None, ()), ("h1", ()), (None, ("x: missing",)), ("h2", ("y: bad",)), (None, ())]
        eids = [j.record_event("X", f"vm{i}", host, float(i), {"i": i}, problems)
                for i, (host, problems) in enumerate(shapes)]
        r_open = j.start_run(rule="r", vm="vm1", event_id=None, event_name="X", started=1.0)
        r_ok = j.start_run(rule="r", vm="vm1", event_id=eids[0], event_name="X", started=2.0)
        j.end_run(r_ok, status="ok", ended=3.0)
        r_failed = j.start_run(rule="r", vm="vm2", event_id=eids[1], event_name="X", started=4.0)
        j.record_step(r_failed, index=0, action="a", args=None, status="failed", result=None, error="boom",
                      started=4.0, duration=0.5)
        j.end_run(r_failed, status="failed", ended=5.0, error="boom")
        r_dropped = j.start_run(rule="r", vm="vm3", event_id=None, event_name="X", started=6.0, outcome="dropped")
        assert await j.flush()
        events = {e.id: e for e in j.events(limit=10)}
        runs = {r.id: r for r in j.runs(limit=10)}
    assert [(events[e].host, events[e].problems, events[e].data) for e in eids] == [
        (host, problems, {"i": i}) for i, (host, problems) in enumerate(shapes)]
    got = [(r.event_id, r.status, r.ended, r.error, [s.error for s in r.steps])
           for r in (runs[r_open], runs[r_ok], runs[r_failed], runs[r_dropped])]
    assert got == [(None, "running", None, None, []), (eids[0], "ok", 3.0, None, []),
                   (eids[1], "failed", 5.0, "boom", ["boom"]), (None, "dropped", 6.0, None, [])]


async def test_a_row_sqlite_refuses_does_not_poison_the_batch(db: Path) -> None:
    async with Journal(db, flush_interval=60) as j:
        j.record_event("GOOD", "vm1", None, 1.0, {})
        j.record_event("BAD\ud800", "vm1", None, 2.0, {"k": "v\udcff"})
        j.record_event("GOOD", "vm1", None, 3.0, {})
        assert await j.flush()
        events = j.events()
        assert j.healthy
    assert [e.name for e in events] == ["GOOD", "BAD\\ud800", "GOOD"]
    assert events[1].data == {"k": "v\\udcff"}


async def test_readers_see_the_journal_while_the_daemon_writes(db: Path) -> None:
    async with Journal(db) as j:
        _fill(j)
        await j.flush()
        for readonly in (True, None):  # None: reads only, since the daemon writes
            reader = Journal(db)
            reader.open_sync(readonly=readonly)
            try:
                assert reader.readonly
                assert len(reader.runs()) == 4
                assert len(reader.events()) == 2
                with pytest.raises(JournalError):
                    reader.record_event("X", "vm1", None, 1.0, {})
            finally:
                reader.close_sync()
        with pytest.raises(JournalError, match="in use"):
            Journal(db).open_sync(readonly=False)


def test_the_cli_opens_a_journal_nobody_writes_for_writing(db: Path) -> None:
    j = Journal(db)
    j.open_sync()
    try:
        assert not j.readonly
        j.record_event("X", "vm1", None, 1.0, {})
        assert [e.name for e in j.events()] == ["X"]
    finally:
        j.close_sync()
    assert _count(db, "events") == 1


def test_readonly_open_of_a_missing_journal_fails(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        Journal(tmp_path / "none.db").open_sync(readonly=True)


# ------------------------------------------------------------------ files, schema


async def test_files_are_private_and_schema_versioned(tmp_path: Path) -> None:
    db = tmp_path / "new" / "journal.db"
    async with Journal(db) as j:
        j.record_event("X", "vm1", None, 1.0, {})
        await j.flush()
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
        for suffix in ("", "-wal", "-shm", ".lock"):
            f = db.with_name(db.name + suffix)
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()


async def test_a_newer_schema_is_refused(db: Path) -> None:
    async with Journal(db):
        pass
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(JournalError, match="newer"):
        async with Journal(db):
            pass


async def test_a_version_1_journal_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    con = sqlite3.connect(db)
    con.executescript((Path(__file__).parent.parent / "data" / "journal-v1.sql").read_text())
    con.close()
    async with Journal(db) as j:
        (run,) = j.runs()
        assert (run.rule, run.vm, run.event_name, run.status) == ("r1", "vm1", "STOP", "ok")
        assert [s.action for s in run.steps] == ["log"]
        assert j.load_throttle(0.0) == {("r1", "vm1"): [100.0]}
        j.record_event("RESUME", "vm1", None, 101.0, {})
        await j.flush()
        assert [e.name for e in j.events()] == ["RESUME", "STOP"]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_a_reader_sees_a_journal_still_being_created_as_empty(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    sqlite3.connect(db).close()  # the file exists, the daemon has not created its tables yet
    j = Journal(db)
    j.open_sync(readonly=True)
    try:
        assert j.runs() == [] and j.events() == []
    finally:
        j.close_sync()


async def test_a_version_1_journal_gets_the_resume_table_and_its_history_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    con = sqlite3.connect(db)
    con.executescript((Path(__file__).parent.parent / "data" / "journal-v1.sql").read_text())
    con.close()
    rows = [ResumeRecord("vm1", "r1", 1, "1.1", "cont", "cont", 10.0, 11.0, 12.0, 12.0, None),
            ResumeRecord("vm1", "r1", 1, "1.1", "end", "flap", 10.0, 11.0, 12.0, 13.0, "STOP 50ms after cont"),
            ResumeRecord("vm2", "r1", 2, "2.1", "end", "resumed", 20.0, 21.0, 22.0, 33.0, None)]
    async with Journal(db) as j:
        assert j.resume_history("vm1") == []
        for r in rows:
            j.record_resume(r)
    async with Journal(db) as j:   # reopened: a restart
        assert j.resume_history("vm1") == rows[:2]
        assert j.resume_history() == rows
        assert j.resume_history("vm1", limit=1) == rows[1:2]
        assert j.prune(max_age=10.0, now=30.0) >= 2   # rows that ended before 20.0
        assert j.resume_history() == rows[2:]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    con.close()


async def test_a_second_writer_is_refused(db: Path) -> None:
    async with Journal(db):
        with pytest.raises(JournalError, match="in use"):
            async with Journal(db):
                pass


# ------------------------------------------------------------ restart survival


async def test_throttle_state_survives_a_restart(db: Path) -> None:
    async with Journal(db) as j:
        for ts in (30.0, 10.0, 20.0, 5.0):
            j.record_throttle("r1", "vm1", ts)
        j.record_throttle("r1", "vm2", 25.0)
        j.record_throttle("r2", "", 40.0)
    async with Journal(db) as j:
        assert j.load_throttle(since=7.0) == {
            ("r1", "vm1"): [10.0, 20.0, 30.0],
            ("r1", "vm2"): [25.0],
            ("r2", ""): [40.0],
        }
        j.record_throttle("r2", "", 50.0)
        assert j.load_throttle(since=39.0) == {("r2", ""): [40.0, 50.0]}


_KILLED_DAEMON = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from reactor.ops.journal import Journal

    async def main():
        j = Journal(Path(sys.argv[1]), flush_interval=60)
        await j.__aenter__()
        e = j.record_event("BLOCK_IO_ERROR", "vm1", None, 100.0, {"device": "d0"})
        done = j.start_run(rule="r", vm="vm1", event_id=e, event_name="BLOCK_IO_ERROR", started=100.0)
        j.end_run(done, status="ok", ended=100.2)
        live = j.start_run(rule="r", vm="vm1", event_id=e, event_name="BLOCK_IO_ERROR", started=101.0)
        j.record_step(live, index=0, action="qmp", args={}, status="ok", result=None, error=None,
                      started=101.0, duration=2.0)
        waiting = j.start_run(rule="r", vm="vm1", event_id=e, event_name="BLOCK_IO_ERROR", started=101.5,
                              outcome="queued")
        await j.flush()
        for i in range(1000):  # in flight, never flushed
            j.record_event("STOP", "vm1", None, 200.0, {})
        print(done, live, waiting, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
""")


async def test_runs_in_flight_at_kill_9_are_marked_interrupted(db: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_DAEMON, str(db), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == -9
    done, live, waiting = map(int, out.split())

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    async with Journal(db) as j:
        assert j.interrupted_at_open == 2
        ok = j.run(done)
        assert ok is not None and ok.status == "ok"
        r = j.run(live)
        assert r is not None
        assert (r.status, r.ended) == ("interrupted", 103.0)  # the end of its last recorded step
        assert r.error is not None and "interrupted" in r.error
        assert len(r.steps) == 1
        q = j.run(waiting)
        assert q is not None and (q.status, q.ended) == ("interrupted", 101.5)
        # ids go on from what reached the disk
        rid = j.start_run(rule="r", vm="vm1", event_id=None, event_name="X", started=1.0)
        assert rid == waiting + 1
        j.end_run(rid, status="cancelled", ended=2.0)
    async with Journal(db) as j:
        assert j.interrupted_at_open == 0


# ----------------------------------------------------------------------- outbox


async def test_outbox_keeps_order_and_acks_across_restarts(db: Path) -> None:
    async with Journal(db) as j:
        ids = [j.outbox_put("main", f"reactor/{i}", f"m{i}".encode(), 1, i == 2) for i in range(5)]
        other = j.outbox_put("backup", "t", b"b", 2, False)
        j.outbox_ack(ids[1])
        assert [m.id for m in j.outbox_pending("main")] == [ids[0], ids[2], ids[3], ids[4]]
    async with Journal(db) as j:
        pending = j.outbox_pending("main")
        assert [m.payload for m in pending] == [b"m0", b"m2", b"m3", b"m4"]
        assert pending[1] == OutboxMessage(id=ids[2], broker="main", topic="reactor/2", payload=b"m2", qos=1,
                                           retain=True, created=pending[1].created)
        assert j.outbox_pending("main", limit=2) == pending[:2]
        assert [m.id for m in j.outbox_pending("backup")] == [other]
        for m in pending[:3]:
            j.outbox_ack(m.id)
    async with Journal(db) as j:
        assert [m.payload for m in j.outbox_pending("main")] == [b"m4"]
        assert j.outbox_pending("nobody") == []


async def test_outbox_is_bounded_dropping_the_oldest(db: Path) -> None:
    async with Journal(db, outbox_max=3, flush_interval=60) as j:
        for i in range(5):
            j.outbox_put("main", "t", bytes([i]), 1, False)
        j.outbox_put("other", "t", b"o", 1, False)
        assert [m.payload for m in j.outbox_pending("main")] == [b"\x02", b"\x03", b"\x04"]
        assert len(j.outbox_pending("other")) == 1
        assert j.stats.outbox_dropped == 2


# ------------------------------------------------------------------------ prune


async def test_prune_by_age_and_by_rows(db: Path) -> None:
    async with Journal(db) as j:
        for i in range(10):
            e = j.record_event("STOP", "vm1", None, float(i), {})
            r = j.start_run(rule="r", vm="vm1", event_id=e, event_name="STOP", started=float(i))
            j.record_step(r, index=0, action="log", args={}, status="ok", result=None, error=None,
                          started=float(i), duration=0.1)
            if i != 2:
                j.end_run(r, status="ok", ended=i + 0.5)
            j.record_throttle("r", "vm1", float(i))
        # age: everything before t=5, except run 3 (i=2) that is still running
        deleted = await asyncio.to_thread(j.prune, max_age=5.0, now=10.0)
        assert deleted == 5 + 5 + 4 + 4  # events, throttle, runs, their steps
        assert [r.id for r in j.runs()] == [10, 9, 8, 7, 6, 3]
        assert list(j.load_throttle(since=0.0).values()) == [[5.0, 6.0, 7.0, 8.0, 9.0]]
        # rows: keep the newest 2 events and 2 runs (the running one is kept too)
        deleted = j.prune(max_rows=2)
        assert deleted == 3 + 3 + 3
        assert [r.id for r in j.runs()] == [10, 9, 3]
        assert [e.id for e in j.events()] == [10, 9]
        assert sum(len(r.steps) for r in j.runs()) == 3   # the kept runs' steps (folded into their rows)
        assert j.prune(max_age=1000.0, now=10.0) == 0


# ---------------------------------------------------------------- failing disks


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs: it can be filled up."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill_disk(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


async def test_disk_full_keeps_rows_pending_bounded_and_writes_them_later(small_fs: Path) -> None:
    db = small_fs / "state" / "journal.db"
    payload = {"blob": "x" * 1000}
    async with Journal(db, flush_interval=0.02, retry_max=0.05, max_pending=300) as j:
        j.record_event("X", "vm1", None, 0.0, payload)
        await j.flush()
        filler = small_fs / "filler"
        _fill_disk(filler)

        for i in range(250):
            j.record_event("X", "vm1", None, float(i), payload)
        await _wait_for(lambda: not j.healthy)
        assert j.last_error is not None and "full" in j.last_error.lower()
        assert j.stats.write_errors >= 1
        # recording goes on without raising; past the bound, new rows are dropped and counted
        rid = j.start_run(rule="r", vm="vm1", event_id=None, event_name="X", started=1.0)
        for i in range(100):
            j.record_event("Y", "vm1", None, float(i), payload)
        assert j.stats.pending == 300
        assert j.stats.dropped_by_kind == {"event": 51}
        j.end_run(rid, status="ok", ended=2.0)  # run updates use the reserve above the bound
        assert j.stats.pending == 301
        # queries still answer (from what is on disk)
        assert len(j.events()) == 1

        filler.unlink()
        await _wait_for(lambda: j.healthy and j.stats.pending == 0)
        assert j.last_error is not None  # kept for the record
        assert _count(db, "events") == 1 + 250 + 49
        run = j.run(rid)
        assert run is not None and run.status == "ok"


@pytest.fixture
def chattr() -> Iterator[list[Path]]:
    """Paths made immutable (even root cannot write them); made mutable again afterwards."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr needs root")
    frozen: list[Path] = []
    yield frozen
    for p in frozen:
        subprocess.run(["chattr", "-i", str(p)], check=False)


def _mutable(paths: list[Path]) -> None:
    for p in paths:
        subprocess.run(["chattr", "-i", str(p)], check=True)


def _immutable(paths: list[Path], frozen: list[Path]) -> None:
    for p in paths:
        r = subprocess.run(["chattr", "+i", str(p)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"this file system cannot make files immutable: {r.stderr.decode().strip()}")
        frozen.append(p)


async def test_unwritable_journal_reports_and_recovers(db: Path, chattr: list[Path]) -> None:
    async with Journal(db, flush_interval=0.02, retry_max=0.05) as j:
        j.record_event("X", "vm1", None, 0.0, {})
        await j.flush()
        wal = db.with_name(db.name + "-wal")
        _immutable([db, wal, db.parent], chattr)

        eids = [j.record_event("X", "vm1", None, float(i), {"i": i}) for i in range(10)]
        await _wait_for(lambda: not j.healthy)
        assert j.last_error
        assert j.stats.pending == 10
        await asyncio.sleep(0.2)  # retried meanwhile, still failing, nothing lost
        assert j.stats.write_errors >= 2
        assert j.stats.pending == 10

        await asyncio.to_thread(_mutable, chattr)
        await _wait_for(lambda: j.healthy and j.stats.pending == 0)
        assert [e.id for e in j.events()] == [*reversed(eids), 1]
        assert j.stats.dropped == 0


async def test_opening_an_unwritable_journal_fails_clearly(db: Path, chattr: list[Path]) -> None:
    async with Journal(db):
        pass
    _immutable([db, db.parent], chattr)
    with pytest.raises(JournalError):
        async with Journal(db):
            pass


async def test_the_hot_path_does_no_io(db: Path) -> None:
    """Recording 20k rows takes well under a second and writes nothing by itself."""
    async with Journal(db, flush_interval=60, batch_rows=10**9) as j:
        t0 = time.perf_counter()
        for i in range(20_000):
            j.record_event("X", "vm1", None, float(i), {"i": i})
        assert time.perf_counter() - t0 < 1.0
        assert j.stats.written == 0


async def test_the_wal_shrinks_back_to_its_limit_after_a_reader_held_it_open(db: Path) -> None:
    """A reader's old snapshot lets the WAL grow past the limit; the next checkpoint truncates it."""
    wal = db.with_name(db.name + "-wal")
    blob = {"pad": "x" * 4000}
    async with Journal(db, flush_interval=60) as j:
        j.record_event("STOP", "vm1", None, 0.0, {})
        assert await j.flush()
        reader = sqlite3.connect(db)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()   # holds its snapshot: no checkpoint can finish
        for i in range(6000):                                      # ~25 MB of pages
            j.record_event("BLOCK_IO_ERROR", "vm1", None, 1.0 + i, blob)
            if i % 500 == 0:
                assert await j.flush()
        assert await j.flush()
        grown = wal.stat().st_size
        reader.rollback()
        reader.close()
        for i in range(1200):                                      # past the autocheckpoint (1,000 pages)
            j.record_event("BLOCK_IO_ERROR", "vm1", None, 1e5 + i, blob)
            if i % 300 == 0:
                assert await j.flush()
        assert await j.flush()
        assert grown > WAL_SIZE_LIMIT
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
