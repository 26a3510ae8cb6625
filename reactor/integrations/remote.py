"""Fleet mode: events from every host, and QMP commands to VMs on other hosts, over MQTT.

The ``fleet:`` config section starts one :class:`FleetLink` (a
:class:`~reactor.actions.action.Resource`): its own MQTT connection to one of the
``mqtt:`` brokers, with a persistent session (fixed client id, clean session
off, QoS 1 subscriptions) so that a reconnect resumes where it stopped.

* **events** (``events: true``, the central reactor): every host's mirrored
  events (``<prefix>/+/+/event/#``) enter the bus, each dropped when its id
  (host, VM, sequence, timestamp) was seen before (:class:`~reactor.integrations.fleetview.Dedupe`);
* **fleet view**: hosts' presence and VMs' last state
  (:class:`~reactor.integrations.fleetview.FleetView`, ``/api/fleet``);
* **remote commands, requester side**: a rule's ``qmp`` step naming
  ``vm: HOST/VM`` gets a :class:`RemoteVM` whose ``execute`` publishes a
  request on ``<prefix>/<HOST>/<VM>/command`` with a correlation id, an expiry
  (now + the step's timeout) and a reply topic, and waits for the reply;
* **remote commands, executor side** (``commands:``, off by default): a
  host's reactor runs requests for its own VMs when the command is on its
  allow-list (read-only queries by default), refuses others and expired ones
  with an error reply, and journals every request as ``REACTOR_REMOTE_COMMAND``.

Request payload: ``{"id", "execute", "arguments", "expires", "reply_to", "from"}``
(``expires`` in seconds since the epoch; hosts' clocks must agree, NTP).
Reply payload: ``{"id", "return": ...}`` or ``{"id", "error": {"class", "desc"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from reactor.actions.action import DaemonContext, Resource, VMHandle
from reactor.actions.qmp import DESTRUCTIVE, is_read_only
from reactor.errors import ConfigError, EventError, RemoteError, VMCommandError, VMCommandTimeout
from reactor.integrations.fleetview import DEDUPE_PER_VM, Dedupe, FleetView, Lag
from reactor.integrations.mqttclient import MqttClient, MqttLinkError
from reactor.model.catalog import default_catalog
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match

__all__ = [
    "COMMAND_EVENT",
    "CommandsConfig",
    "FleetConfig",
    "FleetLink",
    "RemoteError",
    "RemoteVM",
    "parse_fleet",
]

log = logging.getLogger(__name__)

#: The journal name of every remote request a host received.
COMMAND_EVENT = "REACTOR_REMOTE_COMMAND"
#: Most remote commands running at once on a host; more are refused (``Busy``).
MAX_RUNNING = 64


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    """``fleet.commands``: this host executes remote commands on its own VMs."""

    #: Command globs allowed besides the read-only ones (``query-*``, ``qom-get`` ...).
    allow: tuple[str, ...] = ()
    #: Allow the read-only commands (default true).
    read_only: bool = True

    def refusal(self, command: str) -> str | None:
        if any(fnmatch.fnmatchcase(command, g) for g in self.allow):
            if command in DESTRUCTIVE and command not in self.allow:
                return f"{command} is destructive: list it by its exact name in fleet.commands.allow"
            return None
        if self.read_only and is_read_only(command):
            return None
        return f"{command} is not on this host's allow-list (fleet.commands.allow)"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The ``fleet:`` section."""

    broker: str | None = None
    prefix: str | None = None
    events: bool = False
    commands: CommandsConfig | None = None
    dedupe: int = DEDUPE_PER_VM
    client_id: str | None = None


_KEYS = ("broker", "prefix", "events", "commands", "dedupe", "client_id")
_CMD_KEYS = ("allow", "read_only")


def _keys(node: MapNode, allowed: tuple[str, ...], what: str) -> None:
    for key in node.entries:
        if key not in allowed:
            hint = close_match(key, list(allowed))
            extra = f"; did you mean {hint!r}?" if hint else f" (known: {', '.join(allowed)})"
            raise ConfigError(node.key_pos(key), f"unknown key {key!r} in {what}{extra}")


