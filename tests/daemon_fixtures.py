"""The real daemon in-process against real QEMU VMs: configs, the daemon, the journal read back, a test monitor.

QEMU serves one client per monitor, so every VM gets two: the socket reactor
is configured with (``NAME.qmp``) and a second one the test drives QEMU
through (``NAME.test.qmp``, also the launcher's start-up probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient
from qemu_fixtures import QemuVMFactory

from reactor.daemon.config import load_config
from reactor.daemon.daemon import Daemon, serve
from reactor.ops.journal import Journal, RunRecord
from reactor.testing.qemu import QemuVM


def reactor_monitor(path: Path) -> list[str]:
    """QEMU arguments for a second QMP monitor on ``path``: the one reactor connects to."""
    return ["-chardev", f"socket,id=reactor,path={path},server=on,wait=off", "-mon", "chardev=reactor,mode=control"]


async def make_vm(factory: QemuVMFactory, tmp: Path, name: str, *, extra: list[str] | None = None,
                  **kwargs: Any) -> QemuVM:
    """A started VM with a test monitor (``vm.qmp_path``) and reactor's (``tmp/NAME.qmp``)."""
    return await factory(name=name, qmp_path=tmp / f"{name}.test.qmp",
                         extra_args=[*reactor_monitor(tmp / f"{name}.qmp"), *(extra or [])], **kwargs)


def write_config(tmp: Path, vms: list[str], rules: str | Path | None, *, extra: str = "") -> Path:
    """A config for ``vms`` (sockets ``tmp/NAME.qmp``); ``rules`` is YAML text or a directory."""
    if isinstance(rules, Path):
        rules_dir = rules
    else:
        rules_dir = tmp / "rules"
        rules_dir.mkdir(exist_ok=True)
        (rules_dir / "test.yaml").write_text(rules or "rules: []\n")
    lines = [f"rules: {rules_dir}", f"state_dir: {tmp / 'state'}", "journal: {events: all}", "vms:"]
    lines += [f"  - {{name: {v}, qmp: {tmp / (v + '.qmp')}}}" for v in vms]
    cfg = tmp / "reactor.yaml"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    return cfg


@contextlib.asynccontextmanager
async def running(config: Path, *, dry_run: bool = False, grace: float = 5.0) -> AsyncIterator[Daemon]:
    """The real daemon, in this process, until the block ends (then a graceful stop)."""
    daemon = Daemon(load_config(config), dry_run=dry_run, grace=grace)
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


async def connected(daemon: Daemon, name: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            vm = daemon.fleet.get(name) if daemon.fleet is not None else None
            if vm is not None and vm.connected:
                return
            await asyncio.sleep(0.01)


def read_runs(state: Path, **filters: Any) -> list[RunRecord]:
    """Runs (oldest first) as another process reading the journal sees them."""
    j = Journal(state / "journal.db")
    j.open_sync(readonly=True)
    try:
        return list(reversed(j.runs(limit=1000, **filters)))
    finally:
        j.close_sync()


async def wait_runs(state: Path, predicate: Callable[[list[RunRecord]], bool], timeout: float = 20.0,
                    **filters: Any) -> list[RunRecord]:
    """Poll the journal (from a separate reader) until ``predicate(runs)`` holds."""
    runs: list[RunRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                if (state / "journal.db").exists():
                    runs = await asyncio.to_thread(read_runs, state, **filters)
                    if predicate(runs):
                        return runs
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"journal never satisfied the test; runs: {[summary(r) for r in runs]}")


def finished(rule: str, n: int = 1) -> Callable[[list[RunRecord]], bool]:
    def check(runs: list[RunRecord]) -> bool:
        return sum(1 for r in runs if r.rule == rule and r.ended is not None) >= n
    return check


def summary(r: RunRecord) -> str:
    steps = ", ".join(f"{s.action}:{s.status}" for s in r.steps)
    return f"#{r.id} {r.rule} {r.event_name} {r.status} [{steps}] {r.error or ''}"


class Monitor:
    """The test's own QMP client on the VM's test monitor."""

    def __init__(self) -> None:
        self.client = QMPClient("test")

    async def __aenter__(self) -> Monitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()

    async def connect(self, path: Path) -> Monitor:
        await self.client.connect(str(path))
        return self

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return await self.client.execute(cmd, args)

    async def status(self) -> str:
        return str((await self.execute("query-status"))["status"])

    async def expect(self, name: str, timeout: float = 30.0, **data: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event: dict[str, Any] = json.loads(bytes(await self.client.events.get()))
                if event["event"] == name and all(event.get("data", {}).get(k) == v for k, v in data.items()):
                    return event

    async def wait_status(self, status: str, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if await self.status() == status:
                    return
                await asyncio.sleep(0.05)
