"""Home Assistant MQTT discovery through a real mosquitto, a real `reactor run` and a real QEMU.

The discovery payloads are checked against Home Assistant's documented MQTT discovery schema (the
single-component topic format, the shared entity options, the sensor and button platforms' options, the
device and origin mappings) written down below as JSON Schema with unknown keys refused: Home Assistant
silently drops keys it does not know, so a misspelt one would be lost without a word.  Pressing the button is
done as Home Assistant does it: its ``command_template`` rendered (Jinja2, with ``now()``) and published to
its ``command_topic``; the VM resumes through the remote-command path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import jsonschema
import pytest

from reactor.daemon.config import parse_config
from reactor.errors import LoadError
from reactor.integrations.homeassistant import RUN_STATE_OPTIONS, Discovery, DiscoveryConfig

try:
    from tests.broker import Broker, mosquitto
    from tests.qemu_fixtures import QemuVMFactory
except ImportError:  # tests/ itself on sys.path
    from broker import Broker, mosquitto  # type: ignore[import-not-found,no-redef,unused-ignore]
    from qemu_fixtures import QemuVMFactory  # type: ignore[import-not-found,no-redef,unused-ignore]

__all__ = ["mosquitto"]

REACTOR = str(Path(sys.executable).with_name("reactor"))

# ---------------------------------------------------------------- Home Assistant's documented schema

#: <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids of [a-zA-Z0-9_-]
DISCOVERY_TOPIC = re.compile(r"^(?P<prefix>[^+#]+)/(?P<component>sensor|button)/(?:[a-zA-Z0-9_-]+/)?"
                             r"(?P<object_id>[a-zA-Z0-9_-]+)/config$")
_PUBLISH_TOPIC = {"type": "string", "minLength": 1, "pattern": r"^[^+#]+$"}
_SUBSCRIBE_TOPIC = {"type": "string", "minLength": 1}
_DEVICE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "identifiers": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "connections": {"type": "array", "items": {"type": "array", "items": {"type": "string"},
                                                   "minItems": 2, "maxItems": 2}},
        "manufacturer": {"type": "string"}, "model": {"type": "string"}, "model_id": {"type": "string"},
        "name": {"type": "string"}, "hw_version": {"type": "string"}, "sw_version": {"type": "string"},
        "serial_number": {"type": "string"}, "via_device": {"type": "string"}, "suggested_area": {"type": "string"},
        "configuration_url": {"type": "string"},
    },
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
}
_ORIGIN = {"type": "object", "additionalProperties": False, "required": ["name"],
           "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"},
                          "support_url": {"type": "string"}}}
_COMMON = {
    "name": {"type": ["string", "null"]}, "unique_id": {"type": "string"}, "object_id": {"type": "string"},
    "default_entity_id": {"type": "string"},
    "device": _DEVICE, "origin": _ORIGIN,
    "availability_topic": _SUBSCRIBE_TOPIC, "availability_template": {"type": "string"},
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "availability": {"type": "array", "items": {"type": "object", "required": ["topic"]}},
    "payload_available": {"type": "string"}, "payload_not_available": {"type": "string"},
    "enabled_by_default": {"type": "boolean"}, "encoding": {"type": "string"},
    "entity_category": {"enum": ["config", "diagnostic"]}, "entity_picture": {"type": "string"},
    "icon": {"type": "string", "pattern": r"^[a-z0-9-]+:[a-z0-9-]+$"},
    "json_attributes_topic": _SUBSCRIBE_TOPIC, "json_attributes_template": {"type": "string"},
    "qos": {"enum": [0, 1, 2]},
}
HA_SCHEMAS: dict[str, dict[str, Any]] = {
    "sensor": {
        "type": "object", "additionalProperties": False, "required": ["state_topic"],
        "properties": {**_COMMON, "state_topic": _SUBSCRIBE_TOPIC, "value_template": {"type": "string"},
                       "device_class": {"type": ["string", "null"]}, "state_class": {"type": "string"},
                       "unit_of_measurement": {"type": "string"}, "suggested_display_precision": {"type": "integer"},
                       "options": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                       "expire_after": {"type": "integer", "minimum": 0}, "force_update": {"type": "boolean"},
                       "last_reset_value_template": {"type": "string"}},
        # an enum sensor lists its options, has no unit and no state class
        "if": {"properties": {"device_class": {"const": "enum"}}, "required": ["device_class"]},
        "then": {"required": ["options"], "not": {"anyOf": [{"required": ["unit_of_measurement"]},
                                                            {"required": ["state_class"]}]}},
        "dependentSchemas": {"options": {"properties": {"device_class": {"const": "enum"}}}},
    },
    "button": {
        "type": "object", "additionalProperties": False, "required": ["command_topic"],
        "properties": {**_COMMON, "command_topic": _PUBLISH_TOPIC, "command_template": {"type": "string"},
                       "payload_press": {"type": "string"}, "retain": {"type": "boolean"},
                       "device_class": {"enum": ["identify", "restart", "update", None]}},
    },
}


def check_discovery(topic: str, payload: dict[str, Any]) -> str:
    """Validate one discovery message as Home Assistant would; its component."""
    m = DISCOVERY_TOPIC.match(topic)
    assert m, f"not a discovery topic: {topic}"
    component = m.group("component")
    jsonschema.validate(payload, HA_SCHEMAS[component])
    assert "unique_id" in payload, "entities of a device need a unique_id"
    # the templates Home Assistant renders must at least parse as Jinja2
    env = jinja2.Environment()
    for key in ("value_template", "command_template", "availability_template"):
        if key in payload:
            env.parse(payload[key])
    return component


def press(button: dict[str, Any]) -> bytes:
    """What Home Assistant publishes when the button is pressed: the command template rendered."""
    env = jinja2.Environment()
    rendered = env.from_string(button["command_template"]).render(
        value=button.get("payload_press", "PRESS"), now=lambda: dt.datetime.now(dt.UTC))
    return rendered.encode()


def render_value(template: str, payload: bytes) -> str:
    env = jinja2.Environment()
    return env.from_string(template).render(value=payload.decode(), value_json=json.loads(payload))


# ---------------------------------------------------------------- config


def config_text(port: int, qmp: Path | str, *, fleet: str | None = None, buttons: str = "[cont, system_reset]") -> str:
    fleet = fleet if fleet is not None else "fleet: {broker: home, commands: {allow: [cont, system_reset]}}"
    return textwrap.dedent(f"""\
        rules: rules
        state_dir: state
        host: lab
        vms:
          - {{name: web-1, qmp: {qmp}}}
        mqtt:
          home:
            host: 127.0.0.1
            port: {port}
            publish_events:
              prefix: lab-reactor
              events: [RESUME]
              homeassistant: {{buttons: {buttons}}}
        """) + fleet + "\n"


@pytest.mark.parametrize(("fleet", "buttons", "message"), [
    ("", "[cont]", "the buttons send remote commands: add `fleet: {broker: home, commands: {allow: [cont]}}`"),
    ("fleet: {broker: home}", "[cont]", "fleet.commands is off, so every button would be refused"),
    ("fleet: {broker: home, commands: {allow: [stop]}}", "[cont, stop]",
     "cont: cont is not on this host's allow-list (fleet.commands.allow)"),
    ("fleet: {broker: home, commands: {allow: ['*']}}", "[quit]", "quit: quit is destructive"),
    ("fleet: {broker: home, commands: true}", "[Cont]", "'Cont' is not a QMP command name"),
])
def test_buttons_need_an_allowing_executor(tmp_path: Path, fleet: str, buttons: str, message: str) -> None:
    with pytest.raises(LoadError) as info:
        parse_config(config_text(1883, tmp_path / "q", fleet=fleet, buttons=buttons), tmp_path / "reactor.yaml")
    text = "\n".join(str(e) for e in info.value.errors)
    assert message in text, text
    assert re.search(r"reactor\.yaml:\d+:\d+: ", text), text      # with its position


def test_unknown_key_and_sensor_only_discovery(tmp_path: Path) -> None:
    bad = config_text(1883, tmp_path / "q").replace("{buttons: [cont, system_reset]}", "{prefx: ha}")
    with pytest.raises(LoadError) as info:
        parse_config(bad, tmp_path / "reactor.yaml")
    assert "unknown key 'prefx' in publish_events.homeassistant; did you mean 'prefix'?" in str(info.value.errors[0])
    # without buttons no executor is needed: the device and its run-state sensor only
    cfg = parse_config(config_text(1883, tmp_path / "q", fleet="").replace(
        "{buttons: [cont, system_reset]}", "true"), tmp_path / "reactor.yaml")
    ha = cfg.mqtt["home"].publish_events.homeassistant
    assert ha == DiscoveryConfig(prefix="homeassistant", buttons=(), command_prefix=None)
    msgs = Discovery(ha, mirror_prefix="lab-reactor", host="lab").messages("db.1 (old)")
    assert [check_discovery(t, p) for t, p in msgs] == ["sensor"]
    assert msgs[0][0] == "homeassistant/sensor/reactor_lab_db_1__old_/run_state/config"
    assert msgs[0][1]["state_topic"] == "lab-reactor/lab/db.1 (old)/status"


# ---------------------------------------------------------------- end to end


class Collector:
    """Every message on the given filters, last one per topic (retained ones too)."""

    def __init__(self) -> None:
        self.last: dict[str, bytes] = {}
        self.changed = asyncio.Event()

    async def run(self, port: int, filters: list[str], ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-homeassistant") as client:
            for f in filters:
                await client.subscribe(f, qos=1)
            ready.set()
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                self.last[msg.topic.value] = payload
                self.changed.set()

    async def wait(self, what: str, predicate: Any, timeout: float = 30.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                got = predicate(self.last)
                if got:
                    return got
                self.changed.clear()
                await self.changed.wait()
        raise AssertionError(what)


@contextlib.asynccontextmanager
async def collecting(port: int, filters: list[str]) -> AsyncIterator[Collector]:
    c = Collector()
    ready = asyncio.Event()
    task = asyncio.create_task(c.run(port, filters, ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield c
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.mqtt
@pytest.mark.qemu
async def test_discovery_sensor_and_button_resume_a_real_vm(tmp_path: Path, mosquitto: Broker,
                                                           qemu_vm_factory: QemuVMFactory) -> None:
    vm = await qemu_vm_factory(name="web-1")            # no guest: QEMU waits in "prelaunch"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "log.yaml").write_text(
        "rules:\n  - name: note\n    on: RESUME\n    actions:\n      - log: resumed\n")
    (tmp_path / "reactor.yaml").write_text(config_text(mosquitto.port, vm.qmp_path))
    check = await asyncio.to_thread(subprocess.run, [REACTOR, "check", "-c", "reactor.yaml"], cwd=tmp_path,
                                    capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr

    async with collecting(mosquitto.port, ["homeassistant/#", "lab-reactor/#", "reactor/+/reply/#"]) as bus:
        log = (tmp_path / "daemon.log").open("wb")
        proc = await asyncio.create_subprocess_exec(REACTOR, "run", "-c", "reactor.yaml", cwd=tmp_path,
                                                    stdout=log, stderr=log)
        try:
            node = "reactor_lab_web-1"
            topics = {f"homeassistant/sensor/{node}/run_state/config",
                      f"homeassistant/sensor/{node}/last_command/config",
                      f"homeassistant/button/{node}/cmd_cont/config",
                      f"homeassistant/button/{node}/cmd_system_reset/config"}

            def announced(last: dict[str, bytes]) -> dict[str, dict[str, Any]] | None:
                got = {t: json.loads(last[t]) for t in topics if t in last}
                # the second announcement carries the QEMU version reactor connected to
                if len(got) == len(topics) and all("sw_version" in p["device"] for p in got.values()):
                    return got
                return None

            configs = await bus.wait("discovery messages", announced)
            components = sorted(check_discovery(t, p) for t, p in configs.items())
            assert components == ["button", "button", "sensor", "sensor"]
            devices = {json.dumps(p["device"], sort_keys=True) for p in configs.values()}
            assert len(devices) == 1                      # one device per VM, every entity on it
            device = configs[f"homeassistant/sensor/{node}/run_state/config"]["device"]
            assert device["name"] == "web-1" and device["identifiers"] == ["reactor_lab_web-1"]
            assert re.fullmatch(r"\d+\.\d+\.\d+", device["sw_version"])
            assert len({p["unique_id"] for p in configs.values()}) == 4

            state = configs[f"homeassistant/sensor/{node}/run_state/config"]
            assert state["state_topic"] == "lab-reactor/lab/web-1/status"
            status = await bus.wait("the run state", lambda last: last.get(state["state_topic"]))
            assert status.decode() == "prelaunch" and status.decode() in state["options"]
            avail = await bus.wait("availability", lambda last: last.get(state["availability_topic"]))
            assert avail.decode() == state["payload_available"]

            # press "Resume" as Home Assistant would
            cont = configs[f"homeassistant/button/{node}/cmd_cont/config"]
            # the command topic is the fleet link's (the broker's prefix), where the executor listens
            assert cont["name"] == "Resume" and cont["command_topic"] == "reactor/lab/web-1/command"
            request = press(cont)
            assert json.loads(request)["execute"] == "cont"
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-ha-press") as ha:
                await ha.publish(cont["command_topic"], request, qos=cont["qos"], retain=cont["retain"])
            await bus.wait("running", lambda last: last.get(state["state_topic"]) == b"running")
            assert "running" in RUN_STATE_OPTIONS

            last_cmd = configs[f"homeassistant/sensor/{node}/last_command/config"]
            reply = await bus.wait("the reply", lambda last: last.get(last_cmd["state_topic"]))
            assert render_value(last_cmd["value_template"], reply) == "ok"
            # the mirror publishes the RESUME that the button caused
            await bus.wait("the RESUME event", lambda last: last.get("lab-reactor/lab/web-1/event/RESUME"))

            # a request the executor refuses comes back through the same sensor with its reason
            refused = json.loads(request)
            refused.update(execute="quit", id="x")
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-ha-quit") as ha:
                await ha.publish(cont["command_topic"], json.dumps(refused).encode(), qos=1)
            topic = last_cmd["state_topic"]
            reply = await bus.wait("the refusal", lambda last: b'"x"' in last.get(topic, b"") and last[topic])
            assert render_value(last_cmd["value_template"], reply).startswith("Refused: quit is not on")
            assert vm.running
        finally:
            if proc.returncode is None:
                proc.terminate()
                async with asyncio.timeout(20):
                    await proc.wait()
            log.close()
        # the daemon said goodbye: Home Assistant shows the device unavailable
        await bus.wait("offline", lambda last: last.get(state["availability_topic"]) == b"offline")


def test_the_documented_example_config_loads(tmp_path: Path) -> None:
    """docs/mqtt-webhooks.md's Home Assistant example is a valid config, with its buttons bound to the executor."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "mqtt-webhooks.md").read_text()
    section = doc.split("### Home Assistant discovery", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config("rules: rules\n" + example, tmp_path / "reactor.yaml")
    ha = cfg.mqtt["home"].publish_events.homeassistant
    assert ha.buttons == ("cont",) and ha.prefix == "homeassistant" and ha.command_prefix == "reactor"
    msgs = Discovery(ha, mirror_prefix="reactor", host="h").messages("web-1", "10.0.0")
    assert sorted(check_discovery(t, p) for t, p in msgs) == ["button", "sensor", "sensor"]


def test_only_this_hosts_vms_become_devices() -> None:
    from reactor.model.catalog import default_catalog

    d = Discovery(DiscoveryConfig(buttons=("cont",), command_prefix="reactor"), mirror_prefix="reactor", host="h1")
    sent: list[tuple[str, bytes, int, bool]] = []

    def put(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        sent.append((topic, payload, qos, retain))

    make = default_catalog().make_event
    stop = {"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}
    assert d.on_event(make(stop, vm="web-1", host="h2"), put) == 0          # another host's VM
    assert d.on_event(make(stop, vm="reactor", host="h1"), put) == 0        # the daemon itself
    assert d.on_event(make(stop, vm="web-1", host="h1"), put) == 3          # sensor, last command, button
    assert d.on_event(make(stop, vm="web-1", host="h1"), put) == 0          # announced once
    connected = {"event": "REACTOR_VM_CONNECTED", "data": {"status": "running", "qemu_version": "10.0.2"},
                 "timestamp": {"seconds": 2, "microseconds": 0}}
    assert d.on_event(make(connected, vm="web-1", host="h1"), put) == 3     # again, with the QEMU version
    assert all(qos == 1 and retain for _t, _p, qos, retain in sent)
    assert json.loads(sent[-1][1])["device"]["sw_version"] == "10.0.2"
