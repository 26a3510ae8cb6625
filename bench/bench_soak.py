"""The soak benchmark (issue 7): the real daemon at a steady event rate, memory and fds sampled.

    .venv/bin/python bench/bench_soak.py [--minutes 30] [--rate 1000] [--vms 100]
        [--interval 5] [--out docs/soak.png] [--csv soak.csv]

``reactor run`` (a subprocess, exactly as deployed: journal on with
retention, the HTTP listener for ``/metrics``) watches ``--vms`` fake QMP
servers (tests/fakeqmp.py) served by a child process, which paces ``--rate``
events/s round-robin over the VMs for ``--minutes``:

* 50 % ``BLOCK_IO_ERROR`` with ``action: report``: a rule logs it (a run and
  its step in the journal each time);
* 45 % ``RTC_CHANGE``: no rule listens (read, parsed, dispatched, dropped);
* 5 % ``STOP``: a rule throttled to 3 runs a minute per VM sends ``cont``
  (a QMP round trip; the fake answers with ``RESUME``), the rest are
  recorded as throttled.

Every ``--interval`` seconds it samples the daemon's RSS and open file
descriptors (``/proc/PID``) and, from ``/metrics``, the events dispatched,
runs, bus drops and journal rows.  At the end it prints a summary (the RSS
and fd slope over the second half, the first and last ten-minute medians)
as text and, with ``--json``, as JSON; writes the samples as CSV and plots
them (matplotlib when importable, else no plot).

The soak passes when, over its second half (the first is warm-up: the
journal grows to its retention bounds, ``max_age: 10m`` and ``max_size``,
and SQLite's caches fill), RSS grows by less than 2 MB and open fds by less
than 5 between the first and the last 5 minutes, every offered event was
dispatched (no bus drops) and the journal stayed healthy.

``--from-csv FILE --final JSON`` recomputes the summary and the plot from
the samples of an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
REACTOR = str(Path(sys.executable).parent / "reactor")

RULES = """
rules:
  - name: report-io-error
    on: BLOCK_IO_ERROR
    match: {action: report}
    mode: parallel
    actions:
      - log: {message: "io error on {{ event.data.device }}", level: debug}
  - name: resume-on-stop
    on: STOP
    throttle: {max: 3, within: 1m, per: [vm]}
    actions:
      - qmp: cont
"""

IO_ERROR = {"device": "virtio0", "node-name": "d0", "operation": "write", "action": "report",
            "nospace": False, "reason": "Input/output error"}


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    events: float
    runs: float
    bus_dropped: float
    journal_rows: float
    journal_healthy: float
    offered: int


# --- the child: fake VMs ------------------------------------------------------------------------


async def serve(directory: str, count: int, rate: float, seconds: float) -> None:
    """Serve ``count`` fakes; pace ``rate`` events/s over them for ``seconds`` once told ``go``."""
    import fakeqmp  # type: ignore[import-not-found,unused-ignore]

    fakes = [fakeqmp.FakeQMP(Path(directory) / f"vm-{i}.qmp", name=f"vm-{i}", status="running")
             for i in range(count)]
    for fake in fakes:
        await fake.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    sent, t0, last_report = 0, time.perf_counter(), 0.0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            fake = fakes[sent % count]
            kind = sent % 20
            if kind == 0:
                fake.emit("STOP")
            elif kind % 2:
                fake.emit("BLOCK_IO_ERROR", IO_ERROR)
            else:
                fake.emit("RTC_CHANGE", {"offset": sent, "qom-path": "/machine/unattached/device[0]"})
            sent += 1
        if elapsed - last_report >= 1.0:
            print(f"sent {sent}", flush=True)
            last_report = elapsed
        await asyncio.sleep(0.002)
    print(f"sent {sent}", flush=True)
    print("done", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# --- the parent ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_METRIC = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+|NaN)$")


def scrape(url: str) -> dict[str, float]:
    """Sums of each family's samples (labels folded) from the text exposition."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            m = _METRIC.match(line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def write_config(tmp: Path, vms: int, port: int) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "soak.yaml").write_text(RULES)
    lines = [f"rules: {rules}", f"state_dir: {tmp / 'state'}", f"http: {{listen: '127.0.0.1:{port}'}}",
             "log: {level: warning}", "journal: {events: matched, max_age: 10m, max_size: 64MB}", "vms:"]
    lines += [f"  - {{name: vm-{i}, qmp: {tmp / f'vm-{i}.qmp'}}}" for i in range(vms)]
    cfg = tmp / "reactor.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


