"""Fault injection against real processes: what breaks around reactor must not break reactor.

Each test runs the REAL daemon (in this process, ``serve(..., install_signals=False)``)
against real processes and breaks one of them:

* QEMU (guest-less, ``-accel tcg``) SIGKILLed while a command is in flight,
  and frozen with SIGSTOP so commands time out;
* mosquitto SIGKILLed and restarted during a QoS 1 stream;
* an HTTP receiver (aiohttp, loopback) that hangs, resets connections or
  answers 500 forever;
* the state directory on a real 1 MiB tmpfs, filled up; or made read-only
  under the daemon;
* a plugin whose action blocks the event loop for a second.

Every guarantee asserted here is named in docs/reliability.md ("Fault injection").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from broker import Broker, fresh_broker
from daemon_fixtures import Monitor, connected, make_vm, running, summary, wait_runs, write_config
from fakeqmp import FakeQMP
from polling import eventually
from ports import free_port
from qemu_fixtures import QemuVMFactory

from reactor.daemon.config import parse_config
from reactor.daemon.daemon import Daemon, serve
from reactor.ops.journal import RunRecord
from reactor.ops.looplag import LoopLag
from reactor.testing.qemu import qcow2_disk

__all__ = ["fresh_broker"]


# --- an in-process daemon watching fake VMs ------------------------------------------------------


@dataclass
class Site:
    daemon: Daemon
    fakes: dict[str, FakeQMP]
    state: Path
    url: str | None


@contextlib.asynccontextmanager
async def site(tmp: Path, rules: str, *, vms: tuple[str, ...] = ("vm1",), extra: str = "", http: bool = False,
               state: Path | None = None, fake_kw: dict[str, Any] | None = None) -> AsyncIterator[Site]:
    """The real daemon (journal, optional HTTP listener) with connected fake VMs."""
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "test.yaml").write_text(rules)
    state = state or tmp / "state"
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        fakes = {name: await stack.enter_async_context(
                     FakeQMP(tmp / f"{name}.qmp", name=name, status="running", **(fake_kw or {})))
                 for name in vms}
        text = (f"rules: {tmp / 'rules'}\nstate_dir: {state}\njournal: {{events: all}}\nvms:\n"
                + "".join(f"  - {{name: {n}, qmp: {f.address}}}\n" for n, f in fakes.items())
                + (f"http: {{listen: '127.0.0.1:{port}'}}\n" if http else "") + extra)
        daemon = Daemon(parse_config(text, tmp / "reactor.yaml"), watch=False, grace=2.0)
        task = asyncio.create_task(serve(daemon, install_signals=False), name="test.daemon")
        try:
            async with asyncio.timeout(10):
                ready = asyncio.ensure_future(daemon.ready.wait())
                await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    ready.cancel()
                    task.result()
            for name in vms:
                await eventually(lambda name=name: up(daemon, name))  # type: ignore[misc]
            yield Site(daemon, fakes, state, f"http://127.0.0.1:{port}" if http else None)
        finally:
            daemon.stop()
            async with asyncio.timeout(20):
                await task


def up(daemon: Daemon, name: str) -> bool:
    vm = daemon.fleet.get(name) if daemon.fleet is not None else None
    return vm is not None and vm.connected


def runs_of(daemon: Daemon, rule: str) -> list[RunRecord]:
    return [r for r in reversed(daemon.journal.runs(limit=1000)) if r.rule == rule]


async def finished_runs(daemon: Daemon, rule: str, n: int, timeout: float = 10.0) -> list[RunRecord]:
    async def check() -> list[RunRecord] | None:
        runs = await asyncio.to_thread(runs_of, daemon, rule)
        done = [r for r in runs if r.ended is not None]
        return done if len(done) >= n else None

    try:
        result: list[RunRecord] = await eventually(check, timeout)
    except TimeoutError:
        runs = await asyncio.to_thread(runs_of, daemon, rule)
        pytest.fail(f"{rule}: {n} finished runs expected; journal: {[summary(r) for r in runs]}")
    return result


def count(fake: FakeQMP, command: str) -> int:
    return sum(1 for c, _ in fake.commands if c == command)


# --- QEMU killed mid-command, QEMU frozen --------------------------------------------------------

STOP_QUERY_RULES = """
rules:
  - name: on-stop
    on: STOP
    actions:
      - sleep: 300ms
      - qmp: {execute: query-status}
        timeout: 20s
  - name: on-resume
    on: RESUME
    actions:
      - qmp: query-status
