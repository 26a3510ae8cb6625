"""The daemon end to end: real QEMU, real guest, real rules, asserted from the journal.

Each test writes a config (and usually its own rules), runs the REAL daemon
(``Daemon`` in-process through ``serve(..., install_signals=False)``, or
``reactor run`` as a subprocess for signals), makes QEMU emit events and
checks what the journal recorded and what state QEMU ended in.

QEMU serves one client per monitor, so every VM gets two: the socket reactor
is configured with (``NAME.qmp``) and a second one the test drives QEMU
through (``NAME.test.qmp``, also the launcher's start-up probe).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_fixtures import (
    Monitor,
    connected,
    finished,
    make_vm,
    read_runs,
    running,
    summary,
    wait_runs,
    write_config,
)
from qemu_fixtures import QemuVMFactory, guest_kernel, qemu_vm_factory

from reactor.testing.qemu import GuestImage, blkdebug_disk, raw_disk

__all__ = ["guest_kernel", "qemu_vm_factory"]

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RULES = ROOT / "rules"
REACTOR = str(Path(sys.executable).parent / "reactor")


# --- guest-less VMs -----------------------------------------------------------------------

LIFECYCLE_RULES = """
rules:
  - name: on-stop
    on: STOP
    actions:
      - qmp: query-status
        register: st
      - log: "stopped: {{ vars.st.status }}"
  - name: on-resume
    on: RESUME
    actions:
      - log: "resumed"
  - name: on-reset
    on: RESET
    actions:
      - log: "reset by {{ event.data.reason }}"
"""


async def test_stop_resume_reset_rules_fire(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "plain")
    cfg = write_config(tmp_path, ["plain"], LIFECYCLE_RULES)
    state = tmp_path / "state"
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "plain")
        await mon.connect(vm.qmp_path)
        await mon.execute("cont")
        await wait_runs(state, finished("on-resume"))
        await mon.execute("stop")
        await wait_runs(state, finished("on-stop"))
        await mon.execute("system_reset")
        runs = await wait_runs(state, finished("on-reset"))
    by_rule = {r.rule: r for r in runs}
    assert set(by_rule) == {"on-resume", "on-stop", "on-reset"}
    assert all(r.status == "ok" for r in runs), [summary(r) for r in runs]
    stop = by_rule["on-stop"]
    assert stop.event is not None and stop.event.name == "STOP"
    assert [s.action for s in stop.steps] == ["qmp", "log"]
    assert stop.steps[0].result == {"status": "paused", "singlestep": False, "running": False}
    assert stop.steps[1].result == "stopped: paused"
    assert by_rule["on-reset"].steps[0].result == "reset by host-qmp-system-reset"


RECONNECT_RULES = """
rules:
  - name: on-shutdown
    on: SHUTDOWN
    actions:
      - log: "shutdown: {{ event.data.reason }}"
  - name: on-disconnected
    on: REACTOR_VM_DISCONNECTED
    actions:
      - log: "disconnected: {{ event.data.reason }}"
  - name: on-connected
    on: REACTOR_VM_CONNECTED
    mode: queued
    actions:
      - log: "connected: {{ event.data.status }} (vm.status {{ vm.status }})"
"""


async def test_quit_disconnect_relaunch_reconnects_within_a_second(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "relaunch")
    cfg = write_config(tmp_path, ["relaunch"], RECONNECT_RULES)
    state = tmp_path / "state"
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "relaunch")
        await mon.connect(vm.qmp_path)
        await mon.execute("cont")
        await mon.execute("quit")
        assert await vm.wait(10) == 0
        await wait_runs(state, finished("on-disconnected"))
        await vm.start()  # same arguments: -S, same sockets
        relaunched = time.time()
        runs = await wait_runs(state, finished("on-connected", 2))
    connects = [r for r in runs if r.rule == "on-connected"]
    assert [r.steps[0].result for r in connects] == [  # both launches use -S
        "connected: prelaunch (vm.status prelaunch)",
        "connected: prelaunch (vm.status prelaunch)",
    ]
    assert connects[1].event is not None
    delay = connects[1].event.timestamp - relaunched
    print(f"reconnected {delay * 1000:.0f} ms after the relaunched QEMU answered")
    assert delay < 1.0
    order = [r.rule for r in runs]
    assert order.index("on-shutdown") < order.index("on-disconnected") < len(order) - 1
    shutdown = next(r for r in runs if r.rule == "on-shutdown")
    assert shutdown.steps[0].result == "shutdown: host-qmp-quit"


USB_RULES = """
rules:
  - name: tablet-unplugged
    on: DEVICE_DELETED
    match:
      device: t0
    actions:
      - log: "{{ event.data.device }} gone from {{ event.data.path }}"
