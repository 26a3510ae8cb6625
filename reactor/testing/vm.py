"""A fake QMP VM for action tests: canned answers, recorded commands, QEMU-like errors.

::

    vm = FakeVM("web-1", status="io-error")
    vm.respond("query-block", [{"device": "d0", "io-status": "nospace", ...}])
    vm.fail("cont", "GenericError", "Resetting the Virtual Machine is required")
    ...
    assert vm.commands == [("query-block", {})]

Out of the box it answers ``query-status`` and ``query-name`` from its state,
and ``stop``/``cont`` change ``status`` and emit ``STOP``/``RESUME`` (to the
engine when used with :func:`reactor.testing.run_rules`, so ``qmp: cont``
then ``wait_for: RESUME`` works).  Any other command is answered as QEMU
answers an unknown one: ``CommandNotFound``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reactor.errors import VMCommandError, VMConnectionError

__all__ = ["FakeVM", "Responder"]

#: A canned answer: a value, an exception to raise, or a (possibly async) function of the arguments.
Responder = Any | BaseException | Callable[[dict[str, Any]], Any] | Callable[[dict[str, Any]], Awaitable[Any]]


class FakeVM:
    """Implements :class:`reactor.plugin.VMHandle` without QEMU."""

    def __init__(self, name: str = "vm0", *, labels: Mapping[str, str] | None = None, status: str = "running",
                 connected: bool = True, responses: Mapping[str, Responder] | None = None) -> None:
        self._name = name
        self._labels = dict(labels or {})
        self.status = status
        self._connected = connected
        self._responses: dict[str, Responder] = dict(responses or {})
        #: Every command received, in order: ``(command, arguments)``.
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self._on_event: Callable[[str, dict[str, Any]], None] | None = None

    # -- VMHandle ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def connected(self) -> bool:
        return self._connected

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float = 10.0) -> Any:
        args = dict(arguments or {})
        if not self._connected:
            raise VMConnectionError(f"{self._name}: not connected")
        self.commands.append((command, args))
        if command in self._responses:
            answer = self._responses[command]
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):
                answer = answer(args)
                if inspect.isawaitable(answer):
                    answer = await answer
            return answer
        if command == "query-status":
            return {"status": self.status, "running": self.status == "running", "singlestep": False}
        if command == "query-name":
            return {"name": self._name}
        if command == "stop":
            self.status = "paused"
            self._event("STOP", {})
            return {}
        if command == "cont":
            self.status = "running"
            self._event("RESUME", {})
            return {}
        raise VMCommandError(command, "CommandNotFound", f"The command {command} has not been found")

    # -- setting it up -------------------------------------------------------------------
    def respond(self, command: str, answer: Responder) -> None:
        """Answer ``command`` with ``answer`` (a value, an exception, or a function of the arguments)."""
        self._responses[command] = answer

    def fail(self, command: str, error_class: str = "GenericError", desc: str = "failed") -> None:
        """Answer ``command`` with a QMP error, as QEMU does."""
        self._responses[command] = VMCommandError(command, error_class, desc)

    def disconnect(self) -> None:
        """From now on every command raises :class:`~reactor.errors.VMConnectionError`."""
        self._connected = False

    def called(self, command: str) -> list[dict[str, Any]]:
        """The arguments of every ``command`` received."""
        return [a for c, a in self.commands if c == command]

    def attach(self, on_event: Callable[[str, dict[str, Any]], None] | None) -> None:
        """Where the VM's own events (``STOP``, ``RESUME``) go; the harness sets it."""
        self._on_event = on_event

    def _event(self, name: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(name, data)
