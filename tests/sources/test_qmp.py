"""VMConnection against the fake QMP server (faults) and a real QEMU (marked ``qemu``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP, make_event  # tests/ is on sys.path (pytest's rootdir-relative import)
from polling import eventually

from reactor.actions.action import VMHandle
from reactor.engine.bus import Bus
from reactor.errors import VMCommandError, VMConnectionError
from reactor.model.event import Event
from reactor.sources.qmp import VMConnection, VMState, parse_address
from reactor.testing.qemu import qemu_version


class Recorder:
    """Collects what a VMConnection reports, and waits for it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[VMState] = []
        self.problems: list[str] = []
        self._changed = asyncio.Event()

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def on_state(self, conn: VMConnection, state: VMState) -> None:
        self.states.append(state)
        self._changed.set()

    def on_problem(self, conn: VMConnection, message: str) -> None:
        self.problems.append(message)
        self._changed.set()

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    async def wait(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_event(self, name: str, count: int = 1, timeout: float = 5.0) -> Event:
        await self.wait(lambda: self.names().count(name) >= count, timeout)
        return [e for e in self.events if e.name == name][count - 1]


@contextlib.asynccontextmanager
async def running(address: str | Path, rec: Recorder, **kwargs: Any) -> AsyncIterator[VMConnection]:
    kwargs.setdefault("name", "vm1")
    conn = VMConnection(
        address=address,
        make_event=make_event,
        on_event=rec.on_event,
        on_state=rec.on_state,
        on_problem=rec.on_problem,
        **kwargs,
    )
    async with asyncio.TaskGroup() as tg, conn:
        tg.create_task(conn.run(), name=f"reactor[{conn.name}].supervisor")
        yield conn


# -- against the fake --------------------------------------------------------


async def test_connect_reads_version_status_schema(tmp_path: Path) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp", status="paused") as fake, running(fake.address, rec) as conn:
        ev = await rec.wait_event("REACTOR_VM_CONNECTED")
        assert isinstance(conn, VMHandle)
        assert ev.data == {"status": "paused", "qemu_version": "7.2.0"}
        assert ev.vm == "vm1" and ev.timestamp == pytest.approx(time.time(), abs=5)
        assert conn.connected and conn.status == "paused" and conn.state is VMState.CONNECTED
        assert conn.schema_events is not None and "BLOCK_IO_ERROR" in conn.schema_events
        assert rec.states == [VMState.CONNECTING, VMState.CONNECTED]
    assert rec.states[-1] is VMState.STOPPED
    assert rec.names()[-1] == "REACTOR_VM_DISCONNECTED"
    assert rec.events[-1].data == {"reason": "stopped"}


async def test_status_follows_events(tmp_path: Path) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp") as fake, running(fake.address, rec) as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        fake.emit("RESUME")
        await rec.wait_event("RESUME")
        assert conn.status == "running"
        fake.emit("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "stop", "nospace": False,
                                     "reason": "Input/output error"})
        fake.emit("STOP")
        await rec.wait_event("STOP")
        assert conn.status == "io-error"
        fake.emit("RESUME")
        fake.emit("STOP")
        await rec.wait_event("STOP", 2)
        assert conn.status == "paused"
        seqs = [e.seq for e in rec.events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_execute_and_error_mapping(tmp_path: Path) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp") as fake, running(fake.address, rec) as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        assert await conn.execute("cont") == {}
        await rec.wait_event("RESUME")
        assert conn.status == "running"
        with pytest.raises(VMCommandError) as info:
            await conn.execute("no-such-command", {"x": 1})
        assert info.value.error_class == "CommandNotFound"
        assert info.value.command == "no-such-command"
        assert ("no-such-command", {"x": 1}) in fake.commands


async def test_execute_when_not_connected(tmp_path: Path) -> None:
    conn = VMConnection(name="vm1", address=tmp_path / "none.qmp", make_event=make_event, on_event=print)
    with pytest.raises(VMConnectionError):
        await conn.execute("query-status")


async def test_execute_timeout_keeps_connection(tmp_path: Path) -> None:
    rec = Recorder()
    async with (
        FakeQMP(tmp_path / "vm.qmp", hang_on={"query-block"}) as fake,
        running(fake.address, rec) as conn,
    ):
        await rec.wait_event("REACTOR_VM_CONNECTED")
        with pytest.raises(TimeoutError):
            await conn.execute("query-block", timeout=0.2)
        assert conn.connected
        assert (await conn.execute("query-status"))["status"] == "paused"


async def test_vanish_mid_command_then_reconnect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    async with (
        FakeQMP(tmp_path / "vm.qmp", close_on={"query-block"}) as fake,
        running(fake.address, rec, backoff_initial=0.05) as conn,
    ):
        await rec.wait_event("REACTOR_VM_CONNECTED")
        with pytest.raises(VMConnectionError, match="lost during query-block"):
            await conn.execute("query-block")
        ev = await rec.wait_event("REACTOR_VM_DISCONNECTED")
        assert ev.data == {"reason": "connection closed by peer"}
        await rec.wait_event("REACTOR_VM_CONNECTED", 2)
        assert conn.reconnects == 1
        assert rec.states[:5] == [VMState.CONNECTING, VMState.CONNECTED, VMState.DISCONNECTED,
                                  VMState.CONNECTING, VMState.CONNECTED]
    assert any("connection to" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)


async def test_quit_reports_shutdown_then_disconnect(tmp_path: Path) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp") as fake, running(fake.address, rec, reconnect=False) as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        await conn.execute("quit")
        await rec.wait_event("REACTOR_VM_DISCONNECTED")
        assert "SHUTDOWN" in rec.names()
        assert conn.status == "shutdown"


async def test_reconnects_within_a_second_of_socket_return(tmp_path: Path) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp") as fake, running(fake.address, rec, backoff_max=5.0):
        await rec.wait_event("REACTOR_VM_CONNECTED")
        await fake.stop()
        await rec.wait_event("REACTOR_VM_DISCONNECTED")
        await asyncio.sleep(3.0)  # long enough for the backoff to grow
        await fake.start()
        t0 = time.monotonic()
        await rec.wait_event("REACTOR_VM_CONNECTED", 2, timeout=5)
        assert time.monotonic() - t0 < 1.0


async def test_tcp_address() -> None:
    rec = Recorder()
    async with FakeQMP(port=0) as fake, running(fake.address, rec) as conn:
        assert parse_address(fake.address) == ("127.0.0.1", fake.port)
        await rec.wait_event("REACTOR_VM_CONNECTED")
        assert conn.connected


def _refusing_socket(path: Path) -> socket.socket:
    """A unix socket file that nobody accepts on: connecting is refused."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s  # bound, never listening


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ("missing", "socket does not exist"),
        ("refused", "connection refused"),
        ("no-greeting", "timed out"),
        ("banner", "not QMP"),
        ("garbage", "not JSON"),
        ("truncated", "closed mid-message"),
        ("huge-line", "message over 65536 bytes"),
    ],
)
async def test_bad_peers_are_retried_and_others_carry_on(
    tmp_path: Path, fault: str, expect: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad_path = tmp_path / "bad.qmp"
    refusing = _refusing_socket(bad_path) if fault == "refused" else None
    misbehave = None if fault in ("missing", "refused") else fault
    good_rec, bad_rec = Recorder(), Recorder()
    async with contextlib.AsyncExitStack() as stack:
        bad_fake = None
        if misbehave is not None:
            bad_fake = await stack.enter_async_context(
                FakeQMP(bad_path, misbehave=misbehave, huge_size=1 << 17)
            )
        good = await stack.enter_async_context(FakeQMP(tmp_path / "good.qmp"))
        await stack.enter_async_context(running(good.address, good_rec, name="good"))
        bad = await stack.enter_async_context(
            running(bad_path, bad_rec, name="bad", backoff_initial=0.05, backoff_max=0.2,
                    connect_timeout=0.3, max_line=1 << 16)
        )
        await good_rec.wait_event("REACTOR_VM_CONNECTED")
        await bad_rec.wait(lambda: bad_rec.states.count(VMState.DISCONNECTED) >= 3, timeout=5)
        assert bad.last_error is not None and expect in bad.last_error, bad.last_error
        assert len(bad_rec.problems) >= 1 and expect in bad_rec.problems[0]
        if bad_fake is not None:
            assert bad_fake.connections >= 2  # retried
        good.emit("RESET", {"guest": True, "reason": "guest-reset"})
        await good_rec.wait_event("RESET")
        assert good_rec.names().count("REACTOR_VM_DISCONNECTED") == 0
    if refusing is not None:
        refusing.close()
    lines = [
        r.getMessage() for r in caplog.records if r.name == "reactor.sources.qmp.bad" and r.levelno >= logging.WARNING
    ]
    assert any(expect in line for line in lines), lines
    # the same problem is logged at warning level once, not once per retry
    assert sum(expect in line for line in lines) == 1


async def test_callback_errors_and_bad_events_do_not_drop_the_connection(tmp_path: Path) -> None:
    rec = Recorder()
    calls = 0

    def flaky(event: Event) -> None:
        nonlocal calls
        calls += 1
        if event.name == "RESET":
            raise RuntimeError("boom")
        rec.on_event(event)

    async with FakeQMP(tmp_path / "vm.qmp") as fake:
        conn = VMConnection(name="vm1", address=fake.address, make_event=make_event, on_event=flaky)
        async with asyncio.TaskGroup() as tg, conn:
            tg.create_task(conn.run())
            await rec.wait_event("REACTOR_VM_CONNECTED")
            fake.send_raw(b'{"event": 42}\r\n')  # event-shaped enough to route, rejected by make_event
            fake.emit("RESET")
            fake.emit("POWERDOWN")
            await rec.wait_event("POWERDOWN")
            assert conn.callback_errors == 1 and conn.bad_events == 1 and conn.connected


async def test_check_rule_usage_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    async with FakeQMP(tmp_path / "vm.qmp") as fake, running(fake.address, rec) as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        used: dict[str, set[str]] = {
            "STOP": set(), "RESET": {"guest", "bogus"}, "NOT_AN_EVENT": set(), "REACTOR_VM_CONNECTED": set()
        }
        conn.check_rule_usage(used)
        conn.check_rule_usage(used)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert any("NOT_AN_EVENT" in w for w in warnings)
        assert any("bogus" in w and "RESET" in w for w in warnings)


@pytest.mark.qemu
async def test_real_qemu_warns_about_a_command_it_lacks(qemu: Qemu, caplog: pytest.LogCaptureFixture) -> None:
    # query-audiodevs is in the command catalog (QEMU 10.2), so rules using it load; QEMU 7.2 lacks it
    rec = Recorder()
    async with running(qemu.sock, rec, name="realvm") as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        assert conn.schema_commands is not None and "cont" in conn.schema_commands
        if "query-audiodevs" in conn.schema_commands:
            pytest.skip("this QEMU has query-audiodevs")
        conn.check_rule_usage({}, ["cont", "query-audiodevs", "query-status"])
        conn.check_rule_usage({}, ["cont", "query-audiodevs", "query-status"])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("realvm: rules use QMP command query-audiodevs, which this VM's QEMU 7.")
        assert warnings[0].endswith(" does not have")


async def test_storm_delivers_everything_in_order(tmp_path: Path) -> None:
    total = 50_000
    count = 0
    last = 0
    ordered = True
    connected = asyncio.Event()
    done = asyncio.Event()

    def on_event(event: Event) -> None:
        nonlocal count, last, ordered
        if event.name == "RTC_CHANGE":
            count += 1
            if count == total:
                done.set()
        elif event.name == "REACTOR_VM_CONNECTED":
            connected.set()
        ordered &= event.seq > last
        last = event.seq

    async with FakeQMP(tmp_path / "vm.qmp") as fake:
        conn = VMConnection(name="vm1", address=fake.address, make_event=make_event, on_event=on_event)
        async with asyncio.TaskGroup() as tg, conn:
            tg.create_task(conn.run())
            async with asyncio.timeout(20):
                await connected.wait()
                await conn.execute("x-storm", {"count": total})
                await done.wait()
    assert ordered and conn.events_received >= total


def _rtc_lines(first: int, n: int) -> bytes:
    return b"".join(b'{"event": "RTC_CHANGE", "data": {"offset": %d, "qom-path": "/rtc"}, '
                    b'"timestamp": {"seconds": 1, "microseconds": 0}}\r\n' % i for i in range(first, first + n))


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    await eventually(predicate, timeout, interval=0.005)


async def test_backpressure_pauses_a_flooding_vm_serves_the_quiet_one_and_answers_commands(tmp_path: Path) -> None:
    """With ``backpressure=`` the bus, a VM whose queue is full is not read: its events wait in the socket,
    none is dropped; another VM's event goes to the front of the bus; reading resumes once the queue
    drained, and every event arrives in order; a command to the paused VM gets its reply (the reader
    reads while it is in flight, shedding what the full queue cannot take, counted as the VM's drops)."""
    bus = Bus(per_vm=100, total=100_000, read_ahead=100)
    async with (
        FakeQMP(tmp_path / "flood.qmp", name="flood", status="running") as flood_fake,
        FakeQMP(tmp_path / "quiet.qmp", name="quiet") as quiet_fake,
    ):
        def put(event: Event) -> None:
            bus.put(event)

        flood, quiet = (VMConnection(name=name, address=f.address, make_event=make_event, on_event=put,
                                     shed=bus.shed, backpressure=bus)
                        for name, f in (("flood", flood_fake), ("quiet", quiet_fake)))
        async with asyncio.TaskGroup() as tg, flood, quiet:
            for conn in (flood, quiet):
                tg.create_task(conn.run())
            await _until(lambda: flood.connected and quiet.connected)
            while len(bus):
                bus.take()  # the REACTOR_VM_CONNECTED events
            received = flood.events_received

            flood_fake.send_raw(_rtc_lines(0, 5000))
            await _until(lambda: flood.reading_paused)
            assert bus.depth("flood") == 100 and flood.events_received == received + 100
            await asyncio.sleep(0.3)
            assert flood.reading_paused and flood.events_received == received + 100  # not read while paused
            assert flood.paused_seconds >= 0.25 and flood.read_pauses == 1

            quiet_fake.emit("STOP")
            await _until(lambda: bus.depth("quiet") == 1)
            offsets: list[int] = []
            first = True
            async with asyncio.timeout(20):
                while len(offsets) < 5000:
                    await _until(lambda: len(bus) > 0)
                    batch = bus.take()
                    if first:
                        assert (batch[0].vm, batch[0].name) == ("quiet", "STOP")  # ahead of the flood's backlog
                        first = False
                    offsets += [e.data["offset"] for e in batch if e.vm == "flood"]
                    assert bus.depth("flood") <= 100
            assert offsets == list(range(5000))  # resumed after each drain; nothing lost, in order
            assert flood.read_pauses >= 5000 // 100 - 1
            assert not bus.dropped and flood.events_shed == 0

            flood_fake.send_raw(_rtc_lines(5000, 5000))
            await _until(lambda: flood.reading_paused)
            paused = flood.read_pauses
            status = await flood.execute("query-status", timeout=5)  # its reply is behind 4,900 unread events
            assert status["status"] == "running"
            assert flood.events_shed > 0 and bus.dropped["flood"] == flood.events_shed
            assert bus.depth("flood") == 100
            await _until(lambda: flood.reading_paused and flood.read_pauses > paused)  # and paused again
            assert bus.depth("quiet") == 0 and "quiet" not in bus.dropped


# -- against a real QEMU -----------------------------------------------------

QEMU = shutil.which("qemu-system-x86_64")


class Qemu:
    """A real QEMU process (TCG, no devices, paused) serving QMP on a unix socket."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sock.unlink()
        assert QEMU is not None
        self.proc = subprocess.Popen(
            [QEMU, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
             "-name", "realvm", "-qmp", f"unix:{self.sock},server=on,wait=off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "QEMU did not create its QMP socket"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Qemu]:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed")
    vm = Qemu(tmp_path / "qemu.qmp")
    vm.start()
    try:
        yield vm
    finally:
        vm.kill()


@pytest.mark.qemu
async def test_real_qemu_lifecycle(qemu: Qemu) -> None:
    rec = Recorder()
    async with running(qemu.sock, rec, name="realvm") as conn:
        ev = await rec.wait_event("REACTOR_VM_CONNECTED")
        assert ev.data["status"] in ("prelaunch", "paused")
        # Debian 12's QEMU 7.2 or Debian 13's 10.0 (or whatever this machine has): what `--version` says
        major, minor = qemu_version()
        assert ev.data["qemu_version"].startswith(f"{major}.{minor}."), (ev.data, major, minor)
        assert major >= 7
        assert conn.schema_events is not None and "BLOCK_IO_ERROR" in conn.schema_events
        await conn.execute("cont")
        await rec.wait_event("RESUME")
        assert conn.status == "running"
        await conn.execute("stop")
        await rec.wait_event("STOP")
        assert conn.status == "paused"
        with pytest.raises(VMCommandError) as info:
            await conn.execute("device_del", {"id": "nope"})
        assert info.value.error_class == "DeviceNotFound"
        conn.check_rule_usage({"BLOCK_IO_ERROR": {"device", "no-such-field"}})

        qemu.kill()
        ev = await rec.wait_event("REACTOR_VM_DISCONNECTED")
        assert ev.data["reason"]
        await asyncio.sleep(2.0)  # reactor keeps retrying with backoff
        await asyncio.to_thread(qemu.start)
        t0 = time.monotonic()
        await rec.wait_event("REACTOR_VM_CONNECTED", 2, timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert conn.reconnects == 1 and conn.status == "prelaunch"


@pytest.mark.qemu
async def test_real_qemu_execute_timeout_when_stopped(qemu: Qemu) -> None:
    rec = Recorder()
    async with running(qemu.sock, rec, name="realvm") as conn:
        await rec.wait_event("REACTOR_VM_CONNECTED")
        assert qemu.proc is not None
        os.kill(qemu.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await conn.execute("query-status", timeout=0.3)
            assert time.monotonic() - t0 < 1.0
        finally:
            os.kill(qemu.proc.pid, signal.SIGCONT)
        assert (await conn.execute("query-status"))["status"] == "prelaunch"
