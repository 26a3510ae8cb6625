"""The launcher and the tiny guest, proven at the QEMU level with qemu.qmp's QMPClient.

Guest-less VMs cover stop/cont/reset/quit, USB hot-unplug and a failing block
job; the guest's scenarios cover BLOCK_IO_ERROR, WATCHDOG and GUEST_PANICKED
and the commands a rule would answer them with (cont, snapshot-save,
dump-guest-memory).  No reactor engine is involved.

With ``REACTOR_RECORD_EVENTS=1`` the events received are written to
tests/data/qemu-7.2-events.jsonl (one event object per line, plus ``"vm"``),
the committed file that replay tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

# tests/ is not a package: pytest puts it on sys.path.  Importing the fixtures
# here lets this file run before conftest.py imports them too.
from qemu_fixtures import QemuVMFactory, guest_kernel, qemu_vm_factory

from reactor.testing.qemu import (
    READY_MARKER,
    GuestImage,
    QemuExitedError,
    SerialTimeoutError,
    blkdebug_disk,
    raw_disk,
)

__all__ = ["guest_kernel", "qemu_vm_factory"]  # re-exported fixtures

EVENTS_FILE = Path(__file__).parent.parent / "data" / "qemu-7.2-events.jsonl"
_recorded: list[dict[str, Any]] = []

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module", autouse=True)
def _record_events() -> Iterator[None]:
    """Write the events every test received, when REACTOR_RECORD_EVENTS=1."""
    _recorded.clear()
    yield
    if os.environ.get("REACTOR_RECORD_EVENTS") == "1" and _recorded:
        EVENTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        with EVENTS_FILE.open("w") as f:
            for event in _recorded:
                f.write(json.dumps(event, sort_keys=True) + "\n")


class Monitor:
    """A QMPClient that keeps (and records) every event it receives."""

    def __init__(self, vm_name: str) -> None:
        self.vm_name = vm_name
        self.client = QMPClient(vm_name)
        self.events: list[dict[str, Any]] = []

    async def connect(self, path: Path) -> None:
        await self.client.connect(str(path))

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return await self.client.execute(cmd, args)

    async def expect(self, name: str, timeout: float = 30.0, **data: Any) -> dict[str, Any]:
        """The next event called ``name`` whose data contains ``data``; others are kept too."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._keep(await self.client.events.get())
                items = event.get("data", {})
                if event["event"] == name and all(items.get(k) == v for k, v in data.items()):
                    return event

    async def close(self) -> None:
        while not self.client.events.empty():
            self._keep(await self.client.events.get())
        with contextlib.suppress(EOFError, OSError):  # QEMU quit: the reader saw EOF first
            await self.client.disconnect()

    def _keep(self, message: Any) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(bytes(message))
        self.events.append(event)
        _recorded.append({**event, "vm": self.vm_name})
        return event

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


# --- the launcher itself ------------------------------------------------------------------


async def test_bad_argument_raises_with_stderr(qemu_vm_factory: QemuVMFactory) -> None:
    with pytest.raises(QemuExitedError) as info:
        await qemu_vm_factory(name="bad", extra_args=["-device", "no-such-device"])
    assert "no-such-device" in info.value.stderr
    assert info.value.returncode not in (None, 0)


async def test_kill_restart_reuses_socket_and_leaves_nothing(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="rs")
    first = vm.pid
    assert first is not None and vm.running
    await vm.kill()
    assert not vm.running and vm.returncode == -signal.SIGKILL
    await vm.restart()
    assert vm.pid not in (None, first)
    mon = Monitor("rs")
    await mon.connect(vm.qmp_path)
    assert (await mon.execute("query-status"))["status"] == "prelaunch"
    await mon.close()
    second = vm.pid
    await vm.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


async def test_terminate_emits_shutdown(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="term")
    mon = Monitor("term")
    await mon.connect(vm.qmp_path)
    assert await vm.terminate() == 0
    event = await mon.expect("SHUTDOWN", 10)
    assert event["data"]["reason"] == "host-signal"
    await mon.close()