"""


@pytest.mark.qemu
async def test_qemu_killed_mid_command_fails_the_step_at_once_and_is_reconnected(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    """A command in flight when QEMU dies fails at once (connection lost), not at its 20 s timeout."""
    vm = await make_vm(qemu_vm_factory, tmp_path, "victim")
    cfg = write_config(tmp_path, ["victim"], STOP_QUERY_RULES, extra="qmp: {backoff_max: 0.5s}\n")
    async with running(cfg) as daemon:
        await connected(daemon, "victim")
        async with Monitor() as mon:
            await mon.connect(vm.qmp_path)
            await mon.execute("cont")
            await mon.expect("RESUME")
            await mon.execute("stop")
            await mon.expect("STOP")
        vm.stop()  # SIGSTOP: the query-status reactor sends after 300 ms gets no answer...
        await asyncio.sleep(0.8)
        t_kill = time.monotonic()
        await vm.kill()  # ...and QEMU dies with it in flight
        (run,) = await wait_runs(tmp_path / "state", lambda rs: any(r.rule == "on-stop" and r.ended for r in rs),
                                 rule="on-stop")
        failed_after = time.monotonic() - t_kill
        assert run.status == "failed", summary(run)
        assert run.steps[-1].status == "failed" and "victim" in (run.steps[-1].error or ""), summary(run)
        assert failed_after < 5.0  # the connection loss, not the 20 s timeout, ended it

        # QEMU comes back (same socket): reactor reconnects and the rules work again
        earlier = {r.id for r in await wait_runs(tmp_path / "state", lambda rs: True, rule="on-resume")}
        await vm.start()
        await connected(daemon, "victim", timeout=15)
        async with Monitor() as mon:
            await mon.connect(vm.qmp_path)
            await mon.execute("cont")
        runs = await wait_runs(tmp_path / "state", lambda rs: any(r.ended and r.id not in earlier for r in rs),
                               rule="on-resume")
        (new,) = [r for r in runs if r.id not in earlier]   # not the run of the first RESUME, before the kill
        assert new.status == "ok", summary(new)


@pytest.mark.qemu
async def test_frozen_qemu_times_out_commands_then_recovers(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    """SIGSTOPped QEMU: the step times out (recorded), other VMs go on; after SIGCONT the VM works again."""
    rules = STOP_QUERY_RULES.replace("timeout: 20s", "timeout: 1s")
    vm = await make_vm(qemu_vm_factory, tmp_path, "frozen")
    cfg = write_config(tmp_path, ["frozen"], rules)
    async with running(cfg) as daemon:
        await connected(daemon, "frozen")
        async with Monitor() as mon:
            await mon.connect(vm.qmp_path)
            await mon.execute("cont")
            await mon.expect("RESUME")
            # the on-resume run's query-status is answered before QEMU is frozen: only on-stop's is left hanging
            # (a run still in progress would make the next RESUME's run 'dropped': mode single)
            earlier = {r.id for r in await wait_runs(tmp_path / "state", lambda rs: any(r.ended for r in rs),
                                                     rule="on-resume")}
            await mon.execute("stop")
            await mon.expect("STOP")
            vm.stop()  # frozen before the rule's query-status (300 ms later)
            try:
                (run,) = await wait_runs(tmp_path / "state",
                                         lambda rs: any(r.rule == "on-stop" and r.ended for r in rs), rule="on-stop")
            finally:
                vm.cont()
            assert run.status == "failed", summary(run)
            assert run.steps[-1].status == "timeout", summary(run)
            assert 0.9 <= run.steps[-1].duration < 3.0, summary(run)
            # thawed: the late reply to the timed-out command is discarded; new commands work
            await mon.execute("cont")
            runs = await wait_runs(tmp_path / "state", lambda rs: any(r.ended and r.id not in earlier for r in rs),
                                   rule="on-resume")
            (new,) = [r for r in runs if r.id not in earlier]
            assert new.status == "ok", summary(new)
            assert new.steps[0].result["status"] == "running"
        vm_conn = daemon.fleet.get("frozen") if daemon.fleet is not None else None
        assert vm_conn is not None and vm_conn.connected


SNAPSHOT_RULES = """
rules:
  - name: snap
    on: STOP
    actions:
      - snapshot: {name: crash, mode: internal, devices: [q0], keep: 2}