async def soak(args: argparse.Namespace) -> tuple[list[Sample], dict[str, Any]]:
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmpname:
        tmp = Path(tmpname)
        port = free_port()
        cfg = write_config(tmp, args.vms, port)
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(tmp), str(args.vms), str(args.rate), str(args.minutes * 60),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        assert child.stdin is not None and child.stdout is not None
        daemon: asyncio.subprocess.Process | None = None
        try:
            await child.stdout.readline()  # ready
            with (tmp / "daemon.log").open("wb") as log:
                daemon = await asyncio.create_subprocess_exec(
                    REACTOR, "run", "-c", str(cfg), stdout=subprocess.DEVNULL, stderr=log)
            url = f"http://127.0.0.1:{port}/metrics"
            async with asyncio.timeout(30):
                while True:
                    try:
                        m = await asyncio.to_thread(scrape, url)
                        if m.get("reactor_vm_connected", 0) >= args.vms:
                            break
                    except OSError:
                        pass
                    await asyncio.sleep(0.5)
            offered = 0

            async def read_child() -> None:
                nonlocal offered
                assert child.stdout is not None
                while line := await child.stdout.readline():
                    parts = line.decode().split()
                    if parts and parts[0] == "sent":
                        offered = int(parts[1])
                    elif parts and parts[0] == "done":
                        return

            child.stdin.write(b"go\n")
            await child.stdin.drain()
            reader = asyncio.create_task(read_child(), name="soak.child")
            t0 = time.monotonic()
            while not reader.done():
                m = await asyncio.to_thread(scrape, url)
                s = Sample(t=time.monotonic() - t0, rss_mb=proc_rss_mb(daemon.pid), fds=proc_fds(daemon.pid),
                           events=m.get("reactor_engine_events_total", 0.0), runs=m.get("reactor_runs_total", 0.0),
                           bus_dropped=m.get("reactor_bus_dropped_total", 0.0),
                           journal_rows=m.get("reactor_journal_rows_written_total", 0.0),
                           journal_healthy=m.get("reactor_journal_healthy", 0.0), offered=offered)
                samples.append(s)
                if args.verbose:
                    print(f"{s.t:7.0f}s rss {s.rss_mb:6.1f} MB fds {s.fds:4d} events {s.events:10.0f} "
                          f"offered {s.offered:10d} drops {s.bus_dropped:.0f}", flush=True)
                await asyncio.wait({reader}, timeout=args.interval)
            await asyncio.sleep(2.0)  # the last events through
            m = await asyncio.to_thread(scrape, url)
            final = {"offered": offered, "dispatched": m.get("reactor_engine_events_total", 0.0),
                     "bus_dropped": m.get("reactor_bus_dropped_total", 0.0),
                     "journal_dropped": m.get("reactor_journal_dropped_rows_total", 0.0),
                     "journal_write_errors": m.get("reactor_journal_write_errors_total", 0.0),
                     "journal_healthy": m.get("reactor_journal_healthy", 0.0),
                     "runs": m.get("reactor_runs_total", 0.0),
                     "journal_size_mb": sum(p.stat().st_size for p in (tmp / "state").iterdir()) / 2**20}
            daemon.terminate()
            final["exit_code"] = await daemon.wait()
        finally:
            if daemon is not None and daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
            if child.returncode is None:
                child.kill()
                await child.wait()
    return samples, final


