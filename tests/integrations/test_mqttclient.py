"""reactor's MQTT client (reactor.integrations.mqttclient): against mosquitto, and against a scripted broker
for the exact bytes (CONNECT fields, QoS 2 in both directions, v5 reason codes and Receive Maximum, keepalive,
broken packets)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from reactor.integrations.mqttclient import (
    MqttClient,
    MqttLinkError,
    MqttProtocolError,
    MqttRefused,
    Publish,
    Will,
    varint,
)

try:
    from tests.broker import Broker, mosquitto
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo
    from broker import Broker, mosquitto  # type: ignore[import-not-found,no-redef,unused-ignore]

__all__ = ["mosquitto"]


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def publish(topic: str, payload: bytes, qos: int = 0, mid: int = 0, *, dup: bool = False, v5: bool = False) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (mid.to_bytes(2, "big") if qos else b"") + (b"\x00" if v5 else b"")
    return packet(0x30 | qos << 1 | (0x08 if dup else 0), body + payload)


class Peer:
    """The broker's side of one connection: read whole packets, write bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            first = (await self.reader.readexactly(1))[0]
            length = shift = 0
            while True:
                b = (await self.reader.readexactly(1))[0]
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            return first, await self.reader.readexactly(length)

    def write(self, data: bytes) -> None:
        self.writer.write(data)


