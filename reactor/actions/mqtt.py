"""The ``mqtt`` action: publish a message to a configured broker.

::

    - mqtt: {topic: "qemu/{{ vm.name }}/alert", qos: 1}          # payload: the event as JSON
    - mqtt: {topic: alerts, payload: "{{ vm.name }} paused", retain: true, broker: backup}
    - mqtt: {topic: alerts, qos: 1, wait: true}                  # return after the PUBACK

The message goes through the broker's outbox (see :mod:`reactor.integrations.mqtt`): the
step returns once the message is queued (QoS 1/2: also written to the
journal), or with ``wait: true`` once the broker acknowledged it.  A payload
that is not a string is sent as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from reactor.actions.action import ActionContext, ActionSpec, action
from reactor.errors import ArgumentErrors, ProblemKey
from reactor.integrations.mqtt import MqttError, MqttHub

__all__ = ["MQTT", "MqttArgs"]


@dataclass(frozen=True)
class MqttArgs:
    topic: str
    payload: Any = None
    qos: int = 0
    retain: bool = False
    broker: str | None = None
    wait: bool = False


def _check(args: Any) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    qos = getattr(args, "qos", 0)
    if isinstance(qos, int) and qos not in (0, 1, 2):
        problems.append(("qos", f"qos: {qos} is not one of 0, 1, 2"))
    topic = getattr(args, "topic", "")
    if isinstance(topic, str) and "{{" not in topic and ("+" in topic or "#" in topic or not topic):
        problems.append(("topic", f"topic: {topic!r} is not a valid topic to publish to"))
    if problems:
        raise ArgumentErrors(problems)


def encode_payload(payload: Any, ctx: ActionContext) -> bytes:
    """The bytes to send: the event as JSON by default, strings as UTF-8, anything else as JSON."""
    if payload is None:
        return orjson.dumps(ctx.event.to_qmp())
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return orjson.dumps(payload)


async def _mqtt(ctx: ActionContext, args: MqttArgs) -> object:
    """Publish to an MQTT broker (the first configured one unless ``broker`` is given)."""
    if args.qos not in (0, 1, 2):
        raise MqttError(f"qos: {args.qos} is not one of 0, 1, 2")
    link = ctx.resource(MqttHub).link(args.broker)
    payload = encode_payload(args.payload, ctx)
    waiter = link.publish(args.topic, payload, args.qos, args.retain, wait=args.wait)
    if waiter is not None:
        await waiter
    return {"broker": link.name, "topic": args.topic, "qos": args.qos, "acknowledged": waiter is not None}


MQTT: ActionSpec = action("mqtt", shorthand="topic", check=_check, resources=(MqttHub,))(_mqtt)
