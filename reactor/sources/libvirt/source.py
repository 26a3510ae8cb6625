"""The libvirt event source: one connection to libvirtd, its domains, their events.

:class:`LibvirtSource` (``async run(emit)``, an event source) connects with
libvirt-python and registers for

* every QMP event libvirt passes through (``qemuMonitorEventRegister``), put on
  the bus unchanged: rules written for QMP VMs work as they are;
* libvirt's typed domain events, put on the bus as ``LIBVIRT_<ID>`` (see
  :mod:`reactor.model.catalog.libvirt`).

It keeps a :class:`~reactor.sources.libvirt.domain.LibvirtVM` for every domain whose
name matches the configured globs: domains appear with ``define``/``start``
and go with ``undefine`` (or ``destroy`` of a transient domain).  Like a QMP
connection it emits ``REACTOR_VM_CONNECTED`` (``status`` as QEMU's run state,
plus libvirt's ``state`` and ``reason``, ``source: libvirt``) when a domain
starts and, for every running domain, each time the connection to libvirtd
is made; ``REACTOR_VM_DISCONNECTED`` when a domain stops or libvirtd goes
away.  A lost connection is retried with jittered, capped exponential backoff.

Connection states (:class:`LinkState`) are those of a QMP connection::

    IDLE ──run()──> CONNECTING ──> CONNECTED ──lost──> DISCONNECTED ──backoff──> CONNECTING ...
    any ──aclose()/cancel──> STOPPED

Threads: libvirt's callbacks run on libvirt's event thread
(:mod:`reactor.sources.libvirt.loop`); each one only stamps the time and hands its
arguments to the asyncio loop with ``call_soon_threadsafe`` (FIFO, so order is
kept).  Blocking libvirt calls run in worker threads.  Events are handed to
``emit`` synchronously, in order; ``emit`` must not block (the bus behind it is
bounded and counts its drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reactor.errors import EventError, LibvirtConnectionError, StateError
from reactor.model.catalog.libvirt import (
    AGENT_REASONS,
    AGENT_STATES,
    BLOCK_JOB_STATUSES,
    BLOCK_JOB_TYPES,
    DISK_CHANGE_REASONS,
    IO_ERROR_ACTIONS,
    LIFECYCLE_DETAILS,
    LIFECYCLE_EVENTS,
    MEMORY_FAILURE_ACTIONS,
    MEMORY_FAILURE_RECIPIENTS,
    STATE_REASONS,
    STATES,
    TRAY_CHANGE_REASONS,
    WATCHDOG_ACTIONS,
    enum_name,
    run_state,
)
from reactor.model.event import Event
from reactor.model.runstate import RunState, lifecycle_state
from reactor.sources.libvirt.config import LibvirtConfig
from reactor.sources.libvirt.domain import LibvirtVM
from reactor.sources.libvirt.loop import ensure_event_loop, import_libvirt
from reactor.sources.qmp import VMState

__all__ = ["LibvirtConnectionError", "LibvirtSource", "LinkState"]

log = logging.getLogger(__name__)

MakeEvent = Callable[..., Event]


#: Where a :class:`LibvirtSource`'s supervisor is: the same states as a QMP connection's.
LinkState = VMState


def _io_error(p: tuple[Any, ...]) -> dict[str, Any]:
    return {"path": p[0] or "", "alias": p[1] or "", "action": enum_name(IO_ERROR_ACTIONS, p[2]),
            "reason": p[3] or ""}


def _disk_change(p: tuple[Any, ...]) -> dict[str, Any]:
    d: dict[str, Any] = {"alias": p[2] or "", "reason": enum_name(DISK_CHANGE_REASONS, p[3])}
    if p[0]:
        d["old_path"] = p[0]
    if p[1]:
        d["new_path"] = p[1]
    return d


def _block_threshold(p: tuple[Any, ...]) -> dict[str, Any]:
    d: dict[str, Any] = {"dev": p[0] or "", "threshold": int(p[2]), "excess": int(p[3])}
    if p[1]:
        d["path"] = p[1]
    return d


def _memory_failure(p: tuple[Any, ...]) -> dict[str, Any]:
    return {"recipient": enum_name(MEMORY_FAILURE_RECIPIENTS, p[0]), "action": enum_name(MEMORY_FAILURE_ACTIONS, p[1]),
            "action_required": bool(p[2] & 1), "recursive": bool(p[2] & 2)}


#: libvirt event id suffix -> (reactor event name, callback arguments -> data).  LIFECYCLE is handled apart.
_TYPED: dict[str, tuple[str, Callable[[tuple[Any, ...]], dict[str, Any]]]] = {
    "REBOOT": ("LIBVIRT_REBOOT", lambda p: {}),
    "RTC_CHANGE": ("LIBVIRT_RTC_CHANGE", lambda p: {"offset": int(p[0])}),
    "WATCHDOG": ("LIBVIRT_WATCHDOG", lambda p: {"action": enum_name(WATCHDOG_ACTIONS, p[0])}),
    "IO_ERROR_REASON": ("LIBVIRT_IO_ERROR_REASON", _io_error),
    "CONTROL_ERROR": ("LIBVIRT_CONTROL_ERROR", lambda p: {}),
    "BLOCK_JOB_2": ("LIBVIRT_BLOCK_JOB", lambda p: {
        "disk": p[0] or "", "type": enum_name(BLOCK_JOB_TYPES, p[1]), "status": enum_name(BLOCK_JOB_STATUSES, p[2])}),
    "DISK_CHANGE": ("LIBVIRT_DISK_CHANGE", _disk_change),
    "TRAY_CHANGE": ("LIBVIRT_TRAY_CHANGE", lambda p: {
        "alias": p[0] or "", "reason": enum_name(TRAY_CHANGE_REASONS, p[1])}),
    "PMWAKEUP": ("LIBVIRT_PMWAKEUP", lambda p: {}),
    "PMSUSPEND": ("LIBVIRT_PMSUSPEND", lambda p: {}),
    "PMSUSPEND_DISK": ("LIBVIRT_PMSUSPEND_DISK", lambda p: {}),
    "BALLOON_CHANGE": ("LIBVIRT_BALLOON_CHANGE", lambda p: {"actual": int(p[0])}),
    "DEVICE_ADDED": ("LIBVIRT_DEVICE_ADDED", lambda p: {"alias": p[0] or ""}),
    "DEVICE_REMOVED": ("LIBVIRT_DEVICE_REMOVED", lambda p: {"alias": p[0] or ""}),
    "DEVICE_REMOVAL_FAILED": ("LIBVIRT_DEVICE_REMOVAL_FAILED", lambda p: {"alias": p[0] or ""}),
    "AGENT_LIFECYCLE": ("LIBVIRT_AGENT_LIFECYCLE", lambda p: {
        "state": enum_name(AGENT_STATES, p[0]), "reason": enum_name(AGENT_REASONS, p[1])}),
    "BLOCK_THRESHOLD": ("LIBVIRT_BLOCK_THRESHOLD", _block_threshold),
    "MEMORY_FAILURE": ("LIBVIRT_MEMORY_FAILURE", _memory_failure),
    "JOB_COMPLETED": ("LIBVIRT_JOB_COMPLETED", lambda p: {"stats": dict(p[0] or {})}),
}

#: A lifecycle detail -> libvirt's state reason, where the words differ.
_CLOSE_REASONS = ("error", "end of file", "keepalive timeout", "closed by client")


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _stamp(seconds: float) -> dict[str, int]:
    secs = int(seconds)
    return {"seconds": secs, "microseconds": int((seconds - secs) * 1_000_000)}


class _Link:
    """One open connection: the virConnect and what was registered on it (touched in worker threads)."""

    def __init__(self, conn: Any, generation: int) -> None:
        self.conn = conn
        self.generation = generation
        self.callbacks: list[int] = []
        self.qemu_callback: int | None = None
        self.qemu_version = "?"


class LibvirtSource:
    """Events and VM handles of the domains behind one libvirt URI (see the module docstring)."""

    def __init__(
        self,
        config: LibvirtConfig,
        *,
        make_event: MakeEvent,
        host: str | None = None,
        on_state: Callable[[LibvirtSource, LinkState], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        connect_timeout: float = 10.0,
        keepalive: tuple[int, int] = (2, 3),
    ) -> None:
        self.config = config
        self.uri = config.uri
        self._make_event = make_event
        self.host = host
        self._on_state = on_state
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.log = logging.getLogger(f"{__name__}.{config.uri}")
        self._state = LinkState.IDLE
        self._vms: dict[str, LibvirtVM] = {}
        self._link: _Link | None = None
        self._generation = 0
        self._lost: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emit: Callable[[Event], None] | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._closing = False
        self._seq = 0
        self.qemu_version = "?"
        #: Successful connections after the first; why the last attempt failed or the link was lost.
        self.reconnects = 0
        self.last_error: str | None = None
        #: Events put on the bus; events make_event rejected; emit calls that raised.
        self.events_emitted = 0
        self.bad_events = 0
        self.callback_errors = 0

    # -- the set of VMs --
    def get(self, name: str) -> LibvirtVM | None:
        return self._vms.get(name)

    def __iter__(self) -> Iterator[LibvirtVM]:
        return iter(list(self._vms.values()))

    def __len__(self) -> int:
        return len(self._vms)

    def __contains__(self, name: object) -> bool:
        return name in self._vms

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is LinkState.CONNECTED

    @property
    def connection(self) -> Any:
        """The open ``virConnect`` (None while disconnected): for commands, in worker threads."""
        link = self._link
        return link.conn if link is not None and self._state is LinkState.CONNECTED else None

    def watches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in self.config.domains)

    def __repr__(self) -> str:
        return f"<LibvirtSource {self.uri!r} {self._state.name} vms={len(self._vms)}>"

    async def __aenter__(self) -> LibvirtSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the supervisor --
    async def run(self, emit: Callable[[Event], None]) -> None:
        """Connect, deliver events to ``emit``, reconnect; until :meth:`aclose` or cancellation."""
        if self._run_task is not None:
            raise StateError(f"libvirt {self.uri}: run() is already running")
        self._run_task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._emit = emit
        await asyncio.to_thread(ensure_event_loop)
        delay = self.backoff_initial
        ever = False
        try:
            while not self._closing:
                self._set_state(LinkState.CONNECTING)
                self._generation += 1
                self._lost = self._loop.create_future()
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        link, domains = await asyncio.to_thread(self._open, self._generation)
                except Exception as err:  # the boundary: one connection attempt
                    self._problem(f"cannot connect to {self.uri}: {_summary(err)}")
                    self._set_state(LinkState.DISCONNECTED)
                    await self._sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                self._link = link
                self.qemu_version = link.qemu_version
                if ever:
                    self.reconnects += 1
                ever = True
                delay = self.backoff_initial
                self.last_error = None
                self._set_state(LinkState.CONNECTED)
                self._reconcile(domains)
                self.log.info("libvirt %s: connected (QEMU %s, %d domain(s) watched)", self.uri, self.qemu_version,
                              len(self._vms))
                reason = await self._lost
                self._problem(f"connection to {self.uri} lost: {reason}")
                self._link = None
                self._set_state(LinkState.DISCONNECTED)
                self._all_disconnected(f"libvirt connection lost: {reason}")
                await asyncio.to_thread(self._close, link)
                await self._sleep(random.uniform(0.0, self.backoff_initial))
        finally:
            link_left, self._link = self._link, None
            was_connected = self._state is LinkState.CONNECTED
            self._set_state(LinkState.STOPPED)
            if was_connected:
                self._all_disconnected("stopped")
            if link_left is not None:
                await asyncio.shield(asyncio.to_thread(self._close, link_left))
            self._run_task = None

    async def aclose(self) -> None:
        """Stop the supervisor and close the connection; idempotent."""
        self._closing = True
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            # asyncio.wait never raises the task's outcome; a CancelledError here is the
            # caller's own cancellation and must go on (swallowing it hung Fleet.aclose)
            await asyncio.wait({task})
        elif task is None:
            self._set_state(LinkState.STOPPED)

    async def _sleep(self, delay: float) -> None:
        await asyncio.sleep(random.uniform(delay / 2, delay))

    def _set_state(self, state: LinkState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(self, state)
            except Exception:
                self.log.exception("libvirt %s: on_state callback failed", self.uri)

    def _problem(self, message: str) -> None:
        if message == self.last_error:
            self.log.debug("libvirt: %s (again)", message)
        else:
            self.log.warning("libvirt: %s", message)
        self.last_error = message

    # -- worker threads: open, register, list; close --
    def _open(self, generation: int) -> tuple[_Link, list[tuple[str, int, int, bool]]]:
        libvirt, libvirt_qemu = import_libvirt()
        conn = libvirt.open(self.uri)
        link = _Link(conn, generation)
        try:
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(*self.keepalive)
            conn.registerCloseCallback(self._cb_close, generation)
            with contextlib.suppress(libvirt.libvirtError):
                link.qemu_version = _version(conn.getVersion())
            link.callbacks.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._cb_lifecycle, generation))
            for suffix, (name, _convert) in _TYPED.items():
                event_id = getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{suffix}", None)
                if event_id is None:
                    continue  # an event this libvirt-python does not know
                link.callbacks.append(conn.domainEventRegisterAny(
                    None, event_id, self._typed_callback(name), generation))
            link.qemu_callback = libvirt_qemu.qemuMonitorEventRegister(
                conn, None, None, self._cb_qmp, generation, 0)
            domains: list[tuple[str, int, int, bool]] = []
            for dom in conn.listAllDomains(0):
                name = dom.name()
                if not self.watches(name):
                    continue
                try:
                    state, reason = dom.state()
                    persistent = bool(dom.isPersistent())
                except libvirt.libvirtError:
                    continue  # undefined meanwhile
                domains.append((name, state, reason, persistent))
        except BaseException:
            self._close(link)
            raise
        return link, domains

    def _close(self, link: _Link) -> None:
        libvirt, libvirt_qemu = import_libvirt()
        conn = link.conn
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        for cid in link.callbacks:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cid)
        if link.qemu_callback is not None:
            with contextlib.suppress(libvirt.libvirtError):
                libvirt_qemu.qemuMonitorEventDeregister(conn, link.qemu_callback)
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    # -- libvirt's event thread: stamp, hand over --
    def _hand(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _cb_close(self, _conn: Any, reason: int, generation: int) -> None:
        self._hand(self._on_close, generation, enum_name(_CLOSE_REASONS, reason))

    def _cb_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, generation: int) -> None:
        self._hand(self._on_lifecycle, generation, dom.name(), time.time(), event, detail)

    def _cb_qmp(self, _conn: Any, dom: Any, event: str, seconds: int, micros: int, details: str | None,
                generation: int) -> None:
        self._hand(self._on_qmp, generation, dom.name(), event, seconds, micros, details)

    def _typed_callback(self, name: str) -> Callable[..., None]:
        def callback(_conn: Any, dom: Any, *rest: Any) -> None:
            self._hand(self._on_typed, rest[-1], dom.name(), time.time(), name, rest[:-1])

        return callback

    # -- the asyncio side --
    def _current(self, generation: int) -> bool:
        return generation == self._generation and self._state is LinkState.CONNECTED

    def _on_close(self, generation: int, reason: str) -> None:
        if generation == self._generation and self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _vm(self, name: str) -> LibvirtVM | None:
        vm = self._vms.get(name)
        if vm is None and self.watches(name):
            vm = self._vms[name] = LibvirtVM(self, name, self.config.labels)
        return vm

    def _reconcile(self, domains: list[tuple[str, int, int, bool]]) -> None:
        """After (re)connecting: the domains as libvirt lists them now; CONNECTED for the running ones."""
        seen = set()
        for name, state_no, reason_no, persistent in domains:
            seen.add(name)
            vm = self._vm(name)
            assert vm is not None
            state = enum_name(STATES, state_no)
            vm.state = state
            vm.reason = enum_name(STATE_REASONS.get(state, ("unknown",)), reason_no)
            vm.persistent = persistent
            vm.active = state not in ("shutoff", "nostate")
            vm.runstate = RunState(run_state(state, vm.reason))
            if vm.active:
                self._connected(vm, time.time())
        for name in [n for n in self._vms if n not in seen]:
            del self._vms[name]  # undefined while we were away

    def _connected(self, vm: LibvirtVM, now: float) -> None:
        self._deliver(vm.name, "REACTOR_VM_CONNECTED", {
            "status": vm.status, "qemu_version": self.qemu_version, "state": vm.state, "reason": vm.reason,
            "source": "libvirt"}, _stamp(now))

    def _all_disconnected(self, reason: str) -> None:
        now = _stamp(time.time())
        for vm in list(self._vms.values()):
            if vm.active:
                self._deliver(vm.name, "REACTOR_VM_DISCONNECTED", {"reason": reason}, now)

    def _on_lifecycle(self, generation: int, name: str, now: float, event_no: int, detail_no: int) -> None:
        if not self._current(generation):
            return
        vm = self._vm(name)
        if vm is None:
            return
        event = enum_name(LIFECYCLE_EVENTS, event_no)
        detail = enum_name(LIFECYCLE_DETAILS.get(event, ()), detail_no)
        stamp = _stamp(now)
        if event == "started":
            vm.active, vm.state, vm.reason = True, "running", detail
            vm.runstate = RunState(run_state(vm.state, vm.reason))
            self._connected(vm, now)
        self._deliver(name, "LIBVIRT_LIFECYCLE", {"event": event, "detail": detail}, stamp)  # status: the model
        state = lifecycle_state(event, detail)
        if state is not None:
            vm.state, vm.reason = state
        if event == "defined":
            vm.persistent = True
        elif event == "undefined":
            vm.persistent = False
            if not vm.active:
                self._vms.pop(name, None)
        elif event == "stopped":
            was_active = vm.active
            vm.active = False
            if was_active:
                self._deliver(name, "REACTOR_VM_DISCONNECTED", {"reason": f"domain stopped ({detail})"}, stamp)
            if not vm.persistent:
                self._vms.pop(name, None)

    def _on_qmp(self, generation: int, name: str, event: str, seconds: int, micros: int,
                details: str | None) -> None:
        if not self._current(generation):
            return
        vm = self._vm(name)
        if vm is None:
            return
        vm.active = True
        data: Any = {}
        if details:
            import orjson

            try:
                data = orjson.loads(details)
            except orjson.JSONDecodeError:
                self.bad_events += 1
                return
        self._deliver(name, event, data, {"seconds": int(seconds), "microseconds": int(micros)})

    def _on_typed(self, generation: int, name: str, now: float, event: str, payload: tuple[Any, ...]) -> None:
        if not self._current(generation) or self._vm(name) is None:
            return
        try:
            data = _TYPED_BY_NAME[event](payload)
        except (IndexError, TypeError, ValueError) as err:
            self.bad_events += 1
            self.log.warning("libvirt %s: %s for %s has unexpected arguments %r: %s", self.uri, event, name,
                             payload, err)
            return
        self._deliver(name, event, data, _stamp(now))

    def _deliver(self, vm_name: str, name: str, data: Mapping[str, Any], timestamp: dict[str, int]) -> None:
        vm = self._vms.get(vm_name)
        self._seq += 1
        try:
            event = self._make_event({"event": name, "data": data, "timestamp": timestamp}, vm=vm_name,
                                     host=self.host, seq=self._seq)
        except EventError as err:
            self.bad_events += 1
            self.log.warning("libvirt %s: not an event: %s", self.uri, err)
            return
        if vm is not None:
            vm.runstate = vm.runstate.after(name, event.data)
        emit = self._emit
        if emit is None:
            return
        self.events_emitted += 1
        try:
            emit(event)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                self.log.exception("libvirt %s: emit failed (%d so far)", self.uri, self.callback_errors)


_TYPED_BY_NAME: dict[str, Callable[[tuple[Any, ...]], dict[str, Any]]] = dict(_TYPED.values())


def _summary(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    get = getattr(err, "get_error_message", None)
    if callable(get):
        msg = get()
        if isinstance(msg, str) and msg:
            return msg
    return str(err).splitlines()[0] if str(err) else type(err).__name__
