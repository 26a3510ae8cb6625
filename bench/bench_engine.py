"""Throughput and memory of the in-process pipeline: JSON line -> typed event -> rules -> no-op action.

    .venv/bin/python bench/bench_engine.py [--quick] [--json] [--events N] [--runs R] [--rules 10,1000,10000]
    .venv/bin/python bench/bench_engine.py --memory [--memory-events 1000000]
    .venv/bin/python bench/bench_engine.py --correlated [--events N] [--runs R]

What one event goes through (``reactor.engine.replay.replay``, the path ``reactor
replay`` uses): orjson decode, ``Catalog.make_event`` (schema check, typed
class), ``Engine.dispatch`` (matcher index, ``vms``, ``match``), a ``Run``
task per match executing one step of a registered no-op action, and the
journal (``record_events="all"``: every event, run and step; a SQLite file in a
temporary directory) when it is on, flushing while the replay runs (the
journal's rows written and its flushes during the run are reported).  Rule
sets and streams are generated (see ``RuleSpec``, ``make_rules``,
``make_stream``); ``bench/README.md`` states the design.

Reported, each as the median of ``--runs`` runs on one core (the process pins
itself to CPU 0 like ``taskset -c 0``):

* events/s at 10 / 1,000 / 10,000 rules, journal off and on, for a stream in
  which every event matches exactly one rule ("match") and for one in which
  90 % of the events match nothing ("quiet");
* the same for a naive baseline in the same run: orjson decode ->
  ``asyncio.Queue`` -> a loop testing every rule with dict compares -> an
  awaited no-op coroutine; and reactor/baseline ratios;
* the throughput ratio 10,000 rules / 10 rules, from those rows and from
  interleaved pairs of runs (``stage_scaling``: a shared machine's drift
  between rows measured minutes apart cancels out in a pair);
* with ``--memory`` (only): RSS after 100,000, 500,000 and 1,000,000 events (a
  child process, 1,000 rules, journal on);
* where an event's time goes: JSON decode, ``make_event`` and matching timed
  alone; the rest of the engine (dispatch, run, step, event-loop turns) and the
  journal by difference.

* with ``--correlated`` (only): 1,000 rules of which 100 use ``count`` (50) or
  ``unless`` (50), over 1,000 VMs, against the same 1,000 rules without the
  correlations, on the same stream (every 10th event is for a correlated rule,
  every 50th a RESUME that may cancel a pending match); events/s journal off
  and on, and the traced peak memory and correlation keys held at the end.

Targets (issue 2): >= 100,000 events/s at 1,000 rules, journal on; 10k/10
ratio >= 0.8; memory flat in the number of events.  Issue 12: the correlated
rule set within 20 % of the plain one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from reactor.actions.action import ActionContext, action
from reactor.actions.registry import Registry, builtin_registry
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine, tune_gc
from reactor.engine.replay import replay
from reactor.model.catalog import default_catalog
from reactor.ops.journal import Journal
from reactor.rules.loader import load_rules_text
from reactor.rules.rule import RuleSet

__all__ = [
    "NOOP",
    "VMS",
    "NoArgs",
    "RuleSpec",
    "Stream",
    "make_rules",
    "make_stream",
    "noop_registry",
    "rules_yaml",
]

# ------------------------------------------------------------------ workload

#: 100 VMs in five roles: web-000 .. web-019, db-020 .. db-039, ...
ROLES = ("web", "db", "cache", "ci", "batch")
VMS: tuple[str, ...] = tuple(f"{ROLES[i // 20]}-{i:03d}" for i in range(100))


@dataclass(frozen=True, slots=True)
class NoArgs:
    """The no-op action takes no arguments."""


@action("noop", mutating=False, inline=True)
async def NOOP(ctx: ActionContext, args: NoArgs) -> None:
    """Do nothing (the benchmark's action)."""


def noop_registry() -> Registry:
    """The built-in actions plus ``noop``."""
    reg = builtin_registry()
    reg.add(NOOP)
    return reg


DataMaker = Callable[[str, random.Random], dict[str, Any]]


def _block_io_error(v: str, r: random.Random) -> dict[str, Any]:
    return {
        "device": v,
        "node-name": f"#block{r.randrange(1000)}",
        "operation": r.choice(("read", "write")),
        "action": "stop",
        "nospace": False,
        "reason": "Input/output error",
    }


def _job(v: str, r: random.Random) -> dict[str, Any]:
    n = r.randrange(1 << 20, 1 << 34)
    return {"type": "mirror", "device": v, "len": n, "offset": n, "speed": 0}


def _job_error(v: str, r: random.Random) -> dict[str, Any]:
    return {"device": v, "operation": r.choice(("read", "write")), "action": "report"}


def _threshold(v: str, r: random.Random) -> dict[str, Any]:
    return {"node-name": v, "amount-exceeded": r.randrange(1 << 24), "write-threshold": 1 << 34}


def _deleted(v: str, r: random.Random) -> dict[str, Any]:
    return {"device": v, "path": f"/machine/peripheral/{v}/virtio-backend"}


def _tray(v: str, r: random.Random) -> dict[str, Any]:
    return {"device": "", "id": v, "tray-open": True}


def _job_status(v: str, r: random.Random) -> dict[str, Any]:
    return {"id": v, "status": "concluded"}


def _rx_filter(v: str, r: random.Random) -> dict[str, Any]:
    return {"name": "net0", "path": v}


def _vserport(v: str, r: random.Random) -> dict[str, Any]:
    return {"id": v, "open": r.random() < 0.5}


def _corrupted(v: str, r: random.Random) -> dict[str, Any]:
    return {
        "device": v,
        "node-name": f"#block{r.randrange(1000)}",
        "msg": "Preventing invalid write on metadata",
        "offset": r.randrange(1 << 30),
        "size": 65536,
        "fatal": True,
    }


def _quorum(v: str, r: random.Random) -> dict[str, Any]:
    return {"type": "read", "node-name": v, "sector-num": r.randrange(1 << 30), "sectors-count": 8}


def _mem_size(v: str, r: random.Random) -> dict[str, Any]:
    return {"id": v, "size": r.randrange(1, 64) << 30, "qom-path": f"/machine/peripheral/{v}"}


#: Events rules listen to: (name, the field each rule tests with a literal, extra literal tests, data).
RULE_EVENTS: tuple[tuple[str, str, dict[str, Any], DataMaker], ...] = (
    ("BLOCK_IO_ERROR", "device", {"action": "stop"}, _block_io_error),
    ("BLOCK_JOB_COMPLETED", "device", {"type": "mirror"}, _job),
    ("BLOCK_JOB_READY", "device", {}, _job),
    ("BLOCK_JOB_ERROR", "device", {"action": "report"}, _job_error),
    ("BLOCK_WRITE_THRESHOLD", "node-name", {}, _threshold),
    ("DEVICE_DELETED", "device", {}, _deleted),
    ("DEVICE_TRAY_MOVED", "id", {"tray-open": True}, _tray),
    ("JOB_STATUS_CHANGE", "id", {"status": "concluded"}, _job_status),
    ("NIC_RX_FILTER_CHANGED", "path", {}, _rx_filter),
    ("VSERPORT_CHANGE", "id", {}, _vserport),
    ("BLOCK_IMAGE_CORRUPTED", "device", {"fatal": True}, _corrupted),
    ("MEMORY_DEVICE_SIZE_CHANGE", "id", {}, _mem_size),
)


def _noise(r: random.Random) -> tuple[str, dict[str, Any]]:
    """An event no rule listens to."""
    k = r.randrange(5)
    if k == 0:
        return "RTC_CHANGE", {"offset": r.randrange(-3600, 3600), "qom-path": "/machine/unattached/device[7]"}
    if k == 1:
        return "BALLOON_CHANGE", {"actual": r.randrange(1, 64) << 30}
    if k == 2:
        return "MIGRATION", {"status": r.choice(("setup", "active", "completed"))}
    if k == 3:
        return "STOP", {}
    return "RESUME", {}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One generated rule: which events it takes (event, VM or VM glob, field value)."""

    name: str
    event: int  # index into RULE_EVENTS
    value: str  # the literal its key field must equal
    vm: str | None  # a plain VM name (the matcher indexes it), or None
    glob: str | None  # a VM glob ("db-*"), or None

    def pick_vm(self, r: random.Random) -> str:
        if self.vm is not None:
            return self.vm
        if self.glob is not None:
            role = self.glob[:-2]
            return r.choice([v for v in VMS if v.startswith(role + "-")])
        return r.choice(VMS)


def make_rules(n: int) -> list[RuleSpec]:
    """``n`` rules over the 12 rule events, no two taking the same event.

    Even-numbered rules are per-VM (``vms: [db-023]``, key values ``disk<k>``),
    odd-numbered ones fleet-wide (no ``vms``, or a role glob ``web-*``; key values
    ``fleet<k>``); the value spaces are disjoint, so every event matches at most one rule.
    """
    out: list[RuleSpec] = []
    ne = len(RULE_EVENTS)
    per_vm = itertools.count()
    fleet = itertools.count()
    for i in range(n):
        if i % 2 == 0:
            j = next(per_vm)
            out.append(RuleSpec(f"r{i:05d}", j % ne, f"disk{j // (ne * len(VMS))}", VMS[(j // ne) % len(VMS)], None))
        else:
            j = next(fleet)
            glob = f"{ROLES[(j // ne) % len(ROLES)]}-*" if j % 3 == 0 else None
            out.append(RuleSpec(f"r{i:05d}", j % ne, f"fleet{j // ne}", None, glob))
    return out


#: one rule in IF_EVERY tests its key field in an ``if`` expression instead of ``match``
IF_EVERY = 5


def rules_yaml(specs: Sequence[RuleSpec]) -> str:
    """The rule file for ``specs``: each rule ``on`` one event, literal ``match`` fields (one rule in
    ``IF_EVERY``: its key field in an ``if`` instead, with a test of the VM's state), one ``noop`` step."""
    lines = ["rules:"]
    for i, s in enumerate(specs):
        name, key, extra, _ = RULE_EVENTS[s.event]
        lines += [f"  - name: {s.name}", f"    on: {name}"]
        if s.vm is not None:
            lines.append(f"    vms: [{s.vm}]")
        elif s.glob is not None:
            lines.append(f'    vms: "{s.glob}"')
        tests = [f"      {k}: {orjson.dumps(v).decode()}" for k, v in extra.items()]
        if i % IF_EVERY == IF_EVERY - 1:
            lines.append(f"    if: \"event.data['{key}'] == '{s.value}' and vm.status != 'shutdown'\"")
        else:
            tests.insert(0, f"      {key}: {s.value}")
        if tests:
            lines += ["    match:", *tests]
        lines += ["    actions:", "      - noop: {}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Stream:
    lines: list[bytes]
    matching: int  # how many of the lines match a rule (exactly one each)


def make_stream(specs: Sequence[RuleSpec], count: int, *, match_share: float = 1.0, seed: int = 1) -> Stream:
    """``count`` QMP event lines from the 100 VMs, 1 ms apart; a ``match_share`` of them match one rule each.

    The others are events no rule listens to, or rule events whose key value no
    rule tests (``spare<k>``), half and half.
    """
    r = random.Random(seed)
    ts = 1_700_000_000_000_000
    lines: list[bytes] = []
    matching = 0
    for _ in range(count):
        ts += 1000
        if r.random() < match_share:
            s = specs[r.randrange(len(specs))]
            name, _key, _extra, make = RULE_EVENTS[s.event]
            data = make(s.value, r)
            vm = s.pick_vm(r)
            matching += 1
        elif r.random() < 0.5:
            name, data = _noise(r)
            vm = r.choice(VMS)
        else:
            name, _key, _extra, make = RULE_EVENTS[r.randrange(len(RULE_EVENTS))]
            data = make(f"spare{r.randrange(50)}", r)
            vm = r.choice(VMS)
        obj = {
            "event": name,
            "data": data,
            "timestamp": {"seconds": ts // 1_000_000, "microseconds": ts % 1_000_000},
            "vm": vm,
        }
        lines.append(bytes(memoryview(orjson.dumps(obj))))  # a copy: orjson over-allocates ~4 KB
    return Stream(lines, matching)


# ------------------------------------------------------------------ reactor

#: wall seconds, CPU seconds, matches, journal flushes during the run, journal rows written
Sample = tuple[float, float, int, int, int]


async def run_reactor(
    rules: RuleSet, lines: Iterable[bytes], *, journal_dir: Path | None, expect: int | None = None
) -> Sample:
    """Replay ``lines`` through a fresh engine; (wall seconds, CPU seconds of the
    process, matches, journal flushes during the replay, journal rows written).
    With a journal (``record_events="all"``: every event, run and step), the
    time includes writing every row (the journal's close; its writer thread's
    CPU counts); the journal flushes while the replay runs (the steady state),
    and a run whose journal flushed only at close is refused (as is one that
    dropped a row)."""
    clock = VirtualClock()
    flushes = rows = 0
    if journal_dir is None:
        engine = Engine(rules, clock=clock)
        t0, c0 = time.perf_counter(), time.process_time()
        await replay(lines, engine, clock)
        dt, ct = time.perf_counter() - t0, time.process_time() - c0
    else:
        path = journal_dir / f"journal-{time.monotonic_ns()}.db"
        journal = Journal(path, record_events="all")
        async with journal:
            engine = Engine(rules, clock=clock, journal=journal)
            t0, c0 = time.perf_counter(), time.process_time()
            await replay(lines, engine, clock)
            flushes = journal.stats.flushes
        dt, ct = time.perf_counter() - t0, time.process_time() - c0
        st = journal.stats
        rows = st.written
        if st.dropped or st.write_errors:
            raise SystemExit(f"journal dropped {st.dropped} rows ({st.write_errors} write errors): not a valid run")
        if flushes < 1 and dt > 2 * journal.flush_interval:
            raise SystemExit("the journal never flushed during the replay: not the steady state")
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
    matches = engine.stats["matches"]
    if expect is not None and matches != expect:
        raise SystemExit(f"expected {expect} matches, the engine saw {matches}")
    ok = engine.run_outcomes
    if sum(n for (_, status), n in ok.items() if status not in _FINE):
        raise SystemExit(f"some runs did not end ok: {dict(ok)}")
    return dt, ct, matches, flushes, rows


#: Outcomes of a healthy run: ok, and what correlations do with matches (held, counted, cancelled, run later,
#: dropped: a second trigger while one is pending; the inline no-op never makes a mode drop).
_FINE = frozenset(["ok", "counted", "pending", "elapsed", "cancelled", "no_after", "dropped"])


# ------------------------------------------------------------------ correlations

#: 1,000 VMs for the correlated stage's fleet-wide rules.
FLEET_VMS: tuple[str, ...] = tuple(f"vm-{i:04d}" for i in range(1000))


def correlated_yaml(specs: Sequence[RuleSpec], n: int = 100) -> tuple[str, list[RuleSpec]]:
    """``rules_yaml(specs)`` with ``n`` fleet-wide rules given ``count`` (half) or ``unless`` (half)."""
    chosen = [s for s in specs if s.vm is None and s.glob is None][:n]
    names = {s.name: i for i, s in enumerate(chosen)}
    out = []
    for line in rules_yaml(specs).splitlines():
        out.append(line)
        if line.startswith("  - name: ") and line[10:] in names:
            i = names[line[10:]]
            out.append("    count: {min: 3, within: 1m}" if i % 2 == 0 else
                       "    unless: {event: RESUME, within: 30s}")
    return "\n".join(out) + "\n", chosen


def correlated_stream(specs: Sequence[RuleSpec], chosen: Sequence[RuleSpec], count: int, seed: int = 2) -> Stream:
    """The match stream with every 10th event going to a correlated rule (their share: 100 of the 1,000 rules)
    from one of the 1,000 VMs, and every 50th a RESUME from one of them (cancelling some pending matches)."""
    r = random.Random(seed)
    base = make_stream(specs, count, seed=seed).lines
    lines: list[bytes] = []
    for i, line in enumerate(base):
        if i % 10 and i % 50 != 25:
            lines.append(line)
            continue
        obj = orjson.loads(line)
        vm = r.choice(FLEET_VMS)
        if i % 50 == 25:
            obj.update(event="RESUME", data={}, vm=vm)
        else:
            s = chosen[r.randrange(len(chosen))]
            name, _key, _extra, make = RULE_EVENTS[s.event]
            obj.update(event=name, data=make(s.value, r), vm=vm)
        lines.append(bytes(memoryview(orjson.dumps(obj))))
    return Stream(lines, 0)


def stage_correlated(n_events: int, runs: int) -> dict[str, Any]:
    """Plain 1,000 rules vs the same with 100 correlated, on one stream: events/s and memory."""
    registry = noop_registry()
    specs = make_rules(1000)
    text, chosen = correlated_yaml(specs)
    sets = {"plain": load_rules_text([("bench.yaml", rules_yaml(specs))], registry=registry),
            "correlated": load_rules_text([("bench.yaml", text)], registry=registry)}
    stream = correlated_stream(specs, chosen, n_events)
    tune_gc()
    out: dict[str, Any] = {"rules": 1000, "correlated_rules": len(chosen), "vms": len(FLEET_VMS) + len(VMS),
                           "events": n_events}
    rows: dict[str, dict[str, Any]] = {name: {} for name in sets}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        for jname, jdir in (("off", None), ("on", Path(tmp))):
            samples: dict[str, list[Sample]] = {name: [] for name in sets}
            for _ in range(runs):   # interleaved, so that the machine's load drifts over both alike
                for name, rules in sets.items():
                    gc.collect()
                    samples[name].append(asyncio.run(run_reactor(rules, stream.lines, journal_dir=jdir)))
            for name in sets:
                rows[name][f"journal_{jname}"] = median_rate(samples[name], n_events)
                rows[name][f"journal_{jname}_cpu"] = median_rate(samples[name], n_events, 1)
    for name, rules in sets.items():
        rows[name].update(asyncio.run(_traced(rules, stream.lines)))
        out[name] = rows[name]
    for j in ("journal_off_cpu", "journal_on_cpu"):
        out[f"ratio_{j}"] = out["correlated"][j] / out["plain"][j]
    return out


async def _traced(rules: RuleSet, lines: list[bytes]) -> dict[str, Any]:
    """Peak traced memory of one replay (journal off) and the correlation keys held at its end."""
    clock = VirtualClock()
    engine = Engine(rules, clock=clock)
    gc.collect()
    tracemalloc.start()
    try:
        await replay(lines, engine, clock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    keys = engine.correlation.sizes()
    outcomes: dict[str, int] = {}
    for (_, outcome), n in engine.run_outcomes.items():
        outcomes[outcome] = outcomes.get(outcome, 0) + n
    return {"peak_traced_mb": peak / 1e6, "keys_at_end": sum(keys.values()), "outcomes": outcomes}


# ------------------------------------------------------------------ baseline


@dataclass(frozen=True, slots=True)
class _NaiveRule:
    event: str
    vm: str | None
    role: str | None
    match: dict[str, Any]


def naive_rules(specs: Sequence[RuleSpec]) -> list[_NaiveRule]:
    out = []
    for s in specs:
        name, key, extra, _ = RULE_EVENTS[s.event]
        out.append(_NaiveRule(name, s.vm, s.glob[:-1] if s.glob else None, {key: s.value, **extra}))
    return out


async def _noop() -> None:
    return None


async def run_baseline(rules: Sequence[_NaiveRule], lines: Iterable[bytes]) -> Sample:
    """The plain-Python engine-shaped loop: orjson decode -> asyncio.Queue -> every rule
    tested linearly with dict compares -> an awaited no-op coroutine per match."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1024)
    matches = 0

    async def produce() -> None:
        for line in lines:
            await queue.put(orjson.loads(line))
        await queue.put(None)

    async def consume() -> None:
        nonlocal matches
        while (obj := await queue.get()) is not None:
            name = obj["event"]
            vm = obj.get("vm", "vm0")
            data = obj.get("data") or {}
            for rule in rules:
                if rule.event != name or (rule.vm is not None and rule.vm != vm):
                    continue
                if rule.role is not None and not vm.startswith(rule.role):
                    continue
                if all(data.get(k) == v for k, v in rule.match.items()):
                    matches += 1
                    await _noop()

    t0, c0 = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce(), name="bench.produce")
        tg.create_task(consume(), name="bench.consume")
    return time.perf_counter() - t0, time.process_time() - c0, matches, 0, 0


# ------------------------------------------------------------------ measuring


def median_rate(samples: list[Sample], events: int, which: int = 0) -> float:
    """Events per second of the median run: by wall time (0) or by CPU time (1)."""
    return events / statistics.median(s[which] for s in samples)


def measure(fn: Callable[[], Sample], runs: int) -> list[Sample]:
    out = []
    for _ in range(runs):
        gc.collect()
        out.append(fn())
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "?"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "?"


def pin_one_core() -> str:
    """Run on CPU 0 only (like ``taskset -c 0``), before any thread starts."""
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError) as err:
        return f"not pinned ({err})"
    return "CPU 0"


async def memory_child(count: int, marks: list[int]) -> dict[str, float]:
    """RSS after each mark, replaying a 1,000-rule match stream (journal on) cycled to ``count`` events."""
    specs = make_rules(1000)
    rules = load_rules_text([("bench.yaml", rules_yaml(specs))], registry=noop_registry())
    base = make_stream(specs, 100_000).lines
    rss: dict[str, float] = {}

    def lines() -> Iterator[bytes]:
        todo = sorted(marks)
        for i, line in enumerate(itertools.islice(itertools.cycle(base), count), 1):
            yield line
            if todo and i == todo[0]:
                gc.collect()
                rss[str(todo.pop(0))] = rss_mb()

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        await run_reactor(rules, lines(), journal_dir=Path(tmp))
    return rss


# ------------------------------------------------------------------ stages


def stage_costs(rules: RuleSet, lines: list[bytes]) -> dict[str, float]:
    """Microseconds per event of the stages that can run alone: JSON decode,
    ``make_event``, and matching (the matcher's candidates, then each candidate's
    ``vms`` and ``match``, as ``Engine.dispatch`` tests them).  CPU time, medians of 5."""
    make = default_catalog().make_event
    engine = Engine(rules, clock=VirtualClock())
    candidates = engine.matcher.candidates
    n = len(lines)
    objs = [orjson.loads(line) for line in lines]
    events = [make(o, vm=o["vm"]) for o in objs]
    no_labels: dict[str, str] = {}

    def decode() -> None:
        loads = orjson.loads
        for line in lines:
            loads(line)

    def make_events() -> None:
        for o in objs:
            make(o, vm=o["vm"], host=o.get("host"))

    def match() -> None:
        for ev in events:
            for rule in candidates(ev):
                if rule.vms is not None and not rule.vms.matches(ev.vm, no_labels):
                    continue
                if rule.match is not None and not rule.match(ev.data):
                    continue

    out = {}
    for name, fn in (("JSON decode", decode), ("make_event", make_events), ("matching", match)):
        times = []
        for _ in range(5):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        out[name] = statistics.median(times) / n * 1e6
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer events and runs (a smoke test)")
    ap.add_argument("--events", type=int, help="events per run (default 50,000; quick 20,000)")
    ap.add_argument("--runs", type=int, help="runs per measurement (default 5; quick 3)")
    ap.add_argument("--rules", default="10,1000,10000", help="rule counts to measure")
    ap.add_argument(
        "--memory",
        action="store_true",
        help="only the memory check: RSS after 100,000 and after --memory-events events",
    )
    ap.add_argument("--memory-events", type=int, help="events for the memory check (default 1,000,000; quick 300,000)")
    ap.add_argument("--correlated", action="store_true",
                    help="only the correlation stage: 1,000 rules, 100 with count/unless, 1,000 VMs")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        count, *marks = (int(x) for x in args.memory_child.split(","))
        sys.stdout.write(orjson.dumps(asyncio.run(memory_child(count, marks))).decode() + "\n")
        return 0

    pinned = "not pinned" if args.no_pin else pin_one_core()
    n_events = args.events or (20_000 if args.quick else 50_000)
    runs = args.runs or (3 if args.quick else 5)
    mem_events = args.memory_events or (300_000 if args.quick else 1_000_000)
    counts = [int(x) for x in args.rules.split(",")]
    default_catalog()
    results: dict[str, Any] = {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "pinned": pinned,
        "events_per_run": n_events,
        "runs": runs,
        "rows": [],
    }
    if args.memory:
        marks = sorted({100_000, mem_events // 2, mem_events})
        cmd = [sys.executable, __file__, "--memory-child", ",".join(str(x) for x in [mem_events, *marks])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results["rss_mb"] = orjson.loads(out)
        _print(results, args.json)
        return 0
    if args.correlated:
        results["correlated"] = stage_correlated(n_events, runs)
        _print(results, args.json)
        return 0
    registry = noop_registry()
    t_all = time.perf_counter()
    for n in counts:
        specs = make_rules(n)
        gc.unfreeze()   # let the previous rule set go
        rules = load_rules_text([("bench.yaml", rules_yaml(specs))], registry=registry)
        naive = naive_rules(specs)
        tune_gc()       # as `reactor replay` and `reactor run` do after loading
        for stream_name, share in (("match", 1.0), ("quiet", 0.1)):
            stream = make_stream(specs, n_events, match_share=share)
            row: dict[str, Any] = {"rules": n, "stream": stream_name, "matching": stream.matching}
            with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
                for jname, jdir in (("off", None), ("on", Path(tmp))):
                    samples = measure(_reactor_run(rules, stream, jdir), runs)
                    row[f"journal_{jname}"] = median_rate(samples, n_events)
                    row[f"journal_{jname}_cpu"] = median_rate(samples, n_events, 1)
                    if jname == "on":
                        row["journal_flushes"] = statistics.median(smp[3] for smp in samples)
                        row["journal_rows"] = statistics.median(smp[4] for smp in samples)
            # the baseline tests every rule per event: cap its work (~2e7 rule tests per run)
            b_events = max(1000, min(n_events, 20_000_000 // max(n, 1)))
            b_lines = stream.lines[:b_events]
            samples = measure(_baseline_run(naive, b_lines), runs)
            if share == 1.0 and samples[0][2] != b_events:
                raise SystemExit(f"baseline: expected {b_events} matches, got {samples[0][2]}")
            row["baseline"] = median_rate(samples, b_events)
            row["baseline_cpu"] = median_rate(samples, b_events, 1)
            row["baseline_events"] = b_events
            row["ratio_journal_off"] = row["journal_off_cpu"] / row["baseline_cpu"]
            row["ratio_journal_on"] = row["journal_on_cpu"] / row["baseline_cpu"]
            results["rows"].append(row)
            if not args.json:
                print(
                    f"  measured {n} rules, {stream_name} stream ({time.perf_counter() - t_all:.0f} s)", file=sys.stderr
                )
    by = {(r["rules"], r["stream"]): r for r in results["rows"]}
    lo, hi = min(counts), max(counts)
    scaling = {}
    for stream_name in ("match", "quiet"):
        for j in ("journal_off_cpu", "journal_on_cpu", "baseline_cpu"):
            if (lo, stream_name) in by and (hi, stream_name) in by and lo != hi:
                scaling[f"{stream_name}.{j}"] = by[(hi, stream_name)][j] / by[(lo, stream_name)][j]
    results["scaling"] = {"from": lo, "to": hi, "ratios": scaling}
    if lo != hi:
        results["scaling"]["paired"] = stage_scaling(lo, hi, n_events, runs, registry)

    # stage costs at 1,000 rules (or the middle rule count), match stream
    mid = 1000 if 1000 in counts else counts[len(counts) // 2]
    specs = make_rules(mid)
    rules = load_rules_text([("bench.yaml", rules_yaml(specs))], registry=registry)
    stages = stage_costs(rules, make_stream(specs, n_events).lines)
    row = by[(mid, "match")]
    total_off, total_on = 1e6 / row["journal_off_cpu"], 1e6 / row["journal_on_cpu"]
    stages["dispatch rest, run, step, loop turns"] = total_off - sum(stages.values())
    stages["journal"] = total_on - total_off
    results["stages_us_per_event"] = {
        "rules": mid,
        "total_journal_off": total_off,
        "total_journal_on": total_on,
        **stages,
    }

    _print(results, args.json)
    return 0


def stage_scaling(lo: int, hi: int, n_events: int, runs: int, registry: Registry) -> dict[str, float]:
    """The throughput ratio ``hi`` rules / ``lo`` rules from interleaved runs: ``runs`` pairs (a run at
    ``lo`` then one at ``hi``, the same stream shape) per stream and journal setting, and the median of
    the pairs' CPU-time ratios.  A shared machine's speed drifts over minutes, and the rows above measure
    each rule count minutes apart; a pair's two runs are seconds apart."""
    gc.unfreeze()
    sets = {}
    for n in (lo, hi):
        specs = make_rules(n)
        sets[n] = (load_rules_text([("bench.yaml", rules_yaml(specs))], registry=registry), specs)
    tune_gc()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        for stream_name, share in (("match", 1.0), ("quiet", 0.1)):
            streams = {n: make_stream(specs, n_events, match_share=share) for n, (_, specs) in sets.items()}
            for jname, jdir in (("off", None), ("on", Path(tmp))):
                ratios = []
                for _ in range(runs):
                    cpu = {n: _reactor_run(sets[n][0], streams[n], jdir)()[1] for n in (lo, hi)}
                    ratios.append(cpu[lo] / cpu[hi])   # events are the same number: throughput ratio
                out[f"{stream_name}.journal_{jname}_cpu"] = statistics.median(ratios)
    gc.unfreeze()
    return out


def _print(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(results)


def _reactor_run(rules: RuleSet, stream: Stream, jdir: Path | None) -> Callable[[], Sample]:
    return lambda: asyncio.run(run_reactor(rules, stream.lines, journal_dir=jdir, expect=stream.matching))


def _baseline_run(naive: Sequence[_NaiveRule], lines: list[bytes]) -> Callable[[], Sample]:
    return lambda: asyncio.run(run_baseline(naive, lines))


def print_table(res: dict[str, Any]) -> None:
    print(
        f"reactor engine bench: {res['cpu']}, Python {res['python']}, {res['pinned']}, "
        f"{res['events_per_run']} events/run, median of {res['runs']}"
    )
    if res["rows"]:
        print_rows(res)
    if "correlated" in res:
        c = res["correlated"]
        print(f"\n{c['rules']} rules, {c['correlated_rules']} with count/unless, {c['vms']} VMs, "
              f"{c['events']} events (events/s by CPU time; peak traced memory, journal off):")
        for name in ("plain", "correlated"):
            r = c[name]
            print(f"  {name:<11} journal off {r['journal_off_cpu']:>8,.0f}  on {r['journal_on_cpu']:>8,.0f}  "
                  f"peak {r['peak_traced_mb']:.1f} MB  keys at end {r['keys_at_end']}  {r['outcomes']}")
        print(f"  correlated/plain: journal off {c['ratio_journal_off_cpu']:.2f}, "
              f"on {c['ratio_journal_on_cpu']:.2f} (target >= 0.8)")
    if "rss_mb" in res:
        rss = res["rss_mb"]
        keys = sorted(rss, key=int)
        print(
            "RSS (1,000 rules, match stream, journal on): "
            + ", ".join(f"{int(k):,} events {rss[k]:.1f} MB" for k in keys)
        )


def print_rows(res: dict[str, Any]) -> None:
    print()
    print(f"{'':13} {'journal off':>17} {'journal on':>17} {'baseline':>17} {'reactor/baseline':>17}")
    print(f"{'rules':>6} {'stream':<6} " + f"{'wall':>8} {'cpu':>8} " * 3 + f"{'off':>8} {'on':>8}")
    for r in res["rows"]:
        print(
            f"{r['rules']:>6} {r['stream']:<6} "
            + "".join(f"{r[k]:>8,.0f} {r[k + '_cpu']:>8,.0f} " for k in ("journal_off", "journal_on", "baseline"))
            + f"{r['ratio_journal_off']:>8.2f} {r['ratio_journal_on']:>8.2f}"
        )
    print(
        "(events/s of the median run, by wall time and by this process's CPU time; ratios by CPU time.\n"
        " baseline: orjson -> asyncio.Queue -> every rule tested with dict compares -> awaited no-op)"
    )
    print("journal on (events: all): " + "; ".join(
        f"{r['rules']} {r['stream']} {r['journal_rows']:,.0f} rows, {r['journal_flushes']:.0f} flushes during the run"
        for r in res["rows"]))
    sc = res["scaling"]
    if sc["ratios"]:
        print()
        print(
            f"throughput (CPU) at {sc['to']} rules / at {sc['from']} rules: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sc["ratios"].items())
        )
    if sc.get("paired"):
        print(
            f"  the same from interleaved pairs of runs (median of {res['runs']} pairs; the target's figure): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sc["paired"].items())
        )
    if "stages_us_per_event" in res:
        st = dict(res["stages_us_per_event"])
        print()
        print(
            f"where an event's CPU time goes ({st.pop('rules')} rules, match stream; us/event; "
            f"total {st.pop('total_journal_off'):.1f} journal off, {st.pop('total_journal_on'):.1f} on):"
        )
        for stage, us in st.items():
            print(f"  {stage:<38} {us:7.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
