"""reactor and ansible-rulebook side by side: the same events, the same rules, one run (issue 14).

    .venv/bin/python bench/bench_ansible.py [--ansible-rulebook PATH] [--events 100000] [--rules 1000] [--runs 3]
    .venv/bin/python bench/bench_ansible.py --quick      # 10,000 events, 1 ansible-rulebook run, 3 of reactor's

The workload is ``bench_engine.py``'s: ``make_rules(--rules)`` and
``make_stream(..., --events, match_share=0.1)`` (the *quiet* stream: 1 event
in 10 matches exactly one rule).  Each reactor rule becomes one
ansible-rulebook rule with the same test as a condition (event name, the VM
or the role glob as ``event.vm is match("web-")``, every literal of ``match``
and of ``if``; reactor's ``if`` also tests ``vm.status != 'shutdown'``, which
ansible-rulebook has no VM state for and which is true in a replay) and the
``none`` action (ansible-rulebook's no-op: it only reports its status).  The
events reach ansible-rulebook through a source plugin of this directory
(``bench/ansible_sources/bench_lines.py``, given with ``-S``), which reads the
same JSON lines from a file and frames them with a ``BENCH_START`` and a
``BENCH_END`` event; two more rules print a ``debug`` line for each.

Measured, medians of ``--runs`` (every process on CPU 0 like ``taskset -c 0``
unless ``--no-pin``; CPU times from the kernel's accounting of the child):

* reactor in process (``bench_engine.run_reactor``: orjson -> typed event ->
  rules -> ``noop``), journal off and on (``events: all``);
* reactor as a whole ``reactor replay EVENTS --rules DIR -c CONFIG --journal
  PATH`` process (the ``noop`` action from a ``plugins:`` directory, journal
  ``events: all``), from spawn to exit;
* ansible-rulebook as a whole process, from spawn to its last action (the
  ``BENCH_END`` line) and to exit; its start-up (spawn to the ``BENCH_START``
  line: the rules compiled into Drools) and its throughput after start-up
  (events between the two debug lines' own timestamps, and the CPU time the
  process spent between them, read from ``/proc``).

Every run is checked: reactor's matches (in process) and runs (``replay``'s
summary) and ansible-rulebook's ``rulesTriggered`` (its session statistics at
``-v``, less the two sentinel rules) must equal the stream's matching events.
Without ansible-rulebook (``--ansible-rulebook``, else ``$ANSIBLE_RULEBOOK``,
else ``ansible-rulebook`` on ``PATH``) its stage is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import (
    RULE_EVENTS,
    RuleSpec,
    Stream,
    cpu_model,
    make_rules,
    make_stream,
    noop_registry,
    pin_one_core,
    rules_yaml,
    run_reactor,
)

from reactor.engine.engine import tune_gc
from reactor.rules.loader import load_rules_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCES = HERE / "ansible_sources"

#: The ``noop`` action as a ``plugins:`` module for the ``reactor replay`` process.
NOOP_PLUGIN = '''"""The benchmark's no-op action (bench/bench_ansible.py)."""
from dataclasses import dataclass

from reactor.plugin import ActionContext, action


@dataclass(frozen=True, slots=True)
class NoArgs:
    """No arguments."""


@action("noop", mutating=False, inline=True)
async def NOOP(ctx: ActionContext, args: NoArgs) -> None:
    """Do nothing."""
