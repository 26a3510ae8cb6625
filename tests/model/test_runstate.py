"""One run-state model: the table, both QEMU catalogs, every consumer, and a real QEMU's query-status.

The same event sequences go through the model itself, the replay engine (``StaticVM``),
``reactor explain`` and a live :class:`~reactor.sources.qmp.VMConnection`; all must end
in the state the table says (QEMU's own, where QEMU can be made to do it: see the
``qemu`` tests at the end, which compare with ``query-status`` after each transition).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fakeqmp
import pytest
from fakeqmp import FakeQMP, make_event
from polling import eventually
from qemu_fixtures import QemuVMFactory

from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.explain import explain
from reactor.engine.replay import replay
from reactor.model.catalog import default_catalog
from reactor.model.catalog.qapi import load_schema
from reactor.model.event import Event
from reactor.model.runstate import EVENTS, RUN_STATES, UNKNOWN, RunState
from reactor.rules.loader import load_rules_text
from reactor.sources.qmp import VMConnection
from reactor.testing.qemu import GuestImage

SOURCES = Path(__file__).resolve().parents[2] / "reactor" / "model" / "catalog" / "sources"
VERSIONS = ("7.2", "10.2")

IO_STOP = {"device": "d0", "node-name": "n0", "operation": "write", "action": "stop", "nospace": False,
           "reason": "Input/output error"}
IO_REPORT = {**IO_STOP, "action": "report"}
Ev = tuple[str, dict[str, Any]]


def e(name: str, **data: Any) -> Ev:
    return (name, data)


# (start status, events, the status after them): QEMU's behaviour, from its source (runstate.c, cpus.c,
# block-backend.c, watchdog.c) and checked against a real QEMU below where it can be caused.
TABLE: list[tuple[str, list[Ev], str]] = [
    ("running", [e("STOP")], "paused"),
    ("paused", [e("RESUME")], "running"),
    ("prelaunch", [e("RESUME")], "running"),
    ("paused", [e("STOP")], "paused"),
    ("running", [("BLOCK_IO_ERROR", IO_STOP)], "io-error"),  # a rule on BLOCK_IO_ERROR sees the pause coming
    ("running", [("BLOCK_IO_ERROR", IO_STOP), e("STOP")], "io-error"),
    ("running", [("BLOCK_IO_ERROR", IO_REPORT)], "running"),
    ("paused", [("BLOCK_IO_ERROR", IO_STOP)], "paused"),  # an error while draining a user's stop
    ("io-error", [e("STOP")], "io-error"),
    ("io-error", [e("RESUME")], "running"),
    ("running", [e("WATCHDOG", action="pause"), e("STOP")], "watchdog"),
    ("running", [e("WATCHDOG", action="reset"), e("RESET", guest=True, reason="watchdog")], "running"),
    ("running", [e("WATCHDOG", action="inject-nmi")], "running"),
    ("running", [e("WATCHDOG", action="poweroff")], "shutdown"),  # QEMU exits at once: no SHUTDOWN
    ("running", [e("GUEST_PANICKED", action="poweroff"), e("STOP")], "guest-panicked"),
    ("running", [e("GUEST_PANICKED", action="pause"), e("STOP")], "guest-panicked"),
    ("running", [e("GUEST_PANICKED", action="poweroff"), e("SHUTDOWN", guest=True, reason="guest-panic")],
     "shutdown"),
    ("running", [e("GUEST_PANICKED", action="run")], "running"),
    ("running", [e("GUEST_CRASHLOADED", action="run")], "running"),
    ("running", [e("SHUTDOWN", guest=True, reason="guest-shutdown"), e("STOP")], "shutdown"),  # -no-shutdown
    ("running", [e("SHUTDOWN", guest=False, reason="host-qmp-quit")], "shutdown"),
    ("running", [e("RESET", guest=False, reason="host-qmp-system-reset")], "running"),
    ("paused", [e("RESET", guest=False, reason="host-qmp-system-reset")], "prelaunch"),
    ("prelaunch", [e("RESET", guest=False, reason="host-qmp-system-reset")], "prelaunch"),
    ("shutdown", [e("RESET", guest=False, reason="host-qmp-system-reset")], "prelaunch"),
    ("guest-panicked", [e("RESET", guest=False, reason="host-qmp-system-reset")], "prelaunch"),
    ("io-error", [e("RESET", guest=False, reason="host-qmp-system-reset")], "prelaunch"),
    ("inmigrate", [e("RESET", guest=False, reason="host-qmp-system-reset")], "inmigrate"),
    ("running", [e("SUSPEND")], "suspended"),
    ("suspended", [e("WAKEUP")], "running"),
    ("running", [e("SUSPEND_DISK")], "running"),  # QEMU shuts down: SHUTDOWN follows
    ("running", [e("SUSPEND_DISK"), e("SHUTDOWN", guest=True, reason="guest-shutdown")], "shutdown"),
    ("suspended", [e("STOP"), e("RESUME")], "suspended"),  # QEMU >= 9.0 keeps a stopped guest suspended
    ("running", [e("STOP"), e("MIGRATION", status="active"), e("MIGRATION", status="completed")], "postmigrate"),
    ("inmigrate", [e("MIGRATION", status="completed")], "paused"),
    ("inmigrate", [e("RESUME"), e("MIGRATION", status="completed")], "running"),
    ("running", [e("STOP"), e("MIGRATION", status="failed"), e("RESUME")], "running"),
]
#: Sequences only reactor can make (its own events): the model, replay and explain.
REACTOR_TABLE: list[tuple[str, list[Ev], str]] = [
    ("running", [e("REACTOR_VM_DISCONNECTED", reason="connection closed by peer")], "running"),  # last known
    ("running", [e("REACTOR_VM_CONNECTED", status="io-error", qemu_version="7.2.0")], "io-error"),
]
#: What each run-state event of QEMU's catalogs is tested with (above); a new one fails test_catalogs.
QEMU_EVENTS = {name for _, events, _ in TABLE for name, _ in events} & EVENTS


def _ids(table: list[tuple[str, list[Ev], str]]) -> list[str]:
    return [f"{start}-{'-'.join(n for n, _ in events)}" for start, events, _ in table]


def _model(start: str, events: list[Ev]) -> str:
    state = RunState(start)
    for name, data in events:
        state = state.after(name, data)
    return state.status


@pytest.mark.parametrize(("start", "events", "expected"), TABLE + REACTOR_TABLE, ids=_ids(TABLE + REACTOR_TABLE))
def test_model(start: str, events: list[Ev], expected: str) -> None:
    assert _model(start, events) == expected


def _line(name: str, data: dict[str, Any], t: float) -> str:
    return json.dumps({"event": name, "data": data, "vm": "vm0", "timestamp": {"seconds": int(t), "microseconds": 0}})


@pytest.mark.parametrize(("start", "events", "expected"), TABLE + REACTOR_TABLE, ids=_ids(TABLE + REACTOR_TABLE))
async def test_replay(start: str, events: list[Ev], expected: str) -> None:
    rs = load_rules_text([("r.yaml", "rules: []\n")])
    clock = VirtualClock()
    engine = Engine(rs, clock=clock, output=lambda _: None)
    lines = [_line("REACTOR_VM_CONNECTED", {"status": start, "qemu_version": "7.2.0"}, 1000)]
    lines += [_line(name, data, 1001 + i) for i, (name, data) in enumerate(events)]
    result = await replay(lines, engine, clock)
    assert result.errors == []
    assert engine.vm_for("vm0").status == expected


#: explain takes the state before the event as a status string: not what QEMU remembers besides it
EXPLAINABLE = [row for row in TABLE + REACTOR_TABLE if row[0] != "suspended" or len(row[1]) == 1]


@pytest.mark.parametrize(("start", "events", "expected"), EXPLAINABLE, ids=_ids(EXPLAINABLE))
def test_explain_sees_the_state_after_its_event(start: str, events: list[Ev], expected: str) -> None:
    """``reactor explain EVENT --status S``: the rule's ``if`` sees the state after the event."""
    *before, (name, data) = events
    rules = load_rules_text([("r.yaml", textwrap.dedent(f"""
        rules:
          - name: r
            on: {name}
            if: "vm.status == '{expected}'"
            actions: [log: x]
        """))])
    event = default_catalog().make_event({"event": name, "data": data}, vm="vm0")
    (verdict,) = explain(event, rules, status=_model(start, before))
    assert verdict.matched, verdict


