"""One VM's QMP connection and the supervisor that keeps it up.

:class:`VMConnection` connects to a QEMU monitor (a unix socket path,
``HOST:PORT``, or a socket that QEMU dialled in on), reads ``query-version``,
``query-status`` and the VM's own ``query-qmp-schema``, then emits
``REACTOR_VM_CONNECTED`` and keeps :attr:`VMConnection.status` current from
events.  When the connection is lost it emits ``REACTOR_VM_DISCONNECTED`` and
reconnects with jittered, capped exponential backoff.  It satisfies
:class:`reactor.actions.action.VMHandle`.

Run states (:class:`VMState`)::

    IDLE ──run()──> CONNECTING ──> CONNECTED ──lost──> DISCONNECTED ──backoff──> CONNECTING ...
                        │                                   ^
                        └──────────── failed ───────────────┘
    any ──aclose()/cancel──> STOPPED

The protocol is qemu.qmp's :class:`~qemu.qmp.QMPClient` (greeting,
capability negotiation, command ids and replies, disconnects), used through
its public API only: it is connected (``connect()`` with a socket) to one end
of a socketpair, and commands go through ``execute()``.  The monitor socket
itself is read by :class:`_Relay`, an asyncio protocol of reactor's own
between the two: it splits what QEMU sends into lines, parses them with
orjson and hands events straight to the connection (no task, queue or
``EventListener`` per event); every other message (the greeting, replies) it
passes on to the client unchanged, and each message the client sends (its
outbound hook hands them over) it writes to QEMU, counting each command until
its reply came.  Why a relay rather than a
reader inside qemu.qmp: that reader's stream reads ahead up to twice its
limit, which must hold ``query-qmp-schema``'s reply (8 MiB here), so it cannot
leave a flooding VM's socket unread, and no hook qemu.qmp documents can pause
its transport (docs/architecture.md has the numbers).

Overflow policy: events are handed to ``on_event`` synchronously, in order,
from the reader; the callback must not block (the engine behind it owns a
bounded queue with counted drops).  Memory per connection is bounded by
``max_line`` (a longer message drops the connection) plus one read chunk
(256 KiB, asyncio's).

Backpressure (optional, ``backpressure=`` the engine's bus): the reader
parses no more lines than the room its VM has left in the consumer's queue
(the rest of a chunk stays buffered, unparsed); when there is no room it
stops reading the socket (the relay's transport is paused: the events wait unread in
the kernel's socket buffer and in QEMU's monitor output buffer) until the
queue has room again (see reactor.engine.bus), then reads on.  So a VM that floods
costs no parsing beyond what the engine dispatches, and the loop spends no
time on its socket while it waits.  Two exceptions keep
it safe: while a command of ours awaits its reply on that VM the relay reads
regardless (its reply may be behind the events; events then past the queue's
bounds are shed, counted), and lines already read stay buffered, never lost.
The cost: a paused VM's events reach rules late, QEMU holds them (its
monitor output buffer grows while the socket is full; see
docs/reliability.md), and a connection closed by the peer while paused is
noticed when reading resumes.  Paused reading is counted per VM
(:attr:`VMConnection.read_pauses`, :attr:`VMConnection.paused_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.error import ProtocolError
from qemu.qmp.protocol import Runstate
from qemu.qmp.qmp_client import BadReplyError, ExecInterruptedError

from reactor.errors import (
    EventError,
    QMPProtocolError,  # the old name, importable from here for one release
    StateError,
    VMCommandError,
    VMCommandTimeout,
    VMConnectionError,
    VMProtocolError,
)
from reactor.model.event import Event
from reactor.model.runstate import EVENTS as _STATUS_EVENTS
from reactor.model.runstate import RunState

__all__ = [
    "Backpressure",
    "MakeEvent",
    "QMPProtocolError",
    "VMConnection",
    "VMState",
    "parse_address",
]

log = logging.getLogger(__name__)

#: ``make_event(obj, *, vm=..., host=..., seq=...) -> Event`` (the catalog's).
MakeEvent = Callable[..., Event]

class Backpressure(Protocol):
    """What a VM's reader asks before handing on events (:class:`reactor.engine.bus.Bus` is one)."""

    def room(self, vm: str) -> int:
        """How many more events of ``vm`` the consumer takes now (<= 0: stop reading)."""
        ...

    def wait_room(self, vm: str) -> asyncio.Future[None]:
        """Done when ``vm`` may be read again."""
        ...


