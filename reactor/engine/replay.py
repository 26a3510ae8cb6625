"""Replay: recorded events through the rules on a virtual clock.

Time comes from the events' timestamps: a ``sleep: 5s`` in a rule wakes when
an event 5 s later arrives (or at the end of the input), and throttle windows
count in event time.  A line that is not JSON or not a QMP event is reported
with its line number and skipped.

Integrations: :class:`ReplayServices` starts the resources the rules' steps use
(the HTTP session of ``webhook``, the brokers of ``mqtt`` from the config given
with ``-c``, plugins' resources), so a replay really re-sends a recorded
incident to a test broker or webhook.  Whatever cannot work is refused before
the first event with one :class:`ReplayRefused` line naming the rule and the
step: an ``mqtt`` step without a configured broker, a broker that does not
answer, a resource that does not start.  In replay the MQTT event mirror and
the MQTT source stay off (only the rules' steps publish).

Replay reads as fast as the rules run and never waits on I/O, so it lets the
journal write as it goes: it gives the event loop a turn every
``YIELD_EVERY`` events (the journal's flusher hands a full batch to its
writer thread then), and when the pending rows reach the journal's high-water mark
it waits for the writer (backpressure) rather than let rows be dropped.  Only
a journal that writes nothing for ``journal_wait`` seconds (a stalled disk)
makes replay go on without it; what is dropped then is counted in the
journal's stats (``reactor replay`` exits 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from reactor.actions.action import Resource
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.errors import EventError, ReactorError, ReplayRefused
from reactor.model.event import Event
from reactor.rules.rule import RuleSet, Step

__all__ = ["YIELD_EVERY", "ReplayRefused", "ReplayResult", "ReplayServices", "replay"]

log = logging.getLogger(__name__)

#: How long replay waits for a configured MQTT broker to accept the connection, before the first event.
CONNECT_TIMEOUT = 10.0
#: How long replay waits at the end for the brokers to acknowledge what the steps published.
FLUSH_TIMEOUT = 10.0

#: Events replayed between two turns of the event loop (the journal's flusher runs in them).
YIELD_EVERY = 256


@dataclass(slots=True)
class ReplayResult:
    events: int = 0
    errors: list[str] = field(default_factory=list)
    #: matches by their outcome: the final status of the runs (ok, failed, dry-run, cancelled...) and what
    #: happened to the matches that did not run (throttled, dropped, counted, pending, no_after...)
    runs: dict[str, int] = field(default_factory=dict)
    #: runs that started (the matches that ran; not those throttled, dropped, counted, held or cancelled)
    started: int = 0
    #: messages the steps published that no broker acknowledged by the end
    undelivered: list[str] = field(default_factory=list)

    @property
    def failed_runs(self) -> int:
        # only runs that failed: "cancelled" is also a pending `unless` match a later event cancelled (by
        # design), or a run that `mode: restart` replaced
        return self.runs.get("failed", 0)


def _where(rule: str, step: Step) -> str:
    return f"{step.pos}: rule {rule!r} step {step.index} ({step.name})"


class ReplayServices:
    """The resources a replay's steps use, started before the first event (a ``DaemonContext`` for them)."""

    def __init__(self, config: Any, *, dry_run: bool, tg: asyncio.TaskGroup) -> None:
        self._config = config
        self._dry_run = dry_run
        self._tg = tg
        self.engine: Engine | None = None
        self.resources: dict[type[Resource], Resource] = {}
        self._started: list[Resource] = []
        self._pending: list[Callable[[Event], None]] = []

    # -- DaemonContext ----------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self._config

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def section(self, name: str) -> Any:
        return None if self._config is None else self._config.section(name)

    @property
    def host(self) -> str:
        return str(getattr(self._config, "host", None) or socket.gethostname())

    @property
    def journal(self) -> Any:
        # outboxes stay in memory: a replay leaves no messages to resend in any journal
        raise ReactorError("replay: resources get no journal")

    def emit(self, event: Event) -> None:
        if self.engine is not None:
            self.engine.submit(event)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        if self.engine is not None:
            self.engine.subscribe(callback)
        else:
            self._pending.append(callback)

    def start_task(self, coro: Awaitable[None], name: str) -> None:
        self._tg.create_task(coro, name=name)  # type: ignore[arg-type]

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        for cb in self._pending:
            engine.subscribe(cb)
        self._pending.clear()

    # -- lifecycle --------------------------------------------------------------------------
    def _needed(self, rules: RuleSet) -> dict[type[Resource], tuple[str, Step]]:
        """Each resource class a step will use, with the first step using it (dry runs skip mutating steps)."""
        out: dict[type[Resource], tuple[str, Step]] = {}
        for rule in rules.rules:
            for step in rule.steps:
                if self._dry_run and _skipped_in_dry_run(step):
                    continue
                for cls in step.action.resources:
                    out.setdefault(cls, (rule.name, step))
        return out

    async def start(self, rules: RuleSet) -> None:
        """Start what the rules need; :class:`ReplayRefused` (one line) when something cannot work."""
        from reactor.integrations.mqtt import MqttHub

        for cls, (rule, step) in self._needed(rules).items():
            if cls is MqttHub:
                res: Resource = await self._start_mqtt(rules)
            else:
                res = cls(self)
                self._started.append(res)
                try:
                    await res.start()
                except Exception as err:  # a resource's start: refuse with its reason
                    raise ReplayRefused(f"{_where(rule, step)}: cannot start {cls.__name__}: {err}") from err
            self.resources[cls] = res

    async def _start_mqtt(self, rules: RuleSet) -> Resource:
        from reactor.integrations.mqtt import MqttHub, broker_errors

        brokers: dict[str, Any] = dict(getattr(self._config, "mqtt", None) or {})
        how = "no config was given (-c CONFIG)" if self._config is None else \
            f"the config {self._config.path} has no mqtt: section"
        errors, used = broker_errors(rules.rules, brokers,
                                     none=f"{how}; configure a (test) broker, or replay with --dry-run",
                                     skip=_skipped_in_dry_run if self._dry_run else None)
        if errors:
            raise ReplayRefused(str(errors[0]))
        # replay publishes only what steps publish: no event mirror, no MQTT source, no presence topic
        quiet = {n: dataclasses.replace(b, publish_events=None, subscribe=()) for n, b in brokers.items() if n in used}
        hub = MqttHub(self, brokers=quiet)
        self._started.append(hub)
        try:
            await hub.start()
        except ReactorError as err:
            raise ReplayRefused(f"replay: {err}") from err
        for name, link in hub.links.items():
            deadline = time.monotonic() + CONNECT_TIMEOUT
            # connected, or the first attempt failed (refused, bad credentials): no point retrying for a replay
            while not link.connected.is_set() and link.last_error is None and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await link.connected.wait()
            if not link.connected.is_set():
                b = brokers[name]
                why = f": {link.last_error}" if link.last_error else ""
                raise ReplayRefused(f"replay: MQTT broker {name!r} at {b.host}:{b.port} "
                                    f"did not accept a connection{why}")
        return hub

    async def flush(self) -> list[str]:
        """Wait (a bounded time) for the brokers to acknowledge what was published; what was not, per broker."""
        from reactor.integrations.mqtt import MqttHub

        hub = self.resources.get(MqttHub)
        if not isinstance(hub, MqttHub):
            return []

        def pending() -> dict[str, int]:
            return {name: int(st.get("queued", 0)) + int(st.get("inflight", 0)) for name, st in hub.stats().items()}

        deadline = time.monotonic() + FLUSH_TIMEOUT
        # the hub's stats are its public view of the outboxes, and it has no "drained" event to wait on
        while any(pending().values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        out = []
        for name, n in pending().items():
            dropped = int(hub.stats()[name].get("dropped", 0))
            if n or dropped:
                link = hub.links[name]
                why = f" ({link.last_error})" if link.last_error else ""
                out.append(f"mqtt[{name}]: {n} messages not acknowledged within {FLUSH_TIMEOUT:g}s, "
                           f"{dropped} dropped{why}")
        return out

    async def aclose(self) -> None:
        for res in reversed(self._started):
            try:
                await res.aclose()
            except Exception:  # closing: log, go on with the rest
                log.exception("replay: closing %s failed", type(res).__name__)
        self._started.clear()


def _skipped_in_dry_run(step: Step) -> bool:
    """Whether a dry run skips this step (a mutating action with static arguments, or one always mutating)."""
    static = step.args.static
    try:
        return bool(step.action.mutating(static))
    except Exception:  # a mutating() that needs rendered arguments: the step may run
        return False


async def _settle(engine: Engine, clock: VirtualClock) -> None:
    """Let runs progress until each is done or waits on the virtual clock."""
    if not engine.runs_in_flight and not len(engine.bus):
        return   # the common case: every run finished inline
    spins = 0
    while True:
        await asyncio.sleep(0)
        if engine.drain_bus():
            spins = 0
            continue
        if engine.runs_in_flight <= clock.sleepers() + engine.waiting:
            # one more turn so freshly scheduled callbacks land, then re-check
            await asyncio.sleep(0)
            if engine.runs_in_flight <= clock.sleepers() + engine.waiting and not len(engine.bus):
                return
        spins += 1
        if spins > 200:
            await asyncio.sleep(0.001)   # a run waits on real I/O (exec, HTTP): give it real time


async def _advance(engine: Engine, clock: VirtualClock, until: float) -> None:
    while clock.wake_due(until):
        await _settle(engine, clock)
    if until != math.inf:   # the end of the input: what still runs goes on at the last time, not at infinity
        clock.set(until)


async def replay(lines: Iterable[str | bytes], engine: Engine, clock: VirtualClock, *,
                 source: str = "<events>", journal_wait: float = 60.0) -> ReplayResult:
    """Feed QMP event lines through ``engine``; ``engine.clock`` must be ``clock``.

    With a journal (``engine.journal``), waits for it when it falls behind,
    unless it wrote nothing for ``journal_wait`` seconds.
    """
    result = ReplayResult()
    make = engine.catalog.make_event
    first = True
    journal = engine.journal
    wait_for_room = getattr(journal, "wait_for_room", None)
    high = int(journal.high_water) if wait_for_room is not None else 0
    turn = YIELD_EVERY
    async with engine.session():
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                result.errors.append(f"{source}:{lineno}: not JSON: {err}")
                continue
            if not isinstance(obj, dict):
                result.errors.append(f"{source}:{lineno}: not a QMP event (expected a JSON object)")
                continue
            vm = obj.get("vm", "vm0")
            host = obj.get("host")
            if not isinstance(vm, str) or (host is not None and not isinstance(host, str)):
                result.errors.append(f"{source}:{lineno}: 'vm' and 'host' must be strings")
                continue
            if "timestamp" not in obj:   # the virtual clock is the events' time: now() would jump it years ahead
                result.errors.append(f"{source}:{lineno}: a replayed event needs its 'timestamp'"
                                     " ({\"seconds\": ..., \"microseconds\": ...})")
                continue
            try:
                event = make(obj, vm=vm, host=host)
            except EventError as err:
                result.errors.append(f"{source}:{lineno}: {err}")
                continue
            if first:
                clock.set(event.timestamp)
                first = False
            if clock.wake_due(event.timestamp):   # _advance, without a coroutine when nothing is due
                await _settle(engine, clock)
                await _advance(engine, clock, event.timestamp)
            else:
                clock.set(event.timestamp)
            engine.dispatch(event)
            result.events += 1
            if engine.runs_in_flight or len(engine.bus):
                await _settle(engine, clock)
            if wait_for_room is not None and journal.pending >= high:
                await wait_for_room(stall=journal_wait)
                turn = YIELD_EVERY
            else:
                turn -= 1
                if not turn:
                    turn = YIELD_EVERY
                    await asyncio.sleep(0)   # the journal's flusher gets its turn
        await _advance(engine, clock, math.inf)
        await _settle(engine, clock)
    runs: dict[str, int] = {}
    for (_rule, status), n in engine.run_outcomes.items():
        runs[status] = runs.get(status, 0) + n
    result.runs = runs
    result.started = engine.stats["runs"]
    return result
