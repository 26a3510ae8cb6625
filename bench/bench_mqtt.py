"""Benchmark: the MQTT event mirror to a local mosquitto.

Starts its own mosquitto on a free loopback port and a ``mosquitto_sub``
that counts what arrives, then pushes N events through the bus callback the
mirror subscribes with and measures:

* the callback's cost per event (what the rule path pays),
* events/s from the first event until the broker acknowledged the last one
  (QoS 0: written to the socket; QoS 1: PUBACK, journal on),
* that the subscriber received every event.

``--intake`` measures the central reactor's intake instead: a raw publisher
process writes ``--events`` ready-made QoS 1 event messages (``host1..3``,
1,000 VMs) to the broker as fast as it can and a :class:`FleetLink` with
``fleet: {events: true}`` takes them in (parse, typed event, dedupe, the fleet
view, the bus): events/s from the first to the last one on the bus.

``--compare`` puts the MQTT clients side by side on the same three jobs, with
no reactor code around them: publish ``--events`` messages at QoS 0 and at QoS 1
(timed until a ``mosquitto_sub`` got them all; QoS 1 with up to 1,000 in flight)
and take in ``--events`` QoS 1 messages from the raw publisher (timed from the
first to the last one handed to the client's callback).  Candidates, each through
its public API only: ``reactor`` (reactor.integrations.mqttclient), ``aiomqtt``
(``publish()`` and ``client.messages``), ``paho`` (paho-mqtt 2's own network
thread, ``publish()``, ``on_message``) and ``gmqtt`` (when importable; it has no
acknowledgement callback, so an outbox could not use it as is).

Usage: ``python bench/bench_mqtt.py [--events 100000] [--runs 5] [--qos 0 1]``,
``--intake``, ``--compare [--clients reactor aiomqtt paho gmqtt]``.
Prints one line per run and the median per QoS (or per candidate and job).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from reactor.integrations.mqtt import BrokerConfig, MirrorConfig, MqttHub, OutboxConfig
from reactor.integrations.remote import FleetConfig, FleetLink
from reactor.model.event import Event
from reactor.ops.journal import Journal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    host = "bench"
    config = None
    dry_run = False

    def __init__(self, tg: asyncio.TaskGroup, journal: Journal | None) -> None:
        self.tg = tg
        self.journal = journal
        self.callbacks: list[Callable[[Event], None]] = []

    def section(self, name: str) -> Any:
        return None

    def emit(self, event: Event) -> None:
        pass

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self.callbacks.append(callback)

    def start_task(self, coro: Any, name: str) -> None:
        self.tg.create_task(coro, name=name)


async def one_run(port: int, n: int, qos: int, workdir: Path, check: bool) -> tuple[float, float, int, float]:
    """(events/s, callback ns/event, received: -1 when the subscriber missed some, 0 when not checked,
    this process's CPU µs/event)."""
    sub = None
    if check:
        sub = subprocess.Popen(  # noqa: ASYNC220 - a benchmark's helper process
            ["mosquitto_sub", "-p", str(port), "-h", "127.0.0.1", "-t", "bench/#", "-q", str(qos), "-C", str(n)],
            stdout=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)
    events = [Event("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "report"},
                    1700000000.0 + i, f"vm{i % 50}") for i in range(n)]  # fmt: skip
    cfg = BrokerConfig(
        name="b", port=port, publish_events=MirrorConfig(prefix="bench", qos=qos), outbox=OutboxConfig(max=n + 10)
    )
    async with contextlib.AsyncExitStack() as stack:
        journal = await stack.enter_async_context(Journal(workdir / f"j{time.monotonic_ns()}.db")) if qos else None
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        daemon = Daemon(tg, journal)
        hub = MqttHub(daemon, {"b": cfg})  # type: ignore[arg-type]
        await hub.start()
        link = hub.link()
        await link.connected.wait()
        (callback,) = daemon.callbacks
        assert link.mirror is not None
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        cb_time = 0.0
        for i in range(0, n, 1000):  # the bus delivers in bursts; the loop runs in between
            c0 = time.perf_counter()
            for e in events[i : i + 1000]:
                callback(e)
            cb_time += time.perf_counter() - c0
            await asyncio.sleep(0)
            while len(link.mirror.queue) > 5000:  # stay under the mirror's bound: measure sustained rate  # noqa: ASYNC110 - polling the code under test
                await asyncio.sleep(0.001)
        while link.mirror.queue or link.outbox.queue or link.outbox.inflight:  # noqa: ASYNC110 - polling the code under test
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        dropped = link.mirror.dropped + link.outbox.dropped
        await hub.aclose()
    received = 0
    if sub is not None:
        try:
            sub.wait(10)
            received = n
        except subprocess.TimeoutExpired:
            sub.kill()
            received = -1
    if dropped:
        print(f"  (dropped {dropped})")
    return n / elapsed, cb_time / n * 1e9, received, cpu / n * 1e6


# --------------------------------------------------------------------------- the raw publisher (intake)

PUBLISHER = r"""
import socket, sys, threading, time, orjson
port, n = int(sys.argv[1]), int(sys.argv[2])
def varint(n):
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)
sock = socket.create_connection(("127.0.0.1", port))
cid = b"bench-publisher"
body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
sock.sendall(bytes((0x10, len(body))) + body)
assert sock.recv(4)[:2] == b"\x20\x02", "no CONNACK"
parts, seqs, mid = [], {}, 0
for i in range(n):
    h, v = i % 3 + 1, (i // 3) % 1000
    seqs[(h, v)] = seqs.get((h, v), 0) + 1
    payload = orjson.dumps({"event": "RTC_CHANGE", "data": {"offset": i, "qom-path": "/machine/rtc"},
                            "timestamp": {"seconds": 1700000000 + i // 1000, "microseconds": i % 1000},
                            "vm": f"vm-{v}", "host": f"host{h}", "seq": seqs[(h, v)]})
    topic = f"reactor/host{h}/vm-{v}/event/RTC_CHANGE".encode()
    mid = mid % 65535 + 1
    parts += (b"\x32", varint(4 + len(topic) + len(payload)), len(topic).to_bytes(2, "big"), topic,
              mid.to_bytes(2, "big"), payload)
blob = b"".join(parts)
threading.Thread(target=lambda: [None for _ in iter(lambda: sock.recv(65536), b"")], daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
for k in range(0, len(blob), 1 << 16):
    sock.sendall(blob[k : k + (1 << 16)])
print("sent", flush=True)
sys.stdin.readline()
"""


class Publisher:
    """The raw QoS 1 publisher process: ``start()`` sends everything, as fast as the broker reads it."""

    def __init__(self, port: int, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(port), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def start(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Counter:
    """Counts callbacks; ``rate`` from the first to the ``n``-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = self.last = self.cpu = 0.0
        self.done = threading.Event()

    def __call__(self, *_: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
            self.cpu = time.process_time()
        if self.count == self.n:
            self.last = time.perf_counter()
            self.cpu = time.process_time() - self.cpu
            self.done.set()

    async def wait(self, timeout: float) -> float:
        t_end = time.monotonic() + timeout
        while not self.done.is_set() and time.monotonic() < t_end:  # noqa: ASYNC110 - set from paho's thread too
            await asyncio.sleep(0.01)
        if not self.done.is_set():
            raise TimeoutError(f"{self.count} of {self.n} within {timeout:.0f} s")
        return (self.n - 1) / (self.last - self.first)


async def intake_run(port: int, n: int) -> tuple[float, float]:
    """Central intake: the fleet link (events: true) takes in ``n`` QoS 1 event messages; (events/s, CPU µs/event)."""
    brokers = {"core": BrokerConfig(name="core", port=port)}
    fleet = FleetConfig(events=True, client_id=f"bench-central-{time.monotonic_ns()}")
    counter = Counter(n)

    class Central:
        host = "central"
        config = None
        dry_run = False
        journal = None

        def __init__(self, tg: asyncio.TaskGroup) -> None:
            self.tg = tg

        def section(self, name: str) -> Any:
            return {"mqtt": brokers, "fleet": fleet}.get(name)

        def emit(self, event: Event) -> None:
            counter()

        def subscribe(self, callback: Callable[[Event], None]) -> None:
            pass

        def start_task(self, coro: Any, name: str) -> None:
            self.tg.create_task(coro, name=name)

    async with asyncio.TaskGroup() as tg:
        link = FleetLink(Central(tg))  # type: ignore[arg-type]
        await link.start()
        await link.connected.wait()
        pub = await asyncio.to_thread(Publisher, port, n)
        try:
            pub.start()
            rate = await counter.wait(120)
        finally:
            pub.close()
            await link.aclose()
    return rate, counter.cpu / (n - 1) * 1e6


# --------------------------------------------------------------------------- candidates side by side

TOPIC = "cmp/h/vm/event/BLOCK_IO_ERROR"
#: Set when the counting subscriber of a publish job is done (or gave up).
SUBSCRIBER_DONE = threading.Event()


def _payloads(n: int) -> list[bytes]:
    return [orjson.dumps({"event": "BLOCK_IO_ERROR", "data": {"device": "d0", "operation": "write", "action":
                          "report"}, "timestamp": {"seconds": 1700000000, "microseconds": i}, "vm": "vm1"})
            for i in range(n)]  # fmt: skip


async def pub_reactor(port: int, payloads: list[bytes], qos: int) -> None:
    from reactor.integrations.mqttclient import MqttClient, Publish

    acked = asyncio.Event()
    left = [len(payloads) if qos else 0]
    room = asyncio.Event()

    def on_ack(mid: int, error: str | None) -> None:
        left[0] -= 1
        room.set()
        if not left[0]:
            acked.set()

    msgs = [Publish(TOPIC, p, qos) for p in payloads]
    async with MqttClient("127.0.0.1", port, client_id="cmp-reactor", on_ack=on_ack) as c:
        for i in range(0, len(msgs), 256):
            while c.inflight > 1000 - 256:
                room.clear()
                await room.wait()
            c.publish_many(msgs[i : i + 256])
            await c.writable()
            await asyncio.sleep(0)
        if qos:
            await acked.wait()


async def pub_aiomqtt(port: int, payloads: list[bytes], qos: int) -> None:
    import aiomqtt

    quiet = logging.getLogger("bench.aiomqtt")
    quiet.setLevel(logging.ERROR)
    async with aiomqtt.Client("127.0.0.1", port, identifier="cmp-aiomqtt", max_inflight_messages=1000,
                              logger=quiet) as c:  # fmt: skip
        for i in range(0, len(payloads), 500):
            await asyncio.gather(*(c.publish(TOPIC, p, qos=qos) for p in payloads[i : i + 500]))


def _pub_paho(port: int, payloads: list[bytes], qos: int) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="cmp-paho")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(TOPIC, p, qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()


async def pub_paho(port: int, payloads: list[bytes], qos: int) -> None:
    await asyncio.to_thread(_pub_paho, port, payloads, qos)


async def pub_gmqtt(port: int, payloads: list[bytes], qos: int) -> None:
    import gmqtt  # type: ignore[import-not-found]

    c = gmqtt.Client("cmp-gmqtt")
    await c.connect("127.0.0.1", port, version=4)
    try:
        for i in range(0, len(payloads), 256):
            for p in payloads[i : i + 256]:
                c.publish(TOPIC, p, qos=qos)
            await asyncio.sleep(0)
        # no acknowledgement callback: stay connected until the subscriber has them all
        while not SUBSCRIBER_DONE.is_set():  # noqa: ASYNC110 - set by the bench from a thread's result
            await asyncio.sleep(0.01)
    finally:
        await c.disconnect()


async def in_reactor(port: int, counter: Counter, ready: asyncio.Event, stop: asyncio.Event) -> None:
    from reactor.integrations.mqttclient import MqttClient

    async with MqttClient("127.0.0.1", port, client_id="cmp-reactor-in", on_message=counter) as c:
        await c.subscribe([("reactor/#", 1)])
        ready.set()
        await stop.wait()


async def in_aiomqtt(port: int, counter: Counter, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier="cmp-aiomqtt-in", max_queued_incoming_messages=0) as c:
        await c.subscribe("reactor/#", qos=1)
        ready.set()

        async def read() -> None:
            async for m in c.messages:
                counter(m.topic.value, m.payload)

        task = asyncio.create_task(read())
        await stop.wait()
        task.cancel()


async def in_paho(port: int, counter: Counter, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="cmp-paho-in")
    c.on_message = lambda _c, _u, m: counter(m.topic, m.payload)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe("reactor/#", 1)
        await asyncio.to_thread(subscribed.wait, 10)
        ready.set()
        await stop.wait()
    finally:
        c.disconnect()
        c.loop_stop()


async def in_gmqtt(port: int, counter: Counter, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import gmqtt

    c = gmqtt.Client("cmp-gmqtt-in")

    def on_message(_c: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        counter(topic, payload)
        return 0

    c.on_message = on_message
    await c.connect("127.0.0.1", port, version=4)
    try:
        c.subscribe("reactor/#", qos=1)
        await asyncio.sleep(0.3)
        ready.set()
        await stop.wait()
    finally:
        await c.disconnect()


CANDIDATES: dict[str, tuple[Callable[..., Any], Callable[..., Any], str]] = {
    "reactor": (pub_reactor, in_reactor, "reactor.integrations.mqttclient"),
    "aiomqtt": (pub_aiomqtt, in_aiomqtt, "aiomqtt"),
    "paho": (pub_paho, in_paho, "paho.mqtt.client"),
    "gmqtt": (pub_gmqtt, in_gmqtt, "gmqtt"),
}


async def compare_publish(port: int, name: str, n: int, qos: int) -> float:
    sub = subprocess.Popen(  # noqa: ASYNC220 - a benchmark's helper process
        ["mosquitto_sub", "-p", str(port), "-h", "127.0.0.1", "-t", "cmp/#", "-q", str(qos), "-C", str(n)],
        stdout=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.3)
        payloads = _payloads(n)
        SUBSCRIBER_DONE.clear()
        t0 = time.perf_counter()
        waited = asyncio.create_task(asyncio.to_thread(sub.wait, 60))
        waited.add_done_callback(lambda _t: SUBSCRIBER_DONE.set())
        await CANDIDATES[name][0](port, payloads, qos)
        try:
            await waited
        except subprocess.TimeoutExpired:
            raise TimeoutError("the subscriber did not get every message within 60 s") from None
        return n / (time.perf_counter() - t0)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


async def compare_intake(port: int, name: str, n: int) -> float:
    counter = Counter(n)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(CANDIDATES[name][1](port, counter, ready, stop))
    try:
        async with asyncio.timeout(15):
            await ready.wait()
        pub = await asyncio.to_thread(Publisher, port, n)
        try:
            pub.start()
            return await counter.wait(120)
        finally:
            pub.close()
    finally:
        stop.set()
        await task


async def compare(port: int, opts: argparse.Namespace) -> None:
    names = [c for c in opts.clients if importlib.util.find_spec(CANDIDATES[c][2].split(".")[0]) is not None]
    for c in set(opts.clients) - set(names):
        print(f"{c}: not installed, skipped")
    jobs: list[tuple[str, Callable[[str], Awaitable[float]]]] = [
            ("publish QoS 0", lambda name: compare_publish(port, name, opts.events, 0)),
            ("publish QoS 1", lambda name: compare_publish(port, name, opts.events, 1)),
            ("intake QoS 1", lambda name: compare_intake(port, name, opts.events))]  # fmt: skip
    results: dict[tuple[str, str], float | str] = {}
    for job, fn in jobs:
        for name in names:
            rates: list[float] = []
            for _ in range(opts.runs):
                try:
                    rates.append(await fn(name))
                except TimeoutError as err:
                    print(f"{name} {job}: {err}")
                    break
            results[job, name] = statistics.median(rates) if len(rates) == opts.runs else "timed out"
            print(f"{job:<14} {name:<8} " + "  ".join(f"{r:>9,.0f}/s" for r in rates), flush=True)
    print(f"\nmedians over {opts.runs} runs of {opts.events:,} messages (messages/s)")
    print(f"{'':<14} " + " ".join(f"{n:>10}" for n in names))
    for job, _ in jobs:
        cells = [results[job, n] for n in names]
        print(f"{job:<14} " + " ".join(f"{c:>10,.0f}" if isinstance(c, float) else f"{c:>10}" for c in cells))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--qos", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-check", action="store_true", help="no counting subscriber (publisher side only)")
    ap.add_argument("--intake", action="store_true", help="the central reactor's intake instead of the mirror")
    ap.add_argument("--compare", action="store_true", help="the MQTT clients side by side instead of the mirror")
    ap.add_argument("--clients", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    opts = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 1000\nset_tcp_nodelay true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - a benchmark's helper process
        try:
            await asyncio.sleep(0.3)
            if opts.compare:
                await compare(port, opts)
                return
            if opts.intake:
                runs = [await intake_run(port, opts.events) for _ in range(opts.runs)]
                for r, (rate, cpu) in enumerate(runs):
                    print(f"intake run {r + 1}: {rate:,.0f} events/s, {cpu:.1f} µs CPU/event")
                print(f"intake: median {statistics.median(r for r, _ in runs):,.0f} events/s, "
                      f"{statistics.median(c for _, c in runs):.1f} µs CPU/event over {opts.runs} runs")
                return
            for qos in opts.qos:
                rates, cpus = [], []
                for r in range(opts.runs):
                    rate, ns, received, cpu = await one_run(port, opts.events, qos, Path(tmp), not opts.no_check)
                    rates.append(rate)
                    cpus.append(cpu)
                    ok = {0: "not checked", opts.events: "all received"}.get(received, "SUBSCRIBER INCOMPLETE")
                    print(f"qos {qos} run {r + 1}: {rate:,.0f} events/s, callback {ns:.0f} ns/event, "
                          f"{cpu:.1f} µs CPU/event, {ok}")
                print(f"qos {qos}: median {statistics.median(rates):,.0f} events/s, "
                      f"{statistics.median(cpus):.1f} µs CPU/event over {opts.runs} runs")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    asyncio.run(main())