@contextlib.asynccontextmanager
async def scripted(script: Callable[[Peer], Awaitable[None]]) -> AsyncIterator[tuple[int, list[BaseException]]]:
    """A one-connection-at-a-time broker running ``script``; yields (port, the script's failures)."""
    failures: list[BaseException] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(Peer(reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except BaseException as err:  # reported by the test
            failures.append(err)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], failures
    assert not failures, failures


async def accept(peer: Peer, connack: bytes = b"\x20\x02\x00\x00") -> bytes:
    """Read the CONNECT, answer ``connack``; the CONNECT's body."""
    first, body = await peer.read()
    assert first == 0x10
    peer.write(connack)
    return body


# --------------------------------------------------------------------------- against mosquitto


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_round_trip_through_mosquitto_at_every_qos(mosquitto: Broker, protocol: Any) -> None:
    """10 messages at each QoS in one write (within mosquitto's 20 in flight each way), then one more."""
    got: list[tuple[str, bytes]] = []
    acks: list[tuple[int, str | None]] = []
    client = MqttClient("127.0.0.1", mosquitto.port, client_id=f"mc-rt-{protocol}", protocol=protocol,
                        on_message=lambda t, p: got.append((t, p)), on_ack=lambda m, e: acks.append((m, e)))
    async with client:
        assert client.connected
        assert await client.subscribe([(f"mc/{protocol}/#", 2)]) == (2,)
        mids = client.publish_many([Publish(f"mc/{protocol}/q{q}", f"m{i}".encode(), q)
                                    for i in range(10) for q in (0, 1, 2)])
        assert mids[0::3] == [0] * 10 and all(mids[1::3]) and all(mids[2::3]) and len(set(mids) - {0}) == 20
        async with asyncio.timeout(10):
            while len(got) < 30 or len(acks) < 20:  # noqa: ASYNC110 - polling what the callbacks collected
                await asyncio.sleep(0.01)
        assert client.inflight == 0
        await client.publish_acked(f"mc/{protocol}/last", b"done", 1)
        async with asyncio.timeout(10):
            while len(got) < 31:  # noqa: ASYNC110 - polling what the callback collected
                await asyncio.sleep(0.01)
    assert not client.connected
    assert sorted(m for m, _ in acks) == sorted(m for m in mids if m) and {e for _, e in acks} == {None}
    for q in (0, 1, 2):  # each QoS level in order, once each
        assert [p for t, p in got if t.endswith(f"q{q}")] == [f"m{i}".encode() for i in range(10)]
    assert got[-1] == (f"mc/{protocol}/last", b"done")
    if protocol == "5":
        assert client.receive_maximum == 20  # mosquitto's max_inflight_messages (its default), from the CONNACK


@pytest.mark.mqtt
async def test_wrong_password_is_refused_with_the_brokers_reason(mosquitto: Broker) -> None:
    client = MqttClient("127.0.0.1", mosquitto.auth_port, client_id="mc-refused", username=mosquitto.username,
                        password="wrong")
    with pytest.raises(MqttRefused) as info:
        await client.connect()
    assert info.value.code in (4, 5)  # mosquitto says "not authorized"; others "bad user name or password"
    assert info.value.reason in ("not authorized", "bad user name or password")
    async with MqttClient("127.0.0.1", mosquitto.auth_port, client_id="mc-ok", username=mosquitto.username,
                          password=mosquitto.password) as ok:
        assert ok.connected


async def test_nothing_listening_is_an_os_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await MqttClient("127.0.0.1", port, client_id="nobody").connect()


# --------------------------------------------------------------------------- exact bytes


@pytest.mark.parametrize("v5", [False, True])
async def test_connect_carries_session_will_credentials_and_keepalive(v5: bool) -> None:
    seen: list[bytes] = []

    async def script(peer: Peer) -> None:
        seen.append(await accept(peer, b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00"))
        first, _ = await peer.read()
        assert first == 0xE0  # DISCONNECT on a clean close

    async with scripted(script) as (port, _):
        will = Will("h/status", b"offline", qos=1, retain=True)
        async with MqttClient("127.0.0.1", port, client_id="cid", protocol="5" if v5 else "3.1.1", username="u",
                              password="p", will=will, clean_session=False, keepalive=30):
            pass
    (body,) = seen
    assert body[:6] == b"\x00\x04MQTT" and body[6] == (5 if v5 else 4)
    flags = body[7]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # username, password, will retain, will QoS 1, will; no clean
    assert struct.unpack("!H", body[8:10]) == (30,)
    rest = body[11:] if v5 else body[10:]   # v5: an empty property list after the keepalive
    expect = b"\x00\x03cid" + (b"\x00" if v5 else b"") + b"\x00\x08h/status\x00\x07offline\x00\x01u\x00\x01p"
    assert rest == expect


async def test_incoming_qos2_is_delivered_once_and_completed() -> None:
    got: list[bytes] = []
    order: list[tuple[int, bytes]] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        peer.write(publish("t", b"once", 2, 9) + publish("t", b"once", 2, 9, dup=True))  # the broker resends
        for _ in range(2):
            order.append(await peer.read())
        peer.write(packet(0x62, b"\x00\x09"))  # PUBREL
        order.append(await peer.read())
        peer.write(publish("t", b"again", 2, 9))  # the id is free again after PUBCOMP: a new message
        order.append(await peer.read())

    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="q2",
                                                         on_message=lambda t, p: got.append(p)):
        async with asyncio.timeout(5):
            while len(order) < 4:  # noqa: ASYNC110 - polling what the script saw
                await asyncio.sleep(0.01)
    assert got == [b"once", b"again"]
    assert order == [(0x50, b"\x00\x09"), (0x50, b"\x00\x09"), (0x70, b"\x00\x09"), (0x50, b"\x00\x09")]


async def test_outgoing_qos2_takes_pubrec_pubrel_pubcomp() -> None:
    seen: list[tuple[int, bytes]] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        first, body = await peer.read()
        seen.append((first, body))
        mid = body[3:5]
        peer.write(packet(0x50, mid))           # PUBREC
        seen.append(await peer.read())          # PUBREL
        peer.write(packet(0x70, mid))           # PUBCOMP
        await peer.read(10)

    acks: list[tuple[int, str | None]] = []
    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="q2out",
                                                         on_ack=lambda m, e: acks.append((m, e))) as c:
        mid = c.publish("a", b"x", 2, retain=True)
        async with asyncio.timeout(5):
            while not acks:  # noqa: ASYNC110 - polling what the callback collected
                await asyncio.sleep(0.01)
        assert c.inflight == 0
    assert acks == [(mid, None)]
    assert seen[0] == (0x35, b"\x00\x01a" + mid.to_bytes(2, "big") + b"x")  # PUBLISH, QoS 2, retain
    assert seen[1] == (0x62, mid.to_bytes(2, "big"))


async def test_v5_reason_codes_and_receive_maximum() -> None:
    async def script(peer: Peer) -> None:
        await accept(peer, b"\x20\x06\x00\x00\x03\x21\x00\x14")  # CONNACK with Receive Maximum 20
        for _ in range(2):
            _, body = await peer.read()
            mid = body[3:5]
            peer.write(packet(0x40, mid + b"\x87\x00"))   # PUBACK: not authorized
        await peer.read(10)

    acks: list[tuple[int, str | None]] = []
    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="v5", protocol="5",
                                                         on_ack=lambda m, e: acks.append((m, e))) as c:
        assert c.receive_maximum == 20
        with pytest.raises(MqttLinkError, match="refused the message: reason code 0x87"):
            await c.publish_acked("a", b"1", 1)
        mid = c.publish("a", b"2", 1)
        async with asyncio.timeout(5):
            while not acks:  # noqa: ASYNC110 - polling what the callback collected
                await asyncio.sleep(0.01)
    assert acks == [(mid, "reason code 0x87")]


