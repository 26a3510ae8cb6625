"""The journal: what reactor saw and did, in an embedded SQLite database.

The journal records events (the engine decides which, by :attr:`Journal.record_events`),
rule runs (rule, VM, triggering event, mode/throttle outcome, status, timings)
and their steps (rendered, already redacted arguments, result or error,
duration).  It also keeps the state that must survive a restart: throttle
timestamps, the MQTT outbox (QoS >= 1 messages not yet acknowledged) and the
correlation state of ``after``/``count``/``unless`` rules (:meth:`Journal.record_correlation`).

A run's steps are folded into its row (``runs.steps``, a JSON array, schema
2): a run that starts and ends within one flush is one insert; a step that
ends after its run's row was written is appended to that row by the next
flush, so a step is on disk as soon as any other row recorded with it.  The
``steps`` table holds only what a reactor before schema 2 wrote and the
migration did not move (it moves everything).

Writing never slows the engine down and never crashes it:

* The ``record_*``/``start_run``/``end_run``/``outbox_*`` calls are synchronous
  and do no I/O: they append a tuple to an in-memory list and return an id
  assigned in memory (the counters start at ``MAX(id)`` found at open).  They
  must all be called from one thread (the event loop's).
* A flusher task (in the journal's own TaskGroup) writes the pending rows every
  ``flush_interval`` seconds, or sooner when ``batch_rows`` are waiting, in one
  transaction with ``executemany``, in a worker thread.
* A write that fails (disk full, read-only file system, I/O error) leaves the
  rows pending, flips :attr:`Journal.healthy` to False with
  :attr:`Journal.last_error` set, and is retried with jittered, capped
  exponential backoff; the next successful write clears the error.
* Overflow policy: at most ``max_pending`` rows wait in memory.  Past that, new
  events, runs, steps, throttle entries and outbox messages are dropped (the
  newest are dropped, so what was kept is a contiguous prefix) and counted in
  :attr:`JournalStats.dropped`; run updates and outbox acks have a 10 % reserve
  above the bound so that kept runs still get their end (the steps and end of
  a dropped run are not recorded either).  Ids are still returned for dropped
  rows.  The first drop of an episode is logged (an error), and the total when
  the journal writes again.  A producer that can wait (``reactor replay``)
  calls :meth:`Journal.wait_for_room` once :attr:`Journal.pending` reaches
  :attr:`Journal.high_water` (half the bound, at most two batches): backpressure comes
  before loss.
* A row that SQLite refuses for its content (a string with lone surrogates, an
  integer too large) does not poison the batch: the batch is written again with
  every text field sanitised; if that fails too the batch is dropped and counted.

The database uses WAL with ``synchronous=NORMAL`` (a power loss may lose the
last flushes, never corrupt the file), is created ``0600`` in a state directory
created ``0700``, carries its schema version in ``PRAGMA user_version``, and is
locked (``flock`` on ``PATH.lock``) against a second writer.  On open, runs left
``running`` or ``queued`` by a previous process (``kill -9``, power loss) are
marked ``interrupted``, ended at the last moment they were known alive.

Readers (``reactor history``, the HTTP API) use a separate connection and see
everything committed; the query methods first flush what is pending, so in the
daemon they also see what was just recorded (call them through
``asyncio.to_thread`` from async code: they do I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import operator
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import orjson

from reactor.errors import JournalError

__all__ = [
    "SCHEMA_VERSION",
    "WAL_SIZE_LIMIT",
    "EventRecord",
    "Journal",
    "JournalStats",
    "OutboxMessage",
    "ResumeRecord",
    "RunRecord",
    "StepRecord",
]

log = logging.getLogger(__name__)

#: Bytes the write-ahead log is truncated to after a checkpoint (``PRAGMA journal_size_limit``).
WAL_SIZE_LIMIT = 16 * 1024 * 1024


RecordEvents = Literal["all", "matched", "none"]
_RECORD_EVENTS: Final = ("all", "matched", "none")

# Pending row kinds: the first element of every pending tuple.
_EVENT: Final = 0
_RUN: Final = 1
_RUN_UPDATE: Final = 2
_STEP: Final = 3
_THROTTLE: Final = 4
_OUTBOX_PUT: Final = 5
_OUTBOX_ACK: Final = 6
_CORRELATION: Final = 7
_RESUME: Final = 8
_KIND_NAMES: Final = ("event", "run", "run_update", "step", "throttle", "outbox_put", "outbox_ack", "correlation",
                     "resume")

_INTERRUPTED_ERROR: Final = "interrupted: reactor stopped while the run was in flight"

_SCHEMA: Final = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    vm TEXT NOT NULL,
    host TEXT,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    problems TEXT
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    vm TEXT NOT NULL,
    event_id INTEGER,
    event_name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    error TEXT
);
CREATE INDEX runs_vm ON runs (vm, id);
CREATE INDEX runs_rule ON runs (rule, id);
CREATE INDEX runs_live ON runs (status) WHERE status IN ('running', 'queued');
CREATE TABLE steps (
    run_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    args TEXT,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    started REAL NOT NULL,
    duration REAL NOT NULL
);
CREATE INDEX steps_run ON steps (run_id, idx);
CREATE TABLE throttle (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX throttle_ts ON throttle (ts);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    broker TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX outbox_broker ON outbox (broker, id);
"""


