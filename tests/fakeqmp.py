"""A fake QMP server for tests and benchmarks: speaks enough QMP, and misbehaves on request.

::

    async with FakeQMP(tmp_path / "vm.qmp", name="web-1", status="paused") as fake:
        ...                       # connect reactor to fake.address
        fake.emit("STOP")         # an event to every connected client
        fake.send_raw(b"junk\\r\\n")  # anything, to every client

It answers ``qmp_capabilities``, ``query-version``, ``query-status``,
``query-name``, ``query-qmp-schema`` (a small schema), ``stop``/``cont``
(changing the status and emitting STOP/RESUME), ``x-storm`` (``{count,
event}``: replies, then writes ``count`` events as fast as the socket takes
them) and anything in ``handlers`` (a function of the arguments returning the
``return`` value, or raising :class:`FakeError`).  Unknown commands get a
``CommandNotFound`` error, as from QEMU.

Like QEMU, it ends its lines with ``\\r\\n``; like QEMU, it parses what it
receives as a JSON stream (qemu.qmp sends objects without newlines).

``misbehave`` picks a fault for every connection: ``no-greeting`` (accepts,
says nothing), ``banner`` (an SSH banner instead of a greeting), ``garbage``
(after negotiation, a line that is not JSON), ``truncated`` (after
negotiation, half an object, then hangs up), ``huge-line`` (after
negotiation, a line of ``huge_size`` bytes).  ``close_on`` names commands
that make it hang up instead of answering; ``hang_on`` names commands it
never answers.

``dial(address)`` makes it act like QEMU started with ``-chardev
socket,server=off,reconnect=1``: it connects to a listening reactor and
serves QMP there, re-dialling when the connection drops.

``python -m tests.fakeqmp DIR COUNT`` serves COUNT fakes at ``DIR/vm-N.qmp``
(used by the benchmarks, which run the fakes in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reactor.errors import EventError
from reactor.model.event import Event

__all__ = ["DEFAULT_SCHEMA", "FakeError", "FakeQMP", "make_event", "serve_fleet"]

#: Events of the fake's schema and their fields.
DEFAULT_SCHEMA: dict[str, list[str]] = {
    "STOP": [],
    "RESUME": [],
    "RESET": ["guest", "reason"],
    "SHUTDOWN": ["guest", "reason"],
    "POWERDOWN": [],
    "BLOCK_IO_ERROR": ["device", "node-name", "operation", "action", "nospace", "reason"],
    "RTC_CHANGE": ["offset", "qom-path"],
}


def _stand_in(obj: Any, *, vm: str, host: str | None = None, seq: int = 0) -> Event:
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        raise EventError(f"not a QMP event: {obj!r:.80}")
    ts = obj.get("timestamp") or {}
    stamp = float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6
    return Event(obj["event"], obj.get("data") or {}, stamp, vm, host, seq)


def _catalog_make_event() -> Callable[..., Event]:
    try:
        catalog = importlib.import_module("reactor.model.catalog")
        return catalog.default_catalog().make_event  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return _stand_in


#: The catalog's ``make_event`` when it exists, else a minimal stand-in with the same contract.
make_event: Callable[..., Event] = _catalog_make_event()


class FakeError(Exception):
    """Raise from a handler to answer with a QMP error."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


def _line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\r\n"


def _event(name: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = time.time()
    secs = int(now)
    obj: dict[str, Any] = {
        "event": name,
        "timestamp": {"seconds": secs, "microseconds": int((now - secs) * 1e6)},
    }
    if data is not None:
        obj["data"] = dict(data)
    return obj


def _schema(events: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "str", "meta-type": "builtin", "json-type": "string"}]
    for i, (name, fields) in enumerate(sorted(events.items())):
        arg = f"{i + 100}"
        out.append({"name": name, "meta-type": "event", "arg-type": arg})
        out.append(
            {"name": arg, "meta-type": "object", "members": [{"name": f, "type": "str"} for f in fields]}
        )
    return out