class VMState(enum.Enum):
    """Where a :class:`VMConnection`'s supervisor is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


def parse_address(address: str | Path) -> str | tuple[str, int]:
    """A unix path stays a string; ``HOST:PORT`` (``[::1]:PORT``) becomes a tuple."""
    if isinstance(address, Path):
        return str(address)
    if "/" not in address:
        host, sep, port = address.rpartition(":")
        if sep and host and port.isdigit():
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            return (host, int(port))
    return address


def _summary(err: BaseException) -> str:
    """A short, human reason for a lost or failed connection."""
    while isinstance(getattr(err, "exc", None), BaseException):
        err = err.exc  # type: ignore[attr-defined]  # qemu.qmp's wrapped root causes
    if isinstance(err, EOFError):
        return "connection closed by peer"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, FileNotFoundError):
        return "socket does not exist"
    if isinstance(err, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).splitlines()[0] if str(err) else ""
    return text or type(err).__name__


def _is_absent(err: BaseException) -> bool:
    """Whether the failure means nobody is listening (cheap to retry)."""
    while isinstance(getattr(err, "exc", None), BaseException):
        err = err.exc  # type: ignore[attr-defined]
    return isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.ECONNREFUSED)


class _QuietLogger:
    """qemu.qmp's logger, demoted: everything it says is debug for reactor.

    The connection writes its own clear log lines; the library's would repeat
    them at error level with tracebacks.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def isEnabledFor(self, level: int) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.debug(msg, *args)

    def _debug(self, msg: str, *args: object, **kwargs: object) -> None:
        self._logger.debug(msg, *args)

    debug = info = warning = error = critical = exception = _debug


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class _Client(QMPClient):
    """qemu.qmp's client, on the relay's socketpair: greeting, negotiation, commands, replies.

    Only the hooks qemu.qmp documents for subclasses are overridden: the two
    message callbacks.  The inbound one formats a message (a 200 KB schema
    reply too) only when debug logging is on; the outbound one, which sees
    every message just before it is written, hands it to the relay for QEMU
    at once (the copy written to the socketpair is dropped there): a turn of
    the event loop less per command.
    """

    def __init__(self, owner: VMConnection, max_line: int, relay: _Relay) -> None:
        super().__init__(owner.name, readbuflen=max_line)
        self.logger = cast(logging.Logger, _QuietLogger(owner.log))
        self._log = owner.log
        self._relay = relay

    def _cb_outbound(self, msg: Any) -> Any:
        data = bytes(msg)
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("--> %s", data.decode("utf-8", "replace"))
        self._relay.send(data, command="execute" in msg or "exec-oob" in msg)
        return msg

    def _cb_inbound(self, msg: Any) -> Any:
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("<-- %s", bytes(msg).decode("utf-8", "replace"))
        return msg


