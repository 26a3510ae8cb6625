"""The set of VMs reactor watches: configured, discovered and dialled-in.

A :class:`Fleet` owns one :class:`asyncio.TaskGroup` with a supervisor task
(``reactor[NAME].supervisor``) per :class:`~reactor.sources.qmp.VMConnection`:

* ``vms``: ``(name, address, labels)``; an address is a unix socket path or
  ``HOST:PORT``.  Kept until removed.
* ``discover``: ``(glob, labels)``; every *socket file* matching the glob is a
  VM named after the file without its extension.  Checked every
  ``discover_interval`` seconds: new sockets are added, vanished ones dropped.
  A match whose real path (symlinks resolved) leaves the glob's directory is
  ignored, with a warning.
* ``listen``: addresses (unix path or ``HOST:PORT``) reactor listens on; QEMU
  dials in (``-chardev socket,...,server=off,reconnect=1``, ``reconnect-ms``
  from 9.2), any number of VMs per socket.  Each accepted connection is named
  by the VM's ``query-name`` (``listen-N`` when it has none, ``NAME-N`` when
  the name is taken) and removed when it drops; QEMU dials again.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from reactor.errors import StateError, VMConnectionError
from reactor.model.event import Event
from reactor.sources.qmp import MakeEvent, VMConnection, VMState, parse_address

__all__ = ["Fleet", "glob_root"]

log = logging.getLogger(__name__)

_MAGIC = frozenset("*?[")


def glob_root(pattern: str) -> str:
    """A glob's directory before its first wildcard, resolved: ``/run/qemu/*.qmp`` -> ``/run/qemu``."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC & set(part):
            break
        fixed.append(part)
    return os.path.realpath(os.path.join(*fixed) if fixed else ".")