def _value(node: Node, kind: type, what: str) -> Any:
    value = node.value if isinstance(node, ScalarNode) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(node.pos, f"{what}: expected {kind.__name__}, got {node.kind}")
    return value


def parse_fleet(node: Node) -> FleetConfig:
    """The ``fleet:`` section; raises :class:`~reactor.errors.ConfigError` at the offending node."""
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"fleet: expected a mapping, got {node.kind}")
    _keys(node, _KEYS, "fleet")
    kw: dict[str, Any] = {}
    for key in ("broker", "prefix", "client_id"):
        if (sub := node.get(key)) is not None:
            kw[key] = _value(sub, str, f"fleet.{key}").strip("/")
    if (sub := node.get("events")) is not None:
        kw["events"] = _value(sub, bool, "fleet.events")
    if (sub := node.get("dedupe")) is not None:
        kw["dedupe"] = _value(sub, int, "fleet.dedupe")
        if kw["dedupe"] < 1:
            raise ConfigError(sub.pos, "fleet.dedupe: must be at least 1")
    if (sub := node.get("commands")) is not None:
        if isinstance(sub, ScalarNode) and isinstance(sub.value, bool):
            kw["commands"] = CommandsConfig() if sub.value else None
        elif isinstance(sub, MapNode):
            _keys(sub, _CMD_KEYS, "fleet.commands")
            ckw: dict[str, Any] = {}
            if (an := sub.get("allow")) is not None:
                items = [an] if isinstance(an, ScalarNode) else list(an) if isinstance(an, SeqNode) else None
                if items is None:
                    raise ConfigError(an.pos, "fleet.commands.allow: expected a list of command globs")
                ckw["allow"] = tuple(_value(i, str, "fleet.commands.allow") for i in items)
            if (rn := sub.get("read_only")) is not None:
                ckw["read_only"] = _value(rn, bool, "fleet.commands.read_only")
            kw["commands"] = CommandsConfig(**ckw)
        else:
            raise ConfigError(sub.pos, f"fleet.commands: expected true, false or a mapping, got {sub.kind}")
    return FleetConfig(**kw)


class RemoteVM:
    """A VM on another host, as a ``qmp`` step sees it (``vm: HOST/VM``)."""

    def __init__(self, link: FleetLink, host: str, vm: str) -> None:
        self._link = link
        self.host = host
        self.vm = vm

    @property
    def name(self) -> str:
        return f"{self.host}/{self.vm}"

    @property
    def labels(self) -> Mapping[str, str]:
        return {"host": self.host}

    @property
    def status(self) -> str:
        return self._link.view.vm_status(self.host, self.vm)

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set() and self._link.view.online(self.host)

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float = 10.0) -> Any:
        return await self._link.request(self.host, self.vm, command, arguments, timeout=timeout)


def _backoff(attempt: int) -> float:
    d = min(10.0, 0.25 * (2 ** min(attempt, 8)))
    return random.uniform(d / 2, d)


