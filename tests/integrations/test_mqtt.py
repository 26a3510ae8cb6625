"""MQTT against a real mosquitto: config, the mqtt action, outbox, mirror, source, TLS, credentials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from reactor.actions.action import VMHandle
from reactor.actions.mqtt import MQTT, MqttArgs
from reactor.errors import ConfigError
from reactor.integrations.mqtt import (
    DROP_EVENT,
    BrokerConfig,
    LinkState,
    MirrorConfig,
    MqttError,
    MqttHub,
    OutboxConfig,
    Secret,
    SubscribeTopic,
    TlsConfig,
    parse_brokers,
)
from reactor.model.event import Event
from reactor.ops.journal import Journal
from reactor.rules.source import MapNode, parse

try:
    from tests.broker import Broker, free_port, fresh_broker, mosquitto
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo
    from broker import Broker, free_port, fresh_broker, mosquitto  # type: ignore[import-not-found,no-redef,unused-ignore]

__all__ = ["fresh_broker", "mosquitto"]

pytestmark = pytest.mark.mqtt


# --------------------------------------------------------------------------- harness


class Daemon:
    """A minimal DaemonContext: a bus that records, tasks in one TaskGroup."""

    def __init__(self, tg: asyncio.TaskGroup, brokers: dict[str, BrokerConfig], journal: Any = None) -> None:
        self.tg = tg
        self.brokers = brokers
        self._journal = journal
        self.emitted: list[Event] = []
        self.callbacks: list[Callable[[Event], None]] = []
        self.config = None
        self.dry_run = False
        self.host = "h1"

    def section(self, name: str) -> Any:
        return self.brokers if name == "mqtt" else None

    @property
    def journal(self) -> Any:
        return self._journal

    def emit(self, event: Event) -> None:
        self.emitted.append(event)
        self.publish(event)

    def publish(self, event: Event) -> None:
        """An event on the bus: subscribers see it."""
        for cb in self.callbacks:
            cb(event)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self.callbacks.append(callback)

    def start_task(self, coro: Any, name: str) -> None:
        self.tg.create_task(coro, name=name)


@contextlib.asynccontextmanager
async def running_hub(brokers: dict[str, BrokerConfig], journal: Any = None) -> AsyncIterator[tuple[MqttHub, Daemon]]:
    async with asyncio.TaskGroup() as tg:
        daemon = Daemon(tg, brokers, journal)
        hub = MqttHub(daemon)
        try:
            await hub.start()
            yield hub, daemon
        finally:
            await hub.aclose()


@dataclass
class Ctx:
    """A minimal ActionContext for running actions without the engine."""

    event: Event
    resources: dict[type, Any]
    vars: Mapping[str, Any] = field(default_factory=dict)
    rule: str = "test-rule"
    run_id: int = 1
    step: int = 0
    dry_run: bool = False

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger("test.action"), {})

    def resource(self, cls: type[Any]) -> Any:
        return self.resources[cls]

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @property
    def vm(self) -> VMHandle:
        raise NotImplementedError

    def vm_named(self, name: str) -> VMHandle:
        raise NotImplementedError

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        raise NotImplementedError

    async def wait_for(
        self,
        name: str | list[str],
        *,
        match: Callable[[Event], bool] | None = None,
        vm: str | None = None,
        timeout: float,
    ) -> Event:
        raise NotImplementedError


async def until(predicate: Callable[[], object], timeout: float = 10) -> None:
    """Poll ``predicate`` until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state the code under test exposes
            await asyncio.sleep(0.02)


async def connected(hub: MqttHub, name: str = "main", timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        await hub.link(name).connected.wait()


class Subscriber:
    """Collects messages on a topic filter with a persistent session (survives broker restarts)."""

    def __init__(self, port: int, topic: str, *, qos: int = 1, client_id: str = "test-sub", **kw: Any) -> None:
        self.port, self.topic, self.qos, self.client_id, self.kw = port, topic, qos, client_id, kw
        self.messages: list[aiomqtt.Message] = []
        self.connects = 0
        self.dups: list[bool] = []  # the DUP flag of each message: a broker's redelivery
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.client_id, clean_session=False, **self.kw
                )
                base = client._client.on_message

                def on_message(c: Any, u: Any, m: Any, base: Any = base) -> None:
                    self.dups.append(bool(m.dup))
                    base(c, u, m)

                client._client.on_message = on_message
                async with client as c:
                    self.connects += 1
                    await c.subscribe(self.topic, qos=self.qos)
                    self.ready.set()
                    async for m in c.messages:
                        self.messages.append(m)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="test-subscriber")
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_count(self, n: int, timeout: float = 10) -> list[aiomqtt.Message]:
        await until(lambda: len(self.messages) >= n, timeout)
        return self.messages

    def payloads(self) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages]