#: Schema changes since version 1 (``_SCHEMA``), oldest first: entry ``i`` takes a
#: journal from version ``i + 1`` to ``i + 2``.  One migration path for every
#: change: append an entry (SQL statements separated by ``;``), never edit one
#: that has shipped.  A writer applies the missing entries in one transaction
#: when it opens an older journal.
_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1 -> 2: correlation state (issue 12): counted matches, pending `unless` matches, `after` events
    """
    CREATE TABLE correlation (
        rule TEXT NOT NULL,
        form TEXT NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL,
        signature TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX correlation_key ON correlation (rule, form, key, ts)
    """,
    # 2 -> 3: the resume action's per-VM attempt history (backoff and give-up survive a restart); one row per
    # phase of an attempt: 'cont' when cont is sent, 'end' with the attempt's outcome
    """CREATE TABLE resume_attempts (
        vm TEXT NOT NULL, rule TEXT NOT NULL, run_id INTEGER, attempt TEXT NOT NULL, phase TEXT NOT NULL,
        outcome TEXT NOT NULL, queued REAL, started REAL NOT NULL, cont REAL, ended REAL NOT NULL, error TEXT);
    CREATE INDEX resume_attempts_vm ON resume_attempts (vm, ended)""",
    # 3 -> 4: a run's steps folded (issue 14) into its row (``runs.steps``: a JSON array of
    # ``[index, action, args, status, result, error, started, duration]``), one insert per run
    # instead of one per run and one per step; the steps of existing runs move there.
    "ALTER TABLE runs ADD COLUMN steps TEXT;"
    " UPDATE runs SET steps = (SELECT json_group_array(json(x.step)) FROM (SELECT json_array(s.idx, s.action,"
    " CASE WHEN s.args IS NULL THEN NULL WHEN json_valid(s.args) THEN json(s.args) ELSE json_quote(s.args) END,"
    " s.status,"
    " CASE WHEN s.result IS NULL THEN NULL WHEN json_valid(s.result) THEN json(s.result)"
    " ELSE json_quote(s.result) END,"
    " s.error, s.started, s.duration) AS step FROM steps s WHERE s.run_id = runs.id ORDER BY s.idx, s.rowid) AS x)"
    " WHERE id IN (SELECT run_id FROM steps);"
    " DELETE FROM steps",
)

#: The schema version written to ``PRAGMA user_version``.
SCHEMA_VERSION: Final = 1 + len(_MIGRATIONS)


class _InUseError(JournalError):
    """Another process has the journal open for writing."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as the journal recorded it."""

    id: int
    name: str
    vm: str
    host: str | None
    timestamp: float
    data: Any
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a run: its (redacted) arguments and what came of it."""

    run_id: int
    index: int
    action: str
    args: Any
    status: str
    result: Any
    error: str | None
    started: float
    duration: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One match of a rule: its outcome, status, timings, steps and triggering event."""

    id: int
    rule: str
    vm: str
    event_id: int | None
    event_name: str
    outcome: str
    status: str
    started: float
    ended: float | None
    error: str | None
    steps: tuple[StepRecord, ...] = ()
    event: EventRecord | None = None


@dataclass(frozen=True, slots=True)
class ResumeRecord:
    """One phase of one attempt of the ``resume`` action (see :mod:`reactor.actions.resume`)."""

    vm: str
    rule: str
    run_id: int | None
    attempt: str          # unique per attempt ("RUN.N")
    phase: str            # "cont" (cont was sent) or "end" (the attempt's outcome is known)
    outcome: str          # resumed, flap, probe-failed, cont-failed, disconnected, gave-up; "cont" for phase cont
    queued: float | None  # when it asked for a slot
    started: float        # when it got its slot
    cont: float | None    # when cont was sent
    ended: float          # when the slot was released (phase end) or cont was sent (phase cont)
    error: str | None


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An MQTT message (QoS >= 1) waiting for its broker's acknowledgement."""

    id: int
    broker: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float


@dataclass(frozen=True, slots=True)
class JournalStats:
    """A snapshot of the journal's counters."""

    pending: int
    written: int
    dropped: int
    dropped_by_kind: Mapping[str, int]
    write_errors: int
    flushes: int
    flush_latency_last: float
    flush_latency_avg: float
    outbox_dropped: int