def summarize(samples: list[Sample], final: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    # the first half is warm-up: the journal grows to its retention bounds (max_age 10m, max_size),
    # SQLite's page caches and the allocator's arenas fill; the second half must be flat
    warm = [s for s in samples if s.t >= samples[-1].t / 2]
    window = min(300.0, (warm[-1].t - warm[0].t) / 3)
    first = [s for s in warm if s.t <= warm[0].t + window]
    last = [s for s in warm if s.t >= warm[-1].t - window]
    half = [s for s in samples if s.t >= samples[-1].t / 2]

    def slope(xs: list[float], ys: list[float]) -> float:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs) or 1.0
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den

    out: dict[str, Any] = {
        "minutes": samples[-1].t / 60, "rate_offered": args.rate, "vms": args.vms,
        "rss_start_mb": samples[0].rss_mb, "rss_at_half_mb": warm[0].rss_mb,
        "rss_first_window_median_mb": statistics.median(s.rss_mb for s in first),
        "rss_last_window_median_mb": statistics.median(s.rss_mb for s in last),
        "rss_peak_mb": max(s.rss_mb for s in samples),
        "rss_slope_mb_per_hour_second_half": slope([s.t for s in half], [s.rss_mb for s in half]) * 3600,
        "fds_min": min(s.fds for s in samples), "fds_max": max(s.fds for s in samples),
        "fds_first_window_median": statistics.median(s.fds for s in first),
        "fds_last_window_median": statistics.median(s.fds for s in last),
        "window_s": window, **final,
    }
    out["rate_dispatched"] = final["dispatched"] / max(samples[-1].t, 1.0)
    out["flat"] = (out["rss_last_window_median_mb"] - out["rss_first_window_median_mb"] < 2.0
                   and out["fds_last_window_median"] - out["fds_first_window_median"] < 5)
    out["ok"] = bool(out["flat"] and final["bus_dropped"] == 0 and final["journal_healthy"] == 1
                     and final["dispatched"] >= final["offered"])
    return out


def plot(samples: list[Sample], summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    minutes = [s.t / 60 for s in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax1.plot(minutes, [s.rss_mb for s in samples], color="tab:blue")
    ax1.set_ylabel("RSS (MB)")
    ax1.set_ylim(0, max(s.rss_mb for s in samples) * 1.3)
    ax1.set_title(f"reactor soak: {summary['vms']} VMs, {summary['rate_offered']:,.0f} events/s offered, "
                  f"{summary['minutes']:.0f} min")
    ax2.plot(minutes, [s.fds for s in samples], color="tab:green")
    ax2.set_ylabel("open fds")
    ax2.set_ylim(0, max(s.fds for s in samples) * 1.3)
    rates = [0.0] + [(b.events - a.events) / max(b.t - a.t, 1e-9) for a, b in itertools.pairwise(samples)]
    ax3.plot(minutes, rates, color="tab:orange", label="dispatched events/s")
    ax3.set_ylabel("events/s")
    ax3.set_ylim(0, max(rates) * 1.3 or 1)
    ax3.set_xlabel("minutes")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="the plot (PNG)")
    parser.add_argument("--csv", type=Path, default=None, help="the samples")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--from-csv", type=Path, default=None, help="samples of an earlier run")
    parser.add_argument("--final", type=Path, default=None, help="with --from-csv: its JSON summary")
    args = parser.parse_args()
    if args.from_csv is not None:
        with args.from_csv.open() as f:
            samples = [Sample(t=float(r["t"]), rss_mb=float(r["rss_mb"]), fds=int(r["fds"]),
                              events=float(r["events"]), runs=float(r["runs"]),
                              bus_dropped=float(r["bus_dropped"]), journal_rows=float(r["journal_rows"]),
                              journal_healthy=float(r["journal_healthy"]), offered=int(r["offered"]))
                       for r in csv.DictReader(f)]
        keys = ("offered", "dispatched", "bus_dropped", "journal_dropped", "journal_write_errors",
                "journal_healthy", "runs", "journal_size_mb", "exit_code")
        old = json.loads(args.final.read_text()) if args.final is not None else {}
        final = {k: old[k] for k in keys if k in old}
    else:
        samples, final = asyncio.run(soak(args))
    summary = summarize(samples, final, args)
    if args.csv is not None:
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
            w.writeheader()
            w.writerows(asdict(s) for s in samples)
    if args.out is not None and not plot(samples, summary, args.out):
        print("matplotlib is not installed: no plot", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"  {k:40s} {v:,.2f}" if isinstance(v, float) else f"  {k:40s} {v}")
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        import resource

        _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
        asyncio.run(serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))
        sys.exit(0)
    main()
