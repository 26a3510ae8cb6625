"""MQTT: broker settings, the shared client hub, its outbox, the event mirror and the MQTT event source.

One :class:`MqttHub` (a :class:`~reactor.actions.action.Resource`) holds one
:class:`BrokerLink` per broker of the config's ``mqtt:`` section.  A link
owns a reconnect loop (jittered, capped exponential backoff) and an
:class:`Outbox`: every publish (from the ``mqtt`` action or the mirror) is put
in the outbox first and handed to the MQTT client only while connected.

Delivery semantics (see ``docs/mqtt-webhooks.md``):

* The outbox is bounded (``outbox.max``, default 10000 messages, counting
  the ones sent but not acknowledged); when full, ``drop-oldest`` (default)
  drops the oldest not-yet-sent message, ``drop-new`` refuses the new one.
  Drops are counted and logged (rate-limited).
* QoS 1/2 messages are also written to the journal; they leave it when the
  broker acknowledges them (PUBACK/PUBCOMP), so they survive a daemon restart.
* Every connection uses a fresh client object.  Messages that were sent but
  not acknowledged when a connection dropped are put back at the front of
  the outbox, in order, and sent once more on the next connection.  The old
  client object is discarded, so the client library never resends them a
  second time: at-least-once per QoS 1 message, without extra duplicates.
* The event mirror and the source run inside the hub; the mirror's bus
  callback only appends to a bounded queue (counted drops).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import fnmatch
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import orjson

from reactor.actions.action import DaemonContext, Resource
from reactor.errors import ConfigError, EventError, MqttError, Position, ReactorError, RuleError
from reactor.integrations.mqttclient import MqttClient, MqttLinkError, MqttRefused, Will
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.model.runstate import EVENTS as _STATE_EVENTS
from reactor.model.runstate import RunState
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match

if TYPE_CHECKING:
    from reactor.rules.rule import Rule, Step

__all__ = [
    "DROP_EVENT",
    "BrokerConfig",
    "BrokerLink",
    "LinkState",
    "MirrorConfig",
    "MqttError",
    "MqttHub",
    "OutMessage",
    "Outbox",
    "OutboxConfig",
    "OutboxStore",
    "Secret",
    "SubscribeTopic",
    "TlsConfig",
    "broker_errors",
    "parse_brokers",
]

log = logging.getLogger(__name__)


def broker_errors(rules: Iterable[Rule], brokers: Collection[str], *, none: str,
                  skip: Callable[[Step], bool] | None = None) -> tuple[list[RuleError], set[str]]:
    """The steps of ``rules`` (nested ones too) that publish to a broker ``brokers`` does not name, as errors at
    the step; and the brokers they use (a templated ``broker:`` may use any).  ``none`` says why there is no
    broker at all (``the config X has no mqtt: section``); ``skip`` leaves steps out (replay's dry run)."""
    errors: list[RuleError] = []
    used: set[str] = set()
    for rule in rules:
        for top in rule.steps:
            for step in top.walk():
                if MqttHub not in step.action.resources or (skip is not None and skip(step)):
                    continue
                where = f"rule {rule.name!r} step {step.index} ({step.name})"
                if not brokers:
                    errors.append(RuleError(step.pos, f"{where} publishes to an MQTT broker, but {none}"))
                    continue
                name = step.args.fields.get("broker")   # a literal, or a template rendered per run
                if name is None:
                    used.add(next(iter(brokers)))
                elif not isinstance(name, str):
                    used.update(brokers)
                elif name in brokers:
                    used.add(name)
                else:
                    hint = close_match(name, list(brokers))
                    extra = f" (did you mean {hint!r}?)" if hint else f" (configured: {', '.join(brokers)})"
                    errors.append(RuleError(step.pos, f"{where}: unknown broker {name!r}{extra}"))
    return errors, used


#: Most messages handed to the client and not yet acknowledged, per broker.
SEND_WINDOW = 1000
#: Most messages encoded into one write.
BATCH = 256
#: The mirror's queue between the bus callback and its drain task.
MIRROR_QUEUE = 10000
#: The name under which outbox drops are recorded in the journal's events.
DROP_EVENT = "REACTOR_MQTT_DROPPED"
#: Events coming from MQTT remembered so the mirror does not send them back.
ECHO_MEMORY = 10000


class Secret:
    """A secret string: ``repr`` and ``str`` never show it; :meth:`reveal` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """``publish_events``: which events go to ``<prefix>/<host>/<vm>/event/<NAME>``."""

    prefix: str = "reactor"
    events: tuple[str, ...] = ("*",)
    vms: tuple[str, ...] = ("*",)
    qos: int = 0
    #: Home Assistant MQTT discovery (:class:`reactor.integrations.homeassistant.DiscoveryConfig`), or None
    homeassistant: Any = None


@dataclass(frozen=True, slots=True)
class SubscribeTopic:
    topic: str
    qos: int = 0


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max: int = 10000
    policy: Literal["drop-oldest", "drop-new"] = "drop-oldest"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """One broker of the ``mqtt:`` section.  ``password`` is a :class:`Secret`;
    with ``password_file`` it is read when the hub starts."""

    name: str
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: Secret | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    keepalive: int = 60
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    prefix: str = "reactor"
    publish_events: MirrorConfig | None = None
    subscribe: tuple[SubscribeTopic, ...] = ()
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    pos: Position | None = field(default=None, compare=False)


_BROKER_KEYS = (
    "host", "port", "client_id", "username", "password", "password_file", "tls", "keepalive",
    "protocol", "publish_events", "subscribe", "prefix", "outbox",
)  # fmt: skip
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "verify")
_MIRROR_KEYS = ("prefix", "events", "vms", "qos", "homeassistant")
_SUB_KEYS = ("topic", "qos")
_OUTBOX_KEYS = ("max", "policy")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_keys(node: MapNode, allowed: tuple[str, ...], what: str) -> None:
    for key in node.entries:
        if key not in allowed:
            hint = close_match(key, list(allowed))
            extra = f"; did you mean {hint!r}?" if hint else f" (known: {', '.join(sorted(allowed))})"
            raise ConfigError(node.key_pos(key), f"unknown key {key!r} in {what}{extra}")


def _scalar(node: Node, kind: type, what: str) -> Any:
    value = node.value if isinstance(node, ScalarNode) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {str: "a string", int: "an integer", bool: "true or false"}
        raise ConfigError(node.pos, f"{what}: expected {names.get(kind, kind.__name__)}, got {node.kind}")
    return value


def _str(node: Node, what: str) -> str:
    value: str = _scalar(node, str, what)
    if not value:
        raise ConfigError(node.pos, f"{what}: must not be empty")
    return value


def _int(node: Node, what: str, lo: int, hi: int) -> int:
    value: int = _scalar(node, int, what)
    if not lo <= value <= hi:
        raise ConfigError(node.pos, f"{what}: {value} is not between {lo} and {hi}")
    return value


def _qos(node: Node, what: str) -> int:
    return _int(node, what, 0, 2)


def _path(node: Node, what: str, *, must_exist: bool = True) -> str:
    value = _str(node, what)
    if not os.path.isabs(value) and node.pos.path and not node.pos.path.startswith("<"):
        value = os.path.join(os.path.dirname(os.path.abspath(node.pos.path)), value)
    if must_exist and not os.path.isfile(value):
        raise ConfigError(node.pos, f"{what}: no such file: {value}")
    return value


def _str_list(node: Node, what: str) -> tuple[str, ...]:
    if isinstance(node, ScalarNode):
        return (_str(node, what),)
    if not isinstance(node, SeqNode):
        raise ConfigError(node.pos, f"{what}: expected a string or a list of strings, got {node.kind}")
    return tuple(_str(item, what) for item in node)


def _parse_tls(node: Node) -> TlsConfig | None:
    if isinstance(node, ScalarNode) and isinstance(node.value, bool):
        return TlsConfig() if node.value else None
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"tls: expected true, false or a mapping, got {node.kind}")
    _check_keys(node, _TLS_KEYS, "tls")
    kw: dict[str, Any] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        sub = node.get(key)
        if sub is not None:
            kw[key] = _path(sub, f"tls.{key}")
    sub = node.get("verify")
    if sub is not None:
        kw["verify"] = _scalar(sub, bool, "tls.verify")
    if ("cert_file" in kw) != ("key_file" in kw) and "cert_file" not in kw:
        raise ConfigError(node.pos, "tls: key_file needs cert_file")
    return TlsConfig(**kw)


def _parse_mirror(node: Node, prefix: str) -> MirrorConfig | None:
    if isinstance(node, ScalarNode) and isinstance(node.value, bool):
        return MirrorConfig(prefix=prefix) if node.value else None
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"publish_events: expected true, false or a mapping, got {node.kind}")
    _check_keys(node, _MIRROR_KEYS, "publish_events")
    kw: dict[str, Any] = {"prefix": prefix}
    sub = node.get("prefix")
    if sub is not None:
        kw["prefix"] = _str(sub, "publish_events.prefix").strip("/")
    sub = node.get("events")
    if sub is not None:
        kw["events"] = _str_list(sub, "publish_events.events")
    sub = node.get("vms")
    if sub is not None:
        kw["vms"] = _str_list(sub, "publish_events.vms")
    sub = node.get("qos")
    if sub is not None:
        kw["qos"] = _qos(sub, "publish_events.qos")
    sub = node.get("homeassistant")
    if sub is not None:
        from reactor.integrations.homeassistant import parse_discovery

        kw["homeassistant"] = parse_discovery(sub)
    return MirrorConfig(**kw)


def _check_filter(node: Node, topic: str) -> None:
    parts = topic.split("/")
    for i, part in enumerate(parts):
        if ("#" in part and (part != "#" or i != len(parts) - 1)) or ("+" in part and part != "+"):
            raise ConfigError(node.pos, f"subscribe: {topic!r} is not a valid MQTT topic filter")


def _parse_subscribe(node: Node) -> tuple[SubscribeTopic, ...]:
    items = [node] if not isinstance(node, SeqNode) else list(node)
    out: list[SubscribeTopic] = []
    for item in items:
        if isinstance(item, MapNode):
            _check_keys(item, _SUB_KEYS, "subscribe")
            tnode = item.get("topic")
            if tnode is None:
                raise ConfigError(item.pos, "subscribe: missing key 'topic'")
            topic = _str(tnode, "subscribe.topic")
            qnode = item.get("qos")
            qos = 0 if qnode is None else _qos(qnode, "subscribe.qos")
            _check_filter(tnode, topic)
        else:
            topic = _str(item, "subscribe")
            qos = 0
            _check_filter(item, topic)
        out.append(SubscribeTopic(topic, qos))
    return tuple(out)


def _parse_outbox(node: Node) -> OutboxConfig:
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"outbox: expected a mapping, got {node.kind}")
    _check_keys(node, _OUTBOX_KEYS, "outbox")
    kw: dict[str, Any] = {}
    sub = node.get("max")
    if sub is not None:
        kw["max"] = _int(sub, "outbox.max", 1, 10_000_000)
    sub = node.get("policy")
    if sub is not None:
        policy = _str(sub, "outbox.policy")
        if policy not in ("drop-oldest", "drop-new"):
            raise ConfigError(sub.pos, f"outbox.policy: {policy!r} is not one of drop-oldest, drop-new")
        kw["policy"] = policy
    return OutboxConfig(**kw)


def _parse_broker(name: str, node: Node) -> BrokerConfig:
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"mqtt.{name}: expected a mapping of broker settings, got {node.kind}")
    _check_keys(node, _BROKER_KEYS, f"mqtt.{name}")
    kw: dict[str, Any] = {"name": name, "pos": node.pos}
    get = node.get
    if (sub := get("host")) is not None:
        kw["host"] = _str(sub, "host")
    if (sub := get("client_id")) is not None:
        kw["client_id"] = _str(sub, "client_id")
    if (sub := get("username")) is not None:
        kw["username"] = _str(sub, "username")
    if (sub := get("password")) is not None:
        if not (isinstance(sub, ScalarNode) and isinstance(sub.value, str)):
            raise ConfigError(sub.pos, f"password: expected a string, got {sub.kind}")
        kw["password"] = Secret(sub.value)
    if (sub := get("password_file")) is not None:
        if "password" in node:
            raise ConfigError(sub.pos, "give either password or password_file, not both")
        kw["password_file"] = _path(sub, "password_file")
    if ("password" in kw or "password_file" in kw) and "username" not in kw:
        raise ConfigError(node.key_pos("password" if "password" in kw else "password_file"),
                          "a password needs a username")  # fmt: skip
    tls = None
    if (sub := get("tls")) is not None:
        tls = kw["tls"] = _parse_tls(sub)
    kw["port"] = 8883 if tls is not None else 1883
    if (sub := get("port")) is not None:
        kw["port"] = _int(sub, "port", 1, 65535)
    if (sub := get("keepalive")) is not None:
        kw["keepalive"] = _int(sub, "keepalive", 5, 65535)
    if (sub := get("protocol")) is not None:
        value = sub.value if isinstance(sub, ScalarNode) else None
        text = {5: "5", "5": "5", "3.1.1": "3.1.1", "5.0": "5"}.get(value)
        if isinstance(value, bool) or text is None:
            raise ConfigError(sub.pos, f"protocol: expected 3.1.1 or 5, got {value!r}")
        kw["protocol"] = text
    prefix = "reactor"
    if (sub := get("prefix")) is not None:
        prefix = kw["prefix"] = _str(sub, "prefix").strip("/")
    if (sub := get("publish_events")) is not None:
        kw["publish_events"] = _parse_mirror(sub, prefix)
    if (sub := get("subscribe")) is not None:
        kw["subscribe"] = _parse_subscribe(sub)
    if (sub := get("outbox")) is not None:
        kw["outbox"] = _parse_outbox(sub)
    return BrokerConfig(**kw)


def parse_brokers(node: Node) -> dict[str, BrokerConfig]:
    """The ``mqtt:`` section: broker name → settings, in file order (the first is the default).

    Raises :class:`~reactor.errors.ConfigError` at the position of the first problem.
    """
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"mqtt: expected a mapping of broker names to settings, got {node.kind}")
    if not node.entries:
        raise ConfigError(node.pos, "mqtt: no broker defined")
    out: dict[str, BrokerConfig] = {}
    for name, value in node.items():
        if not _NAME_RE.match(name):
            raise ConfigError(node.key_pos(name), f"mqtt: {name!r} is not a valid broker name")
        out[name] = _parse_broker(name, value)
    return out


# --------------------------------------------------------------------------- outbox


class OutboxStore(Protocol):
    """The part of the journal an outbox uses (``reactor.ops.journal.Journal``)."""

    def outbox_put(self, broker: str, topic: str, payload: bytes, qos: int, retain: bool) -> int: ...

    def outbox_ack(self, msg_id: int) -> None: ...

    def outbox_pending(self, broker: str, limit: int) -> list[Any]: ...


class OutMessage:
    """One message waiting in (or sent from) an outbox.  ``id`` is the journal's id (0: not journaled)."""

    __slots__ = ("id", "topic", "payload", "qos", "retain", "waiter", "dup")

    def __init__(
        self, topic: str, payload: bytes, qos: int, retain: bool, msg_id: int = 0,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:  # fmt: skip
        self.id = msg_id
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.waiter = waiter
        #: Sent before without an acknowledgement (the DUP flag of its next PUBLISH).
        self.dup = False

    def __repr__(self) -> str:
        return f"<OutMessage #{self.id} {self.topic!r} qos={self.qos} {len(self.payload)}B>"


class _RateLimited:
    """Logs at most one message per ``interval`` seconds, saying how many were suppressed."""

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = -1e9
        self.suppressed = 0

    def __call__(self, logger: logging.Logger, level: int, msg: str, *args: object) -> bool:
        """Log unless one was logged less than ``interval`` ago; True when logged."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self.suppressed)
        self.last = now
        self.suppressed = 0
        logger.log(level, msg, *args)
        return True


class Outbox:
    """A bounded, ordered queue of messages for one broker, with what is in flight.

    ``queue`` holds messages not yet handed to the client; ``inflight`` maps
    the client's message ids to messages sent and not yet acknowledged.  Both
    count against ``max``.
    """

    def __init__(self, broker: str, config: OutboxConfig, store: OutboxStore | None = None) -> None:
        self.broker = broker
        self.config = config
        self.store = store
        self.queue: collections.deque[OutMessage] = collections.deque()
        self.inflight: dict[int, OutMessage] = {}
        self.inflight_count = 0
        self.dropped = 0
        self.acked = 0
        #: Messages put back after a connection dropped before their acknowledgement.
        self.resent = 0
        self.changed = asyncio.Event()
        self._warn = _RateLimited()

    def __len__(self) -> int:
        return len(self.queue) + self.inflight_count

    def load(self) -> int:
        """Put the journal's unacknowledged messages (from a previous run) first; their count."""
        if self.store is None:
            return 0
        rows = self.store.outbox_pending(self.broker, self.config.max)
        for row in rows:
            self.queue.append(OutMessage(row.topic, bytes(row.payload), row.qos, bool(row.retain), row.id))
        if rows:
            self.changed.set()
        return len(rows)

    def put(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
        waiter: asyncio.Future[None] | None = None,
    ) -> OutMessage | None:  # fmt: skip
        """Queue a message; None when it was refused (``drop-new`` and full)."""
        if len(self.queue) + self.inflight_count >= self.config.max:
            if self.config.policy == "drop-oldest" and self.queue:
                self._drop(self.queue.popleft())
            else:
                self._drop(None, topic)
                return None
        msg_id = self.store.outbox_put(self.broker, topic, payload, qos, retain) if qos and self.store else 0
        msg = OutMessage(topic, payload, qos, retain, msg_id, waiter)
        self.queue.append(msg)
        if not self.changed.is_set():
            self.changed.set()
        return msg

    def _drop(self, msg: OutMessage | None, topic: str = "") -> None:
        self.dropped += 1
        if msg is not None:
            topic = msg.topic
            if msg.id and self.store is not None:
                self.store.outbox_ack(msg.id)
            if msg.waiter is not None and not msg.waiter.done():
                msg.waiter.set_exception(MqttError(f"mqtt[{self.broker}]: outbox full, message dropped"))
        logged = self._warn(
            log,
            logging.WARNING,
            "mqtt[%s]: outbox full (%d messages, policy %s): dropped a message to %s; %d dropped so far",
            self.broker,
            self.config.max,
            self.config.policy,
            topic,
            self.dropped,
        )
        record = getattr(self.store, "record_event", None)
        if logged and callable(record):  # journaled as often as logged
            data = {"broker": self.broker, "policy": self.config.policy, "topic": topic, "dropped": self.dropped}
            record(DROP_EVENT, "-", None, time.time(), data)

    def sent(self, mid: int, msg: OutMessage) -> None:
        """``msg`` (QoS 1 or 2) was written to the broker as packet id ``mid``."""
        self.inflight[mid] = msg
        self.inflight_count += 1

    def ack(self, mid: int, error: str | None = None) -> None:
        """The broker acknowledged (or, with ``error``, refused) message ``mid``."""
        msg = self.inflight.pop(mid, None)
        if msg is None:
            return
        self.inflight_count -= 1
        self._done((msg,), error)

    def written(self, msgs: list[OutMessage]) -> None:
        """QoS 0 messages were written to the connection: done (nothing more comes from the broker)."""
        self._done(msgs, None)

    def _done(self, msgs: tuple[OutMessage, ...] | list[OutMessage], error: str | None) -> None:
        for msg in msgs:
            self.acked += 1
            if msg.id and self.store is not None:
                self.store.outbox_ack(msg.id)
            if msg.waiter is not None and not msg.waiter.done():
                if error is None:
                    msg.waiter.set_result(None)
                else:
                    msg.waiter.set_exception(MqttError(f"mqtt[{self.broker}]: broker refused {msg.topic}: {error}"))
        if not self.changed.is_set():
            self.changed.set()

    def requeue_inflight(self) -> int:
        """A connection dropped: unacknowledged messages go back to the front, in order."""
        msgs = list(self.inflight.values())
        self.inflight.clear()
        self.inflight_count = 0
        for m in msgs:
            m.dup = m.qos > 0
        self.resent += len(msgs)
        self.queue.extendleft(reversed(msgs))
        return len(msgs)


# --------------------------------------------------------------------------- links


class LinkState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


def _backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 16)))
    return random.uniform(d / 2, d)