"""


@pytest.mark.qemu
async def test_qemu_killed_mid_snapshot_ends_the_run_and_leaves_a_sound_image(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    """QEMU SIGKILLed while the snapshot job runs: the run fails at once (recorded); the qcow2 passes
    ``qemu-img check``; after a restart on the same image the next snapshot succeeds."""
    disk = qcow2_disk(tmp_path / "disk.qcow2")
    vm = await make_vm(qemu_vm_factory, tmp_path, "snappy", disks=[disk], memory_mb=512)
    cfg = write_config(tmp_path, ["snappy"], SNAPSHOT_RULES)
    state = tmp_path / "state"
    async with running(cfg) as daemon:
        await connected(daemon, "snappy")
        async with Monitor() as mon:
            await mon.connect(vm.qmp_path)
            await mon.execute("cont")
            await mon.expect("RESUME")
            await mon.execute("stop")
            await mon.expect("JOB_STATUS_CHANGE", status="running")
            t_kill = time.monotonic()
            await vm.kill()
        (run,) = await wait_runs(state, lambda rs: any(r.ended for r in rs), rule="snap")
        assert time.monotonic() - t_kill < 5.0
        assert run.status == "failed", summary(run)
        assert "snappy" in (run.steps[0].error or ""), run.steps[0].error
        check = await asyncio.to_thread(subprocess.run, ["qemu-img", "check", str(disk.path)],
                                        capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

        await vm.start()
        await connected(daemon, "snappy", timeout=15)
        async with Monitor() as mon:
            await mon.connect(vm.qmp_path)
            await mon.execute("cont")
            await mon.expect("RESUME")
            await mon.execute("stop")
            runs = await wait_runs(state, lambda rs: sum(1 for r in rs if r.ended) >= 2, rule="snap", timeout=60)
    assert runs[-1].status == "ok", summary(runs[-1])


FLOOD_RULES = """
rules:
  - name: resume
    on: STOP
    vms: quiet
    actions:
      - qmp: cont
"""


FLOOD_PROBE_RULES = FLOOD_RULES + """
  - name: probe
    on: RTC_CHANGE
    vms: flood
    match: {offset: 0}
    mode: parallel   # a reply behind a flood may take longer than the 10 ms between two probes
    actions:
      - qmp: query-status
"""


async def test_a_flood_past_the_bus_bounds_drops_by_policy_and_the_quiet_vm_is_served(tmp_path: Path) -> None:
    """A VM flooding past ``bus.total`` (a rule's command to it is in flight, so its reader reads on
    despite backpressure, to reach the reply): its events are dropped and counted, the engine keeps
    running, a quiet VM's STOPs (some dropped by the same policy while the bus is full) still get their
    ``cont``, and the commands to the flooding VM their replies."""
    extra = "bus: {per_vm: 2000, total: 50}\n"
    async with site(tmp_path, FLOOD_PROBE_RULES, vms=("flood", "quiet"), extra=extra) as s:
        flood, quiet = s.fakes["flood"], s.fakes["quiet"]
        engine = s.daemon.engine
        assert engine is not None
        for _ in range(20):
            flood.send_raw(b"".join(
                b'{"event": "RTC_CHANGE", "data": {"offset": %d, "qom-path": "/rtc"}, '
                b'"timestamp": {"seconds": 1, "microseconds": 0}}\r\n' % i for i in range(2000)))
            quiet.emit("STOP")
            quiet.emit("STOP")
            await asyncio.sleep(0.01)
        await eventually(lambda: count(quiet, "cont") >= 1, 10)
        await eventually(lambda: engine.bus.dropped["flood"] > 0, 10)
        probes = await finished_runs(s.daemon, "probe", 1)
        assert all(r.status == "ok" for r in probes), [summary(r) for r in probes]
        await asyncio.sleep(0.5)
        tasks = {t.get_name(): t for t in asyncio.all_tasks()}
        assert not tasks["reactor.engine.engine"].done()
        quiet.emit("STOP")  # after the flood: served at once
        before = count(quiet, "cont")
        await eventually(lambda: count(quiet, "cont") > before, 5)


async def test_a_flooding_vm_is_paused_at_its_reader_while_its_queue_is_full(tmp_path: Path) -> None:
    """While a VM's bus queue is full, its connection stops reading its socket (backpressure) instead of
    reading events only to drop them: the flood arrives whole and in order once the engine catches up,
    nothing is dropped (any shedding would be counted as that VM's bus drops, never another VM's), the
    VM's run state is tracked, and a quiet VM is served meanwhile."""
    extra = "bus: {per_vm: 50, total: 100000}\n"
    async with site(tmp_path, FLOOD_RULES, vms=("flood", "quiet"), extra=extra) as s:
        flood, quiet = s.fakes["flood"], s.fakes["quiet"]
        engine, fleet = s.daemon.engine, s.daemon.fleet
        assert engine is not None and fleet is not None
        conn = fleet.get("flood")
        assert conn is not None
        received = conn.events_received
        flood.send_raw(b"".join(
            b'{"event": "RTC_CHANGE", "data": {"offset": %d, "qom-path": "/rtc"}, '
            b'"timestamp": {"seconds": 1, "microseconds": 0}}\r\n' % i for i in range(20000)))
        flood.emit("STOP")
        quiet.emit("STOP")
        await eventually(lambda: count(quiet, "cont") >= 1, 10)
        await eventually(lambda: conn.events_received >= received + 20001, 20)
        assert conn.read_pauses > 0 and conn.paused_seconds > 0
        assert conn.status == "paused"
        assert engine.bus.dropped["flood"] == conn.events_shed == 0
        assert engine.bus.dropped["quiet"] == 0


