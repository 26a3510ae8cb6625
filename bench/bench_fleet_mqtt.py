"""Fleet over MQTT (issue 8): hosts x fake VMs through bridged mosquittos to a central reactor.

    sudo .venv/bin/python bench/bench_fleet_mqtt.py [--hosts 3] [--vms 1000] [--rate 10000] [--seconds 10]

Builds the namespaces of ``tests/netns.py`` (core broker, a bridged mosquitto
and a ``reactor run`` per host, the central reactor with ``fleet: {events:
true}``), serves ``--vms`` fake QMP VMs per host from one child process per
host, which emits RTC_CHANGE round-robin at ``--rate / --hosts`` events/s for
``--seconds``.  It reports:

* latency from the fake's event timestamp to a QoS 1 subscriber on the core
  broker (the path every event takes to the central reactor: fake → host
  reactor → host mosquitto → bridge → core mosquitto), p50/p99/max;
* events the central reactor took in (``/api/fleet`` ``link.events``) and its
  rate, duplicates dropped, and the central reactor's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
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


def _api(net: FleetNet) -> dict[str, Any]:
    code = "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9187/api/fleet').read().decode())"
    out = subprocess.run(net.exec_args("core", PYTHON, "-c", code), capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-mqtt-"))
    children: list[subprocess.Popen[str]] = []
    with FleetNet(tmp, hosts=a.hosts) as net:
        try:
            for host in net.hosts:
                vms = tmp / host / "vms"
                vms.mkdir(parents=True)
                net.start_reactor(host, HOST.format(host=host, vms=vms))
                children.append(subprocess.Popen(
                    [str(PYTHON), __file__, "_serve", str(vms), str(a.vms), str(a.rate / a.hosts), str(a.seconds)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            net.start_reactor("central", CENTRAL.format(core=CORE_ADDR))
            out = tmp / "sub.jsonl"
            net.subscriber("core", CORE_ADDR, "reactor/+/+/event/#", out)
            for c in children:
                assert c.stdout is not None and c.stdout.readline().strip() == "ready"
            time.sleep(3)
            central_pid = net.procs["reactor-central"].pid
            before = _api(net)["link"]
            assert isinstance(before, dict)
            t0 = time.monotonic()
            for c in children:
                assert c.stdin is not None
                c.stdin.write("go\n")
                c.stdin.flush()
            for c in children:
                assert c.stdout is not None
                print(c.stdout.readline().strip())
            emitted = int(a.rate * a.seconds)
            deadline = time.monotonic() + 60
            link: dict[str, Any] = {}
            while time.monotonic() < deadline:
                got = _api(net)["link"]
                assert isinstance(got, dict)
                link = got
                if int(link["events"]) - int(before["events"]) >= emitted * 0.999:
                    break
                time.sleep(0.2)
            took = time.monotonic() - t0
            rss = _rss_mb(central_pid)
            lat = []
            for line in out.read_text().splitlines():
                m = json.loads(line)
                ev = json.loads(m["payload"])
                if ev["event"] != "RTC_CHANGE":
                    continue
                ts = ev["timestamp"]
                lat.append((m["t"] - (ts["seconds"] + ts["microseconds"] / 1e6)) * 1000)
            lat.sort()
            n_central = int(link["events"]) - int(before["events"])
            print(f"{a.hosts} hosts x {a.vms} VMs, {a.rate:.0f} events/s for {a.seconds:g}s: "
                  f"{len(lat)} events at the core subscriber")
            if lat:
                print(f"fake -> host reactor -> bridge -> core subscriber: p50 {statistics.median(lat):.2f} ms, "
                      f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms, max {lat[-1]:.2f} ms")
            print(f"central reactor: {n_central} events in {took:.1f}s ({n_central / took:.0f}/s incl. drain), "
                  f"duplicates dropped {link['duplicates']}, RSS {rss:.0f} MB")
        finally:
            for c in children:
                c.kill()
                c.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))
    else:
        main()