'''


# ------------------------------------------------------------------ the rulebook


def _literal(value: Any) -> str:
    return orjson.dumps(value).decode()  # "disk0", true: ansible-rulebook's condition literals


def _field(key: str) -> str:
    return f'event.data["{key}"]' if not key.isidentifier() else f"event.data.{key}"


def condition(spec: RuleSpec) -> str:
    """The ansible-rulebook condition testing what reactor's rule for ``spec`` tests."""
    name, key, extra, _ = RULE_EVENTS[spec.event]
    tests = [f'event.event == "{name}"']
    if spec.vm is not None:
        tests.append(f'event.vm == "{spec.vm}"')
    elif spec.glob is not None:
        tests.append(f'event.vm is match("{spec.glob.removesuffix("*")}")')
    tests += [f"{_field(k)} == {_literal(v)}" for k, v in {key: spec.value, **extra}.items()]
    return " and ".join(tests)


def rulebook_yaml(specs: list[RuleSpec], events: Path) -> str:
    """One rule set: a rule per spec with the ``none`` action, and the two sentinel rules printing a line."""
    lines = [
        "- name: bench",
        "  hosts: all",
        "  sources:",
        "    - bench_lines:",
        f"        path: {orjson.dumps(str(events)).decode()}",
        "  rules:",
    ]
    for s in specs:
        lines += [f"    - name: {s.name}", f"      condition: '{condition(s)}'", "      action:", "        none: {}"]
    for mark in ("BENCH_START", "BENCH_END"):
        lines += [
            f"    - name: {mark.lower()}",
            f"      condition: 'event.event == \"{mark}\"'",
            "      action:",
            f"        debug: {{msg: {mark.lower()}}}",
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ processes


def _cpu_of(pid: int) -> float:
    """CPU seconds of a live process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for ``proc``; the CPU seconds it (and its children) used."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class ProcessRun:
    wall: float  # spawn to exit
    cpu: float  # the whole process
    to_last: float  # spawn to the last action (ansible-rulebook), or == wall
    startup: float  # spawn to the first event handled (ansible-rulebook), or 0
    steady_wall: float  # first to last sentinel by the process's own timestamps (ansible-rulebook)
    steady_cpu: float  # CPU seconds between the sentinels (ansible-rulebook)
    actions: int


_BANNER = re.compile(rb"^\*\* (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[debug\]")
_TRIGGERED = re.compile(rb"'rulesTriggered': (\d+)")


def run_ansible(exe: str, rulebook: Path, cwd: Path) -> ProcessRun:
    """One ``ansible-rulebook -r RULEBOOK -S bench/ansible_sources -v`` process, timed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(exe).resolve().parent}{os.pathsep}{env.get('PATH', '')}"  # its ansible-galaxy
    cmd = [exe, "-r", str(rulebook), "-S", str(SOURCES), "-v"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    marks: dict[bytes, tuple[float, float]] = {}  # line -> (arrival, process CPU)
    stamps: list[datetime] = []
    triggered = -1
    tail: list[bytes] = []
    for line in proc.stdout:
        now = time.perf_counter()
        if (m := _BANNER.match(line)) is not None:
            stamps.append(datetime.fromisoformat(m.group(1).decode()))
        elif line.strip() in (b"bench_start", b"bench_end"):
            marks[line.strip()] = (now - t0, _cpu_of(proc.pid))
        elif (m := _TRIGGERED.search(line)) is not None:
            triggered = int(m.group(1))
        tail = [*tail[-30:], line]
    cpu = _reap(proc)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or len(marks) != 2 or len(stamps) != 2 or triggered < 0:
        sys.stderr.write(b"".join(tail).decode(errors="replace"))
        raise SystemExit(f"ansible-rulebook exited {proc.returncode} without both sentinels and its statistics")
    (start, cpu_start), (last, cpu_last) = marks[b"bench_start"], marks[b"bench_end"]
    return ProcessRun(wall, cpu, last, start, (stamps[1] - stamps[0]).total_seconds(), cpu_last - cpu_start,
                      triggered - 2)


_REPLAYED = re.compile(rb"replayed (\d+) events, (\d+) bad lines, (\d+) runs, (\d+) failed")


def run_replay(events: Path, rules_dir: Path, config: Path, journal: Path) -> ProcessRun:
    """One ``reactor replay`` process, timed; its matches from the summary line."""
    cmd = [sys.executable, "-m", "reactor.cli", "replay", str(events), "--rules", str(rules_dir),
           "-c", str(config), "--journal", str(journal)]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    cpu = _reap(proc)
    wall = time.perf_counter() - t0
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    m = _REPLAYED.search(err)
    if proc.returncode != 0 or m is None or int(m.group(2)) or int(m.group(4)):
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"reactor replay exited {proc.returncode}")
    return ProcessRun(wall, cpu, wall, 0.0, 0.0, 0.0, int(m.group(3)))


# ------------------------------------------------------------------ the stages


def stage_reactor(specs: list[RuleSpec], stream: Stream, runs: int, tmp: Path) -> dict[str, Any]:
    """reactor in process, journal off and on: events/s of the median run by wall and CPU time."""
    rules = load_rules_text([("bench.yaml", rules_yaml(specs))], registry=noop_registry())
    tune_gc()
    out: dict[str, Any] = {}
    n = len(stream.lines)
    for name, jdir in (("journal_off", None), ("journal_on", tmp)):
        samples = []
        for _ in range(runs):
            gc.collect()
            samples.append(asyncio.run(run_reactor(rules, stream.lines, journal_dir=jdir, expect=stream.matching)))
        out[name] = n / statistics.median(s[0] for s in samples)
        out[f"{name}_cpu"] = n / statistics.median(s[1] for s in samples)
    gc.unfreeze()
    return out


def stage_replay(specs: list[RuleSpec], stream: Stream, runs: int, tmp: Path, events: Path) -> dict[str, Any]:
    """Whole ``reactor replay`` processes, journal on (events: all)."""
    rules_dir, plugins = tmp / "rules", tmp / "plugins"
    rules_dir.mkdir()
    plugins.mkdir()
    (rules_dir / "bench.yaml").write_text(rules_yaml(specs))
    (plugins / "bench_noop.py").write_text(NOOP_PLUGIN)
    config = tmp / "reactor.yaml"
    config.write_text(f"plugins: [{plugins}]\njournal:\n  events: all\n")
    samples = []
    for i in range(runs):
        r = run_replay(events, rules_dir, config, tmp / f"replay-{i}.db")
        if r.actions != stream.matching:
            raise SystemExit(f"reactor replay: {r.actions} runs, expected {stream.matching}")
        samples.append(r)
    n = len(stream.lines)
    return {"whole": n / statistics.median(r.wall for r in samples),
            "whole_cpu": n / statistics.median(r.cpu for r in samples),
            "seconds": statistics.median(r.wall for r in samples)}


def stage_ansible(exe: str, specs: list[RuleSpec], stream: Stream, runs: int, tmp: Path,
                  events: Path) -> dict[str, Any]:
    """Whole ansible-rulebook processes: to the last action and after start-up."""
    rulebook = tmp / "rulebook.yml"
    rulebook.write_text(rulebook_yaml(specs, events))
    samples = []
    for i in range(runs):
        r = run_ansible(exe, rulebook, tmp)
        if r.actions != stream.matching:
            raise SystemExit(f"ansible-rulebook: {r.actions} actions fired, expected {stream.matching}")
        samples.append(r)
        print(f"  ansible-rulebook run {i + 1}: start-up {r.startup:.1f} s, last action at {r.to_last:.1f} s, "
              f"exit at {r.wall:.1f} s, {r.cpu:.1f} CPU s; {r.actions:,} actions", file=sys.stderr, flush=True)
    n = len(stream.lines)
    med = statistics.median
    return {
        "version": ansible_version(exe),
        "startup_s": med(r.startup for r in samples),
        "to_last_s": med(r.to_last for r in samples),
        "whole": n / med(r.to_last for r in samples),
        "whole_exit": n / med(r.wall for r in samples),
        "whole_cpu": n / med(r.cpu for r in samples),
        "steady": n / med(r.steady_wall for r in samples),
        "steady_cpu": n / med(r.steady_cpu for r in samples),
        "actions": samples[0].actions,
    }


def ansible_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].strip()


def find_ansible(option: str | None) -> str | None:
    name = option or os.environ.get("ANSIBLE_RULEBOOK") or "ansible-rulebook"
    return shutil.which(name)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ansible-rulebook", metavar="PATH",
                    help="the ansible-rulebook executable (default $ANSIBLE_RULEBOOK, else on PATH)")
    ap.add_argument("--events", type=int, help="events in the stream (default 100,000; quick 10,000)")
    ap.add_argument("--rules", type=int, default=1000, help="rules (default 1,000)")
    ap.add_argument("--runs", type=int, help="runs of each process (default 3; quick 1)")
    ap.add_argument("--reactor-runs", type=int, help="runs of reactor in process (default 5; quick 3)")
    ap.add_argument("--quick", action="store_true", help="10,000 events, one ansible-rulebook run")
    ap.add_argument("--no-pin", action="store_true", help="do not pin this process and its children to CPU 0")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    n_events = args.events or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    reactor_runs = args.reactor_runs or (3 if args.quick else 5)
    pinned = "not pinned" if args.no_pin else pin_one_core()
    specs = make_rules(args.rules)
    stream = make_stream(specs, n_events, match_share=0.1)
    res: dict[str, Any] = {"cpu": cpu_model(), "pinned": pinned, "events": n_events, "rules": args.rules,
                           "matching": stream.matching, "runs": runs, "reactor_runs": reactor_runs,
                           "load_before": os.getloadavg()}
    exe = find_ansible(args.ansible_rulebook)
    with tempfile.TemporaryDirectory(prefix="bench-ansible-") as name:
        tmp = Path(name)
        events = tmp / "events.jsonl"
        events.write_bytes(b"\n".join(stream.lines) + b"\n")
        print(f"reactor in process ({reactor_runs} runs each) ...", file=sys.stderr, flush=True)
        res["reactor"] = stage_reactor(specs, stream, reactor_runs, tmp)
        print(f"reactor replay processes ({runs}) ...", file=sys.stderr, flush=True)
        res["reactor"].update(stage_replay(specs, stream, runs, tmp, events))
        if exe is None:
            res["ansible"] = None
            print(f"ansible-rulebook not found ({args.ansible_rulebook or 'ansible-rulebook'}): its stage skipped; "
                  "install it (pip install ansible-rulebook ansible-core, Java 17) and pass --ansible-rulebook PATH",
                  file=sys.stderr)
        else:
            print(f"ansible-rulebook processes ({runs}) ...", file=sys.stderr, flush=True)
            res["ansible"] = stage_ansible(exe, specs, stream, runs, tmp, events)
    res["load_after"] = os.getloadavg()
    if args.json:
        sys.stdout.write(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(res)
    return 0


def print_table(res: dict[str, Any]) -> None:
    r, a = res["reactor"], res["ansible"]
    print(f"reactor vs ansible-rulebook: {res['rules']:,} rules, {res['events']:,} events "
          f"({res['matching']:,} matching, one action each), {res['cpu']}, {res['pinned']}; "
          f"medians of {res['reactor_runs']} (in process) / {res['runs']} (processes); load "
          f"{res['load_before'][0]:.2f} -> {res['load_after'][0]:.2f}")
    print(f"{'':52} {'wall ev/s':>10} {'CPU ev/s':>10}")
    rows: list[tuple[str, float, float]] = [
        ("reactor in process, journal off", r["journal_off"], r["journal_off_cpu"]),
        ("reactor in process, journal on", r["journal_on"], r["journal_on_cpu"]),
        (f"reactor replay process, journal on ({r['seconds']:.2f} s)", r["whole"], r["whole_cpu"]),
    ]
    if a is not None:
        rows += [
            (f"ansible-rulebook process, to last action ({a['to_last_s']:.1f} s)", a["whole"], a["whole_cpu"]),
            (f"ansible-rulebook after start-up ({a['startup_s']:.1f} s)", a["steady"], a["steady_cpu"]),
        ]
    for label, wall, cpu in rows:
        print(f"  {label:<50} {wall:>10,.0f} {cpu:>10,.0f}")
    if a is None:
        print("ansible-rulebook: not installed, no ratio")
        return
    print(f"({a['version']}; {a['actions']:,} actions fired, as many as reactor's matches)")
    print("ratios reactor / ansible-rulebook (target >= 25), wall / CPU:")
    print(f"  whole process vs whole process:              {r['whole'] / a['whole']:6.1f} / "
          f"{r['whole_cpu'] / a['whole_cpu']:6.1f}")
    print(f"  in process, journal on vs after start-up:    {r['journal_on'] / a['steady']:6.1f} / "
          f"{r['journal_on_cpu'] / a['steady_cpu']:6.1f}")
    print(f"  in process, journal off vs after start-up:   {r['journal_off'] / a['steady']:6.1f} / "
          f"{r['journal_off_cpu'] / a['steady_cpu']:6.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