async def test_qos1_messages_are_acknowledged_after_the_handler_even_when_it_fails() -> None:
    got: list[bytes] = []
    acked: list[bytes] = []

    def on_message(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("a handler bug")
        got.append(payload)

    async def script(peer: Peer) -> None:
        await accept(peer)
        peer.write(b"".join(publish("t", p, 1, i + 1) for i, p in enumerate([b"a", b"boom", b"c"])))
        for _ in range(3):
            first, body = await peer.read()
            assert first == 0x40
            acked.append(body)
        await peer.read(10)

    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="acks",
                                                         on_message=on_message) as c:
        async with asyncio.timeout(5):
            while len(acked) < 3:  # noqa: ASYNC110 - polling what the script saw
                await asyncio.sleep(0.01)
        assert c.connected and c.handler_errors == 1
    assert got == [b"a", b"c"] and acked == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]


async def test_a_packet_split_across_reads_and_a_large_one_arrive_whole() -> None:
    got: list[bytes] = []
    big = bytes(range(256)) * 800  # 200 kB: several reads

    async def script(peer: Peer) -> None:
        await accept(peer)
        data = publish("t/x", b"small") + publish("t/x", big) + publish("t/x", b"end")
        for k in range(0, len(data), 7000):
            peer.write(data[k : k + 7000])
            await peer.writer.drain()
            await asyncio.sleep(0)
        await peer.read(10)

    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="split",
                                                         on_message=lambda t, p: got.append(p)):
        async with asyncio.timeout(5):
            while len(got) < 3:  # noqa: ASYNC110 - polling what the callback collected
                await asyncio.sleep(0.01)
    assert got == [b"small", big, b"end"]


@pytest.mark.parametrize("junk", [
    b"\x36\x03\x00\x01a",                  # QoS 3
    b"\x30\xff\xff\xff\xff\x01",           # a remaining length of five bytes
    b"\x32\x03\x00\x01a",                  # QoS 1 without its packet id
    b"\x30\x04\x00\x09ab",                 # a topic longer than the packet
    b"\x40\x00",                           # a PUBACK without its id
    b"\x00\x00",                           # reserved packet type
    b"\x20\x02\x00\x00",                   # a second CONNACK
])
async def test_a_broken_packet_closes_the_connection_with_a_protocol_error(junk: bytes) -> None:
    async def script(peer: Peer) -> None:
        await accept(peer)
        peer.write(junk)
        with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
            await peer.read(5)

    async with scripted(script) as (port, _):
        client = MqttClient("127.0.0.1", port, client_id="junk", on_message=lambda t, p: None)
        async with client:
            with pytest.raises(MqttProtocolError):
                async with asyncio.timeout(5):
                    await client.wait_closed()
            assert not client.connected


async def test_refused_connack_codes_read_as_reasons() -> None:
    async def script(peer: Peer) -> None:
        await accept(peer, b"\x20\x02\x00\x05")

    async with scripted(script) as (port, _):
        with pytest.raises(MqttRefused, match=r"not authorized \(code 0x5\)") as info:
            await MqttClient("127.0.0.1", port, client_id="no").connect()
        assert info.value.code == 5


async def test_keepalive_pings_and_drops_a_silent_broker() -> None:
    pings: list[int] = []

    async def script(peer: Peer) -> None:
        await accept(peer)
        while True:  # reads PINGREQs, never answers
            first, _ = await peer.read(10)
            pings.append(first)

    async with scripted(script) as (port, _):
        client = MqttClient("127.0.0.1", port, client_id="ka", keepalive=1)
        async with client:
            with pytest.raises(MqttLinkError, match="keepalive"):
                async with asyncio.timeout(5):
                    await client.wait_closed()
    assert pings and set(pings) == {0xC0}


async def test_subscription_refused_by_the_broker_raises() -> None:
    async def script(peer: Peer) -> None:
        await accept(peer)
        first, body = await peer.read()
        assert first == 0x82
        peer.write(packet(0x90, body[:2] + b"\x01\x80"))  # granted QoS 1, then failure
        await peer.read(10)

    async with scripted(script) as (port, _), MqttClient("127.0.0.1", port, client_id="sub") as c:
        with pytest.raises(MqttLinkError, match="refused the subscription to b/#"):
            await c.subscribe([("a/#", 1), ("b/#", 1)])