@asynccontextmanager
async def _connection(address: str, events: list[Event]) -> AsyncIterator[VMConnection]:
    conn = VMConnection(name="vm1", address=address, make_event=make_event, on_event=events.append, reconnect=False)
    async with asyncio.TaskGroup() as tg, conn:
        tg.create_task(conn.run())
        yield conn


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    await eventually(predicate, timeout, 0.005)


@pytest.mark.parametrize(("start", "events", "expected"), TABLE, ids=_ids(TABLE))
async def test_live_connection(tmp_path: Path, start: str, events: list[Ev], expected: str) -> None:
    got: list[Event] = []
    async with FakeQMP(tmp_path / "vm.qmp", status=start) as fake, _connection(fake.address, got) as conn:
        await _until(lambda: [g.name for g in got] == ["REACTOR_VM_CONNECTED"])
        for name, data in events:
            fake.emit(name, data)
        fake.emit("RTC_CHANGE", {"offset": 0})  # a marker: everything before it was read
        await _until(lambda: got[-1].name == "RTC_CHANGE")
        assert conn.status == expected


async def test_an_event_during_the_handshake_is_not_lost(tmp_path: Path) -> None:
    """A STOP that QEMU sends while reactor still reads the schema applies on top of query-status."""
    got: list[Event] = []

    def schema(_args: dict[str, Any]) -> Any:
        fake.status = "paused"
        fake.emit("STOP")  # written before the reply, as QEMU would
        return fakeqmp._schema(fakeqmp.DEFAULT_SCHEMA)

    fake = FakeQMP(tmp_path / "vm.qmp", status="running", handlers={"query-qmp-schema": schema})
    async with fake, _connection(fake.address, got) as conn:
        await _until(lambda: "REACTOR_VM_CONNECTED" in [g.name for g in got])
        assert [g.name for g in got] == ["STOP", "REACTOR_VM_CONNECTED"]
        assert conn.status == "paused" == got[-1].data["status"]


