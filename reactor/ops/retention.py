"""Journal retention: ``journal.max_age`` and ``journal.max_size``, pruned periodically off the event path.

Every ``interval`` seconds (and once shortly after start) the pruner deletes
history older than ``max_age`` and, when the database holds more than
``max_size`` bytes of live pages, the oldest events and runs in proportion
(with 10 % headroom).  Everything runs in a worker thread: recording stays an
in-memory append, so the event path never waits for a prune.  SQLite reuses
the freed pages, so the file stops growing rather than shrinking.

The policy is read on every pass (a callable), so a reload that changes
``journal:`` applies at the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from reactor.daemon.config import JournalConfig
from reactor.errors import JournalError
from reactor.ops.journal import Journal

__all__ = ["Retention", "live_size"]

log = logging.getLogger(__name__)


def live_size(path: Path) -> tuple[int, int]:
    """(bytes in use by the database at ``path``, rows in its largest history table) — blocking."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        rows = max(con.execute("SELECT count(*) FROM events").fetchone()[0],
                   con.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        con.close()
    return (pages - free) * page_size, rows


class Retention:
    """Prunes ``journal`` per ``policy()`` every ``interval`` seconds (run it as a task)."""

    def __init__(self, journal: Journal, policy: Callable[[], JournalConfig], *, interval: float = 60.0,
                 first: float = 5.0) -> None:
        self.journal = journal
        self.policy = policy
        self.interval = interval
        self.first = first
        self.passes = 0
        self.deleted = 0

    def _max_rows(self, max_size: int) -> int | None:
        used, rows = live_size(self.journal.path)
        if used <= max_size or rows == 0:
            return None
        return max(1, int(rows * (max_size / used) * 0.9))

    async def prune_once(self) -> int:
        """One pass; the number of rows deleted."""
        cfg = self.policy()
        if cfg.max_age is None and cfg.max_size is None:
            return 0
        max_rows = None
        if cfg.max_size is not None:
            try:
                max_rows = await asyncio.to_thread(self._max_rows, cfg.max_size)
            except sqlite3.Error as err:
                log.warning("journal retention: cannot measure %s: %s", self.journal.path, err)
        if cfg.max_age is None and max_rows is None:
            return 0
        deleted = await asyncio.to_thread(self.journal.prune, max_age=cfg.max_age, max_rows=max_rows)
        self.passes += 1
        self.deleted += deleted
        if deleted:
            log.info("journal retention: pruned %d rows (max_age=%s, keep=%s)", deleted, cfg.max_age, max_rows)
        return deleted

    async def run(self) -> None:
        """Prune until cancelled; a failing pass is logged and retried at the next interval."""
        delay = self.first
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                await self.prune_once()
            except JournalError as err:
                log.warning("journal retention: %s", err)
