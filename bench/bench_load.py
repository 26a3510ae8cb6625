"""Rule loading time: in-process (warm) and in a new interpreter (cold start).

    .venv/bin/python bench/bench_load.py [--quick] [--json] [--runs R] [--rules 10,1000,10000]

The rule sets are the ones ``bench_engine.py`` generates (``make_rules``): each
rule ``on`` one event, half of them with ``vms``, two or three literal
``match`` fields, one ``noop`` step.  Reported, as medians of ``--runs`` runs on
one core (CPU 0, like ``taskset -c 0``):

* warm: ``load_rules_text`` in this process (catalog and imports already
  loaded), against the naive floor of any YAML rule loader, ``yaml.load`` of
  the same text with PyYAML's C loader when present, and their ratio;
* cold: a new ``python`` process that imports reactor, loads the catalog and
  loads the rules from a file (``load_rules``): what ``reactor check`` or a
  daemon start pays before the first event; with 1 rule and with each count;
* the one-time costs inside the cold start: ``import reactor.rules.loader`` and
  ``default_catalog()``.

Targets (issue 2): loading 1,000 rules <= 0.5 s.  For comparison, ansible-rulebook
takes ~2 s to start with 1 rule and ~19 s with 1,000 rules.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import cpu_model, make_rules, noop_registry, pin_one_core, rules_yaml

from reactor.model.catalog import default_catalog
from reactor.rules.loader import load_rules_text

__all__ = ["main"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: The cold-start child: time from interpreter start (first line) to rules loaded, in stages.
_CHILD = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[2])
from bench_engine import noop_registry
from reactor.rules.loader import load_rules
t1 = time.perf_counter()
from reactor.model.catalog import default_catalog
default_catalog()
t2 = time.perf_counter()
rules = load_rules([sys.argv[1]], registry=noop_registry())
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, len(rules))
"""


def median_time(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cold_start(path: Path, runs: int) -> dict[str, float]:
    """Median wall time of a new interpreter loading ``path``, and its stages (seconds)."""
    walls, imports, catalogs, loads = [], [], [], []
    here = str(Path(__file__).resolve().parent)
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), here], capture_output=True, text=True, check=True
        ).stdout.split()
        walls.append(time.perf_counter() - t0)
        imports.append(float(out[0]))
        catalogs.append(float(out[1]))
        loads.append(float(out[2]))
    return {
        "wall": statistics.median(walls),
        "imports": statistics.median(imports),
        "catalog": statistics.median(catalogs),
        "load": statistics.median(loads),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs instead of 5")
    ap.add_argument("--runs", type=int, help="runs per measurement (default 5; quick 3)")
    ap.add_argument("--rules", default="10,1000,10000", help="rule counts to measure")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    args = ap.parse_args(argv)
    pinned = "not pinned" if args.no_pin else pin_one_core()
    runs = args.runs or (3 if args.quick else 5)
    counts = [int(x) for x in args.rules.split(",")]
    registry = noop_registry()
    default_catalog()
    res: dict[str, Any] = {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "pinned": pinned,
        "runs": runs,
        "yaml_loader": _Loader.__name__,
        "warm": [],
        "cold": [],
    }
    for n in counts:
        text = rules_yaml(make_rules(n))
        files = [("bench.yaml", text)]
        got = len(load_rules_text(files, registry=registry))
        if got != n:
            raise SystemExit(f"loaded {got} rules, expected {n}")
        t_load = median_time(lambda files=files: load_rules_text(files, registry=registry), runs)
        t_yaml = median_time(lambda text=text: yaml.load(text, Loader=_Loader), runs)
        res["warm"].append(
            {"rules": n, "load_s": t_load, "yaml_s": t_yaml, "ratio": t_load / t_yaml, "us_per_rule": t_load / n * 1e6}
        )
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        for n in [1, *counts]:
            path = Path(tmp) / f"rules-{n}.yaml"
            path.write_text(rules_yaml(make_rules(n)), encoding="utf-8")
            res["cold"].append({"rules": n, **cold_start(path, runs)})
    if args.json:
        sys.stdout.write(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"reactor load bench: {res['cpu']}, Python {res['python']}, {pinned}, median of {runs}")
    print()
    print(f"warm (in process)  {'rules':>6} {'load':>9} {'us/rule':>8} {'yaml.load':>10} {'load/yaml':>10}")
    for w in res["warm"]:
        print(
            f"{'':18} {w['rules']:>6} {w['load_s']:>8.3f}s {w['us_per_rule']:>8.0f} {w['yaml_s']:>9.3f}s "
            f"{w['ratio']:>10.1f}"
        )
    print(f"(yaml.load: PyYAML {res['yaml_loader']} on the same text, the floor of a YAML rule loader)")
    print()
    print(f"cold (new process) {'rules':>6} {'wall':>9} {'imports':>9} {'catalog':>9} {'load':>9}")
    for c in res["cold"]:
        print(
            f"{'':18} {c['rules']:>6} {c['wall']:>8.3f}s {c['imports']:>8.3f}s {c['catalog']:>8.3f}s {c['load']:>8.3f}s"
        )
    print("(wall: process spawn to rules loaded, interpreter start-up included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
