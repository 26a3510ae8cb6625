"""The storm benchmark (issue 7): does a real VM still get its ``cont`` while 1,000 others flood reactor?

    .venv/bin/python bench/bench_storm.py [--vms 1000] [--rate 100000] [--seconds 20] [--stops 40] [--drain 10] [--json]

Three processes, on loopback only:

* ``reactor run`` (the real daemon, journal on, HTTP listener for
  ``/metrics``), pinned to CPU 0;
* a child serving ``--vms`` fake QMP servers (tests/fakeqmp.py) that offers
  ``--rate`` ``BLOCK_IO_ERROR`` events/s (``action: report``) spread evenly
  over them for ``--seconds`` (pre-encoded lines, one write per VM per 10 ms
  tick; a VM whose socket buffer holds more than 1 MiB skips its tick, counted
  as *refused*: reactor's backpressure reached it, as it would reach QEMU,
  whose monitor buffers what its client does not read);
* a real guest-less QEMU (``reactor.testing.qemu.QemuVM``, ``-accel tcg``)
  that this process drives through a second monitor.

Rules: every ``BLOCK_IO_ERROR`` with ``action: report`` runs a rule that logs
it at debug level (a run and a step in the journal each); ``STOP`` from the
real VM runs ``qmp: cont``.  During the storm this process sends ``stop`` to
QEMU ``--stops`` times and measures STOP -> RESUME from QEMU's own event
timestamps (the time reactor took to see the STOP, match it, and get its
``cont`` executed), first without the storm (baseline), then under it.

Reported: the latency (p50, p99, max; target <= 100 ms under the storm);
events offered (``--rate`` x ``--seconds``), refused (a fake's buffer was full),
sent (written and gone from the fakes' buffers by the storm's end), received
by reactor, dispatched and dropped by the bus (the overflow policy: each VM's
queue at most ``bus.per_vm``, the bus at most ``bus.total``), counted at the
storm's end and after at most ``--drain`` seconds more; how long the fake
VMs' sockets were left unread (``reactor_vm_read_paused_seconds_total``);
fairness (the spread of dispatched events over the fake VMs:
``reactor_vm_events_received_total{vm}`` minus ``reactor_bus_dropped_total{vm}``
minus ``reactor_bus_queue_depth{vm}``); and the daemon's RSS idle and peak
(``VmHWM``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    actions:
      - log: {message: "io error on {{ event.data.device }}", level: debug}
  - name: resume
    on: STOP
    vms: real
    actions:
      - qmp: cont
"""

IO_ERROR = {"device": "virtio0", "node-name": "d0", "operation": "write", "action": "report",
            "nospace": False, "reason": "Input/output error"}


# --- the child: fake VMs ------------------------------------------------------------------------


async def serve(directory: str, count: int) -> None:
    """Serve ``count`` fakes; on stdin ``storm RATE SECONDS`` offers paced events, then reports."""
    import fakeqmp  # type: ignore[import-not-found,unused-ignore]

    fakes = [fakeqmp.FakeQMP(Path(directory) / f"vm-{i}.qmp", name=f"vm-{i}", status="running")
             for i in range(count)]
    for fake in fakes:
        await fake.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = json.dumps({"event": "BLOCK_IO_ERROR", "data": IO_ERROR,
                       "timestamp": {"seconds": int(time.time()), "microseconds": 0}},
                      separators=(",", ":")).encode() + b"\r\n"
    while cmd := await loop.run_in_executor(None, sys.stdin.readline):
        parts = cmd.split()
        if not parts or parts[0] != "storm":
            continue
        rate, seconds = float(parts[1]), float(parts[2])
        offered = refused = 0
        t0 = time.perf_counter()
        tick = 0
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(elapsed * rate) - offered - refused
            if due > 0:
                base, extra = divmod(due, count)
                for j in range(count):
                    k = base + (1 if (j - tick) % count < extra else 0)
                    if not k:
                        continue
                    sessions = [s for s in fakes[j].sessions if s.negotiated]
                    if not sessions or sessions[0].writer.transport.get_write_buffer_size() > 1 << 20:
                        refused += k
                        continue
                    sessions[0].writer.write(line * k)
                    offered += k
                tick += extra
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        unsent = sum(s.writer.transport.get_write_buffer_size() for f in fakes for s in f.sessions if s.negotiated)
        print(f"offered {offered} refused {refused} seconds {elapsed:.3f} unsent {unsent // len(line)}", flush=True)


