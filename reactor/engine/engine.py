"""The engine: events in, rules matched, runs started and driven step by step.

Events → :class:`~reactor.engine.bus.Bus` → :meth:`Engine.dispatch` (matcher, ``if``,
correlations over time (:mod:`reactor.engine.correlation`), threshold, mode, throttle)
→ a :class:`Run` per match, a task in the engine's TaskGroup → its steps in order.
A failing step, template or action fails that run (recorded in the journal), never the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from reactor.actions.action import Resource, StepOutcome, VMHandle
from reactor.engine.bus import Bus
from reactor.engine.clock import Clock, RealClock
from reactor.engine.correlation import Correlator
from reactor.engine.threshold import Thresholds
from reactor.engine.throttle import Throttles
from reactor.engine.view import RuleView, names_for
from reactor.errors import (
    ActionError,
    EventTimeout,
    ReactorError,
    StateError,
    StepAbandoned,
    TemplateError,
    VMConnectionError,
)
from reactor.model.catalog import Catalog, default_catalog
from reactor.model.event import Event
from reactor.model.runstate import EVENTS as RUNSTATE_EVENTS
from reactor.model.runstate import RunState
from reactor.rules.arguments import redact
from reactor.rules.matcher import Matcher
from reactor.rules.rule import Rule, RuleSet, Step

__all__ = ["ABANDON_GRACE", "Engine", "Run", "StaticVM", "StepAbandoned", "abandoned_actions", "tune_gc"]

log = logging.getLogger("reactor.engine.engine")

#: variables a run starts with (``vars.threshold`` of a threshold rule)
Vars = Mapping[str, Any]

Output = Callable[[dict[str, Any]], None]

class StaticVM:
    """A VM known only by name (replay, tests): status from events (reactor.model.runstate), no QMP connection."""

    def __init__(self, name: str, labels: Mapping[str, str] | None = None, status: str = "running") -> None:
        self._name = name
        self._labels = dict(labels or {})
        self.runstate = RunState(status)
        self.commands: list[tuple[str, dict[str, Any]]] = []

    @property
    def status(self) -> str:
        return self.runstate.status

    @status.setter
    def status(self, status: str) -> None:
        self.runstate = RunState(status)

    @property
    def name(self) -> str:
        return self._name

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def connected(self) -> bool:
        return False

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        self.commands.append((command, dict(arguments or {})))
        raise VMConnectionError(f"{self._name}: no QMP connection (replay)")


class _Waiter:
    __slots__ = ("fut", "match", "names", "vm")

    def __init__(self, names: frozenset[str], vm: str, match: Callable[[Event], bool] | None,
                 fut: asyncio.Future[Event]) -> None:
        self.names = names
        self.vm = vm
        self.match = match
        self.fut = fut

    def offer(self, event: Event) -> bool:
        if self.fut.done() or event.vm != self.vm or event.name not in self.names:
            return False
        try:
            ok = self.match is None or self.match(event)
        except Exception:
            ok = False
        if ok:
            self.fut.set_result(event)
        return ok


class Run:
    """One run of a rule for one event; also the :class:`ActionContext` its steps receive."""

    __slots__ = ("_event", "_log", "_rule", "_step", "_vars", "_vm", "engine", "event_id", "id", "outcome", "seq",
                 "status", "step_seq", "task")

    def __init__(self, engine: Engine, rule: Rule, event: Event, vm: VMHandle, run_id: int,
                 event_id: int | None, seq: int, preset: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self._rule = rule
        self._event = event
        self._vm = vm
        self.id = run_id
        self.event_id = event_id
        self.seq = seq                 # bus sequence of the triggering event
        self.step_seq = seq            # bus sequence when the previous step began
        self._step = 0
        self._vars: dict[str, Any] = dict(preset) if preset else {}   # vars.threshold of a threshold rule
        self.task: asyncio.Task[None] | None = None
        self.status = "pending"
        self.outcome: tuple[str, Any, str | None] | None = None   # (status, result, error) of the last step
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    # -- ActionContext ----------------------------------------------------------------------
    @property
    def event(self) -> Event:
        return self._event

    @property
    def vm(self) -> VMHandle:
        return self._vm

    @property
    def rule(self) -> str:
        return self._rule.name

    @property
    def run_id(self) -> int:
        return self.id

    @property
    def step(self) -> int:
        return self._step

    @property
    def vars(self) -> Mapping[str, Any]:
        return self._vars

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = logging.LoggerAdapter(logging.getLogger(f"reactor.run.{self._rule.name}"),
                                              {"rule": self._rule.name, "vm": self._vm.name, "run": self.id})
        return self._log

    @property
    def dry_run(self) -> bool:
        return self.engine.dry_run

    def now(self) -> float:
        return self.engine.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self.engine.clock.sleep(seconds)

    def vm_named(self, name: str) -> VMHandle:
        vm = self.engine.lookup_vm(name)
        if vm is None:
            raise ActionError(f"unknown VM {name!r}")
        return vm

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        self.engine.emit(name, data, vm=vm or self._vm.name, host=self._event.host)

    async def wait_for(self, name: str | list[str], *, match: Callable[[Event], bool] | None = None,
                       vm: str | None = None, timeout: float) -> Event:
        return await self.engine.wait_for(name, match=match, vm=vm or self._vm.name, timeout=timeout,
                                          since=self.step_seq)

    def resource(self, cls: type[Any]) -> Any:
        return self.engine.resource(cls)

    async def run_step(self, step: Any, *, label: str, timeout: float | None = None) -> StepOutcome:
        self.outcome = None
        await self._run_step(step, label=label, default_timeout=timeout)
        return StepOutcome(*self.outcome) if self.outcome is not None else StepOutcome("ok")

    # -- execution --------------------------------------------------------------------------
    async def execute(self) -> None:
        eng = self.engine
        rule = self._rule
        self.status = "running"
        error: str | None = None
        try:
            if rule.name in eng._durable:
                await eng.throttle_on_disk(rule.name)
            ran = False
            for step in rule.steps:
                self._step = step.index
                began = eng.seq
                ok = await self._run_step(step)
                self.step_seq = began   # the next step's wait_for sees events from here on
                if ok is None:   # skipped by its `when`
                    continue
                ran = True
                if not ok and step.on_error == "stop":
                    self.status = "failed"
                    break
            else:
                # every step skipped by `when`: nothing happened, and the record says so
                self.status = ("skipped" if not ran else
                               "dry-run" if eng.dry_run and self.status == "dry-run" else "ok")
        except asyncio.CancelledError:
            self.status = "cancelled"
            raise
        except Exception as err:  # a bug in reactor itself: record, never crash the engine
            self.status = "failed"
            error = f"internal error: {type(err).__name__}: {err}"
            log.exception("run %s of %s failed unexpectedly", self.id, rule.name)
        finally:
            eng.journal_end_run(self, error)
            eng.stats_run(rule.name, self.status)
            eng.run_finished(self)

    async def _run_step(self, step: Step, *, label: str | None = None,
                        default_timeout: float | None = None) -> bool | None:
        """Run one step: True when it succeeded, False when it failed, None when its ``when`` skipped it;
        ``label``: a step nested in the current one (recorded as ``LABEL:ACTION``)."""
        eng = self.engine
        spec = step.action
        started = eng.clock.now()
        t0 = time.perf_counter()
        args = step.args.static
        if step.when is not None or args is None:
            names = names_for(self._event, self._vm, self._rule.name, started, self._vars)
            if step.when is not None:
                try:
                    if not step.when.test(names):
                        eng.record_step(self, step, None, "skipped", None, None, started, 0.0, label)
                        return None
                except TemplateError as err:
                    return self._failed(step, None, f"when: {err}", started, t0, label=label)
            try:
                args = step.args.build(names)
            except TemplateError as err:
                return self._failed(step, None, str(err), started, t0, label=label)
        shown = step.args.shown if step.args.static is not None else redact(spec, args)
        if eng.dry_run and spec.mutating(args):
            eng.record_step(self, step, shown, "dry-run", None, None, started, 0.0, label)
            self.log.info("dry run: would run %s %s", spec.name, shown)
            return True
        attempts = step.retry.attempts if step.retry else 1
        timeout = step.timeout if step.timeout is not None else spec.timeout
        if timeout is None:
            timeout = default_timeout
        for attempt in range(1, attempts + 1):
            try:
                if spec.inline and timeout is None:   # awaited here: no task, no coroutine in between
                    try:
                        result = await spec.run(self, args)
                    except (asyncio.CancelledError, Exception):
                        raise
                    except BaseException as err:   # SystemExit and friends fail the step, as in _isolated
                        raise _raised(err) from err
                else:
                    result = await _isolated(spec.run, self, args, timeout, eng.stats,
                                             f"reactor[{self._vm.name}].run[{self._rule.name}]#{self.id}.{step.index}")
            except asyncio.CancelledError:
                eng.record_step(self, step, shown, "cancelled", None, "cancelled", started,
                                time.perf_counter() - t0, label)
                raise
            except Exception as err:
                msg = _describe(err, timeout)
                if attempt < attempts and step.retry is not None:
                    self.log.warning("%s failed (attempt %d/%d): %s", spec.name, attempt, attempts, msg)
                    await eng.clock.sleep(step.retry.delay(attempt))
                    continue
                return self._failed(step, shown, msg, started, t0, timed_out=isinstance(err, TimeoutError),
                                    label=label)
            if step.register:
                self._vars[step.register] = result
            eng.record_step(self, step, shown, "ok", result, None, started, time.perf_counter() - t0, label)
            return True
        raise AssertionError("unreachable")

    def _failed(self, step: Step, shown: Any, msg: str, started: float, t0: float, *,
                timed_out: bool = False, label: str | None = None) -> bool:
        eng = self.engine
        what = step.name if label is None else f"{label}:{step.name}"
        level = logging.ERROR if label is None else logging.WARNING
        if shown is None:
            self.log.log(level, "step %d (%s) failed: %s", self._step, what, msg)
        else:
            self.log.log(level, "step %d (%s) failed: %s; arguments: %s", self._step, what, msg, shown)
        eng.record_step(self, step, shown, "timeout" if timed_out else "failed", None, msg, started,
                        time.perf_counter() - t0, label)
        if label is not None:   # a nested step (a probe): its action decides what the failure means
            return False
        if self._event.name == "REACTOR_ACTION_FAILED":
            # a failure while handling a failure: reporting it again would loop forever
            self.log.warning("not emitting REACTOR_ACTION_FAILED for a run started by one")
            return False
        eng.emit("REACTOR_ACTION_FAILED", {"rule": self._rule.name, "step": step.index, "action": step.name,
                                           "error": msg}, vm=self._vm.name, host=self._event.host)
        return False


#: How long a run of a throttled rule waits for the journal to commit its throttle slot.
THROTTLE_SYNC_TIMEOUT = 2.0

#: How long an action gets to stop after its step timed out or its run was cancelled; then it is abandoned.
ABANDON_GRACE = 1.0

#: Actions that ignored cancellation, still running; kept referenced so they are not garbage-collected.
_abandoned: set[asyncio.Task[Any]] = set()


def abandoned_actions() -> list[asyncio.Task[Any]]:
    """Actions abandoned after ignoring cancellation that are still running (for shutdown and metrics)."""
    return [t for t in _abandoned if not t.done()]


def _raised(err: BaseException) -> ActionError:
    """The step failure for an action that raised SystemExit, KeyboardInterrupt or GeneratorExit."""
    return ActionError(f"action raised {type(err).__name__}: {err}")


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Carry on a run coroutine that was started eagerly and then suspended on ``yielded``.

    Mirrors what a Task does for a coroutine: wait for the future it yielded,
    then resume it; cancellation of this task is thrown into the coroutine.
    """
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                try:
                    await yielded
                except asyncio.CancelledError:
                    if not yielded.cancelled():
                        raise
                except Exception:
                    pass  # the coroutine reads the outcome from the future itself
            yielded = coro.send(None)
        except StopIteration:
            return
        except asyncio.CancelledError as err:
            try:
                yielded = coro.throw(err)
            except StopIteration:
                return


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so an abandoned action failing later is not "never retrieved"


