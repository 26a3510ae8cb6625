"""Benchmark the journal: the cost of a recording call, and sustained write throughput.

Run: ``.venv/bin/python bench/bench_journal.py [--seconds 5] [--rate 100000]``

* ``record``: ns per call of record_event / start_run / record_step / end_run,
  median of 30 rounds of 20,000 calls (rounds include the list growth and the
  cyclic GC work those calls cause; the buffer is cleared between rounds).
* ``flush``: rows/s of one flush of 200,000 pending events (the writer alone).
* ``sustained``: an asyncio producer records events at ``--rate`` per second
  (in slices of 1 ms) for ``--seconds`` while the flusher writes; reports the
  rows written per second, pending/dropped at the end and the worst event-loop
  lag seen by a 10 ms ticker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reactor.ops.journal import Journal

__all__ = ["main"]

DATA = {
    "device": "drive-virtio-disk0",
    "node-name": "#block123",
    "operation": "write",
    "action": "stop",
    "nospace": False,
    "reason": "Input/output error",
}


def _per_call(j: Journal, fn: Callable[[], object], rounds: int = 30, per: int = 20_000) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per):
            fn()
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(per):
            pass
        base = time.perf_counter() - t0
        samples.append((dt - base) / per * 1e9)
        j._pending.clear()  # keep memory steady between rounds (benchmark only)
    return statistics.median(samples)


def bench_record(directory: Path) -> None:
    j = Journal(directory / "record.db", max_pending=10**9, batch_rows=10**9)
    j.open_sync()
    calls: dict[str, Callable[[], object]] = {
        "record_event": lambda: j.record_event("BLOCK_IO_ERROR", "vm1", None, 1.0, DATA),
        "start_run": lambda: j.start_run(rule="r", vm="vm1", event_id=1, event_name="X", started=1.0),
        "record_step": lambda: j.record_step(
            1, index=0, action="qmp", args=DATA, status="ok", result=None, error=None, started=1.0, duration=0.1
        ),
        "end_run": lambda: j.end_run(1, status="ok", ended=1.0),
        "(empty lambda)": lambda: None,
    }
    for gc_mode in ("gc default", "gc.freeze()"):
        if gc_mode == "gc.freeze()":
            gc.collect()
            gc.freeze()
        costs = {name: _per_call(j, fn) for name, fn in calls.items()}
        print(f"record [{gc_mode}]: " + ", ".join(f"{k} {v:.0f} ns" for k, v in costs.items()))
    gc.unfreeze()
    j.close_sync()


def bench_flush(directory: Path, rows: int = 200_000) -> None:
    j = Journal(directory / "flush.db", max_pending=10**9, batch_rows=10**9)
    j.open_sync()
    for i in range(rows):
        j.record_event("BLOCK_IO_ERROR", "vm1", None, float(i), DATA)
    t0 = time.perf_counter()
    assert j.flush_sync()
    dt = time.perf_counter() - t0
    print(f"flush: {rows} events in one transaction: {dt:.2f} s = {rows / dt:,.0f} rows/s")
    j.close_sync()


async def bench_sustained(directory: Path, seconds: float, rate: int) -> None:
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - t0 - 0.01)

    j = Journal(directory / "sustained.db")
    async with j, asyncio.TaskGroup() as tg:
        tick = tg.create_task(ticker(), name="bench.ticker")
        per_slice = max(rate // 1000, 1)
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                n = min(per_slice, due - sent)
                for _ in range(n):
                    j.record_event("BLOCK_IO_ERROR", "vm1", None, now, DATA)
                sent += n
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        s = j.stats
        tick.cancel()
        print(
            f"sustained: offered {sent / elapsed:,.0f} events/s for {elapsed:.1f} s; written "
            f"{s.written / elapsed:,.0f} rows/s; pending {s.pending}, dropped {s.dropped}; "
            f"flushes {s.flushes}, flush latency avg {s.flush_latency_avg * 1e3:.0f} ms; "
            f"worst loop lag {lag * 1e3:.0f} ms"
        )
        t0 = time.perf_counter()
    print(f"  then aclose wrote the rest ({s.pending} rows) in {time.perf_counter() - t0:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bench_record(directory)
        bench_flush(directory)
        for rate in sorted({args.rate // 4, args.rate // 2, args.rate}):
            asyncio.run(bench_sustained(directory / str(rate), args.seconds, rate))


if __name__ == "__main__":
    main()
