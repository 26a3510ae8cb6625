"""Clocks: the real one for the daemon, a virtual one for replay and tests.

The virtual clock's time is set by the events fed through it; sleepers wake
when it advances past their deadline, in deadline order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

__all__ = ["Clock", "RealClock", "VirtualClock"]


class Clock:
    """The engine's time source."""

    virtual = False

    def now(self) -> float:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def monotonic(self) -> float:
        return time.monotonic()


class RealClock(Clock):
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock(Clock):
    """Time moves only by :meth:`advance`; sleeping waits for it."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting: set[asyncio.Future[None]] = set()

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
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def wake_due(self, until: float) -> bool:
        """Set the time to the earliest deadline <= until and wake its sleepers; False if none."""
        deadline = self.next_deadline()
        if deadline is None or deadline > until:
            return False
        if deadline != float("inf"):
            self._now = max(self._now, deadline)
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
