"""Built-in actions, each in its own module, written against the public plugin API."""

from __future__ import annotations

from ..action import ActionSpec
from .emit import EMIT
from .exec import EXEC
from .log import LOG
from .sleep import SLEEP

__all__ = ["BUILTINS"]

BUILTINS: list[ActionSpec] = [EMIT, EXEC, LOG, SLEEP]

from .qmp import QMP  # noqa: E402
from .snapshot import SNAPSHOT  # noqa: E402
from .wait_for import WAIT_FOR  # noqa: E402

BUILTINS += [QMP, SNAPSHOT, WAIT_FOR]

from .mqtt import MQTT  # noqa: E402
from .webhook import WEBHOOK  # noqa: E402

BUILTINS += [MQTT, WEBHOOK]
