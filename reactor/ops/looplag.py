"""Event-loop lag: how late the loop runs a timer, and the stalls past a threshold.

Everything reactor does (reading QMP, matching, running steps, writing to
brokers) shares one event loop, so one callback that blocks it (a plugin
calling ``time.sleep`` or a blocking library, a huge synchronous
computation) delays every VM.  Such a block cannot be prevented from inside
the loop, but it can be seen: :class:`LoopLag` sleeps ``interval`` seconds
at a time and measures how much later than asked it wakes up.  A lag above
``threshold`` is a *stall*: counted, logged as a warning with its length,
and passed to ``on_stall``.

::

    lag = LoopLag(interval=0.1, threshold=0.25)
    tg.create_task(lag.run(), name="reactor.ops.looplag")
    ...
    lag.last, lag.max, lag.stalls

The monitor costs one timer wake-up per ``interval`` (10 a second by
default), nothing per event.  A stall is reported when the loop gets back
control, so its length is exact but it is known only after the fact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["LoopLag"]

log = logging.getLogger(__name__)


class LoopLag:
    """Measures the event loop's lag; :meth:`run` is the long-lived task."""

    __slots__ = ("interval", "last", "max", "on_stall", "samples", "stalled_seconds", "stalls", "threshold")

    def __init__(self, *, interval: float = 0.1, threshold: float = 0.25,
                 on_stall: Callable[[float], None] | None = None) -> None:
        if interval <= 0 or threshold <= 0:
            raise ValueError("interval and threshold must be positive")
        self.interval = interval
        self.threshold = threshold
        self.on_stall = on_stall
        #: Lag (seconds) of the latest sample.
        self.last = 0.0
        #: Largest lag seen since start (or :meth:`reset_max`).
        self.max = 0.0
        #: Samples taken.
        self.samples = 0
        #: Samples whose lag exceeded ``threshold``.
        self.stalls = 0
        #: Sum of the lag of those samples.
        self.stalled_seconds = 0.0

    def observe(self, lag: float) -> None:
        """Record one sample (``run`` calls it; public for tests and other clocks)."""
        lag = max(0.0, lag)
        self.samples += 1
        self.last = lag
        if lag > self.max:
            self.max = lag
        if lag > self.threshold:
            self.stalls += 1
            self.stalled_seconds += lag
            log.warning("the event loop was blocked for %.3fs (threshold %gs): every VM waited; "
                        "a plugin or action doing blocking work?", lag, self.threshold)
            if self.on_stall is not None:
                try:
                    self.on_stall(lag)
                except Exception:
                    log.exception("loop lag: on_stall failed")

    def reset_max(self) -> float:
        """Return the largest lag so far and start again from the latest sample."""
        peak, self.max = self.max, self.last
        return peak

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        interval = self.interval
        while True:
            asked = loop.time()
            await asyncio.sleep(interval)
            self.observe(loop.time() - asked - interval)