"""


async def test_usb_hot_unplug_device_deleted_rule(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "usb", extra=["-device", "qemu-xhci,id=xhci"])
    cfg = write_config(tmp_path, ["usb"], USB_RULES)
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "usb")
        await mon.connect(vm.qmp_path)
        await mon.execute("device_add", {"driver": "usb-tablet", "id": "t0", "bus": "xhci.0"})
        await mon.execute("device_del", {"id": "t0"})
        (run,) = await wait_runs(tmp_path / "state", finished("tablet-unplugged"))
    assert run.status == "ok"
    assert run.steps[0].result == "t0 gone from /machine/peripheral/t0"


MIRROR_RULES = """
rules:
  - name: resume-failed-job
    on: BLOCK_JOB_ERROR
    match:
      action: stop
    actions:
      - wait_for:
          event: JOB_STATUS_CHANGE
          match: {id: "{{ event.data.device }}", status: paused}
          timeout: 10s
      - qmp:
          execute: block-job-resume
          arguments: {device: "{{ event.data.device }}"}
      - wait_for: {event: BLOCK_JOB_READY, timeout: 30s}
"""


async def test_block_job_error_rule_resumes_the_job(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    src = raw_disk(tmp_path / "src.raw", node_name="src", device_id=None)
    src.path.write_bytes(b"\xa5" * src.size)  # data, not zeroes: the mirror must write
    dst = blkdebug_disk(tmp_path / "dst.raw", node_name="d0", file_node="f0", device_id=None)
    vm = await make_vm(qemu_vm_factory, tmp_path, "mirror", disks=[src, dst])
    cfg = write_config(tmp_path, ["mirror"], MIRROR_RULES)
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "mirror")
        await mon.connect(vm.qmp_path)
        await mon.execute("blockdev-mirror", {"job-id": "m0", "device": "src", "target": "d0", "sync": "full",
                                              "on-target-error": "stop"})
        (run,) = await wait_runs(tmp_path / "state", finished("resume-failed-job"), timeout=60)
        jobs = await mon.execute("query-block-jobs")
        await mon.execute("block-job-cancel", {"device": "m0"})
    assert run.status == "ok", summary(run)
    assert [s.status for s in run.steps] == ["ok", "ok", "ok"]
    assert run.steps[0].args["match"] == {"id": "m0", "status": "paused"}
    assert run.steps[2].result["data"]["device"] == "m0"
    assert [(j["device"], j["ready"]) for j in jobs] == [("m0", True)]


CONNECT_CONT_RULES = """
rules:
  - name: start-on-connect
    on: REACTOR_VM_CONNECTED
    match:
      status: prelaunch
    actions:
      - qmp: query-status
        register: before
      - qmp: cont
      - wait_for: RESUME
      - log: "was {{ vars.before.status }}"
