"""Run one action, outside any rule, against a fake VM on an instant virtual clock.

::

    async with ActionHarness(vm=FakeVM("web-1"), event=make_event("STOP", vm="web-1")) as h:
        result = await h.run(GUARD, {"min_free": "1G"})
        assert h.vm.commands == [("query-block", {})]
        assert [e.name for e in h.emitted] == []

Arguments given as a mapping are converted and checked exactly as at rule
load (a wrong one raises :class:`~reactor.errors.RuleError`).  The resources
the action declares are started on first use with a :class:`FakeDaemon` and
closed when the harness closes.  ``sleep()`` advances the virtual clock at
once; ``wait_for()`` looks at the events given with ``events=`` or
:meth:`ActionHarness.feed` (and those the fake VM emits) and, when none
matches, advances the clock by the timeout and raises :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from reactor.actions.action import ActionSpec, JournalHandle, Resource, StepOutcome, VMHandle
from reactor.engine.clock import Clock
from reactor.errors import ActionError, EventTimeout, JournalError, RuleError, StateError
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.rules.arguments import convert
from reactor.testing.events import make_event, qmp_time
from reactor.testing.vm import FakeVM

__all__ = ["ActionHarness", "FakeDaemon", "InstantClock", "convert_args", "run_action"]

R = TypeVar("R", bound=Resource)


class InstantClock(Clock):
    """A virtual clock whose ``sleep`` moves time forward at once."""

    virtual = True

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


class FakeDaemon:
    """A :class:`reactor.plugin.DaemonContext` for tests: config sections from a mapping, tasks in a TaskGroup."""

    def __init__(self, *, sections: Mapping[str, Any] | None = None, host: str = "test-host",
                 dry_run: bool = False, clock: Clock | None = None) -> None:
        self._sections = dict(sections or {})
        self._host = host
        self._dry_run = dry_run
        self.clock = clock or InstantClock()
        #: Events put on the bus by resources and sources.
        self.emitted: list[Event] = []
        self._subscribers: list[Callable[[Event], object]] = []
        self._stack = contextlib.AsyncExitStack()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def config(self) -> Any:
        return None

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def section(self, name: str) -> Any:
        return self._sections.get(name)

    @property
    def host(self) -> str:
        return self._host

    @property
    def journal(self) -> JournalHandle:
        raise JournalError("no journal in tests (FakeDaemon)")

    def emit(self, event: Event) -> None:
        self.emitted.append(event)
        for cb in list(self._subscribers):
            cb(event)

    def subscribe(self, callback: Callable[[Event], object]) -> None:
        self._subscribers.append(callback)

    def start_task(self, coro: Awaitable[None], name: str) -> None:
        if self._tg is None:
            raise StateError("FakeDaemon: use it as 'async with' to start tasks")
        self._tasks.append(self._tg.create_task(coro, name=name))  # type: ignore[arg-type]

    async def __aenter__(self) -> Self:
        self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        for t in self._tasks:
            t.cancel()
        self._tg = None
        await self._stack.aclose()   # the body's own exception propagates as itself, not in a group


def convert_args(spec: ActionSpec, args: Mapping[str, Any] | Any) -> Any:
    """The action's argument dataclass for ``args`` (a mapping as a rule would write it, or an instance)."""
    if dataclasses.is_dataclass(args) and not isinstance(args, type):
        value = args
    else:
        raw = dict(typing.cast(Mapping[str, Any], args or {}))
        try:
            value = convert(spec.args, raw)
        except ValueError as err:
            raise RuleError(None, f"{spec.name}: {err}") from err
    if spec.check is not None:
        try:
            spec.check(value)
        except ValueError as err:
            raise RuleError(None, f"{spec.name}: {err}") from err
    return value