class Fleet:
    """Every VM connection, in one task group.  ``async with``; :meth:`aclose` stops all.

    ``connection`` holds extra keyword arguments for each :class:`VMConnection`
    (``backoff_max``, ``command_timeout``...).
    """

    def __init__(
        self,
        *,
        make_event: MakeEvent,
        on_event: Callable[[Event], None],
        on_state: Callable[[VMConnection, VMState], None] | None = None,
        on_problem: Callable[[VMConnection, str], None] | None = None,
        vms: Iterable[tuple[str, str | Path, Mapping[str, str]]] = (),
        discover: Iterable[tuple[str, Mapping[str, str]]] = (),
        listen: Iterable[str | Path] = (),
        host: str | None = None,
        discover_interval: float = 1.0,
        connection: Mapping[str, Any] | None = None,
    ) -> None:
        self._make_event = make_event
        self._on_event = on_event
        self._on_state = on_state
        self._on_problem = on_problem
        self._static = list(vms)
        self._globs = [(str(g), dict(labels)) for g, labels in discover]
        self._listen = [str(a) for a in listen]
        self.host = host
        self.discover_interval = discover_interval
        self._options = dict(connection or {})
        self._vms: dict[str, VMConnection] = {}
        self._tasks: dict[VMConnection, asyncio.Task[None]] = {}
        self._discovered: dict[str, str] = {}
        self._warned: set[str] = set()
        self._used: Mapping[str, set[str]] | None = None
        self._used_commands: tuple[str, ...] = ()
        self._tg: asyncio.TaskGroup | None = None
        self._servers: list[socket.socket] = []
        self._service: list[asyncio.Task[None]] = []
        self._dialled = 0
        #: The addresses actually listened on (a TCP port 0 becomes the real port).
        self.listening: list[str] = []

    # -- the set --
    def get(self, name: str) -> VMConnection | None:
        return self._vms.get(name)

    def __iter__(self) -> Iterator[VMConnection]:
        return iter(list(self._vms.values()))

    def __len__(self) -> int:
        return len(self._vms)

    def __contains__(self, name: object) -> bool:
        return name in self._vms

    def add(self, name: str, address: str | Path, labels: Mapping[str, str] | None = None) -> VMConnection:
        """Start watching a VM; raises ValueError when the name is taken."""
        if name in self._vms:
            raise ValueError(f"a VM named {name!r} already exists")
        conn = self._connection(name=name, address=address, labels=labels)
        self._start(conn, conn.run())
        return conn

    async def remove(self, name: str) -> None:
        """Stop watching a VM (emits its REACTOR_VM_DISCONNECTED when it was connected)."""
        conn = self._vms.pop(name, None)
        if conn is not None:
            await conn.aclose()
            self._tasks.pop(conn, None)

    def check_rule_usage(self, used: Mapping[str, set[str]], commands: Iterable[str] = ()) -> None:
        """Check (now, and for VMs that connect later) what rules use against each VM's schema."""
        self._used = used
        self._used_commands = tuple(commands)
        for conn in self._vms.values():
            conn.check_rule_usage(used, self._used_commands)

    def _connection(self, **kwargs: Any) -> VMConnection:
        conn = VMConnection(
            make_event=self._make_event,
            on_event=self._on_event,
            on_state=self._on_state,
            on_problem=self._on_problem,
            host=self.host,
            **self._options,
            **kwargs,
        )
        if self._used is not None:
            conn.check_rule_usage(self._used, self._used_commands)  # stored, checked once connected
        return conn

    def _start(self, conn: VMConnection, coro: Any) -> None:
        if self._tg is None:
            coro.close()
            raise StateError("the fleet is not running (use async with)")
        self._vms[conn.name] = conn
        self._tasks[conn] = self._tg.create_task(coro, name=f"reactor[{conn.name}].supervisor")

    # -- lifecycle --
    async def __aenter__(self) -> Fleet:
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        try:
            for name, address, labels in self._static:
                self.add(name, address, labels)
            for address in self._listen:
                sock = self._bind(address)
                self._servers.append(sock)
                task = tg.create_task(self._accept(sock, address), name=f"reactor.listen[{address}]")
                self._service.append(task)
            if self._globs:
                self._scan()
                self._service.append(tg.create_task(self._discover(), name="reactor.discover"))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop discovery and listening, close every connection, end the task group."""
        tg, self._tg = self._tg, None
        for task in self._service:
            task.cancel()
        for sock in self._servers:
            sock.close()
        self._servers.clear()
        self._service.clear()
        for name in list(self._vms):
            await self.remove(name)
        if tg is not None:
            await tg.__aexit__(None, None, None)

    # -- discover --
    async def _discover(self) -> None:
        while True:
            await asyncio.sleep(self.discover_interval)
            try:
                self._scan()
                gone = [name for name, path in self._discovered.items() if not _is_socket(path)]
            except Exception:  # the boundary: one scan
                log.exception("discovery scan failed")
                continue
            for name in gone:
                log.info("%s: socket %s vanished; dropping the VM", name, self._discovered[name])
                del self._discovered[name]
                await self.remove(name)

    def _scan(self) -> None:
        known = set(self._discovered.values())  # a set: with 1,000 VMs a list scan per path stalled the loop ~15 ms
        for pattern, labels in self._globs:
            root = glob_root(pattern)
            for path in sorted(glob.glob(pattern)):
                if path in known or not _is_socket(path):
                    continue
                real = os.path.realpath(path)
                if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                    self._warn_once(path, "%s resolves to %s, outside %s; ignored", path, real, root)
                    continue
                name = Path(path).stem
                if name in self._vms:
                    self._warn_once(path, "%s: a VM named %s already exists; ignored", path, name)
                    continue
                log.info("%s: discovered at %s", name, path)
                self._discovered[name] = path
                known.add(path)
                self.add(name, path, labels)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # -- listen --
    def _bind(self, address: str) -> socket.socket:
        try:
            return self._bind_socket(address)
        except OSError as err:
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            raise VMConnectionError(f"listen {address}: {reason}") from err

    def _bind_socket(self, address: str) -> socket.socket:
        target = parse_address(address)
        if isinstance(target, tuple):
            family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
            sock = socket.create_server(target, family=family, backlog=128)
            host, port = sock.getsockname()[:2]
            self.listening.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        else:
            if _is_socket(target):
                os.unlink(target)  # a stale socket from an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(target)
                sock.listen(128)
            except BaseException:
                sock.close()
                raise
            self.listening.append(target)
        sock.setblocking(False)
        log.info("listening for VMs on %s", self.listening[-1])
        return sock

    async def _accept(self, server: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    sock, _peer = await loop.sock_accept(server)
                except OSError as err:
                    log.warning("accepting on %s failed: %s", address, err)
                    await asyncio.sleep(0.1)
                    continue
                self._dialled += 1
                temp = f"listen-{self._dialled}"
                conn = self._connection(name=temp, sock=sock, namer=self._namer(temp))
                log.info("%s: a VM dialled in on %s", temp, address)
                self._start(conn, self._run_dialled(conn))
        finally:
            if isinstance(parse_address(address), str):
                with contextlib.suppress(OSError):
                    os.unlink(address)

    def _namer(self, temp: str) -> Callable[[str | None], str]:
        def name(qname: str | None) -> str:
            final = temp
            if qname:
                final = qname if qname not in self._vms else f"{qname}-{temp.rsplit('-', 1)[1]}"
            conn = self._vms.pop(temp, None)
            if conn is not None:
                self._vms[final] = conn
            return final

        return name

    async def _run_dialled(self, conn: VMConnection) -> None:
        try:
            await conn.run()
        finally:
            if self._vms.get(conn.name) is conn:
                del self._vms[conn.name]
            self._tasks.pop(conn, None)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
