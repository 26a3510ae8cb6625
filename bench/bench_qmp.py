"""Benchmarks for the QMP layer, against a fleet of fake QMP servers in another process.

    .venv/bin/python bench/bench_qmp.py [--vms 1000] [--events 300] [--round-trips 3000]

Measures, in this (reactor) process:

* RSS with ``--vms`` connections up and idle;
* events/s from all VMs through VMConnection (reader, status tracking,
  ``make_event`` from the catalog when present) into a counting ``on_event``:
  each VM is told to storm ``--events`` events at once; wall time and this
  process's CPU time are reported;
* ``execute()`` round-trip time against a raw asyncio + orjson QMP client on
  the same fake, and the difference (the cost the ``qmp`` action adds).

The targets (issue 3): >= 100,000 events/s with 1,000 VMs on one core,
<= 150 MB RSS with 1,000 idle VMs, <= 50 us execute overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fakeqmp  # noqa: E402

from reactor.model.event import Event  # noqa: E402
from reactor.sources.fleet import Fleet  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def raw_round_trips(path: str, count: int) -> list[float]:
    """Round trips of a minimal client: asyncio streams + orjson, no library."""
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    writer.write(b'{"execute":"qmp_capabilities"}')
    await reader.readline()
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        writer.write(orjson.dumps({"execute": "query-status", "id": i}))
        while True:
            reply = orjson.loads(await reader.readline())
            if reply.get("id") == i:
                break
        times.append(time.perf_counter() - t0)
    writer.close()
    return times


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    base_rss = rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-qmp-") as tmp:
        fakes = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "tests" / "fakeqmp.py"),
            tmp,
            str(args.vms),
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert fakes.stdout is not None
            await fakes.stdout.readline()  # "ready"
            await run(args, tmp, base_rss)
        finally:
            fakes.terminate()
            await fakes.wait()


async def run(args: argparse.Namespace, tmp: str, base_rss: float) -> None:
    counted = 0
    connected = 0
    target = 0
    all_connected = asyncio.Event()
    all_counted = asyncio.Event()

    def on_event(event: Event) -> None:
        nonlocal counted, connected
        if event.name == "RTC_CHANGE":
            counted += 1
            if counted == target:
                all_counted.set()
        elif event.name == "REACTOR_VM_CONNECTED":
            connected += 1
            if connected == args.vms:
                all_connected.set()

    vms: list[tuple[str, str, dict[str, str]]] = [(f"vm-{i}", f"{tmp}/vm-{i}.qmp", {}) for i in range(args.vms)]
    t0 = time.perf_counter()
    make_event = fakeqmp._stand_in if args.stand_in else fakeqmp.make_event
    print(f"make_event: {'stand-in' if args.stand_in else make_event}")
    async with Fleet(make_event=make_event, on_event=on_event, vms=vms) as fleet:
        async with asyncio.timeout(120):
            await all_connected.wait()
        print(f"connect {args.vms} VMs: {time.perf_counter() - t0:.2f} s")
        await asyncio.sleep(1.0)
        print(f"RSS: {rss_mb():.1f} MB with {args.vms} idle VMs connected (before: {base_rss:.1f} MB)")

        conns = list(fleet)
        for rnd in range(args.rounds):
            counted = 0
            target = args.vms * args.events
            all_counted.clear()
            cpu0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(c.execute("x-storm", {"count": args.events}) for c in conns))
            async with asyncio.timeout(300):
                await all_counted.wait()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            print(
                f"storm {rnd + 1}: {target} events from {args.vms} VMs in {wall:.2f} s: "
                f"{target / wall:,.0f} events/s wall, {target / cpu:,.0f} events per CPU-second"
            )
        print(f"RSS after storms: {rss_mb():.1f} MB")

        conn = conns[0]
        n = args.round_trips
        for _ in range(200):
            await conn.execute("query-status")
        for attempt in range(3):  # alternate, to share the machine's noise fairly
            ours = []
            cpu0 = time.process_time()
            for _ in range(n):
                t = time.perf_counter()
                await conn.execute("query-status")
                ours.append(time.perf_counter() - t)
            cpu_ours = (time.process_time() - cpu0) / n * 1e6
            cpu0 = time.process_time()
            raw = await raw_round_trips(f"{tmp}/vm-1.qmp", n)
            cpu_raw = (time.process_time() - cpu0) / n * 1e6
            m_ours, m_raw = statistics.median(ours) * 1e6, statistics.median(raw) * 1e6
            print(
                f"execute round trip {attempt + 1}: wall median {m_ours:.1f} us via VMConnection, "
                f"{m_raw:.1f} us raw (+{m_ours - m_raw:.1f}); client CPU per call {cpu_ours:.1f} us vs "
                f"{cpu_raw:.1f} us raw (+{cpu_ours - cpu_raw:.1f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300, help="events per VM per storm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=3000)
    parser.add_argument("--stand-in", action="store_true", help="a minimal make_event instead of the catalog's")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main(parser.parse_args()))