def _glob_matcher(globs: tuple[str, ...]) -> Callable[[str], bool]:
    if "*" in globs:
        return lambda _name: True
    exact = {g for g in globs if not any(c in g for c in "*?[")}
    rx = [re.compile(fnmatch.translate(g)) for g in globs if g not in exact]
    cache: dict[str, bool] = {}

    def match(name: str) -> bool:
        hit = cache.get(name)
        if hit is None:
            hit = name in exact or any(r.match(name) for r in rx)
            if len(cache) < 10000:
                cache[name] = hit
        return hit

    return match


_UNKNOWN = RunState()


class _Mirror:
    """Publishes bus events to ``<prefix>/<host>/<vm>/event/<NAME>`` (and retained VM status)."""

    def __init__(self, link: BrokerLink, config: MirrorConfig, host: str) -> None:
        self.link = link
        self.config = config
        self.host = host
        self.queue: collections.deque[Event] = collections.deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self.want_event = _glob_matcher(config.events)
        self.want_vm = _glob_matcher(config.vms)
        self.status: dict[str, str] = {}  # what <vm>/status says: the run state, or disconnected
        self.runstate: dict[str, RunState] = {}  # reactor.model.runstate, per VM
        self.base = f"{config.prefix}/{host}"
        self.discovery: Any = None   # Home Assistant discovery, when configured
        if config.homeassistant is not None:
            from reactor.integrations.homeassistant import Discovery

            self.discovery = Discovery(config.homeassistant, mirror_prefix=config.prefix, host=host)

    def offer(self, ev: Event) -> None:
        """The bus callback's share: queue or count a drop.  Never blocks."""
        if len(self.queue) >= MIRROR_QUEUE:
            self.dropped += 1
            return
        self.queue.append(ev)
        if not self.wake.is_set():
            self.wake.set()

    def _status_after(self, ev: Event) -> str | None:
        """The VM's published status after ``ev`` (None: unchanged); ``disconnected`` while reactor cannot reach it."""
        name = ev.name
        if name == "REACTOR_VM_DISCONNECTED":
            return "disconnected"
        if name not in _STATE_EVENTS:
            return None
        state = self.runstate.get(ev.vm, _UNKNOWN).after(name, ev.data)
        self.runstate[ev.vm] = state
        return None if state.status == _UNKNOWN.status else state.status  # nothing known yet: say nothing

    async def run(self) -> None:
        q = self.queue
        outbox = self.link.outbox
        qos = self.config.qos
        dumps = orjson.dumps
        closing = self.link._closing
        while not closing.is_set():
            await self.wake.wait()
            self.wake.clear()
            n = 0
            while q:
                ev = q.popleft()
                vm = ev.vm
                if not self.want_vm(vm):
                    continue
                if self.discovery is not None:
                    self.discovery.on_event(ev, outbox.put)
                status = self._status_after(ev)
                if status is not None and self.status.get(vm) != status:
                    self.status[vm] = status
                    outbox.put(f"{self.base}/{vm}/status", status.encode(), qos, True)
                if self.want_event(ev.name):
                    outbox.put(f"{self.base}/{vm}/event/{ev.name}", dumps(ev.to_qmp()), qos, False)
                    self.published += 1
                n += 1
                if n >= 512:  # let the drain (and the rest of the loop) run
                    n = 0
                    await asyncio.sleep(0)