class _Relay:
    """Stands between QEMU's monitor socket and qemu.qmp's client, which sits on a socketpair.

    Bytes from QEMU are split into lines and parsed with orjson here: events go
    straight to the connection (no per-message task, queue or listener), every
    other message (the greeting, replies) is passed on to the client unchanged.
    What the client sends (capabilities, commands) is written to QEMU; each
    command counts as awaiting its reply.  Backpressure (module docstring): no
    more events are parsed than the VM has room for, and the monitor socket is
    left unread (its transport paused) while the VM has no room, unless a
    command awaits its reply (it may be behind the events).
    """

    def __init__(self, owner: VMConnection, max_line: int) -> None:
        self._owner = owner
        self._max_line = max_line
        self._buf = b""            # from QEMU: what is not handed on yet (a partial line last)
        self._awaiting = 0         # commands the client sent whose reply has not come
        self._qemu: asyncio.Transport | None = None
        self._client: asyncio.Transport | None = None
        self._stopped = False      # the monitor socket's transport is paused by us
        self._room: asyncio.Future[None] | None = None  # waited on while a VM has no room
        #: True once the client's session started: before it, a line that is not JSON means "not QMP"
        self.established = False
        #: why the relay ended the connection (a protocol error), or None
        self.failure: VMProtocolError | None = None
        #: the monitor socket's error when it was lost (None: closed by the peer, or not yet)
        self.lost: BaseException | None = None

    def attach(self, *, qemu: asyncio.Transport | None = None, client: asyncio.Transport | None = None) -> None:
        """The monitor socket's transport, or the client's end of the socketpair, once connected."""
        if qemu is not None:
            self._qemu = qemu
        if client is not None:
            self._client = client

    # -- from QEMU --
    def feed(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        self._drain()

    def _drain(self) -> None:
        """Hand on the complete lines the VM has room for; pause or resume the monitor socket."""
        owner = self._owner
        bp = owner._backpressure
        while self.failure is None:
            buf = self._buf
            if bp is None or self._awaiting:
                lines = buf.split(b"\n")
                held = bp is not None  # look at the room again after this batch: its reply may be in it
            else:
                room = bp.room(owner.name)
                if room <= 0:  # the socket is left unread, lines wait (unparsed) for room
                    self._wait_room(bp)
                    return
                lines = buf.split(b"\n", room)  # at most `room` lines; the rest stays unparsed
                held = len(lines) > room
            self._buf = lines.pop()
            for line in lines:
                self._line(line)
                if self.failure is not None:
                    return
            if not held or self._awaiting:
                break
        if self.failure is None and len(self._buf) > self._max_line:
            self.fail(VMProtocolError(f"message over {self._max_line} bytes"))
            return
        self._end_wait()
        if self._stopped and self._qemu is not None:  # nothing complete left: read the socket again
            self._stopped = False
            self._qemu.resume_reading()

    def _line(self, line: bytes) -> None:
        if len(line) > self._max_line:
            self.fail(VMProtocolError(f"message over {self._max_line} bytes"))
            return
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            if not line.strip():
                return
            # before the session (greeting, capabilities) the peer is probably not QEMU at all
            what = "not JSON" if self.established else "not QMP"
            self.fail(VMProtocolError(f"{what}: {line[:60]!r}"))
            return
        if type(obj) is not dict:
            self.fail(VMProtocolError(f"not a JSON object: {line[:60]!r}"))
            return
        if "event" in obj:
            self._owner._deliver(obj)
            return
        if "QMP" not in obj:  # a reply (the greeting is the one message that is neither)
            exec_id = obj.get("id")
            if self.established and exec_id is None and "error" in obj:
                self.fail(VMProtocolError(f"server reported a parse error: {obj['error']!r}"))
                return
            if exec_id is not None and exec_id.__class__ is not str:
                # qemu.qmp's ids are strings: any other (a list from a broken peer) answers nothing
                self._owner.log.debug("reply with a foreign id %r dropped", exec_id)
                return
            if self._awaiting:
                self._awaiting -= 1  # from here on the socket may wait for room again
        if self._client is not None:
            self._client.write(line + b"\n")

    def _wait_room(self, bp: Backpressure) -> None:
        owner = self._owner
        if not self._stopped and self._qemu is not None:
            self._qemu.pause_reading()
            self._stopped = True
        if self._room is None:
            owner.read_pauses += 1
            owner._paused_since = time.monotonic()
            self._room = room = bp.wait_room(owner.name)
            room.add_done_callback(self._room_came)

    def _room_came(self, room: asyncio.Future[None]) -> None:
        if room is self._room:
            self._end_wait()
            self._drain()

    def _end_wait(self) -> None:
        if self._room is not None:
            self._room = None
            owner = self._owner
            if owner._paused_since is not None:
                owner._paused_total += time.monotonic() - owner._paused_since
                owner._paused_since = None

    def qemu_lost(self, exc: BaseException | None) -> None:
        """The monitor socket closed (``exc``: its error, if any)."""
        if self.failure is None and self._buf.strip():
            self.failure = VMProtocolError(f"connection closed mid-message ({len(self._buf)} bytes)")
        self.lost = exc
        self._end_wait()
        self._qemu = None
        if self._client is not None:
            self._client.close()  # the client sees the end of its stream

    # -- from the client --
    def send(self, data: bytes, *, command: bool) -> None:
        """A message of the client's, as it sends it (its outbound hook): to QEMU; a command awaits a reply."""
        if self._qemu is not None:
            self._qemu.write(data)
        if command:
            self._awaiting += 1
            if self._room is not None or self._stopped:
                self._drain()  # a waiting socket is read again: the reply may be behind events

    def client_lost(self) -> None:
        self._client = None
        if self._qemu is not None:
            self._qemu.close()

    # -- the relay's end --
    @property
    def cause(self) -> BaseException | None:
        """Why the connection ended, as the relay saw it: a protocol error, else the socket's error."""
        return self.failure or self.lost

    def fail(self, err: VMProtocolError) -> None:
        """End the connection for a protocol error (the first one is kept)."""
        if self.failure is None:
            self.failure = err
        self._end_wait()
        if self._qemu is not None:
            self._qemu.abort()
        if self._client is not None:
            self._client.close()


class _QemuSide(asyncio.Protocol):
    def __init__(self, relay: _Relay) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._relay.attach(qemu=cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._relay.feed(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.qemu_lost(exc)


class _ClientSide(asyncio.Protocol):
    def __init__(self, relay: _Relay) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._relay.attach(client=cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        pass  # what the client wrote: its outbound hook sent it to QEMU already

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.client_lost()


class _Session:
    """One connection: the monitor socket, the relay, and qemu.qmp's client on a socketpair."""

    def __init__(self, owner: VMConnection, max_line: int) -> None:
        self.relay = _Relay(owner, max_line)
        self.client = _Client(owner, max_line, self.relay)
        self._transports: list[asyncio.BaseTransport] = []

    async def connect(self, target: str | tuple[str, int] | socket.socket) -> None:
        loop = asyncio.get_running_loop()
        relay = self.relay
        mine, theirs = socket.socketpair()
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: _ClientSide(relay), mine)
            self._transports.append(transport)
            if isinstance(target, socket.socket):
                transport, _ = await loop.connect_accepted_socket(lambda: _QemuSide(relay), target)
            elif isinstance(target, tuple):
                transport, _ = await loop.create_connection(lambda: _QemuSide(relay), target[0], target[1])
            else:
                transport, _ = await loop.create_unix_connection(lambda: _QemuSide(relay), target)
            self._transports.append(transport)
            await self.client.connect(theirs)
        except BaseException:
            theirs.close()
            self.close()
            raise  # VMConnection._connect puts the relay's cause in front
        relay.established = True

    async def call(self, command: str, arguments: Mapping[str, Any] | None) -> object:
        """One command through qemu.qmp's ``execute()``; its ``return`` value (qemu.qmp raises its errors)."""
        if self.client.runstate != Runstate.RUNNING:
            raise VMConnectionError("not connected")
        # templates give tuples and read-only mappings: plain JSON values for qemu.qmp's encoder
        args = orjson.loads(orjson.dumps(dict(arguments), default=_jsonable)) if arguments else None
        return await self.client.execute(command, args)

    async def wait_closed(self) -> str:
        """Wait until the session ends; return why."""
        client = self.client
        while client.runstate == Runstate.RUNNING:
            await client.runstate_changed()
        reason: BaseException = EOFError()
        try:
            await client.disconnect()
        except Exception as err:  # the root cause, re-raised by qemu.qmp
            reason = err
        finally:
            self.close()
        return _summary(self.relay.cause or reason)

    async def aclose(self) -> None:
        if self.client.runstate != Runstate.IDLE:
            with contextlib.suppress(Exception):
                await self.client.disconnect()
        self.close()

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


# Schema facts shared by VMs running the same QEMU build.
_INTERNED: dict[object, Any] = {}


def _intern(value: Any) -> Any:
    return _INTERNED.setdefault(value, value)


def _read_schema(schema: object) -> tuple[frozenset[str], dict[str, frozenset[str]], frozenset[str]]:
    """Event names, each event's top-level field names and the command names from query-qmp-schema."""
    if not isinstance(schema, list):
        raise VMProtocolError("query-qmp-schema did not return a list")
    objects: dict[str, list[str]] = {}
    events: dict[str, str | None] = {}
    commands: list[str] = []
    for entry in schema:
        if not isinstance(entry, dict):
            continue
        meta = entry.get("meta-type")
        if meta == "event":
            events[str(entry.get("name"))] = entry.get("arg-type")
        elif meta == "command":
            commands.append(str(entry.get("name")))
        elif meta == "object":
            members = entry.get("members") or []
            objects[str(entry.get("name"))] = [str(m.get("name")) for m in members if isinstance(m, dict)]
    fields = {
        name: _intern(frozenset(objects.get(arg, ()) if arg else ())) for name, arg in events.items()
    }
    return _intern(frozenset(events)), fields, _intern(frozenset(commands))


class VMConnection:
    """One VM: its QMP connection, kept up by :meth:`run`.  Satisfies ``VMHandle``.

    ``on_event`` is called synchronously, in order, for every event, including
    the ``REACTOR_VM_CONNECTED``/``REACTOR_VM_DISCONNECTED`` events this class
    makes; it must not block (see the module docstring).  ``on_state`` is
    called on every :class:`VMState` transition; ``on_problem`` once for each
    new (different from the previous) connection problem, for the journal.
    ``namer``, when given, picks the final name after connecting from the
    VM's ``query-name`` (``None`` when the VM has none); ``listen`` uses it.
    """

    def __init__(
        self,
        *,
        name: str,
        address: str | Path | None = None,
        sock: socket.socket | None = None,
        labels: Mapping[str, str] | None = None,
        make_event: MakeEvent,
        on_event: Callable[[Event], None],
        on_state: Callable[[VMConnection, VMState], None] | None = None,
        on_problem: Callable[[VMConnection, str], None] | None = None,
        namer: Callable[[str | None], str] | None = None,
        host: str | None = None,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        max_line: int = 1 << 22,
        shed: Callable[[str], bool] | None = None,
        backpressure: Backpressure | None = None,
    ) -> None:
        if (address is None) == (sock is None):
            raise ValueError("give exactly one of address and sock")
        self._name = name
        self.address = address
        self._target: str | tuple[str, int] | socket.socket = (
            sock if sock is not None else parse_address(cast(str | Path, address))
        )
        self._labels: Mapping[str, str] = dict(labels or {})
        self._make_event = make_event
        self._on_event = on_event
        #: asked per event (with the VM's name): True drops it before it is built, because the consumer's
        #: queue for this VM is full anyway (a storm); the consumer counts those drops
        self._shed = shed
        self.events_shed = 0
        #: asked before handing on events: the reader stops reading while the VM has no room (module docstring)
        self._backpressure = backpressure
        #: times the reader stopped reading for want of room
        self.read_pauses = 0
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self._on_state = on_state
        self._on_problem = on_problem
        self._namer = namer
        self.host = host
        self.reconnect = reconnect and sock is None
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.max_line = max_line
        self.log = logging.getLogger(f"{__name__}.{name}")

        self._state = VMState.IDLE
        self._state_changed = asyncio.Event()  # set (and replaced) at every state change
        self._runstate = RunState()  # reactor.model.runstate: the one model of QEMU's run state
        self._proto: _Session | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._closing = False
        self._seq = 0
        self._warned: set[str] = set()
        self._used: Mapping[str, set[str]] | None = None
        self._used_commands: frozenset[str] = frozenset()
        self._event_fields: dict[str, frozenset[str]] = {}

        #: ``{"major": 7, "minor": 2, "micro": 0}`` plus ``package``, once connected.
        self.qemu_version: dict[str, Any] | None = None
        #: The events this VM's QEMU has (None until its schema was read).
        self.schema_events: frozenset[str] | None = None
        #: The QMP commands this VM's QEMU has (None until its schema was read).
        self.schema_commands: frozenset[str] | None = None
        #: Successful connections after the first.
        self.reconnects = 0
        #: Why the last attempt failed or the connection was lost.
        self.last_error: str | None = None
        #: Events received; events make_event rejected; on_event calls that raised.
        self.events_received = 0
        self.bad_events = 0
        self.callback_errors = 0

    # -- VMHandle --
    @property
    def name(self) -> str:
        return self._name

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def status(self) -> str:
        """The last known QEMU run state (``unknown`` before the first connection)."""
        return self._runstate.status

    @property
    def connected(self) -> bool:
        return self._state is VMState.CONNECTED

    @property
    def state(self) -> VMState:
        return self._state

    @property
    def reading_paused(self) -> bool:
        """True while the reader waits for room in the consumer's queue (backpressure)."""
        return self._paused_since is not None

    @property
    def paused_seconds(self) -> float:
        """Seconds the reader spent not reading for want of room, the current pause included."""
        since = self._paused_since
        return self._paused_total + (time.monotonic() - since if since is not None else 0.0)

    def __repr__(self) -> str:
        return f"<VMConnection {self._name!r} {self._state.name} status={self._runstate.status}>"

    async def __aenter__(self) -> VMConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- commands --
    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run a QMP command and return its ``return`` value.

        Raises :class:`VMCommandError` (QEMU's error class and description),
        :class:`VMConnectionError` (not connected, or lost before the reply)
        or :class:`TimeoutError` (default timeout: ``command_timeout``).
        """
        limit = self.command_timeout if timeout is None else timeout
        if self._state is VMState.CONNECTING and self._proto is not None:
            # QEMU sends events as soon as capabilities are negotiated, before the
            # handshake's own queries end: a rule reacting to one waits for them
            # (within its timeout) instead of failing with "not connected"
            async with asyncio.timeout(limit):
                while self._state is VMState.CONNECTING and self._proto is not None:
                    await self._state_changed.wait()
        proto = self._proto
        if proto is None or self._state is not VMState.CONNECTED:
            raise VMConnectionError(f"{self._name}: not connected ({self._state.value})")
        return await self._call(proto, command, arguments, limit)

    async def _call(
        self, proto: _Session, command: str, arguments: Mapping[str, Any] | None, timeout: float
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await proto.call(command, arguments)
        except ExecuteError as err:
            raise VMCommandError(command, err.error_class, str(err)) from None
        except BadReplyError as err:
            raise VMCommandError(command, "BadReply", f"{err.error_message}: {dict(err.msg)!r}") from None
        except TimeoutError as err:  # an OSError subclass: not a connection problem
            raise VMCommandTimeout(f"{self._name}: {command}: no reply within {timeout:g}s") from err
        except ExecInterruptedError as err:
            if command == "quit":  # QEMU may close before the reply reaches us
                return {}
            raise VMConnectionError(f"{self._name}: connection lost during {command}") from err
        except (OSError, ProtocolError) as err:
            raise VMConnectionError(f"{self._name}: {command}: {_summary(err)}") from err

    # -- rule usage --
    def check_rule_usage(self, used: Mapping[str, set[str]], commands: Iterable[str] = ()) -> None:
        """Warn (once per VM per event/field/command) about what rules use that this VM's QEMU lacks.

        ``used`` maps event names to the ``data`` fields rules read (dotted
        paths allowed; the first component is checked); ``commands`` are the
        QMP commands rules send.  Kept and checked again after every connection.
        """
        self._used = used
        self._used_commands = frozenset(commands)
        if self.schema_events is None:
            return
        version = self._version_text()
        for command in sorted(self._used_commands):
            key = f"command {command}"
            if self.schema_commands is not None and command not in self.schema_commands and key not in self._warned:
                self._warned.add(key)
                self.log.warning(
                    "%s: rules use QMP command %s, which this VM's QEMU %s does not have",
                    self._name, command, version,
                )
        for event, fields in used.items():
            if event.startswith("REACTOR_"):
                continue
            if event not in self.schema_events:
                if event not in self._warned:
                    self._warned.add(event)
                    self.log.warning(
                        "%s: rules use event %s, which this VM's QEMU %s does not have",
                        self._name, event, version,
                    )
                continue
            known = self._event_fields.get(event, frozenset())
            for field in fields:
                top = field.split(".", 1)[0]
                key = f"{event}.{top}"
                if top not in known and key not in self._warned:
                    self._warned.add(key)
                    self.log.warning(
                        "%s: rules use field %s of %s, which this VM's QEMU %s does not have",
                        self._name, top, event, version,
                    )

    def _version_text(self) -> str:
        v = self.qemu_version or {}
        q = v.get("qemu", v)
        if isinstance(q, dict) and "major" in q:
            return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}"
        return "?"

    # -- the supervisor --
    async def run(self) -> None:
        """Connect, watch, reconnect; until :meth:`aclose` or cancellation.

        Never raises on connection problems: they are logged, reported to
        ``on_problem``, and retried with backoff (unless ``reconnect`` is off,
        then run returns after the first loss or failure).
        """
        if self._run_task is not None:
            raise StateError(f"{self._name}: run() is already running")
        self._run_task = asyncio.current_task()
        delay = self.backoff_initial
        ever_connected = False
        try:
            while not self._closing:
                self._set_state(VMState.CONNECTING)
                proto = _Session(self, self.max_line)
                self._proto = proto
                try:
                    await self._connect(proto)
                except Exception as err:  # the boundary: one connection attempt
                    await proto.aclose()
                    self._problem(f"cannot connect to {self._where()}: {_summary(err)}")
                    self._set_state(VMState.DISCONNECTED)
                    if not self.reconnect:
                        return
                    wait = delay
                    if _is_absent(err):
                        wait = min(wait, 1.0)  # nobody listening: cheap to poll, come back fast
                    await self._backoff(wait)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                if ever_connected:
                    self.reconnects += 1
                ever_connected = True
                delay = self.backoff_initial
                self.last_error = None
                self._set_state(VMState.CONNECTED)
                self.log.info(
                    "%s: connected to %s (QEMU %s, %s)", self._name, self._where(), self._version_text(),
                    self._runstate.status,
                )
                self._emit(
                    "REACTOR_VM_CONNECTED", {"status": self._runstate.status, "qemu_version": self._version_text()}
                )
                if self._used is not None:
                    self.check_rule_usage(self._used, self._used_commands)
                reason = await proto.wait_closed()
                self._problem(f"connection to {self._where()} lost: {reason}")
                self._set_state(VMState.DISCONNECTED)
                self._emit("REACTOR_VM_DISCONNECTED", {"reason": reason})
                if not self.reconnect:
                    return
                await self._backoff(random.uniform(0.0, self.backoff_initial))
        finally:
            proto_left = self._proto
            was_connected = self._state is VMState.CONNECTED
            self._proto = None
            if proto_left is not None:
                await proto_left.aclose()
            if was_connected:
                self._emit("REACTOR_VM_DISCONNECTED", {"reason": "stopped"})
            self._set_state(VMState.STOPPED)
            self._run_task = None

    async def _connect(self, proto: _Session) -> None:
        try:
            await self._handshake(proto)
        except Exception as err:
            # the relay's reason (a protocol error, a reset) says more than "lost during query-x"
            cause = proto.relay.cause
            if cause is not None and cause is not err:
                raise cause from err
            raise

    async def _handshake(self, proto: _Session) -> None:
        async with asyncio.timeout(self.connect_timeout):
            await proto.connect(self._target)
            timeout = self.connect_timeout
            if self._namer is not None:
                try:
                    named = await self._call(proto, "query-name", None, timeout)
                    qname = named.get("name") if isinstance(named, dict) else None
                except VMCommandError:
                    qname = None
                self._rename(self._namer(str(qname) if qname else None))
            version = await self._call(proto, "query-version", None, timeout)
            status = await self._call(proto, "query-status", None, timeout)
            if isinstance(status, dict) and isinstance(status.get("status"), str):
                # at once: events read while the schema is fetched apply on top of it
                self._runstate = RunState(status["status"])
            try:
                schema = await self._call(proto, "query-qmp-schema", None, timeout)
                self.schema_events, self._event_fields, commands = _read_schema(schema)
                self.schema_commands = commands or None  # a schema without commands cannot tell
            except VMCommandError as err:
                self.log.info("%s: no query-qmp-schema (%s); cannot check rule usage", self._name, err)
        self.qemu_version = version if isinstance(version, dict) else None

    def _rename(self, name: str) -> None:
        if name != self._name:
            self.log.info("%s: named %s by query-name", self._name, name)
            self._name = name
            self.log = logging.getLogger(f"{__name__}.{name}")
            if self._run_task is not None:
                self._run_task.set_name(f"reactor[{name}].supervisor")

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` (jittered to 50-100%); wake early when a unix socket file is replaced."""
        delay = random.uniform(delay / 2, delay)
        path = self._target if isinstance(self._target, str) else None
        if path is None:
            await asyncio.sleep(delay)
            return
        before = _stat_key(path)
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.2))
            now = _stat_key(path)
            if now is not None and now != before:
                return

    def _where(self) -> str:
        if isinstance(self._target, socket.socket):
            return "dialled-in socket"
        if isinstance(self._target, tuple):
            return f"{self._target[0]}:{self._target[1]}"
        return self._target

    def _problem(self, message: str) -> None:
        repeat = message == self.last_error
        self.last_error = message
        if repeat:
            self.log.debug("%s: %s (again)", self._name, message)
            return
        self.log.warning("%s: %s", self._name, message)
        if self._on_problem is not None:
            try:
                self._on_problem(self, message)
            except Exception:
                self.log.exception("%s: on_problem callback failed", self._name)

    def _set_state(self, state: VMState) -> None:
        if state is self._state:
            return
        self._state = state
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        if self._on_state is not None:
            try:
                self._on_state(self, state)
            except Exception:
                self.log.exception("%s: on_state callback failed", self._name)

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
            if self._proto is not None:
                await self._proto.aclose()
                self._proto = None
            self._set_state(VMState.STOPPED)

    # -- events --
    def _emit(self, name: str, data: dict[str, Any]) -> None:
        now = time.time()
        secs = int(now)
        self._deliver(
            {"event": name, "data": data,
             "timestamp": {"seconds": secs, "microseconds": int((now - secs) * 1e6)}}
        )

    def _deliver(self, obj: dict[str, Any]) -> None:
        """Called by the reader for each event: track status, make the Event, hand it on."""
        name = obj["event"]
        if name.__class__ is str and name in _STATUS_EVENTS:  # not a string: make_event rejects it below
            self._runstate = self._runstate.after(name, obj.get("data"))
        self._seq += 1
        self.events_received += 1
        if self._shed is not None and self._shed(self._name):
            self.events_shed += 1
            return
        try:
            event = self._make_event(obj, vm=self._name, host=self.host, seq=self._seq)
        except EventError as err:
            self.bad_events += 1
            if self.bad_events == 1 or self.bad_events % 1000 == 0:
                self.log.warning("%s: not an event (%d so far): %s", self._name, self.bad_events, err)
            return
        try:
            self._on_event(event)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                self.log.exception("%s: on_event failed (%d so far)", self._name, self.callback_errors)


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)
