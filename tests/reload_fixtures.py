"""The real daemon in-process against a fake QMP server ``web-1`` (the reload, CLI and notify tests)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP

from reactor.daemon.config import load_config
from reactor.daemon.daemon import Daemon, serve
from reactor.ops.notify import Notifier

RULE_A = """\
rules:
  - name: on-stop-a
    on: STOP
    actions:
      - log: "a saw {{ event.name }}"
  - name: report-reload
    on: REACTOR_RULES_RELOADED
    actions:
      - log: "reloaded ok={{ event.data.ok }}"
"""


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def write_config(tmp_path: Path, fake: FakeQMP, extra: str = "") -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    cfg = tmp_path / "reactor.yaml"
    cfg.write_text(f"""\
rules: rules/
state_dir: state/
vms:
  - name: web-1
    qmp: {fake.address}
{extra}""")
    return cfg


@contextlib.asynccontextmanager
async def running(cfg: Path, **kwargs: Any) -> AsyncIterator[Daemon]:
    kwargs.setdefault("notifier", Notifier(env={}))
    kwargs.setdefault("watch", False)
    daemon = Daemon(load_config(cfg), grace=2.0, **kwargs)
    task = asyncio.create_task(serve(daemon, install_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)


def runs(daemon: Daemon, rule: str) -> list[Any]:
    return daemon.journal.runs(rule=rule)


def ok_runs(daemon: Daemon, rule: str) -> list[Any]:
    return [r for r in runs(daemon, rule) if r.status == "ok"]


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeQMP]:
    async with FakeQMP(tmp_path / "web-1.qmp", name="web-1", status="running") as f:
        yield f
