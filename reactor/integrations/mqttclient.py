"""reactor's MQTT client: the 3.1.1 and 5 wire protocol over one asyncio connection.

Why our own (the numbers are in ``bench/bench_mqtt.py`` and the README):
paho-mqtt's public API costs tens of microseconds per message (a message
object, locks and a ``send()`` per PUBLISH, three ``recv()`` calls per
incoming packet), aiomqtt adds a queue entry and a task per message, and
gmqtt has no public acknowledgement callback (an outbox cannot know when a
QoS 1 message is safe to forget).  None reaches the mirror's and the central
intake's targets through public API; reaching them meant patching paho's
internals, which a patch release could break.  This module is the part of
MQTT reactor uses, written against the specification and nothing else:

* ``CONNECT``/``CONNACK`` (clean or persistent session, will, username and
  password, TLS through :mod:`ssl`), ``SUBSCRIBE``/``SUBACK``, keepalive
  (``PINGREQ`` after ``keepalive/2`` s without sending; the connection is
  dropped after ``1.5 * keepalive`` s without hearing from the broker),
  ``DISCONNECT``;
* outgoing ``PUBLISH`` at QoS 0, 1 and 2: :meth:`MqttClient.publish_many`
  encodes a batch into one write; ``on_ack(packet_id, error)`` reports each
  ``PUBACK`` / ``PUBCOMP`` (``error`` set for a v5 failure reason code);
* incoming ``PUBLISH``: every packet of a read is split out of the chunk and
  handed to ``on_message(topic, payload)`` in order, in the event loop; the
  ``PUBACK`` s of a read's QoS 1 messages go out in writes of up to
  :data:`ACK_BATCH`, each *after* its messages were handled (at least once: a
  connection lost before that write gets them again); QoS 2 is delivered
  once per packet id (``PUBREC``/``PUBREL``/``PUBCOMP``).

Anything malformed from the broker closes the connection with a
:class:`MqttProtocolError` (the caller reconnects); well-framed packets it
does not expect (a ``PUBACK`` for an unknown id) are ignored.  The client
owns no task: the keepalive is a timer, writes are the transport's, reads
are ``data_received``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from reactor.errors import MqttLinkError, MqttProtocolError, MqttRefused

__all__ = [
    "ACK_BATCH",
    "MAX_PACKET",
    "MqttClient",
    "MqttLinkError",
    "MqttProtocolError",
    "MqttRefused",
    "Outgoing",
    "Publish",
    "Will",
    "varint",
]

log = logging.getLogger(__name__)

#: The largest packet accepted from a broker (a guard for memory; MQTT allows 256 MB).
MAX_PACKET = 32 * 1024 * 1024
#: Most QoS 1 messages handled before their PUBACKs go out (one write), within one read.
ACK_BATCH = 128

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
SUBSCRIBE, SUBACK, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 0x80, 0x90, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0

#: CONNACK return codes of MQTT 3.1.1.
_REFUSED_V3 = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
               4: "bad user name or password", 5: "not authorized"}
#: The reason codes of MQTT 5 a CONNACK or DISCONNECT carries most often.
_REASONS_V5 = {0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
               0x83: "implementation specific error", 0x84: "unsupported protocol version",
               0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
               0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8C: "bad authentication method",
               0x8D: "keep alive timeout", 0x8E: "session taken over", 0x90: "topic name invalid",
               0x93: "receive maximum exceeded", 0x95: "packet too large", 0x97: "quota exceeded",
               0x99: "payload format invalid", 0x9C: "use another server", 0x9D: "server moved",
               0x9F: "connection rate exceeded"}


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes when the connection ends without a ``DISCONNECT``."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class Outgoing(Protocol):
    """What :meth:`MqttClient.publish_many` reads of a message (:class:`Publish`, the outbox's messages)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


@dataclass(slots=True)
class Publish:
    """One outgoing message for :meth:`MqttClient.publish_many`; ``dup`` for a resend."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False


_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining lengths, v5 property lengths)."""
    if n < 128:
        return _SMALL_VARINTS[n]
    if n < 16384:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"MQTT strings are at most 65535 bytes, not {len(raw)}")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _read_varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of a variable byte integer in ``buf[pos:end]``."""
    value = shift = 0
    while True:
        if pos >= end or shift > 21:
            raise MqttProtocolError("a variable byte integer is cut short or too long")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


#: MQTT 5 property identifiers whose value is not a string: their sizes (0: a varint).
_PROPERTY_SIZES = {0x01: 1, 0x02: 4, 0x0B: 0, 0x11: 4, 0x13: 2, 0x17: 1, 0x19: 1, 0x21: 2, 0x22: 2, 0x23: 2,
                   0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
#: ... and those holding a string or binary value (two-byte length first); 0x26 is a pair of strings.
_PROPERTY_STRINGS = frozenset({0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x18, 0x1A, 0x1C, 0x1F})


def _properties(buf: bytes | bytearray, pos: int, end: int) -> tuple[dict[int, object], int]:
    """The v5 properties starting at ``pos``: ({identifier: value}, position after them)."""
    length, pos = _read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MqttProtocolError("properties longer than their packet")
    out: dict[int, object] = {}
    while pos < stop:
        ident = buf[pos]
        pos += 1
        size = _PROPERTY_SIZES.get(ident)
        value: object
        if size == 0:
            value, pos = _read_varint(buf, pos, stop)
        elif size is not None:
            value = int.from_bytes(buf[pos : pos + size], "big")
            pos += size
        elif ident in _PROPERTY_STRINGS or ident == 0x26:
            for _ in range(2 if ident == 0x26 else 1):
                n = int.from_bytes(buf[pos : pos + 2], "big")
                pos += 2 + n
            value = None
        else:
            raise MqttProtocolError(f"unknown property {ident:#x}")
        if pos > stop:
            raise MqttProtocolError("a property is longer than the properties")
        out.setdefault(ident, value)
    return out, stop


class _Wire(asyncio.Protocol):
    """The transport's callbacks, forwarded to the client (a separate object so the client keeps its name)."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._made(transport)

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)

    def pause_writing(self) -> None:
        self.client._writable.clear()

    def resume_writing(self) -> None:
        self.client._writable.set()


