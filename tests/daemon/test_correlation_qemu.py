"""`unless` against a real QEMU: ``stop`` and no ``cont`` → the rule runs after its window; ``stop`` then
``cont`` within it → the pending match is cancelled by QEMU's RESUME (the real daemon, asserted from the
journal, as in tests/daemon/test_daemon.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from daemon_fixtures import Monitor, connected, make_vm, read_runs, running, summary, wait_runs, write_config
from qemu_fixtures import QemuVMFactory, qemu_vm_factory

__all__ = ["qemu_vm_factory"]

pytestmark = pytest.mark.qemu

RULES = """
rules:
  - name: paused-too-long
    on: STOP
    unless: {event: [RESUME, SHUTDOWN], within: 3s}
    actions:
      - qmp: query-status
        register: st
      - log: "paused since {{ vars.pending_since }}: {{ vars.st.status }}"
"""


async def test_stop_without_cont_runs_after_the_window(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "paused")
    cfg = write_config(tmp_path, ["paused"], RULES)
    state = tmp_path / "state"
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "paused")
        await mon.connect(vm.qmp_path)
        await mon.execute("cont")
        await mon.execute("stop")
        stopped = time.time()
        runs = await wait_runs(state, lambda rs: any(r.outcome == "started" and r.ended for r in rs), timeout=20)
    pending, run = runs
    assert (pending.outcome, pending.status) == ("pending", "elapsed"), summary(pending)
    assert run.status == "ok", summary(run)
    assert run.started >= stopped + 3 - 0.1               # not before the window has passed
    assert run.event is not None and run.event.name == "STOP"
    assert run.steps[0].result["status"] == "paused"
    assert run.steps[1].result.startswith("paused since ")


async def test_stop_then_cont_within_the_window_cancels(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "brief")
    cfg = write_config(tmp_path, ["brief"], RULES)
    state = tmp_path / "state"
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "brief")
        await mon.connect(vm.qmp_path)
        await mon.execute("cont")
        await mon.execute("stop")
        await asyncio.sleep(1.0)
        await mon.execute("cont")
        await wait_runs(state, lambda rs: any(r.status == "cancelled" for r in rs))
        await asyncio.sleep(3.0)                            # past the deadline: nothing runs
    runs = read_runs(state)
    assert [(r.outcome, r.status) for r in runs] == [("pending", "cancelled")], [summary(r) for r in runs]
    assert runs[0].error is not None and "cancelled by RESUME from brief" in runs[0].error
