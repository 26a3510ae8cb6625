"""The ``resume`` action's tests: the real daemon against fake QEMUs, the journal's resume rows, a space probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP

from reactor.daemon.config import parse_config
from reactor.daemon.daemon import Daemon, serve
from reactor.ops.journal import Journal, ResumeRecord, RunRecord


def io_error() -> dict[str, Any]:
    return {"device": "", "node-name": "d0", "operation": "write", "action": "stop", "nospace": False,
            "reason": "Input/output error"}


RULES = """
rules:
  - name: resume-io
    on: BLOCK_IO_ERROR
    match: {action: stop}
    actions:
      - resume: {ARGS}
        register: r
  - name: gave-up
    on: REACTOR_RESUME_GAVE_UP
    actions:
      - log: "{{ vm.name }}: gave up after {{ event.data.attempts }}: {{ event.data.last_error }}"
"""


@contextlib.asynccontextmanager
async def daemon_for(tmp: Path, fakes: list[FakeQMP], args: str, *, rules: str = RULES,
                     dry_run: bool = False, http_port: int | None = None) -> AsyncIterator[Daemon]:
    rules_dir = tmp / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "r.yaml").write_text(rules.replace("{ARGS}", args))
    vms = "".join(f"  - {{name: {f.name}, qmp: {f.address}}}\n" for f in fakes)
    text = f"rules: {rules_dir}\nstate_dir: {tmp / 'state'}\njournal: {{events: all}}\nvms:\n{vms}"
    if http_port is not None:
        text += f"http: {{listen: '127.0.0.1:{http_port}'}}\n"
    daemon = Daemon(parse_config(text, tmp / "reactor.yaml"), watch=False, grace=2.0, dry_run=dry_run)
    task = asyncio.create_task(serve(daemon, install_signals=False))
    try:
        async with asyncio.timeout(10):
            await daemon.ready.wait()
            for f in fakes:
                await f.wait_sessions(1)
            while not all(daemon.fleet.get(str(f.name)).connected for f in fakes):  # type: ignore[union-attr]  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        yield daemon
    finally:
        daemon.stop()
        async with asyncio.timeout(20):
            await task


def journal(state: Path) -> tuple[list[RunRecord], list[ResumeRecord], list[Any]]:
    j = Journal(state / "journal.db")
    j.open_sync(readonly=True)
    try:
        return (list(reversed(j.runs(limit=1000))), j.resume_history(limit=1000),
                list(reversed(j.events(limit=10_000))))
    finally:
        j.close_sync()


async def poll(predicate: Any, timeout: float, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (value := await asyncio.to_thread(predicate)):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.2)
            return value
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def space_probe_rules(mnt: Path) -> str:
    return f"""
rules:
  - name: resume-when-space
    on: BLOCK_IO_ERROR
    match: {{action: stop}}
    actions:
      - resume:
          settle: 200ms
          probe:
            - exec: {{argv: [sh, -c, "test $(stat -f -c %a {mnt}) -gt 64"]}}
          verify: 2s
          attempts: 10
          backoff: 500ms
          max_backoff: 1s
        register: r
"""