def _make_event(obj: Any, vm: str, host: str | None, seq: int) -> Event:
    return default_catalog().make_event(obj, vm=vm, host=host, seq=seq)


class _Source:
    """Turns messages on subscribed topics into events on the bus."""

    def __init__(self, link: BrokerLink, emit: Callable[[Event], None], echo: Callable[[Event], None]) -> None:
        self.link = link
        self.emit = emit
        self.echo = echo
        self.received = 0
        self.invalid = 0
        self._warn = _RateLimited()

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise EventError("not a JSON object")
            parts = topic.split("/")
            t_host = t_vm = None
            if len(parts) >= 4 and parts[-2] == "event":
                t_host, t_vm = parts[-4], parts[-3]
            vm = obj.get("vm") or t_vm
            host = obj.get("host") or t_host
            if not isinstance(vm, str) or not vm:
                raise EventError("no VM: neither a 'vm' key nor a <prefix>/<host>/<vm>/event/<NAME> topic")
            if host is not None and not isinstance(host, str):
                raise EventError("'host' is not a string")
            seq = obj.get("seq", 0)
            ev = _make_event(obj, vm, host, seq if isinstance(seq, int) and not isinstance(seq, bool) else 0)
        except (orjson.JSONDecodeError, EventError, ValueError, TypeError, KeyError) as err:
            self.invalid += 1
            self._warn(
                log, logging.WARNING, "mqtt[%s]: message on %s is not an event (%s); %d so far",
                self.link.name, topic, err, self.invalid,
            )  # fmt: skip
            return
        self.received += 1
        self.echo(ev)
        self.emit(ev)