"""


async def test_dry_run_matches_and_journals_but_sends_nothing(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "dry")
    cfg = write_config(tmp_path, ["dry"], CONNECT_CONT_RULES)
    async with running(cfg, dry_run=True), Monitor() as mon:
        (run,) = await wait_runs(tmp_path / "state", finished("start-on-connect"))
        await mon.connect(vm.qmp_path)
        await asyncio.sleep(0.3)
        assert await mon.status() == "prelaunch"  # no cont was sent
    assert run.status == "dry-run", summary(run)
    assert [(s.action, s.status) for s in run.steps] == [
        ("qmp", "ok"), ("qmp", "dry-run"), ("wait_for", "dry-run"), ("log", "ok")]
    assert run.steps[0].result["status"] == "prelaunch"  # read-only commands are sent
    assert run.steps[1].args["execute"] == "cont"        # what it would have sent
    assert run.steps[3].result == "was prelaunch"


async def test_same_rule_without_dry_run_starts_the_vm(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "wet")
    cfg = write_config(tmp_path, ["wet"], CONNECT_CONT_RULES)
    async with running(cfg), Monitor() as mon:
        (run,) = await wait_runs(tmp_path / "state", finished("start-on-connect"))
        await mon.connect(vm.qmp_path)
        assert await mon.status() == "running"
    assert [s.status for s in run.steps] == ["ok"] * 4, summary(run)
    assert run.steps[2].result["event"] == "RESUME"


QMP_ERROR_RULES = """
rules:
  - name: bad-command
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: {execute: block-job-resume, arguments: {device: nope}}
"""


async def test_qmp_error_class_and_description_in_journal(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    await make_vm(qemu_vm_factory, tmp_path, "err")
    cfg = write_config(tmp_path, ["err"], QMP_ERROR_RULES)
    async with running(cfg):
        (run,) = await wait_runs(tmp_path / "state", finished("bad-command"))
    assert run.status == "failed"
    (step,) = run.steps
    assert step.status == "failed"
    assert step.error == "block-job-resume: DeviceNotActive: Block job 'nope' not found"


SLOW_RULES = """
rules:
  - name: slow
    on: REACTOR_VM_CONNECTED
    actions:
      - log: started
      - sleep: {duration: SLEEP}
      - log: done