async def test_dial_out_mode_connects_to_a_listener(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    path = tmp_path / "listen.sock"
    server = QMPClient("listener")
    await server.start_server(str(path))
    vm = await qemu_vm_factory(name="dial", qmp_path=path, qmp_mode="connect")
    async with asyncio.timeout(10):
        await server.accept()
    name: Any = await server.execute("query-name")
    assert name == {"name": "dial"}
    await server.disconnect()
    assert vm.running


async def test_sigstop_makes_qemu_unresponsive(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="hung")
    mon = Monitor("hung")
    await mon.connect(vm.qmp_path)
    vm.stop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await mon.execute("query-status")
    vm.cont()
    await vm.kill()
    await mon.close()   # its reader saw the reset: disconnect collects that (else asyncio logs it at exit)


# --- guest-less VMs ----------------------------------------------------------------------


async def test_stop_cont_reset_quit(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="plain")
    mon = Monitor("plain")
    await mon.connect(vm.qmp_path)
    assert (await mon.execute("query-status"))["status"] == "prelaunch"
    await mon.execute("cont")
    await mon.expect("RESUME")
    await mon.execute("stop")
    await mon.expect("STOP")
    assert (await mon.execute("query-status"))["status"] == "paused"
    await mon.execute("system_reset")
    assert (await mon.expect("RESET"))["data"]["reason"] == "host-qmp-system-reset"
    await mon.execute("quit")
    assert (await mon.expect("SHUTDOWN"))["data"]["reason"] == "host-qmp-quit"
    assert await vm.wait(10) == 0
    await mon.close()
    assert mon.names() == ["RESUME", "STOP", "RESET", "SHUTDOWN"]


async def test_usb_hot_unplug_emits_device_deleted(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="usb", extra_args=["-device", "qemu-xhci,id=xhci"])
    mon = Monitor("usb")
    await mon.connect(vm.qmp_path)
    await mon.execute("device_add", {"driver": "usb-tablet", "id": "t0", "bus": "xhci.0"})
    await mon.execute("device_del", {"id": "t0"})
    event = await mon.expect("DEVICE_DELETED", device="t0")
    assert event["data"]["path"] == "/machine/peripheral/t0"
    await mon.close()


async def test_mirror_onto_failing_target_emits_block_job_error(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    src = raw_disk(tmp_path / "src.raw", node_name="src", device_id=None)
    src.path.write_bytes(b"\xa5" * src.size)
    dst = blkdebug_disk(tmp_path / "dst.raw", node_name="d0", file_node="f0", device_id=None)
    vm = await qemu_vm_factory(name="mirror", disks=[src, dst])
    mon = Monitor("mirror")
    await mon.connect(vm.qmp_path)
    await mon.execute(
        "blockdev-mirror",
        {"job-id": "m0", "device": "src", "target": "d0", "sync": "full", "on-target-error": "stop"},
    )
    error = await mon.expect("BLOCK_JOB_ERROR")
    assert error["data"] == {"device": "m0", "operation": "write", "action": "stop"}
    await mon.expect("JOB_STATUS_CHANGE", id="m0", status="paused")
    await mon.execute("block-job-resume", {"device": "m0"})
    ready = await mon.expect("BLOCK_JOB_READY")
    assert ready["data"]["device"] == "m0"
    await mon.execute("block-job-cancel", {"device": "m0"})
    await mon.expect("BLOCK_JOB_COMPLETED", device="m0")
    await mon.close()


# --- the tiny guest -------------------------------------------------------------------------


@pytest.mark.guest
async def test_guest_boots_to_ready(qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage) -> None:
    started = time.monotonic()
    vm = await qemu_vm_factory(name="idle", guest=guest_kernel)
    line = await vm.wait_serial(READY_MARKER, 60)
    assert "scenario=idle" in line
    print(f"boot-to-READY {time.monotonic() - started:.2f}s: {line}")
    with pytest.raises(SerialTimeoutError):
        await vm.wait_serial("REACTOR-NEVER", 0.2)


@pytest.mark.guest
async def test_guest_ioerror_stops_then_cont_write_ok(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage
) -> None:
    vm = await qemu_vm_factory(name="ioerror", guest=guest_kernel, scenario="ioerror")
    mon = Monitor("ioerror")
    await mon.connect(vm.qmp_path)
    event = await mon.expect("BLOCK_IO_ERROR", 90)
    assert event["data"]["node-name"] == "d0" == vm.node_name
    assert event["data"]["device"] == ""
    assert event["data"]["operation"] == "write"
    assert event["data"]["action"] == "stop"
    await mon.expect("STOP")
    assert (await mon.execute("query-status"))["status"] == "io-error"
    assert "REACTOR-WRITE-START" in vm.serial_text()
    assert "REACTOR-WRITE-" not in vm.serial_text().replace("REACTOR-WRITE-START", "")
    await mon.execute("cont")
    await mon.expect("RESUME")
    await vm.wait_serial("REACTOR-WRITE-OK", 30)
    await mon.close()


@pytest.mark.guest
async def test_guest_watchdog_pauses_then_snapshot_and_resume(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage
) -> None:
    vm = await qemu_vm_factory(name="watchdog", guest=guest_kernel, scenario="watchdog")
    mon = Monitor("watchdog")
    await mon.connect(vm.qmp_path)
    assert (await mon.expect("WATCHDOG", 90))["data"]["action"] == "pause"
    await mon.expect("STOP")
    assert (await mon.execute("query-status"))["status"] == "watchdog"
    await mon.execute(
        "snapshot-save", {"job-id": "snap0", "tag": "reactor-0", "vmstate": "q0", "devices": ["q0"]}
    )
    await mon.expect("JOB_STATUS_CHANGE", 60, id="snap0", status="concluded")
    jobs = await mon.execute("query-jobs")
    assert [(j["id"], j["status"], j.get("error")) for j in jobs] == [("snap0", "concluded", None)]
    await mon.execute("job-dismiss", {"id": "snap0"})
    nodes = await mon.execute("query-named-block-nodes")
    (q0,) = [n for n in nodes if n["node-name"] == "q0"]
    assert [s["name"] for s in q0["image"].get("snapshots", [])] == ["reactor-0"]
    await mon.execute("cont")
    await mon.expect("RESUME")
    await mon.execute("quit")
    await vm.wait(10)
    await mon.close()
    img = await asyncio.create_subprocess_exec(
        "qemu-img", "snapshot", "-l", str(vm.disks[0].path), stdout=subprocess.PIPE
    )
    listing, _ = await img.communicate()
    assert img.returncode == 0 and b"reactor-0" in listing


@pytest.mark.guest
async def test_guest_panic_then_dump(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    vm = await qemu_vm_factory(name="panic", guest=guest_kernel, scenario="panic", memory_mb=128)
    mon = Monitor("panic")
    await mon.connect(vm.qmp_path)
    assert (await mon.expect("GUEST_PANICKED", 90))["data"]["action"] == "pause"
    assert (await mon.execute("query-status"))["status"] == "guest-panicked"
    dump = tmp_path / "panic.core"
    await mon.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{dump}", "detach": True})
    done = await mon.expect("DUMP_COMPLETED", 60)
    assert done["data"]["result"]["status"] == "completed"
    assert "error" not in done["data"]
    assert dump.read_bytes()[:4] == b"\x7fELF"
    await mon.close()
    assert "STOP" in mon.names()

