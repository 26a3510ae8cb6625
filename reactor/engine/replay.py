"""Replay: recorded events through the rules on a virtual clock.

Time comes from the events' timestamps: a ``sleep: 5s`` in a rule wakes when
an event 5 s later arrives (or at the end of the input), and throttle windows
count in event time.  A line that is not JSON or not a QMP event is reported
with its line number and skipped.

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
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.errors import EventError

__all__ = ["YIELD_EVERY", "ReplayResult", "replay"]

#: Events replayed between two turns of the event loop (the journal's flusher runs in them).
YIELD_EVERY = 256


@dataclass(slots=True)
class ReplayResult:
    events: int = 0
    errors: list[str] = field(default_factory=list)


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
        if engine.runs_in_flight <= clock.sleepers():
            # one more turn so freshly scheduled callbacks land, then re-check
            await asyncio.sleep(0)
            if engine.runs_in_flight <= clock.sleepers() and not len(engine.bus):
                return
        spins += 1
        if spins > 200:
            await asyncio.sleep(0.001)   # a run waits on real I/O (exec, HTTP): give it real time


async def _advance(engine: Engine, clock: VirtualClock, until: float) -> None:
    while clock.wake_due(until):
        await _settle(engine, clock)
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
            try:
                event = make(obj, vm=vm, host=host)
            except EventError as err:
                result.errors.append(f"{source}:{lineno}: {err}")
                continue
            if first:
                clock.set(event.timestamp)
                first = False
            await _advance(engine, clock, event.timestamp)
            engine.dispatch(event)
            result.events += 1
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
    return result
