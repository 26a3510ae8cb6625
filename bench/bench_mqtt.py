"""Benchmark: the MQTT event mirror to a local mosquitto.

Starts its own mosquitto on a free loopback port and a ``mosquitto_sub``
that counts what arrives, then pushes N events through the bus callback the
mirror subscribes with and measures:

* the callback's cost per event (what the rule path pays),
* events/s from the first event until the broker acknowledged the last one
  (QoS 0: written to the socket; QoS 1: PUBACK, journal on),
* that the subscriber received every event.

Usage: ``python bench/bench_mqtt.py [--events 100000] [--runs 5] [--qos 0 1]``.
Prints one line per run and the median per QoS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reactor.integrations.mqtt import BrokerConfig, MirrorConfig, MqttHub, OutboxConfig
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


async def one_run(port: int, n: int, qos: int, workdir: Path, check: bool) -> tuple[float, float, int]:
    """(events/s, callback ns/event, received: -1 when the subscriber missed some, 0 when not checked)."""
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
    return n / elapsed, cb_time / n * 1e9, received


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--qos", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-check", action="store_true", help="no counting subscriber (publisher side only)")
    opts = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - a benchmark's helper process
        try:
            await asyncio.sleep(0.3)
            for qos in opts.qos:
                rates = []
                for r in range(opts.runs):
                    rate, ns, received = await one_run(port, opts.events, qos, Path(tmp), not opts.no_check)
                    rates.append(rate)
                    ok = {0: "not checked", opts.events: "all received"}.get(received, "SUBSCRIBER INCOMPLETE")
                    print(f"qos {qos} run {r + 1}: {rate:,.0f} events/s, callback {ns:.0f} ns/event, {ok}")
                print(f"qos {qos}: median {statistics.median(rates):,.0f} events/s over {opts.runs} runs")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    asyncio.run(main())
