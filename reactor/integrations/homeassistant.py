"""Home Assistant MQTT discovery: every VM the event mirror sees becomes a Home Assistant device.

An option of the MQTT event mirror (``publish_events.homeassistant``)::

    mqtt:
      home:
        host: 127.0.0.1
        publish_events:
          homeassistant:
            prefix: homeassistant      # Home Assistant's discovery_prefix (the default)
            buttons: [cont]            # QMP commands offered as buttons
    fleet:
      broker: home
      commands: {allow: [cont]}        # the executor the buttons' requests go to

For each VM (the first event the mirror takes from it) the mirror publishes,
retained, Home Assistant's single-component discovery messages
(``<prefix>/<component>/<node_id>/<object_id>/config``):

* a ``sensor`` "Run state": the mirror's retained ``<prefix>/<host>/<vm>/status``
  (QEMU's RunState names, ``connected``, ``disconnected``), as an enum;
* a ``sensor`` "Last command": the reply to the last button pressed (``ok`` or
  the refusal/error);
* a ``button`` per configured command: pressing it publishes a remote-command
  request (:mod:`reactor.integrations.remote`) on
  ``<fleet prefix>/<host>/<vm>/command``; its ``command_template`` gives the
  request an id and an expiry 30 s ahead (Home Assistant renders ``now()``).
  The executor checks ``fleet.commands`` and journals it like any remote
  command: a button can do nothing that list does not allow.

The device (``identifiers: reactor_<host>_<vm>``) is available while the
mirror's presence topic ``<prefix>/<host>/status`` says ``online``; its
``sw_version`` is the QEMU version reactor connected to.  A button whose
command ``fleet.commands`` would refuse is a config error
(:func:`bind_discovery`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from reactor.errors import ConfigError, Position, SourceError
from reactor.model.catalog.builtin import RUN_STATES
from reactor.model.event import Event
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match
from reactor.version import __version__

__all__ = ["RUN_STATE_OPTIONS", "Discovery", "DiscoveryConfig", "bind_discovery", "parse_discovery"]

#: The mirror's status values: QEMU's RunState names, plus the connection's own.
RUN_STATE_OPTIONS: tuple[str, ...] = (*RUN_STATES, "connected", "disconnected")

#: The daemon's own events come from this pseudo-VM (reactor.daemon.daemon.DAEMON_VM): no device for it.
_DAEMON_VM = "reactor"

#: Seconds a button's request stays valid (the executor refuses it after that).
EXPIRY = 30

#: Labels for well-known commands; others show the command's name.
_LABELS = {"cont": "Resume", "stop": "Pause", "system_reset": "Reset", "system_powerdown": "Power down",
           "system_wakeup": "Wake up", "quit": "Quit QEMU"}

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_KEYS = ("prefix", "buttons")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """``publish_events.homeassistant``."""

    #: Home Assistant's ``discovery_prefix``.
    prefix: str = "homeassistant"
    #: QMP commands offered as buttons on every VM.
    buttons: tuple[str, ...] = ()
    #: The remote-command topics' prefix (the fleet link's), set by :func:`bind_discovery`.
    command_prefix: str | None = None
    pos: Position | None = dataclasses.field(default=None, compare=False)


def _str(node: Node, what: str) -> str:
    if not (isinstance(node, ScalarNode) and isinstance(node.value, str) and node.value.strip()):
        raise ConfigError(node.pos, f"{what}: expected a non-empty string, got {node.kind}")
    return node.value.strip()


def parse_discovery(node: Node) -> DiscoveryConfig | None:
    """``true``/``false`` or ``{prefix, buttons}``; :class:`ConfigError` at the offending node."""
    if isinstance(node, ScalarNode) and isinstance(node.value, bool):
        return DiscoveryConfig(pos=node.pos) if node.value else None
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"publish_events.homeassistant: expected true, false or a mapping, got {node.kind}")
    for key in node.entries:
        if key not in _KEYS:
            hint = close_match(key, list(_KEYS))
            extra = f"; did you mean {hint!r}?" if hint else f" (known: {', '.join(_KEYS)})"
            raise ConfigError(node.key_pos(key), f"unknown key {key!r} in publish_events.homeassistant{extra}")
    kw: dict[str, Any] = {"pos": node.pos}
    if (sub := node.get("prefix")) is not None:
        prefix = _str(sub, "publish_events.homeassistant.prefix").strip("/")
        if "+" in prefix or "#" in prefix:
            raise ConfigError(sub.pos, f"publish_events.homeassistant.prefix: {prefix!r} has MQTT wildcards")
        kw["prefix"] = prefix
    if (sub := node.get("buttons")) is not None:
        items = [sub] if isinstance(sub, ScalarNode) else list(sub) if isinstance(sub, SeqNode) else None
        if items is None:
            raise ConfigError(sub.pos, "publish_events.homeassistant.buttons: expected a list of QMP commands")
        names = []
        for item in items:
            name = _str(item, "publish_events.homeassistant.buttons")
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                raise ConfigError(item.pos, f"publish_events.homeassistant.buttons: {name!r} is not a QMP command name")
            names.append(name)
        kw["buttons"] = tuple(dict.fromkeys(names))
        kw["pos"] = sub.pos
    return DiscoveryConfig(**kw)


def bind_discovery(brokers: Mapping[str, Any], fleet: Any, errors: list[SourceError]) -> dict[str, Any]:
    """The brokers with their discovery bound to the fleet link's command topics.

    Buttons need the remote-command executor: a ``fleet:`` section on the same
    broker whose ``commands`` allow each button's command.  Anything else is a
    :class:`ConfigError` (appended to ``errors``) at the ``buttons`` list.
    """
    out = dict(brokers)
    first = next(iter(brokers), None)
    for name, b in brokers.items():
        mirror = getattr(b, "publish_events", None)
        ha: DiscoveryConfig | None = getattr(mirror, "homeassistant", None)
        if mirror is None or ha is None:
            continue
        prefix = None
        if ha.buttons:
            pos = ha.pos or b.pos
            fleet_broker = (getattr(fleet, "broker", None) or first) if fleet is not None else None
            commands = getattr(fleet, "commands", None)
            if fleet is None:
                errors.append(ConfigError(pos, "publish_events.homeassistant.buttons: the buttons send remote "
                                               f"commands: add `fleet: {{broker: {name}, commands: {{allow: "
                                               f"[{', '.join(ha.buttons)}]}}}}`"))
                continue
            if fleet_broker != name:
                errors.append(ConfigError(pos, f"publish_events.homeassistant.buttons: the fleet link uses broker "
                                               f"{fleet_broker!r}, the buttons publish to {name!r}: set "
                                               f"fleet.broker: {name}"))
                continue
            if commands is None:
                errors.append(ConfigError(pos, "publish_events.homeassistant.buttons: fleet.commands is off, so "
                                               f"every button would be refused: set fleet.commands.allow: "
                                               f"[{', '.join(ha.buttons)}]"))
                continue
            refused = [(c, why) for c in ha.buttons if (why := commands.refusal(c)) is not None]
            if refused:
                errors.append(ConfigError(pos, "publish_events.homeassistant.buttons: "
                                               + "; ".join(f"{c}: {why}" for c, why in refused)))
                continue
            prefix = getattr(fleet, "prefix", None) or b.prefix
        bound = dataclasses.replace(ha, command_prefix=prefix)
        out[name] = dataclasses.replace(b, publish_events=dataclasses.replace(mirror, homeassistant=bound))
    return out


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


class Discovery:
    """Builds and publishes the discovery messages for each VM the mirror sees (called from its task)."""

    def __init__(self, config: DiscoveryConfig, *, mirror_prefix: str, host: str) -> None:
        self.config = config
        self.host = host
        self.base = f"{mirror_prefix}/{host}"
        self.availability = f"{mirror_prefix}/{host}/status"
        #: VM -> the QEMU version its messages were published with ("" when unknown)
        self.announced: dict[str, str] = {}

    def on_event(self, ev: Event, put: Callable[[str, bytes, int, bool], object]) -> int:
        """Publish the VM's messages when it is new or its QEMU version changed; how many were queued."""
        vm = ev.vm
        if vm == _DAEMON_VM or (ev.host is not None and ev.host != self.host):
            return 0   # the daemon's own events; another host's VM (fleet): its own reactor announces it
        version = self.announced.get(vm)
        if ev.name == "REACTOR_VM_CONNECTED":
            qemu = ev.data.get("qemu_version")
            new = str(qemu) if isinstance(qemu, str) else (version or "")
        else:
            new = version if version is not None else ""
        if version == new:
            return 0
        self.announced[vm] = new
        n = 0
        for topic, payload in self.messages(vm, new or None):
            put(topic, orjson.dumps(payload), 1, True)
            n += 1
        return n

    def device(self, vm: str, qemu_version: str | None) -> dict[str, Any]:
        dev: dict[str, Any] = {"identifiers": [f"reactor_{_safe(self.host)}_{_safe(vm)}"], "name": vm,
                               "manufacturer": "QEMU", "model": f"QEMU virtual machine on {self.host}"}
        if qemu_version:
            dev["sw_version"] = qemu_version
        return dev

    def messages(self, vm: str, qemu_version: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(discovery topic, config payload)`` for every entity of ``vm``."""
        node = f"reactor_{_safe(self.host)}_{_safe(vm)}"
        common: dict[str, Any] = {
            "device": self.device(vm, qemu_version),
            "origin": {"name": "reactor", "sw_version": __version__},
            "availability_topic": self.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
        p = self.config.prefix
        out: list[tuple[str, dict[str, Any]]] = [
            (f"{p}/sensor/{node}/run_state/config", {
                **common, "name": "Run state", "unique_id": f"{node}_run_state", "icon": "mdi:server",
                "state_topic": f"{self.base}/{vm}/status", "device_class": "enum",
                "options": list(RUN_STATE_OPTIONS),
            }),
        ]
        cprefix = self.config.command_prefix
        if cprefix is None or not self.config.buttons:
            return out
        reply = f"{cprefix}/{self.host}/reply/homeassistant-{_safe(vm)}"
        out.append((f"{p}/sensor/{node}/last_command/config", {
            **common, "name": "Last command", "unique_id": f"{node}_last_command", "icon": "mdi:console",
            "entity_category": "diagnostic", "state_topic": reply,
            "value_template": "{{ 'ok' if value_json.error is not defined else "
                              "value_json.error['class'] ~ ': ' ~ value_json.error.desc }}",
        }))
        for command in self.config.buttons:
            request = ('{"id": "homeassistant-{{ now().timestamp() | round(3) }}", '
                       f'"execute": "{command}", "arguments": {{}}, '
                       f'"expires": {{{{ (now().timestamp() + {EXPIRY}) | round(3) }}}}, '
                       f'"reply_to": "{reply}", "from": "homeassistant"}}')
            button: dict[str, Any] = {
                **common, "name": _LABELS.get(command, command), "unique_id": f"{node}_cmd_{_safe(command)}",
                "command_topic": f"{cprefix}/{self.host}/{vm}/command", "command_template": request,
                "qos": 1, "retain": False, "icon": "mdi:console-line",
            }
            if command == "system_reset":
                button["device_class"] = "restart"
            out.append((f"{p}/button/{node}/cmd_{_safe(command)}/config", button))
        return out