"""


async def test_stop_cancels_runs_past_the_grace_period(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    await make_vm(qemu_vm_factory, tmp_path, "grace")
    cfg = write_config(tmp_path, ["grace"], SLOW_RULES.replace("SLEEP", "60s"))
    started = time.monotonic()
    async with running(cfg, grace=0.5):
        await wait_runs(tmp_path / "state", lambda rs: any(r.steps for r in rs))
    assert time.monotonic() - started < 10
    (run,) = read_runs(tmp_path / "state")
    assert run.status == "cancelled", summary(run)
    assert [(s.action, s.status) for s in run.steps] == [("log", "ok"), ("sleep", "cancelled")]


# --- reactor run as a process: signals ------------------------------------------------------------


@pytest.fixture
def reactor_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([REACTOR, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


async def _run_started(state: Path) -> None:
    await wait_runs(state, lambda rs: any(r.steps for r in rs))


async def test_sigterm_lets_the_running_step_finish_and_exits_0(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path, reactor_process: Callable[..., subprocess.Popen[str]]
) -> None:
    await make_vm(qemu_vm_factory, tmp_path, "term")
    cfg = write_config(tmp_path, ["term"], SLOW_RULES.replace("SLEEP", "2s"))
    proc = reactor_process("run", "-c", str(cfg))
    await _run_started(tmp_path / "state")
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, out
    (run,) = read_runs(tmp_path / "state")
    assert run.status == "ok", summary(run)
    assert [s.status for s in run.steps] == ["ok", "ok", "ok"]
    assert "stopping gracefully" in out and "reactor stopped" in out


async def test_second_signal_stops_at_once(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path, reactor_process: Callable[..., subprocess.Popen[str]]
) -> None:
    await make_vm(qemu_vm_factory, tmp_path, "twice")
    cfg = write_config(tmp_path, ["twice"], SLOW_RULES.replace("SLEEP", "60s"))
    proc = reactor_process("run", "-c", str(cfg))
    await _run_started(tmp_path / "state")
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.5)
    assert proc.poll() is None  # waiting for the 60 s step (grace 30 s)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
    assert time.monotonic() - t0 < 3
    assert proc.returncode != 0, out
    assert "again: stopping now" in out
    (run,) = read_runs(tmp_path / "state")  # the journal opens: intact
    assert run.status in ("cancelled", "interrupted"), summary(run)
    assert run.ended is not None


# --- the tiny guest ---------------------------------------------------------------------------


@pytest.mark.guest
async def test_shipped_rule_resumes_after_write_error(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    vm = await make_vm(qemu_vm_factory, tmp_path, "ioerror", guest=guest_kernel, scenario="ioerror")
    cfg = write_config(tmp_path, ["ioerror"], SHIPPED_RULES)
    async with running(cfg) as daemon:
        await connected(daemon, "ioerror")
        runs = await wait_runs(tmp_path / "state", finished("resume-after-write-error"), timeout=90)
        await vm.wait_serial("REACTOR-WRITE-OK", 30)
    print(f"boot, error, resume, WRITE-OK: {time.monotonic() - t0:.1f}s")
    (run,) = [r for r in runs if r.rule == "resume-after-write-error"]
    assert run.status == "ok", summary(run)
    assert run.event is not None and run.event.name == "BLOCK_IO_ERROR"
    assert run.event.data["node-name"] == "d0" and run.event.data["operation"] == "write"
    # the rule uses the guarded `resume` since #13 (it was sleep, qmp: cont, wait_for: RESUME)
    assert [(s.action, s.status) for s in run.steps] == [
        ("log", "ok"), ("probe:qmp", "ok"), ("resume", "ok"), ("log", "ok")]
    assert run.steps[1].args["execute"] == "query-block"
    result = run.steps[2].result
    assert result["resumed"] is True and result["attempts"] == 1
    assert [h["outcome"] for h in result["history"]] == ["resumed"]
    assert "REACTOR-WRITE-FAIL" not in vm.serial_text()


@pytest.mark.guest
async def test_reconcile_resumes_a_vm_paused_while_reactor_was_down(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "orphan", guest=guest_kernel, scenario="ioerror")
    async with Monitor() as mon:
        await mon.connect(vm.qmp_path)
        await mon.wait_status("io-error", 90)
    cfg = write_config(tmp_path, ["orphan"], SHIPPED_RULES)
    async with running(cfg):
        runs = await wait_runs(tmp_path / "state", finished("reconcile-io-error-on-connect"))
        await vm.wait_serial("REACTOR-WRITE-OK", 30)
    (run,) = [r for r in runs if r.rule == "reconcile-io-error-on-connect"]
    assert run.status == "ok", summary(run)
    assert run.event is not None and run.event.data["status"] == "io-error"
    assert [s.action for s in run.steps] == ["log", "probe:qmp", "resume", "log"]   # guarded resume since #13
    assert run.steps[2].result["resumed"] is True
    assert not [r for r in runs if r.rule == "resume-after-write-error"]  # the event came before reactor


@pytest.mark.guest
async def test_shipped_rules_in_dry_run_leave_the_guest_paused(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "dryio", guest=guest_kernel, scenario="ioerror")
    cfg = write_config(tmp_path, ["dryio"], SHIPPED_RULES)
    async with running(cfg, dry_run=True) as daemon, Monitor() as mon:
        await connected(daemon, "dryio")
        runs = await wait_runs(tmp_path / "state", finished("resume-after-write-error"), timeout=90)
        await mon.connect(vm.qmp_path)
        assert await mon.status() == "io-error"
    (run,) = [r for r in runs if r.rule == "resume-after-write-error"]
    # since #13 the rule's `resume` sends only the queries in a dry run and says what it would do
    assert run.status == "ok", summary(run)
    assert [(s.action, s.status) for s in run.steps] == [
        ("log", "ok"), ("probe:qmp", "ok"), ("resume", "ok"), ("log", "ok")]
    assert run.steps[2].result["resumed"] is False
    assert run.steps[2].result["reason"] == "dry run: would send cont (status io-error)"
    assert "REACTOR-WRITE-OK" not in vm.serial_text()


@pytest.mark.guest
async def test_shipped_watchdog_rule_snapshots_then_resumes(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    vm = await make_vm(qemu_vm_factory, tmp_path, "wd", guest=guest_kernel, scenario="watchdog")
    cfg = write_config(tmp_path, ["wd"], SHIPPED_RULES)
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "wd")
        runs = await wait_runs(tmp_path / "state", finished("watchdog-snapshot-then-resume"), timeout=120)
        await mon.connect(vm.qmp_path)
        status = await mon.status()
        await mon.execute("quit")
        await vm.wait(10)
    (run, *_) = [r for r in runs if r.rule == "watchdog-snapshot-then-resume"]
    assert run.status == "ok", summary(run)
    assert [(s.action, s.status) for s in run.steps] == [
        ("snapshot", "ok"), ("log", "ok"), ("qmp", "ok"), ("wait_for", "ok")]
    snap = run.steps[0].result
    assert snap["tag"].startswith("reactor-watchdog-") and snap["devices"] == ["q0"] and snap["vmstate"] == "q0"
    assert status in ("running", "watchdog")  # resumed (a later expiry may pause it again)
    assert any(r.rule == "notify-watchdog" and r.status == "ok" for r in runs)
    listing = (await asyncio.to_thread(subprocess.run, ["qemu-img", "snapshot", "-l", str(vm.disks[0].path)],
                                       capture_output=True, text=True, check=True)).stdout
    assert snap["tag"] in listing


PANIC_RULES = """
rules:
  - name: dump-on-panic
    on: GUEST_PANICKED
    match:
      action: pause
    actions:
      - qmp:
          execute: dump-guest-memory
          arguments: {paging: false, protocol: "file:@DUMPFILE@", detach: true}
      - wait_for: {event: DUMP_COMPLETED, timeout: 60s}
        register: dump
      - log: "dump {{ vars.dump.data.result.status }}"