class MqttClient:
    """One connection to a broker, as an ``async with`` object.

    ``async with MqttClient("broker", 1883, client_id="x", on_message=f) as c:``
    connects and waits for the ``CONNACK`` (raising :class:`MqttRefused`,
    :class:`MqttLinkError` or :class:`OSError`); leaving the block sends
    ``DISCONNECT`` and closes.  :meth:`wait_closed` returns when the connection
    ends, raising why when it was lost.  A client is used for one connection:
    reconnecting means a new client (what the caller's backoff loop does).
    """

    def __init__(
        self, host: str, port: int = 1883, *, client_id: str, protocol: Literal["3.1.1", "5"] = "3.1.1",
        username: str | None = None, password: str | None = None, will: Will | None = None,
        clean_session: bool = True, keepalive: int = 60, tls: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0, on_message: Callable[[str, bytes], object] | None = None,
        on_ack: Callable[[int, str | None], None] | None = None, name: str | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.client_id = client_id
        self.v5 = protocol == "5"
        self.username = username
        self._password = password
        self.will = will
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.on_message = on_message
        self.on_ack = on_ack
        self.log = logging.getLogger(f"{__name__}.{name or client_id}")
        #: What the broker allows in flight (v5 ``Receive Maximum``; 65535 under 3.1.1).
        self.receive_maximum = 65535
        #: Messages whose handler raised (they were acknowledged all the same).
        self.handler_errors = 0
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._connack: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._next_id = 0
        self._inflight: set[int] = set()          # our QoS 1/2 packet ids not yet acknowledged
        self._qos2_in: set[int] = set()           # QoS 2 packet ids delivered, waiting for their PUBREL
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}  # publish_acked()'s packet ids
        self._up = False
        self._last_sent = self._last_heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._handler_warned = 0.0

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<MqttClient {self.client_id} {self.host}:{self.port} {state}>"

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between a successful ``CONNACK`` and the connection's end."""
        return self._up

    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        async with asyncio.timeout(self.connect_timeout):
            await loop.create_connection(lambda: _Wire(self), self.host, self.port, ssl=self.tls,
                                         server_hostname=self.host if self.tls is not None else None)
            self._write(self._connect_packet())
            try:
                await asyncio.shield(self._connack)
            except BaseException:
                self._abort()
                raise
        self._schedule_keepalive()

    async def aclose(self) -> None:
        """Say ``DISCONNECT`` (the broker then drops the will) and close; idempotent."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self.connected:
                transport.write(b"\xe0\x01\x00" if self.v5 else b"\xe0\x00")
            transport.close()
        if self._closed is not None and not self._closed.done():
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._closed)
            except (TimeoutError, MqttLinkError, OSError):
                self._abort()
        self._stop_timer()

    async def wait_closed(self) -> None:
        """Until the connection ends; raises :class:`MqttLinkError` (or the OSError) when it was lost."""
        assert self._closed is not None, "connect() first"
        await asyncio.shield(self._closed)

    async def writable(self) -> None:
        """Until the transport's write buffer is below its high-water mark."""
        await self._writable.wait()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, err: MqttLinkError) -> None:
        """Close the connection because of ``err`` (wait_closed raises it)."""
        self.log.debug("mqtt %s:%d: %s", self.host, self.port, err)
        self._up = False
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(err)
        if self._closed is not None and not self._closed.done():
            self._closed.set_exception(err)
        self._abort()

    # -- transport callbacks --------------------------------------------------------------
    def _made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._last_heard = time.monotonic()

    def _lost(self, exc: Exception | None) -> None:
        self._up = False
        self._stop_timer()
        err: BaseException | None = exc
        if self._connack is not None and not self._connack.done():
            err = err or MqttLinkError("the broker closed the connection before its CONNACK")
            self._connack.set_exception(err)
        if self._closed is not None and not self._closed.done():
            if exc is None:
                self._closed.set_result(None)
            else:
                self._closed.set_exception(MqttLinkError(f"connection lost: {exc}"))
        for suback in self._subacks.values():
            if not suback.done():
                suback.set_exception(MqttLinkError("connection lost before the SUBACK"))
        self._subacks.clear()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(MqttLinkError("connection lost before the acknowledgement"))
        self._waiters.clear()
        # the futures are awaited through shield(): mark them retrieved so an unread one does not warn
        for done in (self._connack, self._closed):
            if done is not None and done.done() and not done.cancelled():
                done.exception()

    def _received(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        buf = self._buf
        buf += data
        acks: list[int] = []
        pos = 0
        try:
            pos = self._split(buf, acks)
        except MqttLinkError as err:
            self._fail(err)
        finally:
            del buf[:pos]
            if acks and self._transport is not None and not self._transport.is_closing():
                self._write(struct.pack(f"!{len(acks)}I", *[0x40020000 | mid for mid in acks]))

    # -- reading --------------------------------------------------------------------------
    def _split(self, buf: bytearray, acks: list[int]) -> int:
        """Handle the whole packets at the start of ``buf``; the bytes used."""
        on_message = self.on_message
        v5 = self.v5
        n = len(buf)
        pos = 0
        while pos + 2 <= n:
            if len(acks) >= ACK_BATCH:  # a broker sends a window of unacknowledged messages: keep it open
                self._write(struct.pack(f"!{len(acks)}I", *[0x40020000 | mid for mid in acks]))
                acks.clear()
            first = buf[pos]
            i = pos + 1
            length = shift = 0
            while True:  # the remaining length: 1 to 4 bytes
                if i >= n:
                    return pos
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MqttProtocolError("a remaining length longer than four bytes")
            if length > MAX_PACKET:
                raise MqttProtocolError(f"a packet of {length} bytes (at most {MAX_PACKET})")
            end = i + length
            if end > n:
                return pos
            kind = first & 0xF0
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                if qos == 3:
                    raise MqttProtocolError("a PUBLISH with QoS 3")
                if length < 2:
                    raise MqttProtocolError("a PUBLISH too short for its topic")
                p = i + 2 + ((buf[i] << 8) | buf[i + 1])
                if p > end:
                    raise MqttProtocolError("a PUBLISH topic longer than its packet")
                topic = buf[i + 2 : p].decode("utf-8", "replace")
                mid = 0
                if qos:
                    if p + 2 > end:
                        raise MqttProtocolError("a PUBLISH without its packet id")
                    mid = (buf[p] << 8) | buf[p + 1]
                    p += 2
                if v5:
                    _, p = _properties(buf, p, end)
                if qos == 2:
                    self._write(bytes((PUBREC, 2, mid >> 8, mid & 0xFF)))
                    if mid in self._qos2_in:  # a resend of one delivered already
                        pos = end
                        continue
                    self._qos2_in.add(mid)
                elif qos == 1:
                    acks.append(mid)
                if on_message is not None:
                    self._deliver(on_message, topic, bytes(buf[p:end]))
            elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
                if length < 2:
                    raise MqttProtocolError(f"a {_NAMES[kind]} without its packet id")
                mid = (buf[i] << 8) | buf[i + 1]
                code = buf[i + 2] if v5 and length > 2 else 0
                if kind == PUBREL:
                    self._qos2_in.discard(mid)
                    self._write(bytes((PUBCOMP, 2, mid >> 8, mid & 0xFF)))
                elif kind == PUBREC and code < 0x80:
                    self._write(bytes((PUBREL | 2, 2, mid >> 8, mid & 0xFF)))
                elif mid in self._inflight:  # PUBACK, PUBCOMP, or a PUBREC refusing the message
                    self._inflight.discard(mid)
                    self._acked(mid, f"reason code {code:#x}" if code >= 0x80 else None)
            elif kind == CONNACK:
                self._on_connack(buf, i, end)
            elif kind == SUBACK:
                self._on_suback(buf, i, end)
            elif kind in (PINGRESP, UNSUBACK):
                pass
            elif kind == DISCONNECT and v5:
                code = buf[i] if length else 0
                raise MqttLinkError(f"the broker disconnected: {_REASONS_V5.get(code, 'reason')} ({code:#x})")
            else:
                raise MqttProtocolError(f"unexpected packet type {first >> 4} from the broker")
            pos = end
        return pos

    def _acked(self, mid: int, error: str | None) -> None:
        waiter = self._waiters.pop(mid, None)
        if waiter is not None:
            if waiter.done():
                pass
            elif error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(MqttLinkError(f"the broker refused the message: {error}"))
        elif self.on_ack is not None:
            self.on_ack(mid, error)

    def _deliver(self, on_message: Callable[[str, bytes], object], topic: str, payload: bytes) -> None:
        try:
            on_message(topic, payload)
        except Exception:  # a handler's bug must not stall the connection (the message is acknowledged)
            self.handler_errors += 1
            now = time.monotonic()
            if now - self._handler_warned > 10.0:
                self._handler_warned = now
                self.log.exception("mqtt: handling a message on %s failed; %d so far", topic, self.handler_errors)

    def _on_connack(self, buf: bytearray, i: int, end: int) -> None:
        fut = self._connack
        if fut is None or fut.done() or end - i < 2:
            raise MqttProtocolError("an unexpected CONNACK")
        code = buf[i + 1]
        if code:
            reason = (_REASONS_V5 if self.v5 else _REFUSED_V3).get(code, "refused")
            raise MqttRefused(code, reason)
        if self.v5:
            props, _ = _properties(buf, i + 2, end)
            maximum = props.get(0x21)
            if isinstance(maximum, int) and maximum > 0:
                self.receive_maximum = maximum
        self._up = True
        fut.set_result(None)

    def _on_suback(self, buf: bytearray, i: int, end: int) -> None:
        if end - i < 2:
            raise MqttProtocolError("a SUBACK without its packet id")
        mid = (buf[i] << 8) | buf[i + 1]
        p = i + 2
        if self.v5:
            _, p = _properties(buf, p, end)
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(tuple(buf[p:end]))

    # -- writing --------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MqttLinkError("not connected")
        transport.write(data)
        self._last_sent = time.monotonic()

    def _connect_packet(self) -> bytes:
        flags = 0x02 if self.clean_session else 0
        payload = _utf8(self.client_id)
        will = self.will
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            payload += (b"\x00" if self.v5 else b"") + _utf8(will.topic) + len(will.payload).to_bytes(2, "big") \
                + will.payload
        if self.username is not None:
            flags |= 0x80
            payload += _utf8(self.username)
            if self._password is not None:
                flags |= 0x40
                payload += _utf8(self._password)
        header = _utf8("MQTT") + bytes((5 if self.v5 else 4, flags)) + self.keepalive.to_bytes(2, "big")
        if self.v5:
            header += b"\x00"
        return _packet(CONNECT, header + payload)

    def packet_id(self) -> int:
        """The next free packet id (1 to 65535, skipping those in flight)."""
        inflight = self._inflight
        if len(inflight) >= 65535:
            raise MqttLinkError("65535 messages in flight")
        mid = self._next_id
        while True:
            mid = mid % 65535 + 1
            if mid not in inflight and mid not in self._subacks:
                self._next_id = mid
                return mid

    @property
    def inflight(self) -> int:
        """QoS 1/2 messages sent and not yet acknowledged."""
        return len(self._inflight)

    def publish_many(self, msgs: Sequence[Outgoing]) -> list[int]:
        """Encode ``msgs`` into one write; each one's packet id (0 for QoS 0) in order.

        Raises :class:`MqttLinkError` when not connected (nothing is written then).
        """
        if self._transport is None or self._transport.is_closing():
            raise MqttLinkError("not connected")
        parts: list[bytes] = []
        mids: list[int] = []
        props = b"\x00" if self.v5 else b""
        topics: dict[str, bytes] = {}
        for m in msgs:
            t = topics.get(m.topic)
            if t is None:
                t = topics[m.topic] = _utf8(m.topic)
            first = PUBLISH | (m.qos << 1) | (0x08 if m.dup and m.qos else 0) | (1 if m.retain else 0)
            if m.qos:
                mid = self.packet_id()
                self._inflight.add(mid)
                parts += (bytes((first,)), varint(len(t) + 2 + len(props) + len(m.payload)), t,
                          mid.to_bytes(2, "big"), props, m.payload)
            else:
                mid = 0
                parts += (bytes((first,)), varint(len(t) + len(props) + len(m.payload)), t, props, m.payload)
            mids.append(mid)
        self._write(b"".join(parts))
        return mids

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        """Send one message; its packet id (0 for QoS 0).  ``on_ack`` reports the acknowledgement."""
        return self.publish_many((Publish(topic, payload, qos, retain),))[0]

    async def publish_acked(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Send one message and wait until the broker has it (``PUBACK``/``PUBCOMP``; written, for QoS 0).

        Raises :class:`MqttLinkError` when the broker refused it or the connection was lost first.
        """
        mid = self.publish(topic, payload, qos, retain)
        if not mid:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = waiter
        try:
            await waiter
        finally:
            self._waiters.pop(mid, None)

    async def subscribe(self, topics: Iterable[tuple[str, int]], *, timeout: float = 10.0) -> tuple[int, ...]:
        """Subscribe and wait for the ``SUBACK``: the granted QoS (or failure code ≥ 0x80) per filter."""
        wanted = list(topics)
        mid = self.packet_id()
        body = mid.to_bytes(2, "big") + (b"\x00" if self.v5 else b"")
        for topic, qos in wanted:
            body += _utf8(topic) + bytes((qos,))
        fut: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = fut
        try:
            self._write(_packet(SUBSCRIBE | 2, body))
            async with asyncio.timeout(timeout):
                granted = await fut
        finally:
            self._subacks.pop(mid, None)
        refused = [t for (t, _), g in zip(wanted, granted, strict=False) if g >= 0x80]
        if refused:
            raise MqttLinkError(f"the broker refused the subscription to {', '.join(refused)}")
        return granted

    # -- keepalive ------------------------------------------------------------------------
    def _schedule_keepalive(self) -> None:
        if self.keepalive > 0:
            self._timer = asyncio.get_running_loop().call_later(self.keepalive / 2, self._keepalive)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _keepalive(self) -> None:
        self._timer = None
        if not self.connected:
            return
        now = time.monotonic()
        if now - self._last_heard > self.keepalive * 1.5:
            self._fail(MqttLinkError(f"no answer from the broker for {now - self._last_heard:.0f} s (keepalive)"))
            return
        if now - self._last_sent >= self.keepalive / 2:
            self._write(b"\xc0\x00")
        self._schedule_keepalive()


_NAMES = {PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP"}
