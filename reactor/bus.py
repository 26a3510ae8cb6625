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

Quiet VMs first: a VM whose queue was empty when its event arrived goes to
the front of the round-robin, so it is served by the next :meth:`take`
instead of waiting behind every flooding VM (the "new flows first" rule of
fair queueing).  A flooding VM never empties its queue, so it cannot use
this to get ahead; it keeps its turn in the rotation.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from .event import Event

__all__ = ["Bus"]


class Bus:
    def __init__(self, *, per_vm: int = 10_000, total: int = 200_000, batch: int = 256) -> None:
        self.per_vm = per_vm
        self.total = total
        self.batch = batch
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
        if not n_ready:
            return out
        share = max(1, self.batch // n_ready)
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
            if len(out) >= self.batch:
                break
        if not self._size:
            self._wakeup.clear()
        return out

    async def wait(self) -> None:
        """Return when events are queued (or :meth:`interrupt` was called)."""
        if not self._size:
            self._wakeup.clear()
            await self._wakeup.wait()

    def interrupt(self) -> None:
        """Wake a waiter without an event (used to stop the consumer)."""
        self._wakeup.set()

