"""The list of built-in actions (each in its own module, written against the public plugin API)."""

from __future__ import annotations

from reactor.actions.action import ActionSpec
from reactor.actions.emit import EMIT
from reactor.actions.exec import EXEC
from reactor.actions.log import LOG
from reactor.actions.mqtt import MQTT
from reactor.actions.qmp import QMP
from reactor.actions.resume import RESUME
from reactor.actions.sleep import SLEEP
from reactor.actions.snapshot import SNAPSHOT
from reactor.actions.wait_for import WAIT_FOR
from reactor.actions.webhook import WEBHOOK

__all__ = ["BUILTINS"]

BUILTINS: list[ActionSpec] = [EMIT, EXEC, LOG, MQTT, QMP, RESUME, SLEEP, SNAPSHOT, WAIT_FOR, WEBHOOK]
