"""The fleet benchmark (issue 3): a daemon-shaped reactor against 1,000 fake VMs.

    .venv/bin/python bench/bench_fleet.py [--vms 1000] [--repeat 5] [--quick] [--journal on]
    .venv/bin/python bench/bench_fleet.py --latency-only --rates 2000,5000,10000 [--journal on]

The fake QMP servers (tests/fakeqmp.py) run in a child process on the other
CPUs; reactor (Fleet -> Bus -> Engine with rules like the shipped ones, the
catalog's make_event; no journal, or with ``--journal on`` a real Journal in a
temporary directory recording every event, run and step, ``events: all``, its
writer thread sharing CPU 0) runs in this process, pinned to CPU 0.
It measures, and prints the median of ``--repeat`` runs where it repeats:

1. RSS with ``--vms`` connections up and idle (target <= 150 MB);
2. storm throughput: every VM writes ``--events`` events at once
   (RTC_CHANGE, which no rule matches: the cost of reading, parsing,
   ``make_event``, the bus and the matcher); events/s until the engine has
   dispatched them all (target >= 100,000/s); bus drops are reported;
3. a bounded storm: ``--big-storm`` events per VM at once, with the bus
   bounds set to ``per_vm=1000, total=50000``: peak RSS growth and the drops
   the overflow policy counted (drop the putting VM's oldest event);
4. event -> action start at ``--rate`` events/s, or at each of ``--rates``
   (target p99 <= 1 ms at 10,000/s, journal on): the child paces
   BLOCK_IO_ERROR events round-robin over the VMs, a rule starts a probe
   action that records ``now - event timestamp`` (QMP timestamps: microsecond
   resolution, same host clock); also how busy reactor's process kept its CPU
   (process CPU time / wall time of the paced run, the journal's writer thread
   included) and its CPU time per event over its idle cost (measured for 2 s
   before the paced runs, VMs connected and quiet); with the journal on, the rows it
   wrote and dropped and its flushes; ``--latency-only`` skips 2, 3 and 5;
5. the ``qmp`` action's cost: a rule's ``qmp: query-status`` step duration
   (as the engine measures it) against a raw asyncio + orjson round trip on
   the same fake (target <= 50 us more).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fakeqmp  # type: ignore[import-not-found]  # noqa: E402

from reactor.actions.action import ActionContext, action  # noqa: E402
from reactor.actions.qmp import QMP, QmpArgs  # noqa: E402
from reactor.actions.registry import Registry, builtin_registry  # noqa: E402
from reactor.engine.engine import Engine, tune_gc  # noqa: E402
from reactor.errors import ActionError  # noqa: E402
from reactor.model.catalog import default_catalog  # noqa: E402
from reactor.model.event import Event  # noqa: E402
from reactor.ops.journal import Journal  # noqa: E402
from reactor.rules.loader import load_rules_text  # noqa: E402
from reactor.sources.fleet import Fleet  # noqa: E402

RULES = """
rules:
  - name: resume-after-write-error
    on: BLOCK_IO_ERROR
    match: {action: stop, operation: write, nospace: {ne: true}}
    mode: parallel
    max_parallel: 1000
    actions:
      - probe: {}
  - name: reset-query
    on: RESET
    actions:
      - qmp: query-status
  - name: notify-watchdog
    on: WATCHDOG
    actions:
      - log: "watchdog {{ vm.name }}"
  - name: notify-shutdown
    on: SHUTDOWN
    match: {guest: true}
    actions:
      - log: "shutdown {{ vm.name }}"
  - name: reconcile
    on: REACTOR_VM_CONNECTED
    match: {status: io-error}
    actions:
      - qmp: cont
"""

LATENCIES: list[float] = []


@dataclass(frozen=True, slots=True)
class ProbeArgs:
    """The probe takes no arguments."""


@action("probe", mutating=False)
async def PROBE(ctx: ActionContext, args: ProbeArgs) -> None:
    """Record how long after the event's QMP timestamp this action started."""
    LATENCIES.append(time.time() - ctx.event.timestamp)


