"""The bus on its own: fair limits and refills for backpressure, batches sized by time."""

from __future__ import annotations

import asyncio
import time

from reactor.engine.bus import Bus
from reactor.model.event import Event


def ev(vm: str, i: int = 0) -> Event:
    return Event("RTC_CHANGE", {"offset": i}, 0.0, vm, None, i)


async def test_room_is_the_read_ahead_or_a_share_of_the_total_and_refills_wake_the_source() -> None:
    bus = Bus(per_vm=1000, total=100, read_ahead=32, refill=8, min_share=4)
    assert bus.room("a") == 32
    for i in range(32):
        bus.put(ev("a", i))
    assert bus.room("a") == 0
    for vm in "bcde":  # five VMs queued: each may have total/5 = 20
        bus.put(ev(vm))
    assert bus.limit() == 20 and bus.room("a") == -12 and bus.room("b") == 19
    waiter = bus.wait_room("a")
    assert bus.wait_room("a") is waiter and not waiter.done()
    took = 0
    while not waiter.done():
        batch = bus.take()
        assert batch
        took += sum(1 for e in batch if e.vm == "a")
    # woken once "a" had room for `refill` events under the limit of that moment
    assert bus.depth("a") <= bus.limit() - 8 and took == 32 - bus.depth("a")
    assert bus.wait_room("a").done()  # room already: done at once
    assert not bus.dropped


async def test_batches_shrink_when_the_consumer_is_slow_and_idle_time_does_not_count() -> None:
    bus = Bus(batch=256, budget=0.005, min_batch=16)
    for i in range(100_000):
        bus.put(ev(f"vm{i % 64}", i))
    assert len(bus.take()) == 256  # nothing measured yet
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        pass  # the consumer spends 50 ms dispatching 256 events: ~0.2 ms each
    assert 16 <= len(bus.take()) <= 25  # about 5 ms / 0.2 ms
    for _ in range(500):  # taken at once now: cheap events (a moving average: it takes a few batches)
        if bus.batch_size() == 256:
            break
        bus.take()
    assert bus.batch_size() == 256
    while len(bus):
        bus.take()
    before = bus.batch_size()
    waiting = asyncio.ensure_future(bus.wait())
    await asyncio.sleep(0.1)  # idle: not counted as dispatching time
    bus.put(ev("vm0"))
    await waiting
    assert len(bus.take()) == 1 and bus.batch_size() == before