def _enum(schema: Any, name: str) -> list[str]:
    data = schema.defs[name].expr["data"]
    return [v if isinstance(v, str) else v["name"] for v in data]


def _action_values(schema: Any, event: Any) -> list[str]:
    """The values of an event's ``action`` member (an enum), if it has one."""
    data = event.expr.get("data")
    if isinstance(data, str):
        data = schema.defs[data].expr.get("data", {})
    if not isinstance(data, dict):
        return []
    for key in ("action", "*action"):
        t = data.get(key)
        if isinstance(t, dict):
            t = t.get("type")
        if isinstance(t, str) and t in schema.defs and schema.defs[t].meta == "enum":
            return _enum(schema, t)
    return []


@pytest.mark.parametrize("version", VERSIONS)
def test_catalogs(version: str) -> None:
    """Every event of QEMU's catalog: the run-state ones are in the table; no other one changes the state."""
    schema = load_schema(SOURCES / version)
    assert tuple(_enum(schema, "RunState")) == RUN_STATES
    names = {ev.name for ev in schema.events()}
    assert names >= QEMU_EVENTS
    assert EVENTS - names == {"REACTOR_VM_CONNECTED", "LIBVIRT_LIFECYCLE"}
    starts = (*RUN_STATES, UNKNOWN)
    for ev in schema.events():
        if ev.name in EVENTS:
            continue
        variants: list[dict[str, Any]] = [{}, {"status": "completed"}, {"action": "stop"}, {"action": "pause"}]
        variants += [{"action": a} for a in _action_values(schema, ev)]
        for start in starts:
            for data in variants:
                assert RunState(start).after(ev.name, data) == RunState(start), (ev.name, start, data)