class Journal:
    """The journal database: an ``async with`` object owning its flusher task.

    ::

        async with Journal(state_dir / "journal.db") as journal:
            eid = journal.record_event("STOP", "vm1", None, time.time(), {})
            rid = journal.start_run(rule="r", vm="vm1", event_id=eid, event_name="STOP",
                                    started=time.time())
            journal.end_run(rid, status="ok", ended=time.time())

    CLI readers use :meth:`open_sync` (``readonly=True``) and :meth:`close_sync`.
    """

    def __init__(
        self,
        path: Path,
        *,
        record_events: RecordEvents = "matched",
        flush_interval: float = 0.2,
        max_pending: int = 200_000,
        batch_rows: int = 20_000,
        outbox_max: int = 100_000,
        retry_max: float = 5.0,
    ) -> None:
        if record_events not in _RECORD_EVENTS:
            raise ValueError(f"record_events must be one of {_RECORD_EVENTS}, not {record_events!r}")
        if flush_interval <= 0 or max_pending < 1 or batch_rows < 1 or outbox_max < 1:
            raise ValueError("flush_interval, max_pending, batch_rows and outbox_max must be positive")
        self.path = Path(path)
        self.record_events: str = record_events
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.batch_rows = batch_rows
        self.outbox_max = outbox_max
        self.retry_max = max(retry_max, flush_interval)
        #: Runs marked ``interrupted`` when this journal was opened.
        self.interrupted_at_open = 0
        self.readonly = False

        # Hot-path state (touched by the recording thread only, except as noted).
        self._pending: list[tuple[Any, ...]] = []
        self._inflight = 0  # rows taken by the writer and not yet committed nor restored
        self._limit = 0  # 0 until open and after close: every record is refused
        self._limit_ctl = 0
        self._event_seq = 0
        self._run_seq = 0
        self._outbox_seq = 0
        self._wake: asyncio.Event | None = None
        self._dropped = [0] * len(_KIND_NAMES)
        self._dropping = -1  # total drops when the current drop episode began (-1: none)
        self._dropped_runs: set[int] = set()  # runs dropped whose end has not come yet: their rows are skipped
        self._stalled_at = -1  # rows written when wait_for_room last gave up (-1: not stalled)

        # Writer state (under _write_lock).
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._opened = False
        self._closed = False
        self._healthy = True
        self._last_error: str | None = None
        self._written = 0
        self._write_errors = 0
        self._flushes = 0
        self._latency_last = 0.0
        self._latency_total = 0.0
        self._outbox_dropped = 0

        self._tg: asyncio.TaskGroup | None = None
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def healthy(self) -> bool:
        """False since the last write failed, until a write succeeds again."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The last write error (kept after recovery, for the record)."""
        return self._last_error

    @property
    def pending(self) -> int:
        """Rows recorded and not yet written."""
        return len(self._pending) + self._inflight

    @property
    def high_water(self) -> int:
        """Pending rows at which a producer that can wait should call :meth:`wait_for_room`: half the bound,
        at most two batches (what waits beyond that only holds memory: the writer takes it all at once)."""
        return max(min(self.max_pending // 2, 2 * self.batch_rows), 1)

    @property
    def stats(self) -> JournalStats:
        """A snapshot of the counters."""
        return JournalStats(
            pending=self.pending,
            written=self._written,
            dropped=sum(self._dropped),
            dropped_by_kind={k: n for k, n in zip(_KIND_NAMES, self._dropped, strict=True) if n},
            write_errors=self._write_errors,
            flushes=self._flushes,
            flush_latency_last=self._latency_last,
            flush_latency_avg=self._latency_total / self._flushes if self._flushes else 0.0,
            outbox_dropped=self._outbox_dropped,
        )

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Journal:
        await asyncio.to_thread(functools.partial(self.open_sync, readonly=False))
        self._wake = asyncio.Event()
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        self._flusher = tg.create_task(self._flush_loop(), name=f"reactor.ops.journal[{self.path.name}].flusher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the flusher, write everything pending, close the database."""
        tg, self._tg = self._tg, None
        if tg is not None:
            if self._flusher is not None:
                self._flusher.cancel()
            await tg.__aexit__(None, None, None)
            self._flusher = None
        self._wake = None
        await asyncio.to_thread(self.close_sync)

    def open_sync(self, *, readonly: bool | None = None) -> None:
        """Open the database without a flusher (for the CLI; the daemon uses ``async with``).

        ``readonly=False`` opens for writing (creating the file) and raises
        :class:`JournalError` when another process has it open for writing;
        ``True`` only reads an existing journal; ``None`` (the default) writes
        when it can and only reads while a daemon has the journal open.  Also
        raises :class:`JournalError` when the file cannot be opened or its
        schema is newer than ours.
        """
        if self._opened:
            raise JournalError(f"{self.path}: journal is already open")
        try:
            if readonly:
                self.readonly = True
                self._open_readonly()
            else:
                try:
                    self._open_writable()
                except _InUseError:
                    if readonly is not None:
                        raise
                    self._close_connections()
                    self.readonly = True
                    self._open_readonly()
        except BaseException:
            self._close_connections()
            raise
        self._opened = True
        if not self.readonly:
            self._limit = self.max_pending
            self._limit_ctl = self.max_pending + max(self.max_pending // 10, 1)

    def close_sync(self) -> None:
        """Write everything pending (once; a failure is logged) and close."""
        if self._closed:
            return
        self._limit = self._limit_ctl = 0  # from now on every record is refused and counted
        try:
            if self._opened and not self.readonly:
                self._flush_once()
                left = self.pending
                if left:
                    for row in self._pending:
                        self._dropped[row[0]] += 1
                    self._pending.clear()
                    log.error("journal %s: %d rows could not be written at close: %s",
                              self.path, left, self._last_error)
        finally:
            self._closed = True
            self._close_connections()

    def _close_connections(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.close()
                self._writer = None
        with self._read_lock:
            if self._reader is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._reader.close()
                self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open_readonly(self) -> None:
        if not self.path.exists():
            raise JournalError(f"{self.path}: no journal here")
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                  isolation_level=None, check_same_thread=False)
            version = con.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot read the journal: {err}") from err
        if version > SCHEMA_VERSION:
            con.close()
            raise JournalError(f"{self.path}: journal schema {version} is newer than this reactor's "
                               f"({SCHEMA_VERSION})")
        if version == 0:
            # a daemon is creating it right now (the file exists, its tables not yet): it holds nothing
            con.close()
            con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._migrate(con)
        self._reader = con

    def _open_writable(self) -> None:
        directory = self.path.parent
        try:
            if not directory.exists():
                os.makedirs(directory, mode=0o700, exist_ok=True)
                os.chmod(directory, 0o700)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise JournalError(f"{self.path}: cannot create the journal: {err}") from err
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise _InUseError(f"{self.path}: journal is in use by another process") from err
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            con = self._connect_writer()
            self._writer = con
            self._migrate(con)
            self.interrupted_at_open = self._mark_interrupted(con)
            for table, attr in (("events", "_event_seq"), ("runs", "_run_seq"), ("outbox", "_outbox_seq")):
                setattr(self, attr, con.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only = 1")
        except (OSError, sqlite3.Error) as err:
            raise JournalError(f"{self.path}: cannot open the journal: {err}") from err
        if self.interrupted_at_open:
            log.warning("journal %s: %d runs were in flight when reactor last stopped: marked interrupted",
                        self.path, self.interrupted_at_open)

    def _connect_writer(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA busy_timeout = 5000")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode})")
            con.execute("PRAGMA synchronous = NORMAL")
            # after each checkpoint the WAL file is truncated to this size (it otherwise keeps
            # the largest size it ever reached, e.g. while a reader held an old snapshot)
            con.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except BaseException:
            con.close()
            raise
        return con

    def _migrate(self, con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal schema {version} is newer than this reactor's "
                               f"({SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            steps = ([_SCHEMA] if version == 0 else []) + list(_MIGRATIONS[max(version, 1) - 1:])
            for script in steps:
                for statement in script.split(";"):
                    if statement.strip():
                        con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _mark_interrupted(con: sqlite3.Connection) -> int:
        cur = con.execute(
            "UPDATE runs SET status = 'interrupted',"
            " ended = MAX(started, COALESCE((SELECT MAX(s.started + s.duration) FROM steps s"
            "                                WHERE s.run_id = runs.id), started),"
            "             COALESCE((SELECT MAX(json_extract(j.value, '$[6]') + json_extract(j.value, '$[7]'))"
            "                       FROM json_each(runs.steps) j), started)),"
            " error = COALESCE(error, ?)"
            " WHERE status IN ('running', 'queued')",
            (_INTERRUPTED_ERROR,),
        )
        return cur.rowcount

    # -------------------------------------------------------------- recording

    def _refuse(self, kind: int) -> None:
        """The slow path of every record call: refuse before open, count a drop otherwise."""
        if not self._opened:
            raise JournalError(f"{self.path}: journal is not open")
        if self.readonly:
            raise JournalError(f"{self.path}: journal is open read-only")
        if self._dropping < 0 and self._limit:
            self._dropping = sum(self._dropped)
            log.error("journal %s: %d rows pending, the bound (the journal cannot write: %s): new rows are "
                      "dropped and counted (reactor_journal_dropped_rows_total) until it writes again",
                      self.path, self.pending, self._last_error or "not yet written")
        self._dropped[kind] += 1

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None:
            wake.set()

    def record_event(
        self,
        name: str,
        vm: str,
        host: str | None,
        timestamp: float,
        data: Mapping[str, Any],
        problems: tuple[str, ...] = (),
    ) -> int:
        """Record an event; return its id.  ``data`` must not be mutated afterwards."""
        self._event_seq = eid = self._event_seq + 1
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit:
            self._refuse(_EVENT)
            return eid
        p.append((_EVENT, eid, name, vm, host, timestamp, data, problems))
        if n >= self.batch_rows:
            self._kick()
        return eid

    def start_run(
        self,
        *,
        rule: str,
        vm: str,
        event_id: int | None,
        event_name: str,
        started: float,
        outcome: str = "started",
    ) -> int:
        """Record a match of ``rule``; return the run id.

        ``outcome`` is what the mode/throttle decided: ``started`` (status
        ``running``), ``queued`` (status ``queued``), or ``throttled``,
        ``dropped``, ``cancelled``... (the run never ran: its status is the
        outcome and it ends when it starts).
        """
        self._run_seq = rid = self._run_seq + 1
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit:
            self._refuse(_RUN)
            if self._limit and outcome in ("started", "queued") and len(self._dropped_runs) < 100_000:
                self._dropped_runs.add(rid)   # its steps and end are not written (they would take the reserve)
            return rid
        p.append((_RUN, rid, rule, vm, event_id, event_name, outcome, started))
        if n >= self.batch_rows:
            self._kick()
        return rid

    def update_run(self, run_id: int, *, status: str | None = None, outcome: str | None = None) -> None:
        """Change a run's status or outcome (a queued run that starts: ``status="running"``)."""
        self._update(run_id, status, outcome, None, None)

    def end_run(self, run_id: int, *, status: str, ended: float, error: str | None = None) -> None:
        """Record the end of a run: ``ok``, ``failed``, ``cancelled``, ``interrupted``, ``dry-run``,
        ``skipped`` (every step was skipped by its ``when``)."""
        self._update(run_id, status, None, ended, error)

    def _update(self, run_id: int, status: str | None, outcome: str | None, ended: float | None,
                error: str | None) -> None:
        if self._dropped_runs and run_id in self._dropped_runs:
            if ended is not None:
                self._dropped_runs.discard(run_id)
            return
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit_ctl:
            self._refuse(_RUN_UPDATE)
            return
        p.append((_RUN_UPDATE, run_id, status, outcome, ended, error))
        if n >= self.batch_rows:
            self._kick()

    def record_step(
        self,
        run_id: int,
        *,
        index: int,
        action: str,
        args: Any,
        status: str,
        result: Any,
        error: str | None,
        started: float,
        duration: float,
    ) -> None:
        """Record a finished step (``args`` already redacted; must not be mutated afterwards)."""
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit or (self._dropped_runs and run_id in self._dropped_runs):
            self._refuse(_STEP)
            return
        p.append((_STEP, run_id, index, action, args, status, result, error, started, duration))
        if n >= self.batch_rows:
            self._kick()

    def record_throttle(self, rule: str, key: str, timestamp: float) -> None:
        """Record that ``rule`` fired for throttle ``key`` at ``timestamp``."""
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit:
            self._refuse(_THROTTLE)
            return
        p.append((_THROTTLE, rule, key, timestamp))
        if n >= self.batch_rows:
            self._kick()

    def record_resume(self, r: ResumeRecord) -> None:
        """Record a phase of a resume attempt (kept for backoff and give-up across restarts)."""
        p = self._pending
        if len(p) + self._inflight >= self._limit_ctl:
            self._refuse(_RESUME)
            return
        p.append((_RESUME, r))
        self._kick()

    def resume_history(self, vm: str | None = None, limit: int = 1000) -> list[ResumeRecord]:
        """The newest ``limit`` resume rows (of ``vm``, or of every VM), oldest first."""
        where, params = _where(vm=("vm = ?", vm))
        rows = self._query(f"SELECT * FROM (SELECT rowid, * FROM resume_attempts{where}"
                           " ORDER BY rowid DESC LIMIT ?) ORDER BY rowid", [*params, limit])
        return [ResumeRecord(*r[1:]) for r in rows]

    def outbox_put(self, broker: str, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Keep an MQTT message until :meth:`outbox_ack`; return its id.

        The outbox keeps at most ``outbox_max`` messages per broker; past that
        the oldest are deleted and counted (:attr:`JournalStats.outbox_dropped`).
        """
        self._outbox_seq = mid = self._outbox_seq + 1
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit:
            self._refuse(_OUTBOX_PUT)
            return mid
        p.append((_OUTBOX_PUT, mid, broker, topic, bytes(payload), qos, retain, time.time()))
        if n >= self.batch_rows:
            self._kick()
        return mid

    def outbox_ack(self, msg_id: int) -> None:
        """Forget an outbox message: its broker acknowledged it."""
        p = self._pending
        n = len(p) + self._inflight
        if n >= self._limit_ctl:
            self._refuse(_OUTBOX_ACK)
            return
        p.append((_OUTBOX_ACK, msg_id))
        if n >= self.batch_rows:
            self._kick()

    def record_correlation(self, op: str, rule: str, form: str | None, key: str | None, ts: float | None,
                           signature: str, state: Mapping[str, Any] | None) -> None:
        """Change the correlation state of ``rule``: ``add`` a row (``form``, ``key``, ``ts``, ``state``), or
        ``del`` the rows of ``rule`` (narrowed by ``form``, ``key`` and ``ts`` (rows at or before it) when given).

        ``state`` must not be mutated afterwards.  Written in order with the other rows."""
        p = self._pending
        n = len(p) + self._inflight
        if n >= (self._limit if op == "add" else self._limit_ctl):
            self._refuse(_CORRELATION)
            return
        p.append((_CORRELATION, op, rule, form, key, ts, signature, state))
        if n >= self.batch_rows:
            self._kick()

    # --------------------------------------------------------------- flushing

    async def flush(self) -> bool:
        """Write what is pending now; True when it was written."""
        return await asyncio.to_thread(self._flush_once)

    async def wait_for_room(self, *, stall: float = 60.0) -> bool:
        """Backpressure: wait until the flusher has brought the pending rows down to half the high-water mark.

        For producers that can wait (replay).  True once there is room; False
        when the journal wrote nothing for ``stall`` seconds (a stalled or full
        disk): the producer goes on, and past the bound rows are dropped and
        counted.  After a False, further calls return False at once until the
        journal writes again (a stalled journal costs the producer ``stall``
        seconds once, not per call).
        """
        if not self._limit or self.pending <= self.high_water // 2:
            return True
        if self._stalled_at >= 0 and self._written == self._stalled_at:
            return False
        self._stalled_at = -1
        loop = asyncio.get_running_loop()
        low = self.high_water // 2
        written = self._written
        deadline = loop.time() + stall
        while self._limit and self.pending > low:
            self._kick()
            await asyncio.sleep(0.002)
            if self._written != written:
                written = self._written
                deadline = loop.time() + stall
            elif loop.time() >= deadline:
                self._stalled_at = written
                log.warning("journal %s: nothing written for %gs with %d rows pending: going on without waiting",
                            self.path, stall, self.pending)
                return False
        return True

    def flush_sync(self) -> bool:
        """Write what is pending now, in this thread; True when it was written."""
        return self._flush_once()

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        delay = self.flush_interval
        while True:
            if self._healthy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await wake.wait()
            else:
                await asyncio.sleep(delay)
            wake.clear()
            try:
                ok = await asyncio.to_thread(self._flush_once)
            except Exception:  # a bug: report it, keep the daemon alive, try again later
                log.exception("journal %s: flusher failed", self.path)
                ok = False
            backoff = min(delay * 2, self.retry_max) * random.uniform(0.8, 1.0)
            delay = self.flush_interval if ok else backoff

    def _flush_once(self) -> bool:
        """Write the pending prefix in one transaction.  Thread-safe; False on failure."""
        if not self._opened or self.readonly or self._closed:
            return True
        with self._write_lock:
            p = self._pending
            n = len(p)
            if n == 0:
                return True
            batch = p[:n]
            self._inflight = n
            del p[:n]  # appends made meanwhile by the recording thread stay in p
            t0 = time.perf_counter()
            try:
                try:
                    self._write(batch, clean=False)
                except Exception as err:
                    if _is_io_error(err):
                        raise
                    log.warning("journal %s: a row was refused (%s); writing the batch sanitised",
                                self.path, err)
                    self._write(batch, clean=True)
            except Exception as err:
                self._inflight = 0
                if _is_io_error(err):
                    p[0:0] = batch  # back in front, in order, for the next try
                    self._failed(err)
                    return False
                for row in batch:
                    self._dropped[row[0]] += 1
                self._failed(err)
                log.error("journal %s: dropped a batch of %d rows SQLite refused: %s", self.path, n, err)
                return False
            self._inflight = 0
            latency = time.perf_counter() - t0
            self._written += n
            self._flushes += 1
            self._latency_last = latency
            self._latency_total += latency
            if not self._healthy:
                self._healthy = True
                log.warning("journal %s: writing again (%d rows written)", self.path, n)
            if self._dropping >= 0:
                log.warning("journal %s: below the bound again; %d rows were dropped meanwhile", self.path,
                            sum(self._dropped) - self._dropping)
                self._dropping = -1
            return True

    def _failed(self, err: BaseException) -> None:
        name = getattr(err, "sqlite_errorname", None)
        self._last_error = f"{name}: {err}" if name else f"{type(err).__name__}: {err}"
        self._write_errors += 1
        if self._healthy:
            self._healthy = False
            log.error("journal %s: write failed, %d rows kept pending and retried: %s",
                      self.path, self.pending, self._last_error)
        if self._writer is not None:  # reconnect on the next try (a remount, a replaced file)
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None

    def _write(self, batch: list[tuple[Any, ...]], *, clean: bool) -> None:
        groups: list[list[tuple[Any, ...]]] = [[] for _ in _KIND_NAMES]
        for row in batch:
            groups[row[0]].append(row)
        con = self._writer
        if con is None:
            con = self._writer = self._connect_writer()
        verb = "INSERT OR REPLACE" if clean else "INSERT"
        con.execute("BEGIN IMMEDIATE")
        try:
            if groups[_EVENT]:
                _insert(con, f"{verb} INTO events", 7, _EVENT_NULLABLE, _event_params(groups[_EVENT], clean))
            runs, updates = _coalesce(list(_run_params(groups[_RUN], clean)),
                                      list(_update_params(groups[_RUN_UPDATE], clean)))
            steps: dict[int, list[str]] = {}
            for r in groups[_STEP]:
                steps.setdefault(r[1], []).append(_step_json(r, clean))
            if runs:   # a run and the steps recorded with it: one row
                _insert(con, f"{verb} INTO runs", 11, _RUN_NULLABLE,
                        [(*r, _steps_json(steps.pop(r[0]))) if r[0] in steps else (*r, None) for r in runs])
            if updates:
                con.executemany(
                    "UPDATE runs SET status = COALESCE(?, status), outcome = COALESCE(?, outcome),"
                    " ended = COALESCE(?, ended), error = COALESCE(?, error) WHERE id = ?", updates)
            if steps:   # steps of runs written by an earlier batch: appended to their row
                con.executemany("UPDATE runs SET steps = json_insert(COALESCE(steps, '[]'), '$[#]', json(?))"
                                " WHERE id = ?", [(step, rid) for rid, lst in steps.items() for step in lst])
            if groups[_THROTTLE]:
                con.executemany("INSERT INTO throttle VALUES (?, ?, ?)",
                                ((_text(r[1], clean), _text(r[2], clean), r[3]) for r in groups[_THROTTLE]))
            if groups[_CORRELATION]:
                _write_correlation(con, groups[_CORRELATION], clean)
            if groups[_RESUME]:
                con.executemany("INSERT INTO resume_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (tuple(_text(v, clean) if isinstance(v, str) else v for v in dataclasses.astuple(r[1]))
                                 for r in groups[_RESUME]))
            outbox_dropped = 0
            puts, acks = groups[_OUTBOX_PUT], groups[_OUTBOX_ACK]
            if puts and acks:  # acknowledged before it was written: neither row is needed (the mirror's usual case)
                acked = {r[1] for r in acks}
                kept = [r for r in puts if r[1] not in acked]
                if len(kept) < len(puts):
                    new = {r[1] for r in puts}
                    puts, acks = kept, [r for r in acks if r[1] not in new]
            if puts:
                con.executemany(f"{verb} INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?)", _outbox_params(puts, clean))
            if acks:
                con.executemany("DELETE FROM outbox WHERE id = ?", ((r[1],) for r in acks))
            for broker in {_text(r[2], clean) for r in puts}:
                cur = con.execute(
                    "DELETE FROM outbox WHERE broker = ? AND id <= (SELECT id FROM outbox WHERE broker = ?"
                    " ORDER BY id DESC LIMIT 1 OFFSET ?)", (broker, broker, self.outbox_max))
                outbox_dropped += max(cur.rowcount, 0)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        if outbox_dropped:
            self._outbox_dropped += outbox_dropped
            log.warning("journal %s: outbox full, dropped the %d oldest messages", self.path, outbox_dropped)

    # ----------------------------------------------------------------- reading

    def _query(self, sql: str, params: Iterable[Any] = (), *, flush: bool = True) -> list[Any]:
        if flush:
            self._flush_once()  # see what was just recorded (a failing disk still reads)
        with self._read_lock:
            con = self._reader
            if con is None:
                raise JournalError(f"{self.path}: journal is not open")
            try:
                return con.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as err:
                raise JournalError(f"{self.path}: cannot read the journal: {err}") from err

    def load_throttle(self, since: float) -> dict[tuple[str, str], list[float]]:
        """Throttle timestamps newer than ``since``: ``(rule, key) -> sorted timestamps``."""
        out: dict[tuple[str, str], list[float]] = {}
        for rule, key, ts in self._query(
                "SELECT rule, key, ts FROM throttle WHERE ts > ? ORDER BY rule, key, ts", (since,)):
            out.setdefault((rule, key), []).append(ts)
        return out

    def load_correlation(self, rule: str | None = None) -> list[tuple[str, str, str, float, str, Any]]:
        """Correlation state rows ``(rule, form, key, ts, signature, state)``, oldest first (of ``rule``)."""
        where, params = _where(rule=("rule = ?", rule))
        return [(r[0], r[1], r[2], r[3], r[4], _loads(r[5]))
                for r in self._query(f"SELECT rule, form, key, ts, signature, state FROM correlation{where}"
                                     " ORDER BY ts, rowid", params)]

    def outbox_pending(self, broker: str, limit: int = 10000) -> list[OutboxMessage]:
        """The messages not yet acknowledged for ``broker``, oldest first."""
        return [
            OutboxMessage(id=r[0], broker=r[1], topic=r[2], payload=bytes(r[3]), qos=r[4],
                          retain=bool(r[5]), created=r[6])
            for r in self._query("SELECT * FROM outbox WHERE broker = ? ORDER BY id LIMIT ?", (broker, limit))
        ]

    def runs(
        self,
        *,
        vm: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        limit: int = 100,
        status: str | None = None,
        with_steps: bool = True,
    ) -> list[RunRecord]:
        """Runs, newest first, with their steps and triggering events (unless ``with_steps=False``)."""
        where, params = _where(vm=("vm = ?", vm), rule=("rule = ?", rule), since=("started >= ?", since),
                               status=("status = ?", status))
        rows = self._query(f"SELECT * FROM runs{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return self._runs_from_rows(rows, with_steps)

    def run(self, run_id: int) -> RunRecord | None:
        """One run with its steps and its triggering event."""
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        found = self._runs_from_rows(rows, True)
        return found[0] if found else None

    def _runs_from_rows(self, rows: list[Any], with_steps: bool) -> list[RunRecord]:
        if not rows:
            return []
        steps: dict[int, list[StepRecord]] = {}
        events: dict[int, EventRecord] = {}
        if with_steps:
            for r in rows:
                if r[10] is not None:
                    steps[r[0]] = _folded_steps(r[0], r[10])
            ids = [r[0] for r in rows if r[10] is None]   # the steps table: rows of an older reactor
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT * FROM steps WHERE run_id IN ({marks}) ORDER BY run_id, idx, rowid"
                for s in self._query(sql, chunk, flush=False):
                    steps.setdefault(s[0], []).append(_step_record(s))
            event_ids = sorted({r[3] for r in rows if r[3] is not None})
            for chunk in _chunks(event_ids, 500):
                marks = ",".join("?" * len(chunk))
                for e in self._query(f"SELECT * FROM events WHERE id IN ({marks})", chunk, flush=False):
                    events[e[0]] = _event_record(e)
        return [
            RunRecord(id=r[0], rule=r[1], vm=r[2], event_id=r[3], event_name=r[4], outcome=r[5], status=r[6],
                      started=r[7], ended=r[8], error=r[9], steps=tuple(steps.get(r[0], ())),
                      event=events.get(r[3]) if r[3] is not None else None)
            for r in rows
        ]

    def events(
        self,
        *,
        vm: str | None = None,
        name: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Recorded events, newest first."""
        where, params = _where(vm=("vm = ?", vm), name=("name = ?", name), since=("ts >= ?", since))
        rows = self._query(f"SELECT * FROM events{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_event_record(r) for r in rows]

    # ---------------------------------------------------------------- pruning

    def prune(self, *, max_age: float | None = None, max_rows: int | None = None,
              now: float | None = None) -> int:
        """Delete old history; return the number of rows deleted.

        ``max_age`` (seconds): events, finished runs (with their steps) and
        throttle entries older than that.  ``max_rows``: keep only the newest
        ``max_rows`` events and the newest ``max_rows`` runs.  Runs still in
        flight, pending ``unless`` matches, correlation state and the outbox are
        never pruned.  Blocking: call it through ``asyncio.to_thread`` from async code.
        """
        if self.readonly or not self._opened:
            raise JournalError(f"{self.path}: journal is not open for writing")
        self._flush_once()
        cutoff = None if max_age is None else (time.time() if now is None else now) - max_age
        with self._write_lock:
            try:
                con = self._writer
                if con is None:
                    con = self._writer = self._connect_writer()
                con.execute("BEGIN IMMEDIATE")
                try:
                    deleted = self._prune(con, cutoff, max_rows)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                self._failed(err)
                raise JournalError(f"{self.path}: prune failed: {err}") from err
        return deleted

    @staticmethod
    def _prune(con: sqlite3.Connection, cutoff: float | None, max_rows: int | None) -> int:
        deleted = 0
        live = "status NOT IN ('running', 'queued', 'pending')"   # pending: an unless match held
        gone: list[tuple[int, int]] = []   # (run id, its folded steps): the steps count as rows deleted
        if cutoff is not None:
            deleted += con.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount
            deleted += con.execute("DELETE FROM throttle WHERE ts < ?", (cutoff,)).rowcount
            deleted += con.execute("DELETE FROM resume_attempts WHERE ended < ?", (cutoff,)).rowcount
            gone += con.execute(f"DELETE FROM runs WHERE COALESCE(ended, started) < ? AND {live}"
                                " RETURNING id, COALESCE(json_array_length(steps), 0)", (cutoff,)).fetchall()
        if max_rows is not None:
            deleted += con.execute(
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (max_rows,)).rowcount
            gone += con.execute(
                f"DELETE FROM runs WHERE id <= (SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?)"
                f" AND {live} RETURNING id, COALESCE(json_array_length(steps), 0)", (max_rows,)).fetchall()
        run_ids = [(rid,) for rid, _ in gone]
        deleted += len(run_ids) + sum(n for _, n in gone)
        before = con.total_changes
        con.executemany("DELETE FROM steps WHERE run_id = ?", run_ids)
        deleted += con.total_changes - before
        return deleted


# ---------------------------------------------------------------------- helpers


def _is_io_error(err: BaseException) -> bool:
    """True for failures of the disk or the file (retry later), False for refused content."""
    if isinstance(err, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                        sqlite3.DataError, sqlite3.NotSupportedError)):
        return False
    return isinstance(err, (sqlite3.DatabaseError, OSError, MemoryError))


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


_JSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


def _json(value: Any) -> str:
    """``value`` as JSON text; never raises.

    Strings that are not valid Unicode (lone surrogates) are backslash-escaped;
    what still cannot be written (integers past 64 bits, cycles) is stored as
    its ``repr``, as a JSON string.
    """
    try:
        return orjson.dumps(value, default=_default, option=_JSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return orjson.dumps(_sanitised(value, 0), default=_default, option=_JSON_OPTIONS).decode()
    except TypeError:
        return orjson.dumps(repr(value).encode("utf-8", "backslashreplace").decode()).decode()


def _sanitised(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if depth > 100:
        return repr(value)
    if isinstance(value, Mapping):
        return {_sanitised(k, depth + 1): _sanitised(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitised(v, depth + 1) for v in value]
    return value


def _text(value: Any, clean: bool) -> Any:
    if not clean or value is None:
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _num(value: Any, clean: bool) -> Any:
    if not clean or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


#: The columns of an events row and of a runs row that are often NULL (host, problems; event_id, ended,
#: error, steps).
_EVENT_NULLABLE: Final = (3, 6)
_RUN_NULLABLE: Final = (3, 8, 9, 10)


@functools.lru_cache(maxsize=128)
def _variant(head: str, width: int, nulls: tuple[int, ...]) -> tuple[str, Callable[[tuple[Any, ...]], Any]]:
    """The statement ``HEAD VALUES (...)`` with a NULL literal in each of the columns ``nulls``, and a
    function taking a full row to the parameters left (an itemgetter: a tuple, as at least two are left)."""
    kept = [i for i in range(width) if i not in nulls]
    values = ", ".join("NULL" if i in nulls else "?" for i in range(width))
    return f"{head} VALUES ({values})", operator.itemgetter(*kept)


def _insert(con: sqlite3.Connection, head: str, width: int, nullable: tuple[int, ...],
            rows: Iterable[tuple[Any, ...]]) -> None:
    """``executemany`` of ``HEAD VALUES (?, ...)`` over ``rows`` (in order), with each None in a ``nullable``
    column written as a NULL literal rather than bound: Python's sqlite3 adapts every None it binds, which
    cost about 1 us each, a fifth of an event row's insert (measured, Python 3.11, SQLite 3.40)."""
    group: list[tuple[Any, ...]] = []
    current = -1
    get: Callable[[tuple[Any, ...]], Any] = tuple
    sql = ""
    for row in rows:
        mask = 0
        for bit, i in enumerate(nullable):
            if row[i] is None:
                mask |= 1 << bit
        if mask != current:
            if group:
                con.executemany(sql, group)
                group = []
            current = mask
            sql, get = _variant(head, width, tuple(i for bit, i in enumerate(nullable) if mask >> bit & 1))
        group.append(get(row))
    if group:
        con.executemany(sql, group)


def _event_params(rows: list[tuple[Any, ...]], clean: bool) -> Iterator[tuple[Any, ...]]:
    if not clean:   # the common case, without a call per field (one row per event)
        for _, eid, name, vm, host, ts, data, problems in rows:
            yield eid, name, vm, host, ts or 0.0, _json(data), _json(problems) if problems else None
        return
    for _, eid, name, vm, host, ts, data, problems in rows:
        yield (eid, _text(name, clean), _text(vm, clean), _text(host, clean), _num(ts, clean) or 0.0,
               _json(data), _json(problems) if problems else None)


_RUN_STATUS: Final = {"started": "running", "queued": "queued"}


def _run_params(rows: list[tuple[Any, ...]], clean: bool) -> Iterator[tuple[Any, ...]]:
    if not clean:   # the common case, as _event_params
        for _, rid, rule, vm, event_id, event_name, outcome, started in rows:
            status = _RUN_STATUS.get(outcome)
            yield (rid, rule, vm, event_id if isinstance(event_id, int) else None, event_name, outcome,
                   status or outcome, started or 0.0, None if status else started, None)
        return
    for _, rid, rule, vm, event_id, event_name, outcome, started in rows:
        status = _RUN_STATUS.get(outcome)
        ended = None if status else started
        yield (rid, _text(rule, clean), _text(vm, clean), event_id if isinstance(event_id, int) else None,
               _text(event_name, clean), _text(outcome, clean), _text(status or outcome, clean),
               _num(started, clean) or 0.0, _num(ended, clean), None)


def _coalesce(runs: list[tuple[Any, ...]], updates: list[tuple[Any, ...]]
              ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Fold updates of runs inserted in the same batch into their inserts (a short run is one row write,
    not an insert plus an update); the updates of older runs stay updates, in order."""
    if not runs or not updates:
        return runs, updates
    where = {r[0]: i for i, r in enumerate(runs)}
    rest: list[tuple[Any, ...]] = []
    for u in updates:
        i = where.get(u[4])
        if i is None:
            rest.append(u)
            continue
        status, outcome, ended, error = u[:4]
        r = runs[i]  # (id, rule, vm, event_id, event_name, outcome, status, started, ended, error)
        runs[i] = (r[0], r[1], r[2], r[3], r[4], r[5] if outcome is None else outcome,
                   r[6] if status is None else status, r[7], r[8] if ended is None else ended,
                   r[9] if error is None else error)
    return runs, rest


def _update_params(rows: list[tuple[Any, ...]], clean: bool) -> Iterator[tuple[Any, ...]]:
    if not clean:   # the common case, as _event_params
        for _, rid, status, outcome, ended, error in rows:
            yield status, outcome, ended, error, rid
        return
    for _, rid, status, outcome, ended, error in rows:
        yield (_text(status, clean), _text(outcome, clean), _num(ended, clean), _text(error, clean), rid)


def _step_json(row: tuple[Any, ...], clean: bool) -> str:
    """A step as the JSON array folded into its run's row: ``[index, action, args, status, result, error,
    started, duration]`` (args and result each written on their own, so one odd value spoils nothing else)."""
    _, _rid, index, action, args, status, result, error, started, duration = row
    if not clean:
        try:   # the common case: one encoder call
            return orjson.dumps([index, action, args, status, result, error, started, duration],
                                default=_default, option=_JSON_OPTIONS).decode()
        except TypeError:
            pass
    return (f"[{int(index)},{_json(_text(action, clean))},{_json(args)},{_json(_text(status, clean))},"
            f"{_json(result)},{_json(_text(error, clean))},{_json(_num(started, clean) or 0.0)},"
            f"{_json(_num(duration, clean) or 0.0)}]")


def _steps_json(steps: list[str]) -> str:
    return "[" + ",".join(steps) + "]"


def _folded_steps(run_id: int, text: str) -> list[StepRecord]:
    out = [StepRecord(run_id=run_id, index=s[0], action=s[1], args=s[2], status=s[3], result=s[4], error=s[5],
                      started=s[6], duration=s[7])
           for s in orjson.loads(text) if isinstance(s, list) and len(s) == 8]
    out.sort(key=_step_index)   # as the steps table was read: by index, then in the order recorded
    return out


def _step_index(s: StepRecord) -> int:
    return s.index


def _outbox_params(rows: list[tuple[Any, ...]], clean: bool) -> Iterator[tuple[Any, ...]]:
    for _, mid, broker, topic, payload, qos, retain, created in rows:
        yield (mid, _text(broker, clean), _text(topic, clean), payload, int(qos), 1 if retain else 0, created)


def _write_correlation(con: sqlite3.Connection, rows: list[tuple[Any, ...]], clean: bool) -> None:
    """Apply correlation ``add``/``del`` rows in their order (consecutive ones of one shape in one executemany).

    A ``del`` names its rule and any of form, key and a ``ts`` bound; each shape has its own statement
    (so that SQLite uses the index).  An ``add`` that a later ``del`` of the same batch removes is not
    written at all (a count that fired, a pending match cancelled, within one flush: the usual case
    in a storm).
    """
    rows = _live_correlation(rows)
    i = 0
    while i < len(rows):
        op, shape = rows[i][1], _shape(rows[i])
        j = i
        while j < len(rows) and rows[j][1] == op and _shape(rows[j]) == shape:
            j += 1
        chunk = rows[i:j]
        if op == "add":
            con.executemany("INSERT INTO correlation VALUES (?, ?, ?, ?, ?, ?)",
                            ((_text(r[2], clean), _text(r[3], clean), _text(r[4], clean), _num(r[5], clean) or 0.0,
                              _text(r[6], clean), _json(r[7])) for r in chunk))
        else:
            where = "".join(clause for clause, on in zip((" AND form = ?", " AND key = ?", " AND ts <= ?"), shape,
                                                         strict=True) if on)
            con.executemany(f"DELETE FROM correlation WHERE rule = ?{where}",
                            ((_text(r[2], clean), *(_text(v, clean) for v, on in zip(r[3:5], shape, strict=False)
                                                    if on), *([r[5]] if shape[2] else []))
                             for r in chunk))
        i = j


def _live_correlation(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` without the adds a later del of the batch covers (scanned backwards: dels seen so far)."""
    if not any(r[1] == "del" for r in rows):
        return rows
    inf = float("inf")
    bound: dict[tuple[Any, Any, Any], float] = {}   # (rule, form|None, key|None) -> rows at or before it go
    kept: list[tuple[Any, ...]] = []
    for r in reversed(rows):
        _, op, rule, form, key, ts = r[:6]
        if op == "del":
            k = (rule, form, key)
            b = inf if ts is None else float(ts)
            if b > bound.get(k, -inf):
                bound[k] = b
            kept.append(r)
            continue
        t = float(ts or 0.0)
        if (t <= bound.get((rule, form, key), -inf) or t <= bound.get((rule, form, None), -inf)
                or t <= bound.get((rule, None, None), -inf)):
            continue
        kept.append(r)
    kept.reverse()
    return kept


def _shape(row: tuple[Any, ...]) -> tuple[bool, bool, bool]:
    return (row[3] is not None, row[4] is not None, row[5] is not None)


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _event_record(r: Any) -> EventRecord:
    return EventRecord(id=r[0], name=r[1], vm=r[2], host=r[3], timestamp=r[4], data=_loads(r[5]),
                       problems=tuple(_loads(r[6]) or ()))


def _step_record(s: Any) -> StepRecord:
    return StepRecord(run_id=s[0], index=s[1], action=s[2], args=_loads(s[3]), status=s[4],
                      result=_loads(s[5]), error=s[6], started=s[7], duration=s[8])


def _where(**conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    clauses = [sql for sql, value in conditions.values() if value is not None]
    params = [value for _, value in conditions.values() if value is not None]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