# --- the parent ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


_METRIC = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+|NaN)$')
# dispatched by VM = received - dropped - still queued
_DISPATCHED = {"reactor_vm_events_received_total": 1.0, "reactor_bus_dropped_total": -1.0,
               "reactor_bus_queue_depth": -1.0}


def scrape(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """(family sums, by VM: events received minus events the bus dropped or still holds = dispatched)."""
    sums: dict[str, float] = {}
    by_vm: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=120) as resp:  # a saturated daemon answers late
        for line in resp.read().decode().splitlines():
            m = _METRIC.match(line)
            if not m:
                continue
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            sums[name] = sums.get(name, 0.0) + value
            sign = _DISPATCHED.get(name)
            if sign is not None:
                vm = re.search(r'vm="([^"]*)"', labels)
                if vm:
                    by_vm[vm.group(1)] = by_vm.get(vm.group(1), 0.0) + sign * value
    return sums, by_vm


def cpus() -> tuple[set[int], set[int]]:
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return set(mine), set(mine)
    return {mine[0]}, set(mine[1:])


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def stop_to_resume(mon: Any, stops: int, gap: float, until: float | None = None,
                         patience: float = 10.0) -> list[float]:
    """``stop`` QEMU ``stops`` times (or until the monotonic clock passes ``until``); the STOP -> RESUME
    gap (QEMU's timestamps) of each, in ms; ``inf`` when no RESUME came within ``patience`` seconds
    (then QEMU is resumed by this process, so the next round starts from a running VM)."""
    out: list[float] = []
    for _ in range(stops):
        if until is not None and time.monotonic() > until:
            break
        stop_ts: float | None = None
        await mon.execute("stop")
        try:
            async with asyncio.timeout(patience):
                while True:
                    ev = json.loads(bytes(await mon.events.get()))
                    ts = ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6
                    if ev["event"] == "STOP":
                        stop_ts = ts
                    elif ev["event"] == "RESUME" and stop_ts is not None:
                        out.append((ts - stop_ts) * 1000)
                        break
        except TimeoutError:
            out.append(float("inf"))
            await mon.execute("cont")
        await asyncio.sleep(gap)
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from qemu.qmp import QMPClient

    from reactor.testing.qemu import QemuVM

    mine, theirs = cpus()
    with contextlib.ExitStack() as stack:
        tmpname = (tempfile.mkdtemp(prefix="bench-storm-") if args.keep
                   else stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-storm-")))
        tmp = Path(tmpname)
        (tmp / "rules").mkdir()
        (tmp / "rules" / "storm.yaml").write_text(RULES)
        port = free_port()
        lines = [f"rules: {tmp / 'rules'}", f"state_dir: {tmp / 'state'}", f"http: {{listen: '127.0.0.1:{port}'}}",
                 f"log: {{level: {args.log_level}}}", "journal: {events: matched}",
                 f"bus: {{per_vm: {args.per_vm}, total: {args.total}}}", "vms:",
                 f"  - {{name: real, qmp: {tmp / 'real.qmp'}}}"]
        lines += [f"  - {{name: vm-{i}, qmp: {tmp / f'vm-{i}.qmp'}}}" for i in range(args.vms)]
        cfg = tmp / "reactor.yaml"
        cfg.write_text("\n".join(lines) + "\n")

        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(tmp), str(args.vms), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, theirs))
        assert child.stdin is not None and child.stdout is not None
        vm = QemuVM(name="real", workdir=tmp, qmp_path=tmp / "real.test.qmp", extra_args=[
            "-chardev", f"socket,id=reactor,path={tmp / 'real.qmp'},server=on,wait=off",
            "-mon", "chardev=reactor,mode=control"])
        daemon: asyncio.subprocess.Process | None = None
        mon = QMPClient("bench")
        try:
            await vm.start()
            if vm.pid is not None:
                os.sched_setaffinity(vm.pid, theirs)
            await child.stdout.readline()  # ready
            with (tmp / "daemon.log").open("wb") as log:
                daemon = await asyncio.create_subprocess_exec(
                    REACTOR, "run", "-c", str(cfg), stdout=subprocess.DEVNULL, stderr=log,
                    preexec_fn=lambda: os.sched_setaffinity(0, mine))
            url = f"http://127.0.0.1:{port}/metrics"
            async with asyncio.timeout(60):
                while True:
                    try:
                        sums, _ = await asyncio.to_thread(scrape, url)
                        if sums.get("reactor_vm_connected", 0) >= args.vms + 1:
                            break
                    except OSError:
                        pass
                    await asyncio.sleep(0.5)
            os.sched_setaffinity(0, theirs)
            await mon.connect(str(vm.qmp_path))
            await mon.execute("cont")
            await asyncio.sleep(0.5)
            rss_idle = proc_status(daemon.pid, "VmRSS")
            baseline = await stop_to_resume(mon, 10, 0.05)

            sums0, by_vm0 = await asyncio.to_thread(scrape, url)
            child.stdin.write(f"storm {args.rate} {args.seconds}\n".encode())
            await child.stdin.drain()
            await asyncio.sleep(min(2.0, args.seconds / 4))  # the queues fill up first
            gap = max(0.05, (args.seconds * 0.7) / args.stops)
            under = await stop_to_resume(mon, args.stops, gap, until=time.monotonic() + args.seconds * 0.9)
            words = (await child.stdout.readline()).decode().split()
            report = dict(zip(words[::2], words[1::2], strict=True))
            offered, refused, storm_s = int(report["offered"]), int(report["refused"]), float(report["seconds"])
            unsent = int(report["unsent"])
            t_end = time.monotonic()
            sums_end, by_vm_end = await asyncio.to_thread(scrape, url)
            scrape_s = time.monotonic() - t_end
            rss_storm_peak = proc_status(daemon.pid, "VmHWM")
            # drain: until dispatched stops moving, or --drain seconds (backpressure leaves events in the
            # fakes' buffers and sockets, which would take long to go through at the dispatch rate)
            last = -1.0
            while True:
                sums, by_vm = await asyncio.to_thread(scrape, url)
                if sums.get("reactor_engine_events_total", 0) == last or time.monotonic() - t_end > args.drain:
                    break
                last = sums.get("reactor_engine_events_total", 0)
                await asyncio.sleep(0.5)
            drained_s = time.monotonic() - t_end
            rss_after = proc_status(daemon.pid, "VmRSS")

            def delta(after: dict[str, float], name: str) -> float:
                return after.get(name, 0.0) - sums0.get(name, 0.0)

            per_vm = [by_vm.get(f"vm-{i}", 0.0) - by_vm0.get(f"vm-{i}", 0.0) for i in range(args.vms)]
            dispatched = sum(per_vm)
            dispatched_storm = sum(by_vm_end.get(f"vm-{i}", 0.0) - by_vm0.get(f"vm-{i}", 0.0)
                                   for i in range(args.vms))
            dropped = delta(sums, "reactor_bus_dropped_total")
            dropped_storm = delta(sums_end, "reactor_bus_dropped_total")
            received = delta(sums, "reactor_vm_events_received_total")
            received_storm = delta(sums_end, "reactor_vm_events_received_total")
            paused_s = delta(sums_end, "reactor_vm_read_paused_seconds_total")
            pauses = delta(sums_end, "reactor_vm_read_pauses_total")
            daemon.terminate()
            exit_code = await daemon.wait()
        except BaseException:
            print((tmp / "daemon.log").read_text()[-args.log_tail:], file=sys.stderr)
            raise
        finally:
            with_exc = daemon is not None and daemon.returncode is None
            if with_exc and daemon is not None:
                daemon.kill()
                await daemon.wait()
            await mon.disconnect()
            await vm.aclose()
            if child.returncode is None:
                child.kill()
                await child.wait()
    return {
        "vms": args.vms, "rate_offered_target": args.rate, "seconds": storm_s,
        "offered": offered + refused, "offered_rate": (offered + refused) / storm_s,
        "refused_by_socket_backpressure": refused, "written_by_fakes": offered,
        "unsent_in_fakes_at_end": unsent, "sent": offered - unsent, "sent_rate": (offered - unsent) / storm_s,
        "received_at_storm_end": received_storm, "dispatched_at_storm_end": dispatched_storm,
        "dispatched_rate_storm": dispatched_storm / storm_s, "dropped_at_storm_end": dropped_storm,
        "scrape_at_storm_end_s": scrape_s,
        "read_paused_fraction": paused_s / (storm_s * (args.vms + 1)), "read_pauses": pauses,
        "drained_s": drained_s, "received": received,
        "dispatched": dispatched, "dispatched_rate": dispatched / (storm_s + drained_s),
        "bus_dropped": dropped,
        "fairness_min_per_vm": min(per_vm), "fairness_max_per_vm": max(per_vm),
        "fairness_cv": statistics.pstdev(per_vm) / (statistics.fmean(per_vm) or 1),
        "latency_baseline_ms": {"p50": statistics.median(baseline), "max": max(baseline)},
        "latency_storm_ms": {"n": len(under), "p50": statistics.median(under), "p99": percentile(under, 99),
                             "max": max(under), "missed_10s": sum(1 for x in under if x == float("inf"))},
        "latency_storm_all_ms": [round(x, 2) if x != float("inf") else None for x in under],
        "rss_idle_mb": rss_idle, "rss_peak_mb": rss_storm_peak, "rss_after_mb": rss_after,
        "daemon_exit_code": exit_code, "bus": {"per_vm": args.per_vm, "total": args.total},
        "load_average_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100_000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--stops", type=int, default=40)
    parser.add_argument("--drain", type=float, default=10.0, help="at most this long after the storm, for counts")
    parser.add_argument("--per-vm", type=int, default=10_000, help="bus.per_vm of the daemon")
    parser.add_argument("--total", type=int, default=200_000, help="bus.total of the daemon")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (journal, logs)")
    parser.add_argument("--log-level", default="warning", help="the daemon's (its log is shown on failure)")
    parser.add_argument("--log-tail", type=int, default=5000, help="characters of it shown")
    args = parser.parse_args()
    res = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(res, indent=2))
        return
    lat = res["latency_storm_ms"]
    print(f"storm: {res['vms']} fake VMs, {res['offered_rate']:,.0f} events/s offered for {res['seconds']:.1f}s: "
          f"{res['offered']:,} offered, {res['refused_by_socket_backpressure']:,} refused (a fake's buffer full), "
          f"{res['sent']:,} sent ({res['sent_rate']:,.0f}/s; {res['unsent_in_fakes_at_end']:,} still in the fakes)")
    print(f"  at the storm's end: received {res['received_at_storm_end']:,.0f}, dispatched "
          f"{res['dispatched_at_storm_end']:,.0f} ({res['dispatched_rate_storm']:,.0f}/s), dropped "
          f"{res['dropped_at_storm_end']:,.0f}; fake VMs' sockets unread {res['read_paused_fraction']:.0%} of the "
          f"time ({res['read_pauses']:,.0f} pauses)")
    print(f"  after {res['drained_s']:.1f}s more: dispatched {res['dispatched']:,.0f} "
          f"({res['dispatched_rate']:,.0f}/s), "
          f"dropped by the bus {res['bus_dropped']:,.0f}; per fake VM dispatched min {res['fairness_min_per_vm']:,.0f} "
          f"max {res['fairness_max_per_vm']:,.0f} (cv {res['fairness_cv']:.3f})")
    print(f"  STOP -> cont -> RESUME of the real VM: baseline p50 {res['latency_baseline_ms']['p50']:.1f} ms; "
          f"under the storm p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms "
          f"(n={lat['n']}, no RESUME within 10 s: {lat['missed_10s']}; target <= 100)")
    print(f"  daemon RSS idle {res['rss_idle_mb']:.0f} MB, peak {res['rss_peak_mb']:.0f} MB, "
          f"after {res['rss_after_mb']:.0f} MB; exit code {res['daemon_exit_code']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        import resource

        _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    main()