class _Context:
    """The ActionContext an :class:`ActionHarness` gives."""

    def __init__(self, h: ActionHarness, rule: str, run_id: int, step: int, vars: Mapping[str, Any]) -> None:
        self._h = h
        self._rule = rule
        self._run_id = run_id
        self._step = step
        self._vars = dict(vars)
        self._log = logging.LoggerAdapter(logging.getLogger(f"reactor.run.{rule}"),
                                          {"rule": rule, "vm": h.vm.name, "run": run_id})

    @property
    def event(self) -> Event:
        return self._h.event

    @property
    def vm(self) -> VMHandle:
        return self._h.vm

    @property
    def rule(self) -> str:
        return self._rule

    @property
    def run_id(self) -> int:
        return self._run_id

    @property
    def step(self) -> int:
        return self._step

    @property
    def vars(self) -> Mapping[str, Any]:
        return self._vars

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._log

    @property
    def dry_run(self) -> bool:
        return self._h.daemon.dry_run

    def now(self) -> float:
        return self._h.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self._h.clock.sleep(seconds)

    def vm_named(self, name: str) -> VMHandle:
        vm = self._h.vms.get(name)
        if vm is None:
            raise ActionError(f"unknown VM {name!r}")
        return vm

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        obj = {"event": name, "data": dict(data or {}), "timestamp": qmp_time(self._h.clock.now())}
        self._h.emitted.append(default_catalog().make_event(obj, vm=vm or self._h.vm.name, host=self.event.host))

    async def wait_for(self, name: str | list[str], *, match: Callable[[Event], bool] | None = None,
                       vm: str | None = None, timeout: float) -> Event:
        names = {name} if isinstance(name, str) else set(name)
        want_vm = vm or self._h.vm.name
        await asyncio.sleep(0)
        for i, ev in enumerate(self._h.upcoming):
            if ev.name in names and ev.vm == want_vm and (match is None or match(ev)):
                del self._h.upcoming[i]
                return ev
        await self._h.clock.sleep(timeout)
        raise EventTimeout(f"no {'/'.join(sorted(names))} from {want_vm} within {timeout:g}s")

    def resource(self, cls: type[R]) -> R:
        res = self._h.resources.get(cls)
        if res is None:
            raise ActionError(f"resource {cls.__name__} is not available (is it configured?)")
        return res  # type: ignore[return-value]

    async def run_step(self, step: Any, *, label: str, timeout: float | None = None) -> StepOutcome:
        """A nested step (``Steps`` argument): its action run with its arguments, bounded by its timeout."""
        spec = step.action
        try:
            args = step.args.build({"vars": self._vars, "event": self.event})
            if self.dry_run and spec.mutating(args):
                return StepOutcome("dry-run")
            limit = step.timeout if step.timeout is not None else spec.timeout if spec.timeout is not None else timeout
            async with asyncio.timeout(limit):
                result = await spec.run(self, args)
        except TimeoutError:
            return StepOutcome("timeout", None, f"{label}:{spec.name} timed out")
        except Exception as err:
            return StepOutcome("failed", None, str(err))
        if step.register:
            self._vars[step.register] = result
        return StepOutcome("ok", result)


class ActionHarness:
    """Runs actions as a rule step would, without an engine; ``async with`` it."""

    def __init__(self, *, vm: VMHandle | None = None, event: Event | None = None,
                 vms: Iterable[VMHandle] = (), events: Iterable[Event] = (),
                 sections: Mapping[str, Any] | None = None, dry_run: bool = False,
                 clock: Clock | None = None, rule: str = "test") -> None:
        self.vm: VMHandle = vm or FakeVM(event.vm if event is not None else "vm0")
        self.event = event or make_event("STOP", vm=self.vm.name)
        self.clock = clock or InstantClock(self.event.timestamp)
        self.daemon = FakeDaemon(sections=sections, dry_run=dry_run, clock=self.clock)
        self.vms: dict[str, VMHandle] = {v.name: v for v in [self.vm, *vms]}
        #: Events ``wait_for`` can receive, oldest first.
        self.upcoming: list[Event] = list(events)
        #: Events the action emitted.
        self.emitted: list[Event] = []
        self.resources: dict[type[Resource], Resource] = {}
        self.rule = rule
        self._runs = 0
        for v in self.vms.values():
            if isinstance(v, FakeVM):
                v.attach(self._vm_event(v.name))

    def _vm_event(self, vm: str) -> Callable[[str, dict[str, Any]], None]:
        def put(name: str, data: dict[str, Any]) -> None:
            self.feed(make_event(name, data, vm=vm, at=self.clock.now()))
        return put

    def feed(self, event: Event) -> None:
        """An event ``wait_for`` may receive."""
        self.upcoming.append(event)

    async def __aenter__(self) -> Self:
        await self.daemon.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.aclose()
        finally:
            await self.daemon.__aexit__(et, e, tb)

    async def aclose(self) -> None:
        """Close the resources started so far (newest first)."""
        for res in reversed(list(self.resources.values())):
            await res.aclose()
        self.resources.clear()

    async def start_resource(self, cls: type[R]) -> R:
        """Start (once) and return the harness's instance of ``cls``."""
        res = self.resources.get(cls)
        if res is None:
            res = cls(self.daemon)
            await res.start()
            self.resources[cls] = res
        return res  # type: ignore[return-value]

    async def run(self, spec: ActionSpec, args: Mapping[str, Any] | Any = None, *,
                  vars: Mapping[str, Any] | None = None, step: int = 0, timeout: float | None = 30.0) -> Any:
        """Run ``spec`` once with ``args``; its result, or what it raised.

        ``timeout`` is real time: a guard against a hanging action in a test.
        """
        value = convert_args(spec, args)
        for cls in spec.resources:
            await self.start_resource(cls)
        self._runs += 1
        ctx = _Context(self, self.rule, self._runs, step, vars or {})
        async with asyncio.timeout(timeout):
            return await spec.run(ctx, value)


async def run_action(spec: ActionSpec, args: Mapping[str, Any] | Any = None, *, vm: VMHandle | None = None,
                     event: Event | None = None, events: Iterable[Event] = (),
                     vars: Mapping[str, Any] | None = None, sections: Mapping[str, Any] | None = None,
                     dry_run: bool = False, timeout: float | None = 30.0) -> Any:
    """Run one action once in a fresh :class:`ActionHarness`; its result (or what it raised)."""
    async with ActionHarness(vm=vm, event=event, events=events, sections=sections, dry_run=dry_run) as h:
        return await h.run(spec, args, vars=vars, timeout=timeout)