class FleetLink(Resource):
    """The fleet's MQTT connection (see the module docstring)."""

    def __init__(self, daemon: DaemonContext, config: FleetConfig | None = None) -> None:
        super().__init__(daemon)
        self.config: FleetConfig = config if config is not None else daemon.section("fleet")
        brokers = dict(daemon.section("mqtt") or {})
        if not brokers:
            raise RemoteError("fleet: needs a broker in the mqtt: section")
        name = self.config.broker or next(iter(brokers))
        if name not in brokers:
            raise RemoteError(f"fleet.broker: unknown broker {name!r}")
        self.broker = brokers[name]
        self.host = daemon.host
        self.prefix = self.config.prefix or self.broker.prefix
        self.view = FleetView(self.prefix)
        self.dedupe = Dedupe(self.config.dedupe)
        #: How late hosts' events arrive here (their timestamp to this link), ms.
        self.lag = Lag()
        self.connected = asyncio.Event()
        self.connects = 0
        self.reply_topic = f"{self.prefix}/{self.host}/reply"
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._client: MqttClient | None = None
        self._closing = asyncio.Event()
        self._done = asyncio.Event()
        self._running = 0
        self._catalog = default_catalog()
        self.stats_: dict[str, int] = {"events": 0, "invalid": 0, "requests": 0, "replies": 0,
                                       "commands": 0, "refused": 0}

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.daemon.start_task(self._run(), f"reactor.sources.fleet[{self.broker.name}]")

    async def aclose(self) -> None:
        self._closing.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._done.wait()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()

    def stats(self) -> dict[str, Any]:
        return {**self.stats_, "connected": self.connected.is_set(), "connects": self.connects,
                "duplicates": self.dedupe.duplicates, "pending": len(self._pending), "lag_ms": self.lag.summary()}

    def snapshot(self) -> dict[str, Any]:
        """``/api/fleet``: the fleet view plus this link's counters."""
        return {**self.view.snapshot(), "link": self.stats()}

    def vm(self, name: str) -> RemoteVM | None:
        """``HOST/VM`` as a handle (None when ``name`` has no host part)."""
        host, sep, vm = name.partition("/")
        if not sep or not host or not vm or "/" in vm:
            return None
        return RemoteVM(self, host, vm)

    # -- connection --------------------------------------------------------------------
    def _make_client(self) -> MqttClient:
        b = self.broker
        password = None
        if b.password_file is not None:
            with open(b.password_file, encoding="utf-8") as f:
                password = f.read().rstrip("\r\n")
        elif b.password is not None:
            password = b.password.reveal()
        tls = None
        if b.tls is not None:
            tls = ssl.create_default_context(cafile=b.tls.ca_file)
            if b.tls.cert_file:
                tls.load_cert_chain(b.tls.cert_file, b.tls.key_file)
            if not b.tls.verify:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        # MQTT 3.1.1 whatever the broker's protocol: a persistent session (clean_session false) needs no
        # session expiry property there
        return MqttClient(
            b.host, b.port, client_id=self.config.client_id or f"reactor-fleet-{self.host}", protocol="3.1.1",
            username=b.username, password=password, clean_session=False, keepalive=min(b.keepalive, 10),
            tls=tls, connect_timeout=10, name="fleet",
        )  # fmt: skip

    def _topics(self) -> list[tuple[str, int]]:
        p = self.prefix
        topics = [(f"{p}/+/status", 1), (f"{p}-bridge/+", 1), (f"{p}/+/+/status", 1),
                  (f"{self.reply_topic}/+", 1), (f"{p}/{self.host}/+/command", 1)]
        if self.config.events:
            topics.append((f"{p}/+/+/event/#", 1))
        return topics

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing.is_set():
                try:
                    await self._session()
                    attempt = 0
                except Exception as err:  # the connection's boundary: log, back off, reconnect
                    while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:  # the session's TaskGroup
                        err = err.exceptions[0]
                    log.warning("fleet: %s:%d: %s", self.broker.host, self.broker.port, err)
                finally:
                    self.connected.clear()
                    self._client = None
                if self._closing.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_backoff(attempt)):
                        await self._closing.wait()
                attempt += 1
        finally:
            self._done.set()

    async def _session(self) -> None:
        client = self._make_client()
        n = len(self.prefix.split("/"))
        group: asyncio.TaskGroup | None = None
        early: list[tuple[str, bytes]] = []  # what the persistent session delivers before the TaskGroup is up

        def on_message(topic: str, payload: bytes) -> None:
            if group is None:
                early.append((topic, payload))
            else:
                self._dispatch(client, topic, payload, n, group)

        client.on_message = on_message  # messages come straight here, in order, from the client's reader
        async with client, asyncio.TaskGroup() as tg:
            group = tg
            for topic, payload in early:
                self._dispatch(client, topic, payload, n, tg)
            early.clear()
            await client.subscribe(self._topics())
            self._client = client
            self.connects += 1
            self.connected.set()
            log.info("fleet: connected to %s:%d as %s", self.broker.host, self.broker.port, self.host)
            watch = tg.create_task(self._watch(client), name="reactor.sources.fleet.connection")
            closing = tg.create_task(self._closing.wait(), name="reactor.sources.fleet.closing")
            await asyncio.wait((watch, closing), return_when=asyncio.FIRST_COMPLETED)
            watch.cancel()
            closing.cancel()

    async def _watch(self, client: MqttClient) -> None:
        """Waits for the connection's end."""
        try:
            await client.wait_closed()
        except (MqttLinkError, OSError) as err:
            log.warning("fleet: connection lost: %s", err)

    def _dispatch(self, client: MqttClient, topic: str, payload: bytes, n: int, tg: asyncio.TaskGroup) -> None:
        parts = topic.split("/")[n:]
        if len(parts) >= 4 and parts[2] == "event":
            self._on_event(parts[0], parts[1], payload)
        elif len(parts) == 3 and parts[1] == "reply":
            self._on_reply(payload)
        elif len(parts) == 3 and parts[2] == "command" and parts[0] == self.host:
            self._on_command(client, parts[1], payload, tg)
        else:
            self.view.handle(topic, payload)

    # -- events ------------------------------------------------------------------------
    def _on_event(self, t_host: str, t_vm: str, payload: bytes) -> None:
        try:
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise EventError("not a JSON object")
            vm = obj.get("vm") or t_vm
            host = obj.get("host") or t_host
            seq = obj.get("seq", 0)
            if not isinstance(seq, int) or isinstance(seq, bool):
                seq = 0
            ev = self._catalog.make_event(obj, vm=str(vm), host=str(host), seq=seq)
        except (orjson.JSONDecodeError, EventError, ValueError, TypeError, KeyError) as err:
            self.stats_["invalid"] += 1
            if self.stats_["invalid"] in (1, 10, 100) or self.stats_["invalid"] % 1000 == 0:
                log.warning("fleet: an event from %s/%s is not valid: %s", t_host, t_vm, err)
            return
        if host == self.host or self.dedupe.seen(ev):
            return
        self.lag.add((time.time() - ev.timestamp) * 1000.0)
        self.stats_["events"] += 1
        self.view.on_event(ev)
        self.daemon.emit(ev)

    # -- requester ---------------------------------------------------------------------
    async def request(self, host: str, vm: str, command: str, arguments: Mapping[str, Any] | None = None,
                      *, timeout: float = 10.0) -> Any:
        """Run ``command`` on ``vm`` of ``host``; its ``return`` value.

        Raises :class:`~reactor.errors.VMCommandError` with the remote error
        (``Refused``, ``Expired``, QEMU's own ...), :class:`RemoteError` when the
        link is down, :class:`~reactor.errors.VMCommandTimeout` (a TimeoutError) when no reply came within ``timeout``.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            raise RemoteError(f"{host}/{vm}: the fleet link to {self.broker.host} is not connected")
        rid = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        body = {"id": rid, "execute": command, "arguments": dict(arguments or {}),
                "expires": time.time() + timeout, "reply_to": f"{self.reply_topic}/{rid}", "from": self.host}
        self.stats_["requests"] += 1
        try:
            async with asyncio.timeout(timeout):
                await client.publish_acked(f"{self.prefix}/{host}/{vm}/command", orjson.dumps(body), qos=1)
                reply = await fut
        except TimeoutError as timed_out:
            raise VMCommandTimeout(f"{host}/{vm}: {command}: no reply within {timeout:g}s") from timed_out
        finally:
            self._pending.pop(rid, None)
        err = reply.get("error")
        if isinstance(err, dict):
            raise VMCommandError(command, str(err.get("class", "GenericError")), str(err.get("desc", "")))
        return reply.get("return", {})

    def _on_reply(self, payload: bytes) -> None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        fut = self._pending.get(str(obj.get("id")))
        if fut is not None and not fut.done():
            self.stats_["replies"] += 1
            fut.set_result(obj)

    # -- executor ----------------------------------------------------------------------
    def _on_command(self, client: MqttClient, vm: str, payload: bytes, tg: asyncio.TaskGroup) -> None:
        try:
            req = orjson.loads(payload)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("reply_to"), str) or "+" in req["reply_to"] \
                or "#" in req["reply_to"]:
            self.stats_["invalid"] += 1
            return
        tg.create_task(self._execute(client, vm, req), name=f"reactor.sources.fleet.command[{vm}]")

    async def _execute(self, client: MqttClient, vm_name: str, req: dict[str, Any]) -> None:
        rid = str(req.get("id", ""))
        command = req.get("execute")
        args = req.get("arguments") or {}
        expires = req.get("expires")
        now = time.time()
        reply: dict[str, Any] = {"id": rid, "host": self.host, "vm": vm_name}
        error: tuple[str, str] | None = None
        outcome = "ok"
        commands = self.config.commands
        if not isinstance(command, str) or not isinstance(args, dict):
            error, outcome = ("GenericError", "malformed request"), "refused"
        elif not isinstance(expires, (int, float)) or expires <= now:
            late = f"{now - expires:.1f}s ago" if isinstance(expires, (int, float)) else "no expiry given"
            error, outcome = ("Expired", f"request expired ({late}); not executed"), "expired"
        elif commands is None:
            error, outcome = ("Refused", f"remote commands are disabled on {self.host} (fleet.commands)"), "refused"
        elif (why := commands.refusal(command)) is not None:
            error, outcome = ("Refused", why), "refused"
        elif self._running >= MAX_RUNNING:
            error, outcome = ("Busy", f"{MAX_RUNNING} remote commands already running"), "refused"
        else:
            vm = self._local_vm(vm_name)
            if vm is None:
                error, outcome = ("DeviceNotFound", f"no VM {vm_name!r} on {self.host}"), "refused"
            else:
                self._running += 1
                try:
                    reply["return"] = await vm.execute(command, args or None, timeout=max(0.001, expires - now))
                except VMCommandError as err:
                    error, outcome = (err.error_class, err.desc), "error"
                except TimeoutError:
                    error, outcome = ("Timeout", f"{command}: no answer from {vm_name} before the expiry"), "error"
                except Exception as err:  # the request's boundary: the requester gets the reason
                    error, outcome = ("GenericError", f"{type(err).__name__}: {err}"), "error"
                finally:
                    self._running -= 1
        if error is not None:
            reply["error"] = {"class": error[0], "desc": error[1]}
        self.stats_["commands"] += 1
        if outcome in ("refused", "expired"):
            self.stats_["refused"] += 1
            log.warning("fleet: remote %s on %s from %s %s: %s", command, vm_name, req.get("from"), outcome,
                        error[1] if error else "")
        self._journal(vm_name, {"id": rid, "execute": command, "from": req.get("from"), "outcome": outcome,
                                "error": error[1] if error else None})
        with contextlib.suppress(MqttLinkError):
            await client.publish_acked(req["reply_to"], orjson.dumps(reply, default=str), qos=1)

    def _local_vm(self, name: str) -> VMHandle | None:
        fleet = getattr(self.daemon, "fleet", None)
        get = getattr(fleet, "get", None)
        vm = get(name) if callable(get) else None
        return vm if isinstance(vm, VMHandle) else None

    def _journal(self, vm: str, data: dict[str, Any]) -> None:
        try:
            journal = self.daemon.journal
        except Exception:  # no journal (tests without a daemon)
            return
        record = getattr(journal, "record_event", None)
        if callable(record):
            record(COMMAND_EVENT, vm, self.host, time.time(), data)