"""


@pytest.mark.guest
async def test_panic_rule_dumps_guest_memory(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path
) -> None:
    dump = tmp_path / "panic.core"
    await make_vm(qemu_vm_factory, tmp_path, "panic", guest=guest_kernel, scenario="panic", memory_mb=128)
    cfg = write_config(tmp_path, ["panic"], PANIC_RULES.replace("@DUMPFILE@", str(dump)))
    async with running(cfg):
        (run,) = await wait_runs(tmp_path / "state", finished("dump-on-panic"), timeout=120)
    assert run.status == "ok", summary(run)
    assert run.steps[1].result["event"] == "DUMP_COMPLETED"
    assert run.steps[2].result == "dump completed"
    assert dump.read_bytes()[:4] == b"\x7fELF"


async def test_a_vm_whose_qemu_lacks_what_rules_use_is_warned_about_at_connect(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path, reactor_process: Callable[..., subprocess.Popen[str]]
) -> None:
    # both are in the catalog (QEMU 10.2), so the rules load; the installed QEMU 7.2 has neither
    rules = """
rules:
  - name: newer-qemu
    on: STOP
    actions:
      - qmp: query-audiodevs
      - wait_for: {event: VFIO_MIGRATION, timeout: 1s}
      - qmp: query-status
"""
    vm = await make_vm(qemu_vm_factory, tmp_path, "old")
    async with Monitor() as mon:
        await mon.connect(vm.qmp_path)
        commands = {c["name"] for c in await mon.execute("query-commands")}
    if "query-audiodevs" in commands:
        pytest.skip("this QEMU has query-audiodevs")
    cfg = write_config(tmp_path, ["old"], rules)
    proc = reactor_process("run", "-c", str(cfg))
    assert proc.stdout is not None
    wanted = {"rules use QMP command query-audiodevs, which this VM's QEMU 7.",
              "rules use event VFIO_MIGRATION, which this VM's QEMU 7."}
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if all(any(w in s for s in seen) for w in wanted):
                return

    await asyncio.wait_for(asyncio.to_thread(read), 20)
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 20)
    warnings = [s for s in seen if "WARNING" in s]
    assert len(warnings) == 2, seen
    assert not any("query-status" in s for s in warnings)