class BrokerLink:
    """The connection to one broker: reconnect loop, outbox, mirror and source."""

    def __init__(
        self, config: BrokerConfig, *, host: str, store: OutboxStore | None = None,
        emit: Callable[[Event], None] | None = None, echo: Callable[[Event], None] | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.name = config.name
        self.host = host
        self.outbox = Outbox(config.name, config.outbox, store)
        self.state = LinkState.IDLE
        self.states: list[LinkState] = [LinkState.IDLE]
        self.last_error: str | None = None
        self.connects = 0
        self.connected = asyncio.Event()
        self.mirror = _Mirror(self, config.publish_events, host) if config.publish_events else None
        self.source = _Source(self, emit, echo or (lambda _ev: None)) if config.subscribe and emit is not None else None
        self._password: Secret | None = config.password
        self._ssl: ssl.SSLContext | None = None
        self._closing = asyncio.Event()
        self._done = asyncio.Event()
        self._warn = _RateLimited(30.0)
        prefix = config.publish_events.prefix if config.publish_events else config.prefix
        self.presence_topic = f"{prefix}/{host}/status"

    def __repr__(self) -> str:
        c = self.config
        return f"<BrokerLink {self.name} {c.host}:{c.port} {self.state.value}>"

    def _set_state(self, state: LinkState) -> None:
        if state is not self.state:
            self.state = state
            self.states.append(state)
            if state is LinkState.CONNECTED:
                self.connected.set()
            else:
                self.connected.clear()

    def prepare(self) -> None:
        """Read the password file and the TLS files (blocking; at start)."""
        c = self.config
        if c.password_file is not None:
            try:
                with open(c.password_file, encoding="utf-8") as f:
                    self._password = Secret(f.read().rstrip("\r\n"))
            except OSError as err:
                raise ReactorError(f"mqtt[{self.name}]: cannot read password_file: {err}") from err
        if c.tls is not None:
            t = c.tls
            try:
                ctx = ssl.create_default_context(cafile=t.ca_file)
                if t.cert_file:
                    ctx.load_cert_chain(t.cert_file, t.key_file)
            except (OSError, ssl.SSLError) as err:
                raise ReactorError(f"mqtt[{self.name}]: cannot load TLS files: {err}") from err
            if not t.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a message.  With ``wait``, a future done when the broker acknowledged it."""
        if self.state is LinkState.CLOSED:
            raise MqttError(f"mqtt[{self.name}]: the hub is closed")
        waiter = asyncio.get_running_loop().create_future() if wait else None
        if self.outbox.put(topic, payload, qos, retain, waiter) is None:
            raise MqttError(
                f"mqtt[{self.name}]: outbox full ({self.outbox.config.max} messages), message to {topic} refused"
            )
        return waiter

    def _client(self) -> MqttClient:
        c = self.config
        will = Will(self.presence_topic, b"offline", qos=1, retain=True) if self.mirror else None
        return MqttClient(
            c.host, c.port, client_id=c.client_id or f"reactor-{self.host}-{self.name}-{os.getpid()}",
            protocol=c.protocol, username=c.username,
            password=None if self._password is None else self._password.reveal(),
            will=will, clean_session=True, keepalive=c.keepalive, tls=self._ssl, connect_timeout=10,
            on_message=None if self.source is None else self.source.handle, on_ack=self.outbox.ack, name=self.name,
        )  # fmt: skip

    async def run(self) -> None:
        """The reconnect loop; returns after :meth:`close`."""
        attempt = 0
        try:
            while not self._closing.is_set():
                self._set_state(LinkState.CONNECTING)
                try:
                    attempt = await self._session(attempt)
                except Exception as err:  # the connection's boundary: log, back off, retry
                    while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:  # the session's TaskGroup
                        err = err.exceptions[0]
                    self.last_error = _describe(err)
                    self._warn(log, logging.WARNING, "mqtt[%s]: %s:%d: %s", self.name, self.config.host,
                               self.config.port, self.last_error)  # fmt: skip
                n = self.outbox.requeue_inflight()
                if n:
                    log.debug("mqtt[%s]: %d unacknowledged messages requeued", self.name, n)
                if self._closing.is_set():
                    break
                self._set_state(LinkState.BACKOFF)
                delay = _backoff(attempt)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
        finally:
            self._set_state(LinkState.CLOSED)
            self._done.set()

    async def _session(self, attempt: int) -> int:
        async with self._client() as client:
            self._set_state(LinkState.CONNECTED)
            self.connects += 1
            self.last_error = None
            log.info("mqtt[%s]: connected to %s:%d", self.name, self.config.host, self.config.port)
            if self.mirror is not None:
                client.publish(self.presence_topic, b"online", 1, True)
            if self.config.subscribe:
                await client.subscribe([(s.topic, s.qos) for s in self.config.subscribe])
            async with asyncio.TaskGroup() as tg:
                name = f"reactor.integrations.mqtt[{self.name}]"
                watch = tg.create_task(self._watch(client), name=f"{name}.connection")
                drain = tg.create_task(self._drain(client), name=f"{name}.drain")
                closing = tg.create_task(self._closing.wait(), name=f"{name}.closing")
                await asyncio.wait((watch, drain, closing), return_when=asyncio.FIRST_COMPLETED)
                if closing.done() and not watch.done():
                    await self._goodbye(client)
                for t in (watch, drain, closing):
                    t.cancel()
        return 0

    async def _goodbye(self, client: MqttClient) -> None:
        """Closing while connected: give in-flight messages a moment, then say ``offline``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while self.outbox.inflight or self.outbox.queue:
                    self.outbox.changed.clear()
                    await self.outbox.changed.wait()
        if self.mirror is not None and client.connected:
            with contextlib.suppress(TimeoutError, MqttLinkError):
                async with asyncio.timeout(2.0):
                    await client.publish_acked(self.presence_topic, b"offline", 1, True)

    async def _watch(self, client: MqttClient) -> None:
        """Until the connection ends (messages reach the source through ``on_message``)."""
        try:
            await client.wait_closed()
        except (MqttLinkError, OSError) as err:
            self.last_error = _describe(err)
            self._warn(log, logging.WARNING, "mqtt[%s]: connection lost: %s", self.name, self.last_error)

    async def _drain(self, client: MqttClient) -> None:
        outbox = self.outbox
        queue = outbox.queue
        sent = outbox.sent
        while True:
            outbox.changed.clear()
            while queue:
                window = min(SEND_WINDOW, client.receive_maximum)
                need = min(BATCH, len(queue), window)
                room = min(BATCH, window - outbox.inflight_count)
                if room < need:
                    break  # wait for acknowledgements to make room for a whole batch
                if not client.connected:
                    return
                await client.writable()
                batch = [queue.popleft() for _ in range(min(room, len(queue)))]
                written: list[OutMessage] = []
                for msg, mid in zip(batch, client.publish_many(batch), strict=True):
                    if mid:
                        sent(mid, msg)
                    else:
                        written.append(msg)
                if written:
                    outbox.written(written)
                await asyncio.sleep(0)  # let the reader and the rest of the loop run
            await outbox.changed.wait()

    async def close(self) -> None:
        """Stop the loop (graceful ``offline`` when connected) and wait for it."""
        self._closing.set()
        if self.mirror is not None:
            self.mirror.wake.set()
        if self.state is not LinkState.IDLE:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await self._done.wait()
        self._set_state(LinkState.CLOSED)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state.value,
            "connects": self.connects,
            "queued": len(self.outbox.queue),
            "inflight": self.outbox.inflight_count,
            "acked": self.outbox.acked,
            "dropped": self.outbox.dropped,
            "resent": self.outbox.resent,
        }
        if self.mirror is not None:
            out["mirror_published"] = self.mirror.published
            out["mirror_dropped"] = self.mirror.dropped
        if self.source is not None:
            out["source_received"] = self.source.received
            out["source_invalid"] = self.source.invalid
        return out


