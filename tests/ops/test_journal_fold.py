"""Schema 2: a run's steps are folded into its row, one insert per run; what the journal guarantees stays.

Read back through the public API (``runs()``, ``run()``, ``RunRecord.steps``);
the raw tables are looked at only to show where the rows went.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from reactor.ops.journal import _SCHEMA, SCHEMA_VERSION, Journal


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def test_a_run_and_its_steps_are_one_row(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    async with Journal(db) as j:
        rid = j.start_run(rule="r", vm="vm1", event_id=None, event_name="STOP", started=1.0)
        j.record_step(rid, index=0, action="qmp", args={"command": "cont", "password": "***"}, status="ok",
                      result={"return": {}}, error=None, started=1.0, duration=0.25)
        j.record_step(rid, index=1, action="log", args=None, status="failed", result=None, error="boom\udcff",
                      started=1.25, duration=0.5)
        j.end_run(rid, status="failed", ended=2.0)
        await j.flush()
        assert raw(db, "SELECT COUNT(*) FROM steps") == [(0,)]
        assert raw(db, "SELECT json_array_length(steps) FROM runs") == [(2,)]
        run = j.run(rid)
    assert run is not None and run.status == "failed" and run.ended == 2.0
    assert [(s.index, s.action, s.args, s.status, s.result, s.error, s.started, s.duration) for s in run.steps] == [
        (0, "qmp", {"command": "cont", "password": "***"}, "ok", {"return": {}}, None, 1.0, 0.25),
        (1, "log", None, "failed", None, "boom\\udcff", 1.25, 0.5),   # a lone surrogate, escaped
    ]
    assert raw(db, "PRAGMA integrity_check") == [("ok",)]


async def test_the_steps_of_a_long_run_reach_the_disk_as_they_end(tmp_path: Path) -> None:
    """Nothing waits for the run's end: each flush writes the steps done so far (a kill -9 keeps them)."""
    db = tmp_path / "journal.db"
    async with Journal(db) as j:
        rid = j.start_run(rule="r", vm="vm1", event_id=None, event_name="STOP", started=1.0)
        await j.flush()
        j.record_step(rid, index=0, action="qmp", args={}, status="ok", result=1, error=None, started=1.0,
                      duration=1.0)
        await j.flush()
        assert raw(db, "SELECT status, json_array_length(steps) FROM runs") == [("running", 1)]
        j.record_step(rid, index=1, action="sleep", args={"seconds": 5}, status="ok", result=None, error=None,
                      started=2.0, duration=5.0)
        j.end_run(rid, status="ok", ended=7.0)
        await j.flush()
        run = j.run(rid)
        assert run is not None and run.status == "ok"
        assert [(s.index, s.action, s.result) for s in run.steps] == [(0, "qmp", 1), (1, "sleep", None)]


async def test_a_run_left_running_is_interrupted_at_its_last_folded_step(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    async with Journal(db) as j:
        rid = j.start_run(rule="r", vm="vm1", event_id=None, event_name="STOP", started=1.0)
        j.record_step(rid, index=0, action="qmp", args={}, status="ok", result=None, error=None, started=10.0,
                      duration=5.0)
    async with Journal(db) as j:
        assert j.interrupted_at_open == 1
        run = j.run(rid)
    assert run is not None and (run.status, run.ended) == ("interrupted", 15.0)


async def test_a_version_1_journal_gets_its_steps_folded(tmp_path: Path) -> None:
    """Steps written by schema 1 (one row each, args and results as JSON text) move into their runs' rows."""
    db = tmp_path / "journal.db"
    con = sqlite3.connect(db)
    con.executescript(_SCHEMA)
    con.execute("PRAGMA user_version = 1")
    con.executemany("INSERT INTO runs VALUES (?, 'r', 'vm1', NULL, 'STOP', 'started', ?, 1.0, ?, NULL)",
                    [(1, "ok", 3.0), (2, "running", None), (3, "throttled", 1.0)])
    con.executemany("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (1, 1, "log", '{"message": "b"}', "ok", "null", None, 2.0, 0.5),
        (1, 0, "qmp", '{"command": "cont"}', "ok", '{"return": {}}', None, 1.0, 0.5),
        (2, 0, "exec", None, "failed", "not json", "exited with 1", 1.5, 1.0),
    ])
    con.commit()
    con.close()
    async with Journal(db) as j:
        runs = {r.id: r for r in j.runs()}
    assert [(s.index, s.action, s.args, s.result) for s in runs[1].steps] == [
        (0, "qmp", {"command": "cont"}, {"return": {}}), (1, "log", {"message": "b"}, None)]
    assert [(s.action, s.args, s.result, s.error) for s in runs[2].steps] == [
        ("exec", None, "not json", "exited with 1")]
    assert runs[2].status == "interrupted" and runs[2].ended == 2.5
    assert runs[3].steps == ()
    assert raw(db, "SELECT COUNT(*) FROM steps") == [(0,)]
    assert raw(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(db, "PRAGMA integrity_check") == [("ok",)]