async def _isolated(fn: Callable[[Any, Any], Awaitable[object]], ctx: Any, args: Any, timeout: float | None,
                    stats: Counter[str], name: str) -> object:
    """Await ``fn(ctx, args)`` in its own task so that a plugin cannot stall its run, shutdown, or the daemon.

    Past ``timeout`` (or when the run is cancelled) the action is cancelled; if it
    has not stopped ``ABANDON_GRACE`` seconds later it is abandoned (still
    referenced, counted in ``stats["steps_abandoned"]``) and the run goes on.
    ``SystemExit``/``KeyboardInterrupt`` from an action fail the step instead of
    stopping the daemon.  A plugin that blocks the event loop synchronously
    cannot be preempted by any of this.
    """
    async def call() -> object:
        try:
            return await fn(ctx, args)
        except (asyncio.CancelledError, Exception):
            raise
        except BaseException as err:
            raise _raised(err) from err

    task = asyncio.create_task(call(), name=name)
    task.add_done_callback(_retrieve)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(task)
    except BaseException as err:
        if not task.done():
            task.cancel()
            try:
                await asyncio.wait({task}, timeout=ABANDON_GRACE)
            finally:
                if not task.done():
                    _abandoned.add(task)
                    task.add_done_callback(_abandoned.discard)
                    stats["steps_abandoned"] += 1
                    log.error("%s ignored cancellation for %gs: abandoned (%d abandoned actions still running)",
                              name, ABANDON_GRACE, len(_abandoned))
            if not task.done() and isinstance(err, TimeoutError):
                raise StepAbandoned(f"timed out after {timeout:g}s; the action ignored cancellation and was "
                                    f"abandoned after {ABANDON_GRACE:g}s more") from err
        raise