#: For the events whose ``action`` (``status``) decides: every value of QEMU's enum and the state a running
#: VM is in after the event alone.  A value QEMU adds fails test_every_action_value until it is decided here.
BY_VALUE: dict[str, tuple[str, str, dict[str, str]]] = {
    "BLOCK_IO_ERROR": ("action", "BlockErrorAction", {"ignore": "running", "report": "running", "stop": "io-error"}),
    "GUEST_PANICKED": ("action", "GuestPanicAction",
                       {"pause": "guest-panicked", "poweroff": "guest-panicked", "run": "running"}),
    "WATCHDOG": ("action", "WatchdogAction", {
        "reset": "running", "shutdown": "running", "poweroff": "shutdown", "pause": "watchdog", "debug": "running",
        "none": "running", "inject-nmi": "running"}),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_action_value(version: str) -> None:
    schema = load_schema(SOURCES / version)
    for name, (key, enum, after) in BY_VALUE.items():
        assert set(_enum(schema, enum)) == set(after), (version, name)
        for value, expected in after.items():
            assert RunState("running").after(name, {key: value}).status == expected, (name, value)
    for value in _enum(schema, "MigrationStatus"):  # only completed moves a VM (source or destination)
        expected = "postmigrate" if value == "completed" else "paused"
        assert RunState("paused").after("MIGRATION", {"status": value}).status == expected, value


def test_libvirt_lifecycle() -> None:
    lc = "LIBVIRT_LIFECYCLE"
    assert RunState("running").after(lc, {"event": "suspended", "detail": "ioerror"}).status == "io-error"
    assert RunState("running").after(lc, {"event": "suspended", "detail": "paused"}).status == "paused"
    assert RunState("paused").after(lc, {"event": "resumed", "detail": "unpaused"}).status == "running"
    assert RunState("running").after(lc, {"event": "crashed", "detail": "panicked"}).status == "guest-panicked"
    assert RunState("running").after(lc, {"event": "stopped", "detail": "destroyed"}).status == "shutdown"
    assert RunState("shutdown").after(lc, {"event": "started", "detail": "booted"}).status == "running"
    assert RunState("running").after(lc, {"event": "defined", "detail": "added"}).status == "running"


# -- a real QEMU: reactor's status against query-status after each transition -------------------------


class _Live:
    """A VMConnection to a real QEMU, the events it delivered, and the model fed the same events."""

    def __init__(self, conn: VMConnection, got: list[Event]) -> None:
        self.conn = conn
        self.got = got
        self.cursor = 0  # events before it were matched already

    async def event(self, name: str, timeout: float = 30.0, **data: Any) -> Event:
        """The next event ``name`` (with ``data``) after the last one waited for."""

        def found() -> int | None:
            for i in range(self.cursor, len(self.got)):
                ev = self.got[i]
                if ev.name == name and all(ev.data.get(k) == v for k, v in data.items()):
                    return i
            return None

        await _until(lambda: found() is not None, timeout)
        i = found()
        assert i is not None
        self.cursor = i + 1
        return self.got[i]

    async def agree(self, expected: str) -> None:
        """reactor's status, QEMU's query-status and the model replaying the events all say ``expected``."""
        qemu = (await self.conn.execute("query-status"))["status"]
        replayed = RunState()
        for ev in self.got:
            replayed = replayed.after(ev.name, ev.data)
        assert (self.conn.status, replayed.status, qemu) == (expected,) * 3, [g.name for g in self.got]


@asynccontextmanager
async def _live(path: Path) -> AsyncIterator[_Live]:
    got: list[Event] = []
    catalog = default_catalog()
    conn = VMConnection(name="q", address=str(path), make_event=catalog.make_event, on_event=got.append,
                        reconnect=False)
    async with asyncio.TaskGroup() as tg, conn:
        tg.create_task(conn.run())
        live = _Live(conn, got)
        await live.event("REACTOR_VM_CONNECTED", 15)
        yield live


@pytest.mark.qemu
async def test_qemu_stop_cont_reset_quit(qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="rs")
    async with _live(vm.qmp_path) as q:
        await q.agree("prelaunch")
        await q.conn.execute("system_reset")
        await q.event("RESET", reason="host-qmp-system-reset")
        await q.agree("prelaunch")
        await q.conn.execute("cont")
        await q.event("RESUME")
        await q.agree("running")
        await q.conn.execute("system_reset")
        await q.event("RESET", reason="host-qmp-system-reset")
        await q.agree("running")
        await q.conn.execute("stop")
        await q.event("STOP")
        await q.agree("paused")
        await q.conn.execute("system_reset")  # a paused VM is in prelaunch after a reset: it needs cont
        await q.event("RESET", reason="host-qmp-system-reset")
        await q.agree("prelaunch")
        await q.conn.execute("cont")
        await q.event("RESUME")
        await q.agree("running")
        await q.conn.execute("quit")
        await q.event("REACTOR_VM_DISCONNECTED", 10)
        names = [g.name for g in q.got]
        assert names[names.index("SHUTDOWN"):] == ["SHUTDOWN", "REACTOR_VM_DISCONNECTED"]
        assert q.conn.status == "shutdown"  # the last known state; vm.connected is False
        assert not q.conn.connected
    assert await vm.wait(10) == 0


@pytest.mark.qemu
@pytest.mark.guest
async def test_qemu_io_error(qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage) -> None:
    vm = await qemu_vm_factory(name="ioerr", guest=guest_kernel, scenario="ioerror")
    async with _live(vm.qmp_path) as q:
        await q.event("BLOCK_IO_ERROR", 90, action="stop")
        await q.event("STOP")
        await q.agree("io-error")
        await q.conn.execute("cont")
        await q.event("RESUME")
        await q.agree("running")
        await vm.wait_serial("REACTOR-WRITE-OK", 30)
        await q.agree("running")


@pytest.mark.qemu
@pytest.mark.guest
async def test_qemu_guest_panic(qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage) -> None:
    vm = await qemu_vm_factory(name="panic", guest=guest_kernel, scenario="panic", memory_mb=128)
    async with _live(vm.qmp_path) as q:
        await q.event("GUEST_PANICKED", 90, action="pause")
        await q.event("STOP")
        await q.agree("guest-panicked")
        await q.conn.execute("system_reset")
        await q.event("RESET", reason="host-qmp-system-reset")
        await q.agree("prelaunch")
        await q.conn.execute("cont")
        await q.event("RESUME")
        await q.agree("running")


@pytest.mark.qemu
@pytest.mark.guest
async def test_qemu_watchdog(qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage) -> None:
    vm = await qemu_vm_factory(name="wd", guest=guest_kernel, scenario="watchdog")
    async with _live(vm.qmp_path) as q:
        await q.event("WATCHDOG", 90, action="pause")
        await q.event("STOP")
        await q.agree("watchdog")
        await q.conn.execute("stop")  # QEMU ignores it: the VM is stopped already
        await q.agree("watchdog")