def _describe(err: BaseException) -> str:
    """A clear message for connection errors (TLS, refused credentials ...)."""
    text = str(err)
    cause = err.__cause__ or err.__context__
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {err.verify_message or err}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message or cause}"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"TLS certificate verification failed: {text}"
    if isinstance(err, MqttRefused):
        return f"broker refused the connection: {text}"
    return text


# --------------------------------------------------------------------------- hub


class MqttHub(Resource):
    """Every configured broker: one :class:`BrokerLink` each.  The first is the default."""

    def __init__(self, daemon: DaemonContext, brokers: dict[str, BrokerConfig] | None = None) -> None:
        super().__init__(daemon)
        self._brokers = brokers
        self.links: dict[str, BrokerLink] = {}
        self._echo: collections.OrderedDict[int, Event] = collections.OrderedDict()
        self._mirrors: list[_Mirror] = []
        self.mirror_skipped = 0

    def __repr__(self) -> str:
        return f"<MqttHub {list(self.links)}>"

    async def start(self) -> None:
        brokers = self._brokers if self._brokers is not None else self.daemon.section("mqtt")
        if not brokers:
            return
        try:
            store: OutboxStore | None = cast(OutboxStore, self.daemon.journal)
        except Exception:  # no journal (tests, replay)
            store = None
        if store is not None and not hasattr(store, "outbox_put"):
            store = None
        host = self.daemon.host
        dry_run = bool(getattr(self.daemon, "dry_run", False))
        for name, cfg in brokers.items():
            if dry_run and cfg.publish_events is not None:
                log.info("mqtt[%s]: dry run: the event mirror is off", name)
                cfg = dataclasses.replace(cfg, publish_events=None)
            link = BrokerLink(cfg, host=host, store=store, emit=self.daemon.emit, echo=self._remember)
            await asyncio.to_thread(link.prepare)
            n = link.outbox.load()
            if n:
                log.info("mqtt[%s]: %d unacknowledged messages from the journal will be sent", name, n)
            self.links[name] = link
        for name, link in self.links.items():
            self.daemon.start_task(link.run(), f"reactor.integrations.mqtt[{name}]")
            if link.mirror is not None:
                self._mirrors.append(link.mirror)
                self.daemon.start_task(link.mirror.run(), f"reactor.integrations.mqtt[{name}].mirror")
        if self._mirrors:
            self.daemon.subscribe(self._on_event)

    def _remember(self, ev: Event) -> None:
        echo = self._echo
        echo[id(ev)] = ev
        if len(echo) > ECHO_MEMORY:
            echo.popitem(last=False)

    def _on_event(self, ev: Event) -> None:
        if self._echo:
            seen = self._echo.pop(id(ev), None)
            if seen is ev:
                self.mirror_skipped += 1
                return
        for m in self._mirrors:
            m.offer(ev)

    def link(self, broker: str | None = None) -> BrokerLink:
        """A broker's link (the first configured one when ``broker`` is None)."""
        if not self.links:
            raise MqttError("mqtt: no broker is configured (add an mqtt: section)")
        if broker is None:
            return next(iter(self.links.values()))
        try:
            return self.links[broker]
        except KeyError:
            hint = close_match(broker, list(self.links))
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise MqttError(f"mqtt: unknown broker {broker!r}{extra}") from None

    async def aclose(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links.values()))

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: link.stats() for name, link in self.links.items()}