class _Session:
    """One client connection."""

    def __init__(self, fake: FakeQMP, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.fake = fake
        self.reader = reader
        self.writer = writer
        self.negotiated = False
        self.tasks: set[asyncio.Task[None]] = set()

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    async def serve(self) -> None:
        fake = self.fake
        mode = fake.misbehave
        try:
            if mode == "no-greeting":
                await self.reader.read()  # until the client gives up
                return
            if mode == "banner":
                self.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                await self.reader.read()
                return
            if fake.greeting_delay:
                await asyncio.sleep(fake.greeting_delay)
            self.write(_line({"QMP": {"version": fake.version_obj(), "capabilities": ["oob"]}}))
            decoder = json.JSONDecoder()
            buf = ""
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                buf += data.decode("utf-8", "replace")
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = decoder.raw_decode(buf)
                    except json.JSONDecodeError:
                        break  # incomplete: wait for more
                    buf = buf[end:]
                    if not await self.handle(msg):
                        return
        except (ConnectionError, OSError):
            return
        finally:
            for task in self.tasks:
                task.cancel()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def handle(self, msg: Any) -> bool:
        """Answer one command; False to hang up."""
        fake = self.fake
        if not isinstance(msg, dict) or "execute" not in msg:
            self.write(_line({"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}))
            return True
        command = msg["execute"]
        args = msg.get("arguments") or {}
        fake.commands.append((command, args))
        reply: dict[str, Any] = {}
        if "id" in msg:
            reply["id"] = msg["id"]
        if command == "qmp_capabilities":
            self.negotiated = True
            reply["return"] = {}
            self.write(_line(reply))
            fake._negotiated(self)
            return True
        if command in fake.close_on:
            return False
        if command in fake.hang_on:
            return True
        try:
            reply["return"] = fake.answer(self, command, args)
        except FakeError as err:
            reply.pop("return", None)
            reply["error"] = {"class": err.error_class, "desc": err.desc}
        if command == "quit":  # as QEMU: SHUTDOWN before the reply, then hang up
            self.write(_line(_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})))
            self.write(_line(reply))
            return False
        self.write(_line(reply))
        return True

    async def storm(self, count: int, name: str, data: Mapping[str, Any] | None) -> None:
        one = _line(_event(name, data))
        block = one * 256
        full, rest = divmod(count, 256)
        for _ in range(full):
            self.write(block)
            await self.writer.drain()
        self.write(one * rest)
        await self.writer.drain()


class FakeQMP:
    """An asyncio fake QMP server on a unix path (``path``) or TCP (``host``/``port``)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = "fake",
        version: tuple[int, int, int] = (7, 2, 0),
        status: str = "paused",
        schema: Mapping[str, list[str]] | None = None,
        handlers: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
        misbehave: str | None = None,
        close_on: set[str] | frozenset[str] = frozenset(),
        hang_on: set[str] | frozenset[str] = frozenset(),
        huge_size: int = 8 << 20,
        greeting_delay: float = 0.0,
    ) -> None:
        self.path = None if path is None else str(path)
        self.host = host
        self.port = port
        self.name = name
        self.version = version
        self.status = status
        self.schema = dict(DEFAULT_SCHEMA if schema is None else schema)
        self.handlers = dict(handlers or {})
        self.misbehave = misbehave
        self.close_on = set(close_on)
        self.hang_on = set(hang_on)
        self.huge_size = huge_size
        self.greeting_delay = greeting_delay
        self.sessions: list[_Session] = []
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self._dialers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """What reactor connects to: the path, or ``HOST:PORT``."""
        if self.path is not None:
            return self.path
        return f"{self.host}:{self.port}"

    def version_obj(self) -> dict[str, Any]:
        major, minor, micro = self.version
        return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "fakeqmp"}

    async def __aenter__(self) -> FakeQMP:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen (again, after :meth:`stop`)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._server = await asyncio.start_unix_server(self._accept, path=self.path, limit=1 << 24)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=1 << 24)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, *, unlink: bool = True) -> None:
        """Stop listening and drop every client (the VM went away)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_all()
        if unlink and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        for task in self._dialers:
            task.cancel()
        for task in self._dialers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stop()

    def drop_all(self) -> None:
        """Hang up on every client."""
        for session in list(self.sessions):
            session.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self.sessions.append(session)
        self.connections += 1
        try:
            await session.serve()
        finally:
            self.sessions.remove(session)
            async with self._changed:
                self._changed.notify_all()

    def _negotiated(self, session: _Session) -> None:
        mode = self.misbehave
        if mode == "garbage":
            session.write(b"this is not JSON at all\r\n")
        elif mode == "truncated":
            session.write(b'{"event": "STOP", "timestamp": {"seconds"')
            session.close()
        elif mode == "huge-line":
            session.write(b'{"event": "X", "data": {"pad": "' + b"x" * self.huge_size + b'"}}\r\n')

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        task = asyncio.get_running_loop().create_task(notify())
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def wait_sessions(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` clients have negotiated (and are still connected)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: sum(s.negotiated for s in self.sessions) >= count)

    async def wait_no_sessions(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: not self.sessions)

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send an event to every negotiated client."""
        line = _line(_event(name, data))
        for session in self.sessions:
            if session.negotiated:
                session.write(line)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are to every client."""
        for session in self.sessions:
            session.write(data)

    def answer(self, session: _Session, command: str, args: dict[str, Any]) -> Any:
        """The ``return`` value of a command (raise FakeError for an error reply)."""
        if command in self.handlers:
            return self.handlers[command](args)
        if command == "query-version":
            return self.version_obj()
        if command == "query-status":
            return {"status": self.status, "running": self.status == "running", "singlestep": False}
        if command == "query-name":
            return {"name": self.name} if self.name else {}
        if command == "query-qmp-schema":
            return _schema(self.schema)
        if command == "stop":
            self.status = "paused"
            session.write(_line(_event("STOP")))  # as QEMU: the event comes before the reply
            return {}
        if command == "cont":
            self.status = "running"
            session.write(_line(_event("RESUME")))
            return {}
        if command == "quit":
            return {}
        if command == "x-storm":
            count = int(args.get("count", 1000))
            task = asyncio.get_running_loop().create_task(
                session.storm(count, str(args.get("event", "RTC_CHANGE")), args.get("data", {"offset": 1}))
            )
            session.tasks.add(task)
            task.add_done_callback(session.tasks.discard)
            return {}
        raise FakeError("CommandNotFound", f"The command {command} has not been found")

    def dial(self, address: str | Path, *, reconnect: float = 0.2) -> None:
        """Act as QEMU with ``-chardev socket,server=off,reconnect=...``: dial reactor."""
        task = asyncio.get_running_loop().create_task(self._dial(str(address), reconnect))
        self._dialers.add(task)

    async def _dial(self, address: str, reconnect: float) -> None:
        while True:
            try:
                if "/" in address:
                    reader, writer = await asyncio.open_unix_connection(address, limit=1 << 24)
                else:
                    host, _, port = address.rpartition(":")
                    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
            except OSError:
                await asyncio.sleep(reconnect)
                continue
            await self._serve(reader, writer)
            await asyncio.sleep(reconnect)


async def serve_fleet(directory: str | Path, count: int) -> None:
    """Serve ``count`` fakes at ``DIRECTORY/vm-N.qmp`` until cancelled."""
    fakes = [FakeQMP(Path(directory) / f"vm-{i}.qmp", name=f"vm-{i}", status="running") for i in range(count)]
    for fake in fakes:
        await fake.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for fake in fakes:
            await fake.aclose()


if __name__ == "__main__":
    import resource

    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_fleet(sys.argv[1], int(sys.argv[2])))