def registry() -> Registry:
    reg = builtin_registry()
    reg.add(PROBE)
    return reg


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpus() -> tuple[set[int], set[int]]:
    """(reactor's CPU, the fakes' CPUs)."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return set(), set()
    if len(mine) < 2:
        return set(mine), set(mine)
    return {mine[0]}, set(mine[1:])


# --- the child: fake VMs --------------------------------------------------------------------


async def serve(directory: str, count: int) -> None:
    """Serve ``count`` fakes; on stdin, ``pace RATE SECONDS`` emits paced BLOCK_IO_ERROR events."""
    fakes = [fakeqmp.FakeQMP(Path(directory) / f"vm-{i}.qmp", name=f"vm-{i}", status="running") for i in range(count)]
    for fake in fakes:
        await fake.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    data = {"device": "", "node-name": "d0", "operation": "write", "action": "stop", "reason": "bench"}
    while line := await reader.readline():
        cmd, *rest = line.decode().split()
        if cmd == "pace":
            rate, seconds = float(rest[0]), float(rest[1])
            sent, i, t0 = 0, 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds:
                due = int(elapsed * rate)
                while sent < due:
                    fakes[i % count].emit("BLOCK_IO_ERROR", data)
                    i += 1
                    sent += 1
                await asyncio.sleep(0.0005)
            print(f"paced {sent}", flush=True)


# --- the parent: reactor ----------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: str, child: asyncio.subprocess.Process) -> None:
        self.args = args
        self.tmp = tmp
        self.child = child
        self.catalog = default_catalog()
        self.rules = load_rules_text([("bench.yaml", RULES)], catalog=self.catalog, registry=registry())
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.fleet: Fleet | None = None
        self.journal = Journal(Path(tmp) / "journal.db", record_events="all") if args.journal == "on" else None
        self.engine = Engine(self.rules, catalog=self.catalog, vms=self._vm, journal=self.journal)
        self.engine.subscribe(self._on_event)

    def _vm(self, name: str) -> Any:
        return self.fleet.get(name) if self.fleet is not None else None

    def _submit(self, event: Event) -> None:
        self.engine.submit(event)

    def _on_event(self, event: Event) -> None:
        if event.name == "REACTOR_VM_CONNECTED":
            self.connected += 1
            if self.connected == self.args.vms:
                self.all_connected.set()

    def _all_seen(self, events0: int, dropped0: int, target: int) -> Callable[[], bool]:
        """Whether ``target`` events since the marks were dispatched or dropped by the bus."""

        def check() -> bool:
            return self.engine.stats["events"] - events0 + sum(self.engine.bus.dropped.values()) - dropped0 >= target

        return check

    async def until(self, cond: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if cond():
                    return
                await asyncio.sleep(0.005)

    async def run(self) -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            if self.journal is not None:
                await stack.enter_async_context(self.journal)
            res = await self._run()
        if self.journal is not None:
            st = self.journal.stats
            res["journal"] = {"written": st.written, "dropped": st.dropped, "write_errors": st.write_errors,
                              "flushes": st.flushes, "flush_latency_avg_ms": st.flush_latency_avg * 1e3}
        return res

    async def _run(self) -> dict[str, Any]:
        args = self.args
        res: dict[str, Any] = {}
        vms: list[tuple[str, str, dict[str, str]]] = [
            (f"vm-{i}", f"{self.tmp}/vm-{i}.qmp", {}) for i in range(args.vms)
        ]
        base = rss_mb()
        engine_task = asyncio.create_task(self.engine.run(grace=1.0), name="bench.engine")
        t0 = time.perf_counter()
        async with Fleet(make_event=self.catalog.make_event, on_event=self._submit, vms=vms) as fleet:
            self.fleet = fleet
            async with asyncio.timeout(120):
                await self.all_connected.wait()
            res["connect_s"] = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            gc.collect()
            tune_gc()  # as `reactor run` does once its VMs are set up
            res["rss_idle_mb"] = rss_mb()
            res["rss_before_mb"] = base
            print(
                f"connected {args.vms} VMs in {res['connect_s']:.2f} s; RSS idle {res['rss_idle_mb']:.1f} MB "
                f"(before connecting: {base:.1f} MB)",
                flush=True,
            )
            conns = list(fleet)
            if args.latency_only:
                res["latency"] = await self.latency()
                self.fleet = None
                self.engine.stop()
                await engine_task
                return res
            bus = self.engine.bus

            rates = []
            for rnd in range(args.repeat):
                start_events = self.engine.stats["events"]
                dropped0 = sum(bus.dropped.values())
                target = args.vms * args.events
                cpu0, t0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(c.execute("x-storm", {"count": args.events}) for c in conns))
                await self.until(self._all_seen(start_events, dropped0, target), 300)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                dropped = sum(bus.dropped.values()) - dropped0
                dispatched = self.engine.stats["events"] - start_events
                rates.append(dispatched / wall)
                print(
                    f"storm {rnd + 1}: {target:,} events sent, {dispatched:,} dispatched in {wall:.2f} s = "
                    f"{dispatched / wall:,.0f}/s wall, {dispatched / cpu:,.0f} per CPU-second; "
                    f"bus drops {dropped:,}",
                    flush=True,
                )
            res["storm_rate_median"] = statistics.median(rates)
            res["storm_rates"] = rates

            # A bounded storm: small bus bounds; the overflow policy drops and counts.
            bus.per_vm, bus.total = 1000, 50_000
            gc.collect()
            before = rss_mb()
            start_events = self.engine.stats["events"]
            dropped0 = sum(bus.dropped.values())
            target = args.vms * args.big_storm
            peak = before
            done = False

            async def sample() -> None:
                nonlocal peak
                while not done:
                    peak = max(peak, rss_mb())
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            t0 = time.perf_counter()
            await asyncio.gather(*(c.execute("x-storm", {"count": args.big_storm}) for c in conns))
            await self.until(self._all_seen(start_events, dropped0, target), 600)
            done = True
            await sampler
            dropped = sum(bus.dropped.values()) - dropped0
            res["big_storm"] = {
                "events": target,
                "dropped": dropped,
                "rss_before_mb": before,
                "rss_peak_mb": peak,
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"bounded storm: {target:,} events, {dropped:,} dropped by the bus (per_vm 1000, total 50000), "
                f"RSS {before:.1f} -> peak {peak:.1f} MB",
                flush=True,
            )
            bus.per_vm, bus.total = 10_000, 200_000

            # Latency: paced BLOCK_IO_ERROR -> probe action start.
            res["latency"] = await self.latency()

            # The qmp action's cost over a raw round trip.
            overheads: list[float] = []
            step_overheads: list[float] = []
            for rnd in range(args.repeat):
                self.engine.step_durations.pop("qmp", None)
                before_runs = self.engine.run_outcomes[("reset-query", "ok")]
                stepped = asyncio.Event()

                def on_output(record: dict[str, Any], stepped: asyncio.Event = stepped) -> None:
                    if record.get("type") == "step" and record.get("action") == "qmp":
                        stepped.set()

                self.engine.output = on_output
                for _ in range(args.round_trips):
                    stepped.clear()
                    self.engine.submit(
                        self.catalog.make_event(
                            {
                                "event": "RESET",
                                "data": {"guest": False, "reason": "host-qmp-system-reset"},
                                "timestamp": {"seconds": 0, "microseconds": 0},
                            },
                            vm="vm-0",
                        )
                    )
                    async with asyncio.timeout(10):
                        await stepped.wait()
                self.engine.output = None
                _ = before_runs
                step = statistics.median(self.engine.step_durations["qmp"]) * 1e6
                ctx = _Ctx(conns[0])
                qargs = QmpArgs(execute="query-status")
                direct = []
                for _ in range(args.round_trips):
                    t = time.perf_counter()
                    await QMP.run(ctx, qargs)  # type: ignore[arg-type]
                    direct.append(time.perf_counter() - t)
                act = statistics.median(direct) * 1e6
                raw = statistics.median(await raw_round_trips(f"{self.tmp}/vm-1.qmp", args.round_trips)) * 1e6
                overheads.append(act - raw)
                step_overheads.append(step - raw)
                print(
                    f"qmp action {rnd + 1}: action median {act:.1f} us, raw round trip {raw:.1f} us "
                    f"(+{act - raw:.1f} us); as a rule step (render, run, record) {step:.1f} us "
                    f"(+{step - raw:.1f} us)",
                    flush=True,
                )
            res["qmp_overhead_us"] = statistics.median(overheads)
            res["qmp_step_overhead_us"] = statistics.median(step_overheads)
            self.fleet = None
        self.engine.stop()
        await engine_task
        return res


    async def latency(self) -> dict[float, dict[str, float]]:
        """p50, p99 and max (medians of ``--repeat`` paced runs) at each rate, in ms."""
        args = self.args
        out: dict[float, dict[str, float]] = {}
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(2.0)
        idle = (time.process_time() - c0) / (time.perf_counter() - t0)
        print(f"idle: reactor's CPU {idle * 100:.1f} % busy with {args.vms} VMs connected and no events", flush=True)
        for rate in args.rates:
            p50s, p99s, maxes, busy, cpu_us = [], [], [], [], []
            for rnd in range(args.repeat):
                written0 = self.journal.stats.written if self.journal is not None else 0
                LATENCIES.clear()
                assert self.child.stdin is not None and self.child.stdout is not None
                c0, t0 = time.process_time(), time.perf_counter()
                self.child.stdin.write(f"pace {rate} {args.seconds}\n".encode())
                await self.child.stdin.drain()
                sent = int((await self.child.stdout.readline()).split()[1])
                await self.until(lambda: len(LATENCIES) >= sent, 30)  # noqa: B023  (awaited at once)
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                busy.append(cpu / wall * 100)
                cpu_us.append((cpu - idle * wall) / sent * 1e6)  # over the idle cost
                lat = sorted(LATENCIES)
                p50, p99, mx = (lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3, lat[-1] * 1e3)
                p50s.append(p50)
                p99s.append(p99)
                maxes.append(mx)
                jtxt = ""
                if self.journal is not None:
                    st = self.journal.stats
                    jtxt = (f"; journal {st.written - written0:,} rows written, {st.pending:,} pending, "
                            f"{st.dropped} dropped")
                print(
                    f"latency {rnd + 1}: {sent:,} events at {rate:,.0f}/s over {args.vms} VMs: "
                    f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {mx:.2f} ms; reactor CPU {busy[-1]:.0f} % busy, "
                    f"{cpu_us[-1]:.0f} us/event over idle{jtxt}",
                    flush=True,
                )
                await asyncio.sleep(0.5)  # let the journal catch up between runs
            out[rate] = {"p50_ms": statistics.median(p50s), "p99_ms": statistics.median(p99s),
                         "max_ms": statistics.median(maxes), "busy_pct": statistics.median(busy),
                         "cpu_us_per_event": statistics.median(cpu_us)}
        return out


class _Ctx:
    """Just enough of an ActionContext for calling the qmp action directly (no daemon: no resources)."""

    rule = "bench"

    def __init__(self, vm: Any) -> None:
        self.vm = vm

    def resource(self, cls: type[Any]) -> Any:
        raise ActionError(f"no daemon: no {cls.__name__}")


async def raw_round_trips(path: str, count: int) -> list[float]:
    """Round trips of a minimal client: asyncio streams + orjson, no library."""
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    writer.write(b'{"execute":"qmp_capabilities"}')
    await reader.readline()
    out = []
    msg = orjson.dumps({"execute": "query-status"})
    for _ in range(count):
        t = time.perf_counter()
        writer.write(msg)
        line = await reader.readline()
        orjson.loads(line)
        out.append(time.perf_counter() - t)
    writer.close()
    await writer.wait_closed()
    return out


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    mine, theirs = cpus()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            tmp,
            str(args.vms),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=(lambda: os.sched_setaffinity(0, theirs)) if theirs else None,
        )
        try:
            assert child.stdout is not None
            await child.stdout.readline()  # "ready"
            if mine:
                os.sched_setaffinity(0, mine)
            print(f"reactor on CPU {sorted(mine)}, fakes on CPU {sorted(theirs)}; Python {sys.version.split()[0]}")
            res = await Bench(args, tmp, child).run()
        finally:
            child.terminate()
            await child.wait()
    print()
    print(f"summary (median of {args.repeat}; journal {args.journal}):")
    print(f"  idle RSS, {args.vms} VMs connected:  {res['rss_idle_mb']:.1f} MB   (target <= 150)")
    print_latency(args, res)
    if "journal" in res:
        j = res["journal"]
        print(f"  journal (events: all): {j['written']:,} rows written, {j['dropped']} dropped, "
              f"{j['write_errors']} write errors, {j['flushes']} flushes ({j['flush_latency_avg_ms']:.1f} ms avg)")
    if args.latency_only:
        print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        return
    print(
        f"  storm throughput to the matcher:   {res['storm_rate_median']:,.0f} events/s dispatched (target >= 100,000)"
    )
    b = res["big_storm"]
    print(
        f"  bounded storm:                     {b['events']:,} events, {b['dropped']:,} dropped and counted, "
        f"peak RSS {b['rss_peak_mb']:.1f} MB"
    )
    print(
        f"  qmp action over raw round trip:    {res['qmp_overhead_us']:+.1f} us   (target <= 50); "
        f"as a whole rule step {res['qmp_step_overhead_us']:+.1f} us"
    )
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def print_latency(args: argparse.Namespace, res: dict[str, Any]) -> None:
    for rate, q in res["latency"].items():
        print(
            f"  event -> action start at {rate:,.0f}/s: p50 {q['p50_ms']:.3f} ms, "
            f"p99 {q['p99_ms']:.3f} ms, max {q['max_ms']:.2f} ms; reactor's CPU {q['busy_pct']:.0f} % busy, "
            f"{q['cpu_us_per_event']:.0f} us/event over idle   (target p99 <= 1 at 10,000/s, journal on)"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        raise_fd_limit()
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300, help="events per VM per storm")
    parser.add_argument("--big-storm", type=int, default=2000, help="events per VM in the bounded storm")
    parser.add_argument("--rate", type=float, default=10_000.0, help="paced events/s for the latency test")
    parser.add_argument("--rates", help="comma-separated paced rates (instead of --rate), e.g. 2000,5000,10000")
    parser.add_argument("--journal", choices=("off", "on"), default="off",
                        help="on: a real Journal (events: all) in a temporary directory")
    parser.add_argument("--latency-only", action="store_true",
                        help="connect, then only the paced latency runs (no storms, no qmp action stage)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each paced run")
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 VMs, fewer events, 2 repeats")
    if "--quick" in sys.argv:
        parser.set_defaults(vms=100, seconds=1.0, round_trips=500, repeat=2)
    parsed = parser.parse_args()
    parsed.rates = [float(x) for x in parsed.rates.split(",")] if parsed.rates else [parsed.rate]
    asyncio.run(main(parsed))