# --- the broker killed during a QoS 1 stream -------------------------------------------------------

STREAM_RULES = """
rules:
  - name: forward
    on: RTC_CHANGE
    mode: queued
    max_queued: 1000
    actions:
      - mqtt: {topic: "stream/{{ vm.name }}", payload: "{{ event.data.offset }}", qos: 1}
"""


@pytest.mark.mqtt
async def test_broker_killed_and_restarted_during_a_qos1_stream(tmp_path: Path, fresh_broker: Broker) -> None:
    """``kill -9`` of mosquitto mid-stream: every message is delivered (at least once), in order of first arrival."""
    n = 300
    got: list[int] = []
    extra = f"mqtt:\n  main: {{host: 127.0.0.1, port: {fresh_broker.port}}}\n"

    async def subscribe() -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", fresh_broker.port, identifier="fault-sub",
                                          clean_session=False) as client:
                    await client.subscribe("stream/#", qos=1)
                    subscribed.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        got.append(int(m.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    subscribed = asyncio.Event()
    sub = asyncio.create_task(subscribe(), name="test.subscriber")
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        # a graceful restart first, so that the subscriber's session is in the broker's persistence
        # file (a SIGKILLed mosquitto restores the last save: without it, what reactor re-sends after
        # the restart could reach the broker before the subscriber is back, and be lost there)
        subscribed.clear()
        await asyncio.to_thread(fresh_broker.restart, signal.SIGTERM)
        async with asyncio.timeout(10):
            await subscribed.wait()
        async with site(tmp_path, STREAM_RULES, extra=extra) as s:
            fake = s.fakes["vm1"]
            for i in range(n):
                fake.emit("RTC_CHANGE", {"offset": i, "qom-path": "/machine/rtc"})
                if i == n // 3:
                    await asyncio.sleep(0.2)
                    await asyncio.to_thread(fresh_broker.stop, signal.SIGKILL)
                elif i == n // 2:
                    await asyncio.to_thread(fresh_broker.start)
                await asyncio.sleep(0.005)
            try:
                await eventually(lambda: set(range(n)) <= set(got), 30)
            except TimeoutError:
                pytest.fail(f"missing after the broker restart: {sorted(set(range(n)) - set(got))[:20]}...")
            runs = await finished_runs(s.daemon, "forward", n)
            assert all(r.status == "ok" for r in runs)
    finally:
        sub.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub
    firsts = list(dict.fromkeys(got))
    assert firsts == list(range(n))  # duplicates (redeliveries) allowed, reordering not


# --- webhook receivers that misbehave -------------------------------------------------------------

HOOK_RULES = """
rules:
  - name: hook-{kind}
    on: BLOCK_IO_ERROR
    match: {{device: {kind}}}
    mode: parallel
    actions:
      - webhook: {{url: "{url}/{kind}", timeout: 500ms, retries: 2, backoff: 50ms, max_backoff: 100ms}}
"""

OTHER_RULE = """
  - name: unrelated
    on: RTC_CHANGE
    actions:
      - qmp: query-status
"""


@contextlib.asynccontextmanager
async def bad_receiver() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """An HTTP server on loopback: /hang never answers, /reset drops the connection, /fail answers 500."""
    hits = {"hang": 0, "reset": 0, "fail": 0}

    async def hang(request: web.Request) -> web.Response:
        hits["hang"] += 1
        await asyncio.sleep(3600)
        return web.Response()

    async def reset(request: web.Request) -> web.Response:
        hits["reset"] += 1
        assert request.transport is not None
        request.transport.abort()  # RST, no response
        await asyncio.sleep(3600)
        return web.Response()

    async def fail(request: web.Request) -> web.Response:
        hits["fail"] += 1
        return web.Response(status=500, text="broken")

    app = web.Application()
    app.router.add_post("/hang", hang)
    app.router.add_post("/reset", reset)
    app.router.add_post("/fail", fail)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    tcp = web.TCPSite(runner, "127.0.0.1", port)
    await tcp.start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


async def test_webhook_receivers_that_hang_reset_or_fail(tmp_path: Path) -> None:
    """Each failure ends its run as failed within its bounded retries; the rest of the daemon goes on."""
    async with bad_receiver() as (url, hits):
        rules = "rules:" + "".join(HOOK_RULES.format(kind=k, url=url).split("rules:", 1)[1]
                                   for k in ("hang", "reset", "fail")) + OTHER_RULE
        async with site(tmp_path, rules) as s:
            fake = s.fakes["vm1"]
            t0 = time.monotonic()
            for kind in ("hang", "reset", "fail"):
                fake.emit("BLOCK_IO_ERROR", {"device": kind, "node-name": "n0", "operation": "write",
                                             "action": "report", "nospace": False, "reason": "x"})
            # while the receivers misbehave, other events are handled as usual
            fake.emit("RTC_CHANGE", {"offset": 1, "qom-path": "/machine/rtc"})
            (other,) = await finished_runs(s.daemon, "unrelated", 1, timeout=3)
            assert other.status == "ok" and other.ended is not None
            assert other.ended - other.started < 0.5, summary(other)
            results = {kind: (await finished_runs(s.daemon, f"hook-{kind}", 1, timeout=10))[0]
                       for kind in ("hang", "reset", "fail")}
            elapsed = time.monotonic() - t0
    for kind, run in results.items():
        assert run.status == "failed", summary(run)
        assert hits[kind] == 3, hits  # the first try and 2 retries, no more
    assert "timed out" in (results["hang"].steps[0].error or "")
    assert "HTTP 500" in (results["fail"].steps[0].error or "")
    assert "webhook" in (results["reset"].steps[0].error or "")
    assert elapsed < 8.0  # 3 x 500 ms timeouts + backoff, all in parallel


# --- the state directory's disk full, then read-only -----------------------------------------------


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs as the state directory (root only: CI runs as root)."""
    mnt = tmp_path / "state"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or shutil.which("chattr") is None:
        pytest.fail("a tmpfs and chattr need root, mount(8) and chattr(1): run the suite as root, as CI does")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def readyz(client: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with client.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


RESUME_RULES = """
rules:
  - name: resume
    on: STOP
    actions:
      - qmp: cont
"""


async def outage(s: Site, client: aiohttp.ClientSession, n: int) -> None:
    """While the journal cannot write: /readyz says so, and events keep being handled."""
    assert s.url is not None
    url = s.url
    fake = s.fakes["vm1"]
    before = count(fake, "cont")
    for _ in range(n):
        fake.emit("STOP")
        await asyncio.sleep(0.02)
    _, body = await eventually(lambda: _if(readyz(client, url), lambda r: r[0] == 503), timeout=10)
    assert body["checks"]["journal_writable"] is False
    assert s.daemon.journal.last_error is not None
    async with client.get(f"{url}/metrics") as resp:
        assert "reactor_journal_healthy 0.0" in await resp.text()
    # every STOP got its cont although nothing can be written
    await eventually(lambda: count(fake, "cont") >= before + n, 10)


async def recovered(s: Site, client: aiohttp.ClientSession, runs: int) -> None:
    """Writable again: /readyz 200 and every run of the outage in the journal, nothing dropped."""
    url = s.url or ""
    await eventually(lambda: _if(readyz(client, url), lambda r: r[0] == 200), timeout=15)
    done = await finished_runs(s.daemon, "resume", runs)
    assert len(done) == runs and all(r.status == "ok" for r in done)
    assert s.daemon.journal.stats.dropped == 0


async def test_disk_full_state_dir(tmp_path: Path, small_state: Path) -> None:
    """The state dir's disk full: journal errors reported, events handled, rows written once there is room."""
    async with site(tmp_path, RESUME_RULES, http=True, state=small_state) as s, aiohttp.ClientSession() as client:
        assert (await readyz(client, s.url or ""))[0] == 200
        filler = small_state / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        await outage(s, client, 20)
        filler.unlink()
        await recovered(s, client, 20)


@pytest.fixture
def immutable() -> Iterator[list[str]]:
    """Paths made immutable with chattr +i (EPERM on every write, even through open files); undone at the end."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.fail("chattr +i needs root and chattr(1): run the suite as root, as CI does")
    paths: list[str] = []
    try:
        yield paths
    finally:
        if paths:
            subprocess.run(["chattr", "-i", *paths], check=False)


async def test_read_only_state_dir(tmp_path: Path, immutable: list[str]) -> None:
    """The state dir turned read-only under the daemon: same as disk full (EPERM instead of ENOSPC).

    A real ``mount -o remount,ro`` is refused while the journal holds its files
    open for writing, so the journal's files and directory are made immutable
    (ext4 refuses writes through open descriptors too).
    """
    async with site(tmp_path, RESUME_RULES, http=True) as s, aiohttp.ClientSession() as client:
        assert (await readyz(client, s.url or ""))[0] == 200
        # not journal.db-shm: SQLite maps it, and a fault on an immutable mapped page is SIGBUS
        # (a limit documented in docs/reliability.md)
        immutable += [str(p) for p in (s.state / "journal.db", s.state / "journal.db-wal", s.state)]
        await asyncio.to_thread(subprocess.run, ["chattr", "+i", *immutable], check=True)
        try:
            await outage(s, client, 10)
        finally:
            await asyncio.to_thread(subprocess.run, ["chattr", "-i", *immutable], check=True)
            immutable.clear()
        await recovered(s, client, 10)


async def _if(value: Any, test: Any) -> Any:
    v = await value
    return v if test(v) else None


# --- a plugin that blocks the event loop ------------------------------------------------------------

BLOCKING_PLUGIN = '''
"""A badly written plugin: its action blocks the event loop."""

from __future__ import annotations

import time
from dataclasses import dataclass

from reactor.plugin import ActionContext, action


@dataclass(frozen=True)
class BlockArgs:
    seconds: float = 1.0


@action("block_loop", shorthand="seconds", mutating=False)
async def BLOCK_LOOP(ctx: ActionContext, args: BlockArgs) -> None:
    time.sleep(args.seconds)
'''

BLOCKING_RULES = """
rules:
  - name: blocker
    on: RESET
    actions:
      - block_loop: 1.0
  - name: resume
    on: STOP
    actions:
      - qmp: cont
"""


async def test_a_plugin_blocking_the_loop_is_detected_and_reported(tmp_path: Path) -> None:
    """A 1 s block shows in the loop-lag metrics; events queued meanwhile are handled right after."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "blocking.py").write_text(BLOCKING_PLUGIN)
    async with site(tmp_path, BLOCKING_RULES, http=True, extra=f"plugins: [{plugins}]\n") as s, \
            aiohttp.ClientSession() as client:
        lag = LoopLag(interval=0.05, threshold=0.25)
        s.daemon.looplag = lag  # type: ignore[attr-defined]  # what the daemon's wiring does
        monitor = asyncio.create_task(lag.run(), name="reactor.ops.looplag")
        try:
            await blocked_loop_scenario(s, client, lag)
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor


async def blocked_loop_scenario(s: Site, client: aiohttp.ClientSession, lag: LoopLag) -> None:
    await asyncio.sleep(0.3)
    assert lag.stalls == 0
    fake = s.fakes["vm1"]
    fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
    await asyncio.sleep(0.05)
    fake.emit("STOP")  # arrives while the loop is blocked
    await eventually(lambda: count(fake, "cont") >= 1, 5)
    await eventually(lambda: lag.stalls >= 1, 3)
    assert 0.9 <= lag.max < 2.0
    assert s.url is not None
    async with client.get(f"{s.url}/metrics") as resp:
        text = await resp.text()
    metrics = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line.startswith("reactor_loop")}
    assert metrics["reactor_loop_stalls_total"] >= 1
    assert metrics["reactor_loop_lag_max_seconds"] >= 0.9
