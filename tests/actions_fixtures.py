"""The real daemon in-process for the action tests: VMs by name and QMP address, finished runs from the journal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reactor.daemon.config import load_config
from reactor.daemon.daemon import Daemon, serve
from reactor.ops.journal import Journal, RunRecord


def write_config(tmp: Path, vms: dict[str, str], rules: str) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "test.yaml").write_text(rules)
    lines = [f"rules: {tmp / 'rules'}", f"state_dir: {tmp / 'state'}", "journal: {events: all}", "vms:"]
    lines += [f"  - {{name: {name}, qmp: {addr}}}" for name, addr in vms.items()]
    cfg = tmp / "reactor.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@contextlib.asynccontextmanager
async def running(config: Path, *, dry_run: bool = False) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_config(config), dry_run=dry_run, grace=5.0)
    task = asyncio.create_task(serve(daemon, install_signals=False), name="test.daemon")
    try:
        async with asyncio.timeout(10):
            ready = asyncio.ensure_future(daemon.ready.wait())
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()
        yield daemon
    finally:
        daemon.stop()
        async with asyncio.timeout(30):
            await task


def read_runs(state: Path) -> list[RunRecord]:
    j = Journal(state / "journal.db")
    j.open_sync(readonly=True)
    try:
        return list(reversed(j.runs(limit=1000)))
    finally:
        j.close_sync()


async def wait_runs(state: Path, rule: str, n: int = 1, timeout: float = 20.0) -> list[RunRecord]:
    """The first ``n`` finished runs of ``rule``, read from the journal by a separate reader."""
    runs: list[RunRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                if (state / "journal.db").exists():
                    runs = await asyncio.to_thread(read_runs, state)
                    done = [r for r in runs if r.rule == rule and r.ended is not None]
                    if len(done) >= n:
                        return done[:n]
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"no {n} finished runs of {rule}; runs: {[(r.rule, r.status, r.error) for r in runs]}")
