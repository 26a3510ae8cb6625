"""Clocks: the real one for the daemon, a virtual one for replay and tests.

The virtual clock's time is set by the events fed through it; sleepers wake
when it advances past their deadline, in deadline order.  Both clocks also
run plain callbacks at a time (:meth:`Clock.call_at`: the deadlines of
``unless`` matches): the real one through the event loop, the virtual one
in deadline order with its sleepers as time advances.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

__all__ = ["Clock", "RealClock", "Timer", "VirtualClock"]


class Timer:
    """A callback scheduled by :meth:`Clock.call_at`; :meth:`cancel` before it runs to drop it."""

    __slots__ = ("_handle", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self._handle is not None:
            self._handle.cancel()

    def _run(self) -> None:
        if not self.cancelled:
            self.cancelled = True   # runs once
            self.callback()


class Clock:
    """The engine's time source."""

    virtual = False

    def now(self) -> float:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` (synchronously, from the event loop) once the time is ``when``."""
        raise NotImplementedError


class RealClock(Clock):
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        timer._handle = asyncio.get_running_loop().call_later(max(0.0, when - time.time()), timer._run)
        return timer


class VirtualClock(Clock):
    """Time moves only by :meth:`advance`; sleeping waits for it."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting: set[asyncio.Future[None]] = set()
        self._timers: list[tuple[float, int, Timer]] = []

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self._now + seconds, next(self._seq), fut))
        self._waiting.add(fut)
        try:
            await fut
        finally:
            self._waiting.discard(fut)

    def sleepers(self) -> int:
        """How many sleepers wait on this clock now."""
        return len(self._waiting)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        timers = self._timers
        if not timers:   # replay asks before every event: the common case first
            return heap[0][0] if heap else None
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return heap[0][0] if heap else None
        return min(heap[0][0], timers[0][0]) if heap else timers[0][0]

    def wake_due(self, until: float) -> bool:
        """Set the time to the earliest deadline <= until, run its timers and wake its sleepers; False if none.

        Timers due at the same time run in the order they were set, before the sleepers wake.
        """
        deadline = self.next_deadline()
        if deadline is None or deadline > until:
            return False
        if deadline != float("inf"):
            self._now = max(self._now, deadline)
        while self._timers and self._timers[0][0] <= deadline:
            _, _, timer = heapq.heappop(self._timers)
            timer._run()
        while self._heap and self._heap[0][0] <= deadline:
            _, _, fut = heapq.heappop(self._heap)
            self._waiting.discard(fut)
            if not fut.done():
                fut.set_result(None)
        return True

    def set(self, when: float) -> None:
        """Move time forward to ``when`` (never backwards)."""
        if when > self._now:
            self._now = when
