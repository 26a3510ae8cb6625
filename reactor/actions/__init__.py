"""Built-in actions, each in its own module, written against the public plugin API."""

from __future__ import annotations

from ..action import ActionSpec
from .emit import EMIT
from .exec import EXEC
from .log import LOG
from .mqtt import MQTT
from .qmp import QMP
from .sleep import SLEEP
from .snapshot import SNAPSHOT
from .wait_for import WAIT_FOR
from .webhook import WEBHOOK

__all__ = ["BUILTINS"]

BUILTINS: list[ActionSpec] = [EMIT, EXEC, LOG, MQTT, QMP, SLEEP, SNAPSHOT, WAIT_FOR, WEBHOOK]