def ev(name: str = "STOP", vm: str = "vm1", **data: Any) -> Event:
    return Event(name, data, 1700000000.5, vm)


def node(text: str, path: str = "/etc/reactor/config.yaml") -> MapNode:
    root = parse(text, path, ConfigError)
    assert isinstance(root, MapNode)
    sub = root.get("mqtt")
    assert isinstance(sub, MapNode)
    return sub


# --------------------------------------------------------------------------- config


def test_parse_defaults_and_order(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    brokers = parse_brokers(
        node(f"""
mqtt:
  main:
    host: broker.lan
    username: reactor
    password_file: {pw}
    tls: {{ca_file: {pw}}}
    publish_events: true
    subscribe: ["reactor/+/+/event/#", {{topic: other/#, qos: 1}}]
  backup:
    port: 1884
    protocol: 5
    password: xyz
    username: u
    publish_events: {{events: [BLOCK_IO_ERROR, "GUEST_*"], vms: ["web-*"], qos: 1, prefix: site}}
    outbox: {{max: 5, policy: drop-new}}
""")
    )
    assert list(brokers) == ["main", "backup"]
    main, backup = brokers["main"], brokers["backup"]
    assert (main.host, main.port, main.protocol) == ("broker.lan", 8883, "3.1.1")
    assert main.tls == TlsConfig(ca_file=str(pw))
    assert main.publish_events == MirrorConfig(prefix="reactor")
    assert main.subscribe == (SubscribeTopic("reactor/+/+/event/#", 0), SubscribeTopic("other/#", 1))
    assert main.outbox == OutboxConfig(10000, "drop-oldest")
    assert (backup.port, backup.protocol, backup.outbox) == (1884, "5", OutboxConfig(5, "drop-new"))
    assert backup.publish_events == MirrorConfig("site", ("BLOCK_IO_ERROR", "GUEST_*"), ("web-*",), 1)
    assert "xyz" not in repr(backup) and "'***'" in repr(backup)
    assert repr(Secret("xyz")) == "'***'" and str(Secret("xyz")) == "'***'"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("mqtt:\n  main:\n    hots: x\n", "3:5", "unknown key 'hots' in mqtt.main; did you mean 'host'?"),
        ("mqtt:\n  main:\n    port: abc\n", "3:11", "port: expected an integer, got string"),
        ("mqtt:\n  main:\n    port: 70000\n", "3:11", "port: 70000 is not between 1 and 65535"),
        ("mqtt:\n  main:\n    username: u\n    password_file: /nonexistent/pw\n", "4:20",
         "password_file: no such file: /nonexistent/pw"),
        ("mqtt:\n  main:\n    protocol: 4\n", "3:15", "protocol: expected 3.1.1 or 5, got 4"),
        ("mqtt:\n  main:\n    tls: {verfy: false}\n", "3:11", "did you mean 'verify'?"),
        ("mqtt:\n  main:\n    outbox: {policy: drop-all}\n", "3:22", "not one of drop-oldest, drop-new"),
        ("mqtt:\n  main:\n    subscribe: [a/#/b]\n", "3:17", "not a valid MQTT topic filter"),
        ("mqtt:\n  main:\n    publish_events: {qos: 3}\n", "3:27", "publish_events.qos: 3 is not between 0 and 2"),
        ("mqtt:\n  main: 5\n", "2:9", "expected a mapping of broker settings"),
        ("mqtt:\n  main:\n    password: x\n", "3:5", "a password needs a username"),
    ],
)  # fmt: skip
def test_parse_errors_have_positions(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_brokers(node(text, "/etc/reactor/config.yaml"))
    assert str(info.value).startswith(f"/etc/reactor/config.yaml:{where}: ")
    assert message in str(info.value)


def test_relative_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    brokers = parse_brokers(node("mqtt:\n  m:\n    username: u\n    password_file: pw\n", str(tmp_path / "c.yaml")))
    assert brokers["m"].password_file == str(tmp_path / "pw")


# --------------------------------------------------------------------------- action and delivery


def cfg(broker: Broker, **kw: Any) -> BrokerConfig:
    return BrokerConfig(name=kw.pop("name", "main"), host="127.0.0.1", port=kw.pop("port", broker.port), **kw)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_action_qos0_and_qos1_delivery(mosquitto: Broker, protocol: str) -> None:
    topic = f"t/action/{protocol}"
    async with (
        Subscriber(mosquitto.port, f"{topic}/#", client_id=f"sub-action-{protocol}") as sub,
        running_hub({"main": cfg(mosquitto, protocol=protocol)}) as (hub, _),
    ):
        await connected(hub)
        ctx = Ctx(ev("BLOCK_IO_ERROR", vm="web-1", action="stop"), {MqttHub: hub})
        r0 = await MQTT.run(ctx, MqttArgs(topic=f"{topic}/a"))
        r1 = await MQTT.run(ctx, MqttArgs(topic=f"{topic}/b", payload="hello", qos=1))
        r2 = await MQTT.run(ctx, MqttArgs(topic=f"{topic}/c", payload={"x": 1}, qos=1, wait=True))
        assert r0 == {"broker": "main", "topic": f"{topic}/a", "qos": 0, "acknowledged": False}
        assert r2 == {"broker": "main", "topic": f"{topic}/c", "qos": 1, "acknowledged": True}
        assert isinstance(r1, dict) and r1["qos"] == 1
        await sub.wait_count(3)
    by_topic = {m.topic.value: bytes(m.payload) for m in sub.messages}
    event = orjson.loads(by_topic[f"{topic}/a"])
    assert event["event"] == "BLOCK_IO_ERROR" and event["vm"] == "web-1" and event["data"] == {"action": "stop"}
    assert by_topic[f"{topic}/b"] == b"hello"
    assert orjson.loads(by_topic[f"{topic}/c"]) == {"x": 1}


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_qos0_qos1_qos2_in_order_at_volume(mosquitto: Broker, protocol: str) -> None:
    n = 3000
    topic = f"t/mixed/{protocol}"
    async with (
        # The subscription is QoS 1: paho's inbound QoS 2 handling stalls now and then under load.
        Subscriber(mosquitto.port, f"{topic}/#", qos=1, client_id=f"sub-mixed-{protocol}") as sub,
        running_hub({"main": cfg(mosquitto, protocol=protocol)}) as (hub, _),
    ):
        await connected(hub)
        link = hub.link()
        waiters = []
        for i in range(n):
            w = link.publish(f"{topic}/a", str(i).encode(), (0, 1, 1)[i % 3], wait=i % 500 == 1)
            if w is not None:
                waiters.append(w)
            if i % 700 == 0:
                await asyncio.sleep(0)
        qos2 = [link.publish(f"{topic}/b", str(i).encode(), 2, wait=True) for i in range(50)]
        async with asyncio.timeout(20):
            await asyncio.gather(*waiters)

        def count(suffix: str, qos: int) -> int:
            return sum(1 for m in sub.messages if m.topic.value.endswith(suffix) and m.qos == qos)

        async with asyncio.timeout(20):
            await asyncio.gather(*(w for w in qos2 if w is not None))  # PUBCOMP for every QoS 2 message
        try:
            await until(lambda: count("/a", 1) >= n * 2 // 3, 20)
        except TimeoutError:
            raise AssertionError(
                f"a1={count('/a', 1)} total={len(sub.messages)} stats={hub.stats()} connects={sub.connects}"
            ) from None
        assert link.outbox.dropped == 0
    a = [int(bytes(m.payload)) for m in sub.messages if m.topic.value.endswith("/a")]
    b = [int(bytes(m.payload)) for m in sub.messages if m.topic.value.endswith("/b")]
    # QoS 1: all, in order.  QoS 0 may be dropped by the broker, never reordered among itself;
    # the broker keeps order per QoS level (QoS 0 may overtake QoS 1 held in its in-flight window).
    assert [x for x in a if x % 3] == [x for x in range(n) if x % 3]
    assert b == sorted(b)  # what the subscriber got of QoS 2 (downgraded to 1), in order
    qos0 = [x for x in a if x % 3 == 0]
    assert qos0 == sorted(set(qos0)) and len(qos0) > n // 3 // 2


async def test_retained_status_keeps_the_reason_qemu_gave(mosquitto: Broker) -> None:
    # QEMU's order: BLOCK_IO_ERROR (action stop), then STOP; GUEST_PANICKED (pause), then STOP
    mirror = MirrorConfig(prefix="why", events=(), vms=("*",), qos=1)
    async with Subscriber(mosquitto.port, "why/h1/+/status", client_id="sub-why") as sub, \
            running_hub({"main": cfg(mosquitto, publish_events=mirror)}) as (hub, daemon):
        await connected(hub)
        for e in [ev("BLOCK_IO_ERROR", "a", action="stop", device="d0", operation="write"), ev("STOP", "a"),
                  ev("RESUME", "a"), ev("STOP", "a"),
                  ev("GUEST_PANICKED", "b", action="pause"), ev("STOP", "b"),
                  ev("BLOCK_IO_ERROR", "c", action="report", device="d0", operation="read"), ev("STOP", "c"),
                  ev("SHUTDOWN", "d", guest=True, reason="guest-shutdown"), ev("STOP", "d")]:  # fmt: skip
            daemon.publish(e)
        await sub.wait_count(6)
    got = [(m.topic.value.split("/")[2], bytes(m.payload).decode()) for m in sub.messages]
    assert got == [("a", "io-error"), ("a", "running"), ("a", "paused"), ("b", "guest-panicked"),
                   ("c", "paused"), ("d", "shutdown")], got
    async with Subscriber(mosquitto.port, "why/h1/+/status", client_id="sub-why-late") as late:
        await late.wait_count(4)
        assert sorted(late.payloads()) == [b"guest-panicked", b"paused", b"paused", b"shutdown"]


async def test_unknown_broker_is_an_action_error(mosquitto: Broker) -> None:
    async with running_hub({"main": cfg(mosquitto)}) as (hub, _):
        ctx = Ctx(ev(), {MqttHub: hub})
        with pytest.raises(MqttError, match="unknown broker 'mian'; did you mean 'main'"):
            await MQTT.run(ctx, MqttArgs(topic="x", broker="mian"))


async def test_mirror_events_status_presence(mosquitto: Broker) -> None:
    mirror = MirrorConfig(prefix="mir", events=("STOP", "GUEST_*"), vms=("web-*",), qos=1)
    async with Subscriber(mosquitto.port, "mir/#", client_id="sub-mirror") as sub:
        async with running_hub({"main": cfg(mosquitto, publish_events=mirror)}) as (hub, daemon):
            await connected(hub)
            for e in [ev("STOP", "web-1"), ev("RESUME", "web-1"), ev("GUEST_PANICKED", "web-2", action="pause"),
                      ev("STOP", "db-1"), ev("RESET", "web-1"),
                      ev("BLOCK_IO_ERROR", "web-3", action="stop"), ev("STOP", "web-3"),  # io-error, not paused
                      ev("REACTOR_VM_DISCONNECTED", "web-3", reason="x")]:  # fmt: skip
                daemon.publish(e)
            await sub.wait_count(9)
        await sub.wait_count(10)  # offline on a clean stop
    got = [(m.topic.value, bytes(m.payload)) for m in sub.messages]
    assert got[0] == ("mir/h1/status", b"online")
    events = [t for t, _ in got if "/event/" in t]
    assert events == ["mir/h1/web-1/event/STOP", "mir/h1/web-2/event/GUEST_PANICKED", "mir/h1/web-3/event/STOP"]
    status = [(t, p) for t, p in got if t.endswith("/status") and t != "mir/h1/status"]
    assert status == [("mir/h1/web-1/status", b"paused"), ("mir/h1/web-1/status", b"running"),
                      ("mir/h1/web-2/status", b"guest-panicked"), ("mir/h1/web-3/status", b"io-error"),
                      ("mir/h1/web-3/status", b"disconnected")]  # fmt: skip
    assert got[-1] == ("mir/h1/status", b"offline")
    # retained: a late subscriber sees the VM's last status
    async with Subscriber(mosquitto.port, "mir/h1/web-1/status", client_id="sub-late") as late:
        await late.wait_count(1)
        assert late.payloads() == [b"running"] and late.messages[0].retain


HUB_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from reactor.integrations.mqtt import BrokerConfig, MirrorConfig, MqttHub

    class D:
        host = "victim"
        journal = None
        def section(self, name): return None
        def emit(self, e): pass
        def subscribe(self, cb): pass
        def start_task(self, coro, name): asyncio.get_running_loop().create_task(coro, name=name)

    async def main():
        cfg = BrokerConfig(name="m", port=int(sys.argv[1]), publish_events=MirrorConfig(prefix="will"))
        hub = MqttHub(D(), {"m": cfg})
        await hub.start()
        await hub.link().connected.wait()
        print("up", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


async def test_last_will_after_sigkill(mosquitto: Broker, tmp_path: Path) -> None:
    script = tmp_path / "hub.py"
    script.write_text(HUB_SCRIPT)
    async with Subscriber(mosquitto.port, "will/victim/status", client_id="sub-will") as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(mosquitto.port), stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(15):
                assert (await proc.stdout.readline()).strip() == b"up"
            await sub.wait_count(1)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await sub.wait_count(2)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert sub.payloads() == [b"online", b"offline"]
    assert [m.retain for m in sub.messages] == [False, False]  # live delivery: retain flag not set


async def test_broker_restart_mid_stream_qos1_exactly_once_in_order(fresh_broker: Broker) -> None:
    n = 3000
    async with Subscriber(fresh_broker.port, "stream/#", client_id="sub-stream") as sub:
        async with running_hub({"main": cfg(fresh_broker)}) as (hub, _):
            await connected(hub)
            link = hub.link()
            for i in range(n):
                link.publish("stream/x", str(i).encode(), 1)
                if i == n // 3:
                    await asyncio.sleep(0.05)  # some sent, some acknowledged, some waiting
                    await asyncio.to_thread(fresh_broker.restart, signal.SIGTERM, 0.3)
            await until(lambda: not (link.outbox.queue or link.outbox.inflight), 20)
            assert link.connects >= 2
            resent = link.outbox.resent
            assert LinkState.BACKOFF in link.states or LinkState.CONNECTING in link.states[2:]
        await sub.wait_count(n, timeout=20)
        await asyncio.sleep(0.3)  # any duplicate would arrive now
    got = [int(p) for p in sub.payloads()]
    # Everything arrives, first arrivals in order.  Repeats: the broker's own redeliveries to the
    # subscriber (DUP set), and messages reactor sent again because the connection dropped before
    # their PUBACK (at-least-once; at most once more each, never more than were unacknowledged).
    seen: dict[int, int] = {}
    repeats = 0
    for g, dup in zip(got, sub.dups, strict=True):
        if g in seen and not dup:
            repeats += 1
            assert seen[g] == 1, f"message {g} arrived three times"
        seen[g] = seen.get(g, 0) + (not dup)
    assert repeats <= resent
    assert list(dict.fromkeys(got)) == list(range(n))


async def test_outbox_full_drops_are_counted_and_journaled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = free_port()
    oldest = BrokerConfig(name="m", port=dead, outbox=OutboxConfig(max=5, policy="drop-oldest"))
    newest = BrokerConfig(name="n", port=dead, outbox=OutboxConfig(max=5, policy="drop-new"))
    async with (
        Journal(tmp_path / "journal.db") as journal,
        running_hub({"m": oldest, "n": newest}, journal) as (hub, _),
    ):
        m, n = hub.link("m"), hub.link("n")
        for i in range(8):
            m.publish("t", str(i).encode(), 1)
        assert (m.outbox.dropped, [x.payload for x in m.outbox.queue]) == (3, [b"3", b"4", b"5", b"6", b"7"])
        ctx = Ctx(ev(), {MqttHub: hub})
        for i in range(5):
            await MQTT.run(ctx, MqttArgs(topic="t", payload=str(i), qos=1, broker="n"))
        with pytest.raises(MqttError, match="outbox full"):
            await MQTT.run(ctx, MqttArgs(topic="t", payload="5", qos=1, broker="n"))
        assert n.outbox.dropped == 1 and [x.payload for x in n.outbox.queue] == [b"0", b"1", b"2", b"3", b"4"]
        assert hub.stats()["m"]["dropped"] == 3
        drops = await asyncio.to_thread(journal.events, name=DROP_EVENT)
        assert {(d.data["broker"], d.data["policy"]) for d in drops} == {("m", "drop-oldest"), ("n", "drop-new")}
        kept = await asyncio.to_thread(journal.outbox_pending, "m", 100)
        assert [k.payload for k in kept] == [b"3", b"4", b"5", b"6", b"7"]
    assert "outbox full" in caplog.text


async def test_outbox_survives_a_restart(mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    dead = BrokerConfig(name="main", port=free_port())
    async with Journal(db) as journal, running_hub({"main": dead}, journal) as (hub, _):
        for i in range(50):
            hub.link().publish("survive/x", str(i).encode(), 1)
        hub.link().publish("survive/x", b"qos0-is-not-kept", 0)
    async with Journal(db) as journal:  # reopened: a new daemon
        assert len(await asyncio.to_thread(journal.outbox_pending, "main", 1000)) == 50
        async with (
            Subscriber(mosquitto.port, "survive/#", client_id="sub-survive") as sub,
            running_hub({"main": cfg(mosquitto)}, journal) as (hub, _),
        ):
            await sub.wait_count(50)
            await until(lambda: not hub.link().outbox.inflight, 5)
        assert await asyncio.to_thread(journal.outbox_pending, "main", 1000) == []
    assert [int(p) for p in sub.payloads()] == list(range(50))


async def test_source_emits_events_and_survives_garbage(mosquitto: Broker, caplog: pytest.LogCaptureFixture) -> None:
    mirror = MirrorConfig(prefix="loop", qos=0)
    source = (SubscribeTopic("central/#", 1),)
    async with running_hub({"main": cfg(mosquitto, subscribe=source, publish_events=mirror)}) as (hub, daemon):
        await connected(hub)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            qmp = {"event": "STOP", "data": {}, "timestamp": {"seconds": 1700000000, "microseconds": 250000}}
            await pub.publish("central/hostA/web-1/event/STOP", orjson.dumps(qmp), qos=1)
            await pub.publish("central/garbage", b"\x00not json", qos=1)
            await pub.publish("central/list", b"[1, 2]", qos=1)
            await pub.publish("central/novm", orjson.dumps(qmp), qos=1)
            other = {**qmp, "vm": "db-2", "host": "hostB", "event": "RESUME"}
            await pub.publish("central/x", orjson.dumps(other), qos=1)
            await until(lambda: not (len(daemon.emitted) < 2), 5)
        await asyncio.sleep(0.2)
        a, b = daemon.emitted
        assert (a.name, a.vm, a.host, a.timestamp) == ("STOP", "web-1", "hostA", 1700000000.25)
        assert (b.name, b.vm, b.host) == ("RESUME", "db-2", "hostB")
        stats = hub.stats()["main"]
        assert (stats["source_received"], stats["source_invalid"]) == (2, 3)
        assert hub.link().state is LinkState.CONNECTED
        assert hub.mirror_skipped == 2 and stats["mirror_published"] == 0  # no loops
    assert "is not an event" in caplog.text


async def test_tls_with_the_right_and_a_wrong_ca(mosquitto: Broker, caplog: pytest.LogCaptureFixture) -> None:
    good = cfg(mosquitto, name="good", port=mosquitto.tls_port, tls=TlsConfig(ca_file=str(mosquitto.ca)))
    bad = cfg(mosquitto, name="bad", port=mosquitto.tls_port, tls=TlsConfig(ca_file=str(mosquitto.other_ca)))
    async with Subscriber(mosquitto.port, "tls/#", client_id="sub-tls") as sub:
        async with running_hub({"good": good, "bad": bad}) as (hub, _):
            await connected(hub, "good")
            await hub.link("good").publish("tls/ok", b"1", 1, wait=True)  # type: ignore[misc]
            await until(lambda: hub.link("bad").last_error is not None, 5)
            assert hub.link("bad").state is not LinkState.CONNECTED
            assert "TLS certificate verification failed" in (hub.link("bad").last_error or "")
        await sub.wait_count(1)
    assert "TLS certificate verification failed" in caplog.text


async def test_credentials_and_secrets_stay_secret(
    mosquitto: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pw = tmp_path / "pw"
    pw.write_text(mosquitto.password + "\n")
    good = cfg(mosquitto, name="good", port=mosquitto.auth_port, username=mosquitto.username, password_file=str(pw))
    bad = cfg(mosquitto, name="bad", port=mosquitto.auth_port, username=mosquitto.username,
              password=Secret("wrong-" + mosquitto.password))  # fmt: skip
    async with running_hub({"good": good, "bad": bad}) as (hub, _):
        await connected(hub, "good")
        await until(lambda: hub.link("bad").last_error is not None, 5)
        assert "broker refused the connection" in (hub.link("bad").last_error or "")
        assert "authori" in (hub.link("bad").last_error or "").lower()
        texts = [repr(hub), repr(hub.link("good")), repr(good), repr(bad), str(hub.stats())]
        texts += [repr(vars(hub.link("good")))]
    assert mosquitto.password not in caplog.text
    assert "broker refused the connection" in caplog.text
    for t in texts:
        assert mosquitto.password not in t


def test_minimal_ctx_fits_the_protocol() -> None:
    ctx = Ctx(ev(), {})
    assert ctx.rule == "test-rule" and os.environ is not None
    assert replace(cfg(Broker(Path("."), 1, 2, 3, Path("a"), Path("b"))), port=5).port == 5


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_source_intake_at_volume_in_order_once(mosquitto: Broker, protocol: str) -> None:
    """The source's reader: 3,000 QoS 0/1 messages, some larger than one read (100 kB), then QoS 2 ones
    (left to paho), arrive once each and in order per QoS.  More than the broker's 20 unacknowledged QoS 1
    messages per client means the batched PUBACKs went out (the broker stops sending otherwise)."""
    source = (SubscribeTopic(f"bulk{protocol}/#", 2),)
    n, n2 = 3000, 5
    qos_of = (0, 1, 1)

    def body(i: int, qos: int) -> bytes:
        pad = "x" * (100_000 if i % 500 == 7 else i % 50)
        return orjson.dumps({"event": "RTC_CHANGE", "data": {"offset": i, "qos": qos, "pad": pad},
                             "timestamp": {"seconds": 1700000000, "microseconds": i}, "seq": i + 1})  # fmt: skip

    async with running_hub({"main": cfg(mosquitto, subscribe=source, protocol=protocol)}) as (hub, daemon):
        await connected(hub)
        await asyncio.sleep(0.2)  # the subscription
        quiet = logging.getLogger("tests.bulk-publisher")  # aiomqtt warns about every pending publish past 10
        quiet.setLevel(logging.ERROR)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, max_inflight_messages=100, logger=quiet) as pub:
            for start in range(0, n, 300):
                await asyncio.gather(*(
                    pub.publish(f"bulk{protocol}/h/vm-{i % 7}/event/x", body(i, qos_of[i % 3]), qos=qos_of[i % 3])
                    for i in range(start, start + 300)
                ))  # fmt: skip
            await until(lambda: len(daemon.emitted) >= n, 30)
            for i in range(n, n + n2):
                await pub.publish(f"bulk{protocol}/h/vm-0/event/x", body(i, 2), qos=2)
            await until(lambda: len(daemon.emitted) >= n + n2, 10)
        await asyncio.sleep(0.2)
        got = daemon.emitted
        for qos in (0, 1):  # MQTT orders messages of one QoS (the publisher sends QoS 0 ones past QoS 1 ones)
            want = [i for i in range(n) if qos_of[i % 3] == qos]
            assert [e.data["offset"] for e in got if e.data["qos"] == qos] == want
        assert [(e.data["offset"], e.data["qos"]) for e in got[n:]] == [(i, 2) for i in range(n, n + n2)]
        assert {e.vm for e in got} == {f"vm-{k}" for k in range(7)}
        assert {len(e.data["pad"]) for e in got if e.data["offset"] % 500 == 7} == {100_000}
        stats = hub.stats()["main"]
        assert (stats["source_received"], stats["source_invalid"]) == (n + n2, 0)
        assert hub.link().state is LinkState.CONNECTED and hub.link().connects == 1


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        n, byte = divmod(n, 128)
        length.append(byte | 0x80 if n else byte)
        if not n:
            return bytes((first, *length)) + body


def _publish(topic: bytes, payload: bytes, qos: int = 0, mid: int = 1) -> bytes:
    return _packet(0x30 | qos << 1, len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
                   + payload)


def _hostile_streams() -> list[bytes]:
    """Broken packets a broker (or whatever answers on its port) might send, then random bytes."""
    crafted = [
        b"\x30\xff\xff\xff\xff\x01",                       # a remaining length of five bytes
        b"\x30\x01\x00",                                   # a PUBLISH too short for its topic length
        b"\x32\x05\x00\x03abc",                            # QoS 1 without its packet id
        b"\x30\x04\x00\x09ab",                             # a topic longer than the packet
        _publish(b"\xff\xfe/\x00", b"not an event"),        # a topic that is not UTF-8
        _publish(b"fz/h1/vm1/event/X", b"\x00\xff{"),       # a payload that is not JSON
        _publish(b"fz/h1/vm1/event/X", b"[1, 2]"),         # JSON, not an object
        _packet(0x40, b"\x12\x34"),                         # a PUBACK for a message never sent
        _packet(0x40, b""),                                 # a PUBACK without its id
        _packet(0x34, b"\x00\x01a\x00\x07zz"),               # QoS 2: paho's part
        _packet(0x36, b"\x00\x01a"),                        # QoS 3 does not exist
        b"\x00\x00", b"\xf0\x00", b"\x90\x02\x00\x01",     # reserved, AUTH in 3.1.1, an unasked SUBACK
    ]
    rng = random.Random(7)
    noise = [bytes((rng.choice([0x30, 0x32, 0x40, 0x34, 0x3B]),)) + rng.randbytes(rng.randint(0, 40))
             for _ in range(8)]
    return crafted + noise


async def test_a_broker_sending_garbage_cannot_break_the_source(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever bytes come from the broker's side, the link never crashes: it reports, reconnects and then takes
    the next well-formed event (reactor's own packet reader handles QoS 0/1 PUBLISH and PUBACK), and nothing
    escapes into the event loop as an unhandled exception."""
    streams = _hostile_streams()
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        index = connections
        connections += 1

        async def packet() -> bytes:
            await reader.readexactly(1)
            length = shift = 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    return await reader.readexactly(length)

        try:
            await packet()                                  # CONNECT
            writer.write(b"\x20\x02\x00\x00")               # CONNACK, accepted
            mid = (await packet())[:2]                      # SUBSCRIBE
            writer.write(b"\x90\x03" + mid + b"\x00")       # SUBACK, QoS 0
            event = orjson.dumps({"event": "RTC_CHANGE", "data": {"offset": index, "qom-path": "/rtc"},
                                  "timestamp": {"seconds": 1700000000, "microseconds": 0}})  # fmt: skip
            hostile = streams[index] if index < len(streams) else b""
            writer.write(hostile + _publish(b"fz/h1/vm1/event/RTC_CHANGE", event))
            await writer.drain()
            await asyncio.sleep(0.05)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = BrokerConfig(name="main", port=port, subscribe=(SubscribeTopic("fz/#", 0),))
    async with server, running_hub({"main": config}) as (hub, daemon):
        await until(lambda: any(e.data["offset"] == len(streams) for e in daemon.emitted), 60)
        assert hub.link().state is not LinkState.CLOSED
    got = {e.data["offset"] for e in daemon.emitted}
    assert connections > len(streams)
    assert len(streams) in got   # the first clean connection's event
    assert {4, 5, 6, 7} <= got   # well-framed but wrong packets are skipped: the event behind them still arrives
    assert {e.vm for e in daemon.emitted} == {"vm1"} and {e.host for e in daemon.emitted} == {"h1"}
    assert hub.stats()["main"]["source_invalid"] >= 2   # the payloads that are not events were counted
    escaped = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert escaped == []
