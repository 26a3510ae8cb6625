"""Fleet over MQTT (issue 8): hosts x fake VMs through bridged mosquittos to a central reactor.

    sudo .venv/bin/python bench/bench_fleet_mqtt.py [--hosts 3] [--vms 1000] [--rate 10000] [--seconds 10]
        [--hops] [--quickack] [--profile DIR]
    sudo .venv/bin/python bench/bench_fleet_mqtt.py --direct [--rate 20000] [--seconds 10]

Builds the namespaces of ``tests/netns.py`` (core broker, a bridged mosquitto
and a ``reactor run`` per host, the central reactor with ``fleet: {events:
true}``), serves ``--vms`` fake QMP VMs per host from one child process per
host, which emits RTC_CHANGE round-robin at ``--rate / --hosts`` events/s for
``--seconds``.  It reports:

* latency from the fake's event timestamp to a QoS 1 subscriber on the core
  broker (the path every event takes to the central reactor: fake → host
  reactor → host mosquitto → bridge → core mosquitto), p50/p99/max, and with
  ``--hops`` also to a subscriber on each host's own broker (fake → host
  reactor → host mosquitto: the host reactor's share; three more processes on
  the CPUs);
* latency from the fake's timestamp to the central reactor's fleet link
  (``/api/fleet`` ``link.lag_ms``, the events of the run only; 10 buckets per
  decade, so a quantile is its bucket's upper bound);
* events the central reactor took in (``link.events``), its mean rate until
  the last one and its best 1-second rate, duplicates dropped, its RSS;
* CPU seconds per process group during the run and per event, and the load
  average before and after.

``--direct`` leaves out the hosts: one publisher process writes ready-made
QoS 1 event messages (``host1..hostN``, ``--vms`` VMs each) straight to the
core broker, so the central reactor's own intake ceiling shows (offer more
than it takes).  ``--quickack`` sets ``quickack`` on the core's route (see
``FleetNet.quickack``: mosquitto 2.0's bridge socket keeps Nagle's algorithm).
With ``--profile DIR``, ``py-spy record`` samples the central reactor and
host1's reactor while the events flow and writes collapsed stacks
(``DIR/central.txt``, ``DIR/host1.txt``; ``py-spy`` from the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns import CORE_ADDR, PYTHON, FleetNet  # type: ignore[import-not-found]  # noqa: E402


async def _serve(directory: str, count: int, rate: float, seconds: float) -> None:
    from fakeqmp import FakeQMP  # type: ignore[import-not-found]

    fakes = [FakeQMP(Path(directory) / f"vm-{i}.qmp", name=f"vm-{i}", status="running") for i in range(count)]
    for fk in fakes:
        await fk.start()
    for fk in fakes:
        await fk.wait_sessions(1, timeout=120)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go"
    t0 = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        while n < due:
            fakes[n % count].emit("RTC_CHANGE", {"offset": n, "qom-path": "/machine/rtc"})
            n += 1
        await asyncio.sleep(0.001)
    print(f"emitted {n}", flush=True)
    await asyncio.sleep(3600)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _publish(addr: str, rate: float, seconds: float, hosts: int, vms: int) -> None:
    """``--direct``: QoS 1 event messages as the hosts' mirrors write them, on a raw MQTT 3.1.1 connection."""
    import orjson

    sock = socket.create_connection((addr, 1883))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cid = f"bench-publisher-{os.getpid()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid  # clean session, no keepalive
    sock.sendall(bytes((0x10, len(body))) + body)
    if sock.recv(4)[:2] != b"\x20\x02":
        sys.exit("publisher: no CONNACK")
    acked = [0]

    def drain() -> None:  # PUBACKs, 4 bytes each
        while data := sock.recv(65536):
            acked[0] += len(data)

    threading.Thread(target=drain, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    count = hosts * vms
    seqs = [0] * count
    t0 = time.monotonic()
    n = mid = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        parts: list[bytes] = []
        while n < due:
            k = n % count
            h, v = k % hosts + 1, k // hosts
            seqs[k] += 1
            now = time.time()
            payload = orjson.dumps({
                "event": "RTC_CHANGE", "data": {"offset": n, "qom-path": "/machine/rtc"},
                "timestamp": {"seconds": int(now), "microseconds": int((now % 1) * 1e6)},
                "vm": f"vm-{v}", "host": f"host{h}", "seq": seqs[k],
            })  # fmt: skip
            topic = f"reactor/host{h}/vm-{v}/event/RTC_CHANGE".encode()
            mid = mid % 65535 + 1
            parts += (b"\x32", _varint(4 + len(topic) + len(payload)), len(topic).to_bytes(2, "big"), topic,
                      mid.to_bytes(2, "big"), payload)  # fmt: skip
            n += 1
        if parts:
            sock.sendall(b"".join(parts))
        time.sleep(0.001)
    print(f"emitted {n}", flush=True)
    time.sleep(3600)


def _poll() -> None:
    """One ``/api/fleet`` answer per line read (a long-lived process in the core namespace)."""
    import urllib.request

    for _line in sys.stdin:
        try:
            text = urllib.request.urlopen("http://127.0.0.1:9187/api/fleet", timeout=10).read().decode()
        except OSError as err:
            text = json.dumps({"error": str(err)})
        sys.stdout.write(text.replace("\n", " ") + "\n")
        sys.stdout.flush()


HOST = """\
host: {host}
state_dir: state
rules: [rules]
discover: [{{glob: {vms}/*.qmp}}]
journal: {{events: none}}
mqtt: {{local: {{host: 127.0.0.1, publish_events: {{qos: 1}}}}}}
"""
CENTRAL = """\
host: central
state_dir: state
rules: [rules]
journal: {{events: none}}
http: {{listen: 127.0.0.1:9187}}
mqtt: {{core: {{host: {core}}}}}
fleet: {{events: true}}
"""


def _latencies(path: Path) -> list[float]:
    """Milliseconds from each RTC_CHANGE's QMP timestamp to its arrival at a subscriber, sorted."""
    lat = []
    for line in path.read_text().splitlines():
        m = json.loads(line)
        ev = json.loads(m["payload"])
        if ev["event"] != "RTC_CHANGE":
            continue
        ts = ev["timestamp"]
        lat.append((m["t"] - (ts["seconds"] + ts["microseconds"] / 1e6)) * 1000)
    lat.sort()
    return lat


def _describe(lat: list[float]) -> str:
    if not lat:
        return "no events"
    return (f"p50 {statistics.median(lat):.2f} ms, p99 {lat[max(int(len(lat) * 0.99) - 1, 0)]:.2f} ms, "
            f"max {lat[-1]:.2f} ms ({len(lat)} events)")  # fmt: skip


def _lag(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The central link's lag histogram of the run (after minus before)."""
    b, a = before.get("buckets", {}), after.get("buckets", {})
    counts = sorted(((float(k), a[k] - b.get(k, 0)) for k in a), key=lambda kc: kc[0])
    total = sum(c for _k, c in counts)
    if not total:
        return "no events"

    def q(frac: float) -> float:
        seen = 0
        for bound, c in counts:
            seen += c
            if c and seen >= frac * total:
                return bound
        return counts[-1][0]

    top = float(after["max"])
    return (f"p50 <= {min(q(0.5), top):.3g} ms, p99 <= {min(q(0.99), top):.3g} ms ({total} events; "
            f"max since start {top:.0f} ms)")  # fmt: skip


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _group(key: str) -> str:
    if key == "reactor-central":
        return "central reactor"
    if key.startswith("reactor-"):
        return "host reactors"
    if key == "broker-core":
        return "core mosquitto"
    if key.startswith("broker-"):
        return "host mosquittos"
    if key.startswith("sub-"):
        return "test subscribers"
    return key


class _Api:
    def __init__(self, net: FleetNet) -> None:
        self.proc = subprocess.Popen(net.exec_args("core", PYTHON, __file__, "_poll"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip

    def link(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        data = json.loads(self.proc.stdout.readline())
        if "error" in data:
            raise RuntimeError(f"/api/fleet: {data['error']}")
        link: dict[str, Any] = data["link"]
        return link


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--direct", action="store_true", help="no hosts: a publisher feeds the core broker directly")
    ap.add_argument("--hops", action="store_true", help="also subscribe on each host's broker (hop 1 latency)")
    ap.add_argument("--quickack", action="store_true", help="quickack on the core's route")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy collapsed stacks of central and host1 here")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-mqtt-"))
    children: dict[str, subprocess.Popen[str]] = {}
    spies: list[subprocess.Popen[bytes]] = []
    api: _Api | None = None
    with FleetNet(tmp, hosts=0 if a.direct else a.hosts) as net:
        try:
            if a.quickack:
                net.quickack(True)
            for host in net.hosts:
                vms = tmp / host / "vms"
                vms.mkdir(parents=True)
                net.start_reactor(host, HOST.format(host=host, vms=vms))
                children[f"fakes-{host}"] = subprocess.Popen(
                    [str(PYTHON), __file__, "_serve", str(vms), str(a.vms), str(a.rate / a.hosts), str(a.seconds)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
            net.start_reactor("central", CENTRAL.format(core=CORE_ADDR))
            out = tmp / "sub.jsonl"
            if not a.direct:  # with --direct, the publisher's own timestamps go to the central only
                net.subscriber("core", CORE_ADDR, "reactor/+/+/event/#", out)
            local = {host: tmp / f"sub-{host}.jsonl" for host in net.hosts} if a.hops else {}
            for host, path in local.items():
                net.subscriber(host, "127.0.0.1", f"reactor/{host}/+/event/#", path)
            net.wait_port("core", "127.0.0.1", 9187, timeout=30)
            if a.direct:
                args = ("_publish", CORE_ADDR, str(a.rate), str(a.seconds), str(a.hosts), str(a.vms))
                children["publisher"] = subprocess.Popen(net.exec_args("core", PYTHON, __file__, *args),
                                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for c in children.values():
                assert c.stdout is not None and c.stdout.readline().strip() == "ready"
            api = _Api(net)
            time.sleep(3)
            central_pid = net.procs["reactor-central"].pid
            before = api.link()
            pids = {key: p.pid for key, p in net.procs.items()} | {key: p.pid for key, p in children.items()}
            cpu0 = {key: _cpu_s(pid) for key, pid in pids.items()}
            load0 = os.getloadavg()
            if a.profile is not None:
                a.profile.mkdir(parents=True, exist_ok=True)
                spy = ROOT / ".venv" / "bin" / "py-spy"
                for name in ("central", *net.hosts[:1]):
                    pid = net.procs[f"reactor-{name}"].pid
                    spies.append(subprocess.Popen(
                        [str(spy), "record", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(a.seconds) + 5),
                         "-p", str(pid), "-o", str(a.profile / f"{name}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            emitted: list[int] = []

            def read_emitted(c: subprocess.Popen[str]) -> None:
                assert c.stdout is not None
                emitted.append(int(c.stdout.readline().split()[1]))

            t0 = time.monotonic()
            for c in children.values():
                assert c.stdin is not None
                c.stdin.write("go\n")
                c.stdin.flush()
            for c in children.values():
                threading.Thread(target=read_emitted, args=(c,), daemon=True).start()
            samples: list[tuple[float, int]] = [(0.0, int(before["events"]))]
            link = before
            while True:
                time.sleep(0.25)
                link = api.link()
                now = time.monotonic() - t0
                samples.append((now, int(link["events"])))
                done = len(emitted) == len(children)
                if done and samples[-1][1] - samples[0][1] >= sum(emitted):
                    break
                stalled = [s for s in samples if s[1] == samples[-1][1]]
                if (done and now - stalled[0][0] > 5) or now > a.seconds + 120:
                    break
            last = next(t for t, n in samples if n == samples[-1][1])
            cpu = {key: _cpu_s(pid) - cpu0[key] for key, pid in pids.items()}
            rss = _rss_mb(central_pid)
            load1 = os.getloadavg()
            time.sleep(1)  # the subscribers' last lines
            n_central = samples[-1][1] - samples[0][1]
            best = max(((n1 - n0) / (t1 - t0_) for (t0_, n0), (t1, n1) in zip(samples, samples[4:], strict=False)),
                       default=0.0)  # fmt: skip
            what = f"publisher direct to the core broker ({a.hosts} hosts x {a.vms} VMs of ids)" if a.direct \
                else f"{a.hosts} hosts x {a.vms} VMs"  # fmt: skip
            print(f"{what}, {a.rate:.0f} events/s offered for {a.seconds:g}s: {sum(emitted)} emitted")
            if local:
                print(f"fake -> host reactor -> host mosquitto (local subscribers): "
                      f"{_describe(sorted(x for p in local.values() for x in _latencies(p)))}")  # fmt: skip
            if out.exists():
                print(f"-> core broker subscriber: {_describe(_latencies(out))}")
            if "lag_ms" in link:
                print(f"-> central reactor's fleet link (lag_ms): {_lag(before['lag_ms'], link['lag_ms'])}")
            print(f"central reactor: {n_central} events, the last {last:.1f}s after the start "
                  f"({n_central / max(last, 1e-9):.0f}/s mean, best 1 s {best:.0f}/s), "
                  f"duplicates dropped {link['duplicates']}, RSS {rss:.0f} MB")  # fmt: skip
            groups: dict[str, float] = {}
            for key, seconds in cpu.items():
                groups[_group(key)] = groups.get(_group(key), 0.0) + seconds
            print("CPU during the run: " + ", ".join(
                f"{g} {s:.1f}s ({s / max(n_central, 1) * 1e6:.0f} us/event)" for g, s in sorted(groups.items())
            ) + f"; {sum(groups.values()):.1f}s in {last:.1f}s on {os.cpu_count()} CPUs")  # fmt: skip
            print(f"load average before {load0[0]:.2f} {load0[1]:.2f}, after {load1[0]:.2f} {load1[1]:.2f}")
            for spy_proc in spies:
                spy_proc.wait(60)
        finally:
            procs: list[subprocess.Popen[Any]] = [*children.values(), *spies, *([api.proc] if api else [])]
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_publish":
        _publish(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_poll":
        _poll()
    else:
        main()