def _describe(err: BaseException, timeout: float | None) -> str:
    if isinstance(err, StepAbandoned):
        return str(err)
    if isinstance(err, TimeoutError):
        if str(err):          # the action said what it waited for (wait_for, exec...)
            return str(err)
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    if isinstance(err, ReactorError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class Engine:
    """Matches events against a rule set and drives the runs."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        catalog: Catalog | None = None,
        clock: Clock | None = None,
        journal: Any = None,
        dry_run: bool = False,
        vms: Callable[[str], VMHandle | None] | None = None,
        labels: Callable[[str], Mapping[str, str]] | None = None,
        output: Output | None = None,
        bus: Bus | None = None,
        resources: Mapping[type[Resource], Resource] | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self.clock = clock or RealClock()
        self.journal = journal
        self.dry_run = dry_run
        self.output = output
        self.bus = bus if bus is not None else Bus()   # not `or`: an empty Bus is falsy (__len__)
        self._vms = vms
        self._static: dict[str, StaticVM] = {}
        self._labels = labels
        self._resources = dict(resources or {})
        self.throttles = Throttles(journal.record_throttle if journal is not None else None)
        self.thresholds = Thresholds()
        self.correlation = Correlator(self)
        self.set_rules(rules)
        self._tg: asyncio.TaskGroup | None = None
        self._stopping: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None   # set when the last run in flight ends (while draining)
        self._active: dict[tuple[str, str], list[Run]] = {}
        self._queued: dict[tuple[str, str], deque[tuple[Event, int | None, int, Vars | None]]] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._recent: dict[str, deque[tuple[int, Event]]] = {}
        self._subscribers: list[Callable[[Event], None]] = []
        self._run_ids = itertools.count(1)
        self.seq = 0
        self.runs_in_flight = 0
        #: Runs blocked in :meth:`wait_for` on an event that has not come (nor timed out) yet.
        self.waiting = 0
        self.stats: Counter[str] = Counter()
        self.run_outcomes: Counter[tuple[str, str]] = Counter()
        self.step_durations: dict[str, list[float]] = {}
        self._cond_errors = 0

    # -- setup ------------------------------------------------------------------------------
    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set atomically; runs in flight keep the rules they started with."""
        self.rules = rules
        self._by_name = {r.name: r for r in rules.rules}
        self.matcher = Matcher(rules.rules)
        self._inline = frozenset(
            r.name for r in rules.rules
            if all(st.action.inline and st.timeout is None and st.retry is None for st in r.steps)
        )
        # throttled rules whose steps do I/O: the slot a run takes is on disk before the
        # run acts, so a kill -9 right after (say) a `cont` cannot reopen the window
        # (the same for a pending `unless` match or a completed `count` that starts a run: its end is on disk)
        self._durable = frozenset(r.name for r in rules.rules if r.name not in self._inline
                                  and (r.throttle is not None or r.unless is not None or r.count is not None))
        self.throttles.keep_only({r.name for r in rules.rules})
        self.thresholds.keep_only({r.name for r in rules.rules if r.threshold is not None})
        self.correlation.set_rules(rules)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def resource(self, cls: type[Any]) -> Any:
        res = self._resources.get(cls)
        if res is None:
            raise ActionError(f"resource {cls.__name__} is not available (is it configured?)")
        return res

    def lookup_vm(self, name: str) -> VMHandle | None:
        if self._vms is not None:
            vm = self._vms(name)
            if vm is not None:
                return vm
        return self._static.get(name)

    def vm_for(self, name: str) -> VMHandle:
        vm = self.lookup_vm(name)
        if vm is None:
            labels = self._labels(name) if self._labels else {}
            vm = self._static[name] = StaticVM(name, labels)
        return vm

    # -- input ------------------------------------------------------------------------------
    def submit(self, event: Event) -> bool:
        """Put an event on the bus (sources call this); False if something was dropped."""
        return self.bus.put(event)

    def emit(self, name: str, data: Mapping[str, Any] | None, *, vm: str, host: str | None = None) -> None:
        obj = {"event": name, "data": dict(data or {}), "timestamp": _qmp_time(self.clock.now())}
        self.submit(self.catalog.make_event(obj, vm=vm, host=host))

    async def run(self, *, grace: float = 30.0) -> None:
        """Consume the bus until :meth:`stop` (or cancellation); runs live in this task group.

        After :meth:`stop`, queued events are not taken any more; runs in flight
        get ``grace`` seconds to finish, then the rest are cancelled (recorded).
        """
        self._stopping = asyncio.Event()
        bus = self.bus
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                while not self._stopping.is_set():
                    if not len(bus):
                        await bus.wait()
                        continue
                    for event in bus.take():
                        self.dispatch(event)
                    await asyncio.sleep(0)   # let the runs just started make progress
                await self._drain(grace)
            finally:
                self._tg = None

    def stop(self) -> None:
        """Stop taking events; :meth:`run` returns once runs finished (or were cancelled)."""
        if self._stopping is not None:
            self._stopping.set()
            self.bus.interrupt()

    async def _drain(self, grace: float) -> None:
        if self.runs_in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        if self.runs_in_flight:
            log.warning("stopping: cancelling %d run(s) still in flight", self.runs_in_flight)
            for runs in list(self._active.values()):
                for r in runs:
                    if r.task is not None:
                        r.task.cancel()

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, event: Event) -> None:
        """Match one event and start its runs (synchronously; runs continue as tasks)."""
        self.seq += 1
        seq = self.seq
        self.stats["events"] += 1
        if event.problems:
            self.stats["events_invalid"] += 1
        vm = self.vm_for(event.vm)
        if event.name in RUNSTATE_EVENTS and isinstance(vm, StaticVM):
            vm.runstate = vm.runstate.after(event.name, event.data)
        if self.runs_in_flight:
            # kept for wait_for, which sees the events after the run's trigger (from its second step on:
            # after the step began).  With no run in flight no run can ask for this one: a run started by
            # it or later comes after it (a match held by `unless` starts its run at the deadline's seq),
            # and a run queued behind one in flight (mode: queued) finds its events kept meanwhile.
            # (Keeping them all cost ~2 us per event in replay: 64 events per VM held.)
            recent = self._recent.get(event.vm)
            if recent is None:
                recent = self._recent[event.vm] = deque(maxlen=64)
            recent.append((seq, event))
        waiters = self._waiters.get(event.vm)
        if waiters:
            for w in list(waiters):
                if w.offer(event):
                    self.waiting -= 1
        for cb in self._subscribers:
            try:
                cb(event)
            except Exception:
                log.exception("event subscriber %r failed", cb)
        journal = self.journal
        event_id: int | None = None
        if journal is not None and journal.record_events == "all":
            event_id = self._journal_event(event)
        if event.name in self.correlation.cancelling:   # unless events (before the rules: never their own)
            self.correlation.cancel(event, vm)
        names: dict[str, Any] | None = None
        for rule in self.matcher.candidates(event):
            if rule.vms is not None and not rule.vms.matches(event.vm, vm.labels):
                continue
            if rule.match is not None and not rule.match(event.data):
                continue
            if rule.condition is not None:
                if names is None:
                    names = names_for(event, vm, rule.name, self.clock.now(), {})
                else:
                    names["rule"] = RuleView(rule.name)
                try:
                    if not rule.condition.test(names):
                        continue
                except TemplateError as err:
                    self._cond_errors += 1
                    if self._cond_errors <= 20 or self._cond_errors % 1000 == 0:
                        log.warning("%s: 'if' failed for %s from %s: %s (counts as no match)",
                                    rule.name, event.name, event.vm, err)
                    self.stats["condition_errors"] += 1
                    continue
            self.stats["matches"] += 1
            if event_id is None and journal is not None and journal.record_events == "matched":
                event_id = self._journal_event(event)
            preset: Vars | None = None
            if rule.correlated:
                preset = self.correlation.check(rule, event, vm, event_id)   # after → count → unless
                if preset is None:
                    continue
            if rule.threshold is not None:   # inline (as in _admit): a plain match costs no extra call
                crossing = self.thresholds.observe(rule.name, rule.threshold, event.vm, event.host, event.data,
                                                   self.clock.now())
                if crossing is None:   # counted; not run (not journaled either: it is not a run)
                    self.run_outcomes[(rule.name, "below_threshold")] += 1
                    continue
                preset = {**(preset or {}), "threshold": crossing.as_vars()}
            self._fire(rule, event, vm, event_id, seq, preset)
        if event.name in self.correlation.names:   # after events (after the rules: never its own)
            self.correlation.observe(event, vm)

    def _admit(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None, seq: int,
               preset: Vars | None) -> None:
        """A match that passed its correlations later (an ``unless`` deadline): ``threshold``, then throttle and
        mode (:meth:`_fire`), as :meth:`dispatch` does inline."""
        if rule.threshold is not None:
            crossing = self.thresholds.observe(rule.name, rule.threshold, event.vm, event.host, event.data,
                                               self.clock.now())
            if crossing is None:   # counted; not run (not journaled either: it is not a run)
                self.run_outcomes[(rule.name, "below_threshold")] += 1
                return
            preset = {**(preset or {}), "threshold": crossing.as_vars()}
        self._fire(rule, event, vm, event_id, seq, preset)

    def _journal_event(self, event: Event) -> int | None:
        try:
            return int(self.journal.record_event(event.name, event.vm, event.host, event.timestamp,
                                                 event.data, event.problems))
        except Exception:
            log.exception("journal: cannot record event")
            return None

    def _fire(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None, seq: int,
              preset: Vars | None = None) -> None:
        key = (rule.name, event.vm)
        active = self._active.get(key)
        if active:
            mode = rule.mode
            if mode == "single":
                self._not_run(rule, event, event_id, "dropped", "mode single: a run is in progress")
                return
            if mode == "parallel" and len(active) >= rule.max_parallel:
                self._not_run(rule, event, event_id, "dropped",
                              f"mode parallel: {len(active)} runs in progress already (max_parallel)")
                return
            if mode == "queued":
                q = self._queued.setdefault(key, deque())
                if len(q) >= rule.max_queued:
                    self._not_run(rule, event, event_id, "dropped", f"mode queued: {len(q)} runs queued already")
                    return
                if not self._throttle_ok(rule, event, event_id):
                    return
                q.append((event, event_id, seq, preset))
                self._output({"type": "queued", "rule": rule.name, "vm": event.vm, "event": event.name,
                              "time": self.clock.now()})
                return
            if mode == "restart":
                if not self._throttle_ok(rule, event, event_id):
                    return
                for r in active:
                    if r.task is not None:
                        r.task.cancel()
                self._start(rule, event, vm, event_id, seq, preset)
                return
        if not self._throttle_ok(rule, event, event_id):
            return
        self._start(rule, event, vm, event_id, seq, preset)

    def _throttle_ok(self, rule: Rule, event: Event, event_id: int | None) -> bool:
        t = rule.throttle
        if t is None:
            return True
        if self.throttles.allow(rule.name, t, t.key(event.vm, event.data, event.host), self.clock.now()):
            return True
        self._not_run(rule, event, event_id, "throttled", f"throttle: {t.max} per {t.within:g}s")
        return False

    def _not_run(self, rule: Rule, event: Event, event_id: int | None, outcome: str, why: str) -> None:
        self.run_outcomes[(rule.name, outcome)] += 1
        now = self.clock.now()
        if self.journal is not None:
            try:
                rid = self.journal.start_run(rule=rule.name, vm=event.vm, event_id=event_id,
                                             event_name=event.name, started=now, outcome=outcome)
                self.journal.end_run(rid, status=outcome, ended=now, error=why)
            except Exception:
                log.exception("journal: cannot record %s run", outcome)
        log.info("%s: %s for %s from %s (%s)", rule.name, outcome, event.name, event.vm, why)
        self._output({"type": outcome, "rule": rule.name, "vm": event.vm, "event": event.name, "reason": why,
                      "time": now})

    def _start(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None, seq: int,
               preset: Vars | None = None) -> None:
        now = self.clock.now()
        run_id: int
        if self.journal is not None:
            try:
                run_id = int(self.journal.start_run(rule=rule.name, vm=event.vm, event_id=event_id,
                                                    event_name=event.name, started=now))
                if preset is not None and preset.get("late"):   # an unless deadline that passed while down
                    self.journal.update_run(run_id, outcome="late")
            except Exception:
                log.exception("journal: cannot record run start")
                run_id = next(self._run_ids)
        else:
            run_id = next(self._run_ids)
        run = Run(self, rule, event, vm, run_id, event_id, seq, preset)
        self.runs_in_flight += 1
        self.stats["runs"] += 1
        if self.output is not None:
            self._output({"type": "match", "rule": rule.name, "vm": event.vm, "event": event.name,
                          "run": run_id, "time": now, "data": dict(event.data)})
        tg = self._tg
        if tg is None:
            raise StateError("Engine.dispatch needs Engine.run() or Engine.session() to be active")
        if rule.name in self._inline:
            # every step is inline: run it now, without a task or a loop turn (nothing
            # else runs meanwhile, so it is never "in progress" for mode checks); if
            # it suspends after all, it becomes an ordinary run carried on by a task
            coro = run.execute()
            try:
                yielded = coro.send(None)
            except StopIteration:
                return
            self._active.setdefault((rule.name, event.vm), []).append(run)
            run.task = tg.create_task(_resume(coro, yielded), name=f"reactor[{event.vm}].run[{rule.name}]#{run_id}")
            return
        self._active.setdefault((rule.name, event.vm), []).append(run)
        run.task = tg.create_task(run.execute(), name=f"reactor[{event.vm}].run[{rule.name}]#{run_id}")

    async def throttle_on_disk(self, rule: str) -> None:
        """Wait until the journal committed what is pending (the throttle slot a run just took).

        Bounded by ``THROTTLE_SYNC_TIMEOUT``; when the journal cannot write (disk
        full, read-only) the run goes on anyway: the window still holds in memory,
        only a restart before the journal recovers could reopen it (logged).
        """
        flush = getattr(self.journal, "flush", None)
        if flush is None or self.dry_run:
            return
        try:
            async with asyncio.timeout(THROTTLE_SYNC_TIMEOUT):
                ok = await flush()
        except TimeoutError:
            ok = False
        if not ok:
            log.warning("%s: the throttle window could not be written to the journal; running anyway "
                        "(a restart before the journal recovers would not see this run)", rule)

    def run_finished(self, run: Run) -> None:
        self.runs_in_flight -= 1
        if not self.runs_in_flight and self._idle is not None:
            self._idle.set()
        if not self._active and not self._queued:   # a run that ended inline, nothing else in progress
            return
        key = (run.rule, run.vm.name)
        active = self._active.get(key)
        if active is not None:
            with contextlib.suppress(ValueError):
                active.remove(run)
            if not active:
                del self._active[key]
        q = self._queued.get(key)
        if q:
            event, event_id, seq, preset = q.popleft()
            if not q:
                del self._queued[key]
            rule = self._by_name.get(run.rule) or run._rule
            if self._tg is not None:
                self._start(rule, event, run.vm, event_id, seq, preset)

    # -- waiting ----------------------------------------------------------------------------
    async def wait_for(self, name: str | list[str], *, match: Callable[[Event], bool] | None, vm: str,
                       timeout: float, since: int = 0) -> Event:
        names = frozenset([name] if isinstance(name, str) else name)
        for seq, ev in self._recent.get(vm, ()):
            if seq > since and ev.name in names:
                try:
                    if match is None or match(ev):
                        return ev
                except Exception:
                    continue
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(names, vm, match, fut)
        self._waiters.setdefault(vm, []).append(waiter)
        # counted as blocked until its event or its timeout resolves it, both synchronously (replay's
        # settle counts it with the clock's sleepers: a run just given its event is not blocked any more)
        self.waiting += 1

        def expire() -> None:
            if not fut.done():
                self.waiting -= 1
                fut.set_exception(EventTimeout(f"no {'/'.join(sorted(names))} from {vm} within {timeout:g}s"))

        timer = self.clock.call_at(self.clock.now() + timeout, expire)
        try:
            return await fut
        finally:
            timer.cancel()
            if not fut.done():   # the run was cancelled while it waited
                self.waiting -= 1
                fut.cancel()
            lst = self._waiters.get(vm)
            if lst is not None:
                with contextlib.suppress(ValueError):
                    lst.remove(waiter)
                if not lst:
                    del self._waiters[vm]

    # -- records ----------------------------------------------------------------------------
    def record_step(self, run: Run, step: Step, args: Any, status: str, result: Any, error: str | None,
                    started: float, duration: float, label: str | None = None) -> None:
        durations = self.step_durations.get(step.name)
        if durations is None:
            durations = self.step_durations[step.name] = []
        durations.append(duration)
        if len(durations) > 4096:
            del durations[:2048]
        if status == "dry-run" and label is None:
            run.status = "dry-run"
        if label is None:
            index, action = step.index, step.name
        else:
            index, action = run.step, f"{label}:{step.name}"
            run.outcome = (status, result, error)
        if self.journal is not None:
            try:
                self.journal.record_step(run.id, index=index, action=action, args=args, status=status,
                                         result=result, error=error, started=started, duration=duration)
            except Exception:
                log.exception("journal: cannot record step")
        if self.output is None:
            return
        self._output({"type": "step", "rule": run.rule, "vm": run.vm.name, "event": run.event.name, "run": run.id,
                      "step": index, "action": action, "args": args, "status": status,
                      "result": result, "error": error, "time": started})

    def journal_end_run(self, run: Run, error: str | None) -> None:
        if self.journal is None:
            return
        try:
            self.journal.end_run(run.id, status=run.status, ended=self.clock.now(), error=error)
        except Exception:
            log.exception("journal: cannot record run end")

    def stats_run(self, rule: str, status: str) -> None:
        self.run_outcomes[(rule, status)] += 1

    def _output(self, record: dict[str, Any]) -> None:
        if self.output is not None:
            try:
                self.output(record)
            except Exception:
                log.exception("output callback failed")

    # -- sessions (replay, tests) -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def session(self) -> Any:
        """Own a task group for runs without consuming the bus (replay drives dispatch itself)."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                self._tg = None

    def drain_bus(self) -> int:
        """Dispatch whatever is queued on the bus now; the number dispatched."""
        n = 0
        while len(self.bus):
            for event in self.bus.take():
                self.dispatch(event)
                n += 1
        return n


def _qmp_time(now: float) -> dict[str, int]:
    secs = int(now)
    return {"seconds": secs, "microseconds": int((now - secs) * 1_000_000)}


def tune_gc() -> None:
    """Freeze what startup allocated and collect generation 0 less often.

    The event path allocates many short-lived objects and few cycles; with the
    default threshold (700) the collector runs thousands of times a second under
    load and walks the long-lived catalog, rules and modules each time.  Frozen,
    those are never walked again (measured by the journal benchmark: 100k
    events/s sustained with ``(50000, 20, 20)``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
