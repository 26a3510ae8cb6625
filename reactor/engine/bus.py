"""The event bus: bounded per-VM queues, served round-robin.

Sources put events on the bus synchronously; the engine takes them in
batches.  Events of one VM stay in arrival order.  Overflow policy
(stated, counted, never silent): each VM's queue holds at most ``per_vm``
events and the whole bus at most ``total``.  When the VM's own queue is full,
its oldest queued event is dropped.  When the whole bus is full, the oldest
event of the VM with the longest queue (the *hog*, tracked as events are put)
is dropped, if that queue is longer than the putting VM's; otherwise the
putting VM's oldest, or, if it has nothing queued, the new event.  So a
flooding VM loses its own backlog, never a quieter VM's events.  Drops are
counted per VM (the VM whose event was dropped).

Shedding at the source: QMP connections ask :meth:`shed` before building
each event; while a VM's queue is full they drop that VM's *newest* events
instead, unparsed into typed events (counted the same way).  In a storm the
reader's CPU then goes to the events that will be handled, not to events the
bus would drop a moment later.

Backpressure (flow control at the source): QMP connections also ask
:meth:`room` before handing on more events, and stop reading a VM's socket
while it is <= 0 (the events wait in the socket and in QEMU, unread and
unparsed); :meth:`wait_room` tells them when to read again.  A VM may have
:meth:`limit` events queued: ``read_ahead``, or ``per_vm``, or ``total``
shared among the VMs with events queued, whichever is least (at least
``min_share``); it reads again once it has room for ``refill`` events (or
half its limit, if that is less).  Small refills spread the reading over the
dispatching: VMs that drain at the same pace do not all read a large batch in
the same loop iteration.  So in a storm the reading keeps pace with the
dispatching, and no CPU goes to reading and parsing events only to drop them;
the queues stay short (memory), since the backlog waits in the sockets.
``put`` still enforces ``per_vm`` and ``total`` (sources without
backpressure, and events read while a command is in flight, see
reactor/sources/qmp.py).

Batches sized by time: :meth:`take` hands out up to ``batch`` events, fewer
when the consumer's previous batches took long (it measures the time from
one take to the next, idle waits excluded, per event taken, and sizes the
next batch to last about ``budget`` seconds, at least ``min_batch`` events).
The consumer dispatches a batch without yielding, so this bounds how long
one loop iteration lasts when events are expensive (journaled runs), and so
how long a STOP read meanwhile waits; cheap events still go 256 at a time.

Quiet VMs first: a VM whose queue was empty when its event arrived goes to
the front of the round-robin, so it is served by the next :meth:`take`
instead of waiting behind every flooding VM (the "new flows first" rule of
fair queueing).  A flooding VM never empties its queue, so it cannot use
this to get ahead; it keeps its turn in the rotation.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque

from reactor.model.event import Event

__all__ = ["Bus"]


class Bus:
    def __init__(self, *, per_vm: int = 10_000, total: int = 200_000, batch: int = 256,
                 read_ahead: int = 32, refill: int = 16, min_share: int = 16,
                 budget: float = 0.005, min_batch: int = 16) -> None:
        self.per_vm = per_vm
        self.total = total
        self.batch = batch
        self.read_ahead = read_ahead
        self.refill = refill
        self.min_share = min_share
        self.budget = budget
        self.min_batch = min_batch
        self._cost = 0.0  # seconds of loop time per event taken (a moving average)
        self._last_take = 0.0
        self._last_n = 0  # events the last take handed out (0: none, or the consumer waited since)
        self._waiters: dict[str, asyncio.Future[None]] = {}  # VMs whose source waits for room
        self._queues: dict[str, deque[Event]] = {}
        self._ready: deque[str] = deque()
        self._size = 0
        self._wakeup = asyncio.Event()
        self.dropped: Counter[str] = Counter()
        self.put_count = 0
        self._hog = ""  # the VM with the longest queue, as far as puts have seen

    def __len__(self) -> int:
        return self._size

    def depth(self, vm: str) -> int:
        q = self._queues.get(vm)
        return len(q) if q else 0

    def limit(self) -> int:
        """How many events a VM with backpressure may have queued now (see the module docstring)."""
        share = self.total // (len(self._queues) or 1)
        return min(self.read_ahead, self.per_vm, max(self.min_share, share))

    def room(self, vm: str) -> int:
        """How many more events ``vm``'s source may hand on before it should stop reading (<= 0: stop)."""
        q = self._queues.get(vm)
        return self.limit() - (len(q) if q else 0)

    def batch_size(self) -> int:
        """How many events the next :meth:`take` hands out at most."""
        if not self._cost:
            return self.batch
        return max(self.min_batch, min(self.batch, int(self.budget / self._cost)))

    def _resume_mark(self) -> int:
        limit = self.limit()
        return limit - max(1, min(limit // 2, self.refill))

    def wait_room(self, vm: str) -> asyncio.Future[None]:
        """A future done once ``vm`` has room for ``refill`` events again (or half its limit, if less)."""
        fut = self._waiters.get(vm)
        if fut is not None and not fut.done():
            return fut
        fut = asyncio.get_running_loop().create_future()
        q = self._queues.get(vm)
        if q is None or len(q) <= self._resume_mark():
            fut.set_result(None)
        else:
            self._waiters[vm] = fut
        return fut

    def shed(self, vm: str) -> bool:
        """Whether a source should drop ``vm``'s next event before even building it (counted as a drop).

        True while that VM's queue is full, or while the whole bus is full and this VM has the
        longest queue: then :meth:`put` would only drop an event of the same VM, so a storm
        costs the reader no parsing into typed events and no queue churn.
        """
        q = self._queues.get(vm)
        if q is not None and (len(q) >= self.per_vm or (self._size >= self.total and vm == self._hog)):
            self.dropped[vm] += 1
            return True
        return False

    def put(self, event: Event) -> bool:
        """Queue an event; False when the event (or an older one of its VM) was dropped."""
        self.put_count += 1
        vm = event.vm
        q = self._queues.get(vm)
        if q is None:
            q = self._queues[vm] = deque()
        ok = True
        n = len(q)
        if n >= self.per_vm or self._size >= self.total:
            hq = self._queues.get(self._hog) if n < self.per_vm else None
            if hq is not None and len(hq) > max(n, 1):
                hq.popleft()  # the hog pays (it keeps at least one event: it stays in the rotation)
                self.dropped[self._hog] += 1
                self._size -= 1
            else:
                self.dropped[vm] += 1
                if not q:
                    return False
                q.popleft()  # the VM stays in the rotation: it is there already, its queue is not empty
                self._size -= 1
                ok = False
        if not n:
            self._ready.appendleft(vm)  # quiet VMs first (see the module docstring)
        q.append(event)
        if n >= len(self._queues.get(self._hog) or ()):
            self._hog = vm
        self._size += 1
        self._wakeup.set()
        return ok

    def take(self) -> list[Event]:
        """Up to ``batch`` events, a fair share from each VM with events queued."""
        out: list[Event] = []
        ready = self._ready
        n_ready = len(ready)
        now = time.monotonic()
        if self._last_n:
            cost = (now - self._last_take) / self._last_n
            self._cost = cost if not self._cost else 0.8 * self._cost + 0.2 * cost
        self._last_take = now
        self._last_n = 0
        if not n_ready:
            return out
        batch = self.batch_size()
        share = max(1, batch // n_ready)
        waiters = self._waiters
        mark = self._resume_mark() if waiters else 0
        for _ in range(n_ready):
            vm = ready.popleft()
            q = self._queues[vm]
            n = min(share, len(q))
            for _ in range(n):
                out.append(q.popleft())
            self._size -= n
            if q:
                ready.append(vm)
            else:
                del self._queues[vm]
            if waiters and len(q) <= mark and vm in waiters:
                fut = waiters.pop(vm)
                if not fut.done():
                    fut.set_result(None)
            if len(out) >= batch:
                break
        if not self._size:
            self._wakeup.clear()
        self._last_n = len(out)
        return out

    async def wait(self) -> None:
        """Return when events are queued (or :meth:`interrupt` was called)."""
        if not self._size:
            self._last_n = 0  # the time until the next take is idle, not dispatching
            self._wakeup.clear()
            await self._wakeup.wait()

    def interrupt(self) -> None:
        """Wake a waiter without an event (used to stop the consumer)."""
        self._wakeup.set()

