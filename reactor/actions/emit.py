"""``emit``: put a derived event on the bus, from the same VM (or ``vm``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from reactor.actions.action import ActionContext, action
from reactor.errors import ArgumentErrors

__all__ = ["EMIT", "EVENT_NAME", "EmitArgs"]

#: Names rules may emit: upper case like QMP's, not reactor's reserved prefix.
EVENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class EmitArgs:
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    vm: str | None = None


def _check(args: EmitArgs) -> None:
    if "{{" in args.event:
        return
    if not EVENT_NAME.match(args.event):
        raise ArgumentErrors([("event", f"event name {args.event!r} must be upper case letters, digits and _ "
                                        "(like QMP's)")])
    if args.event.startswith("REACTOR_"):
        raise ArgumentErrors([("event", f"event name {args.event!r}: the REACTOR_ prefix is reserved for "
                                        "reactor's own events")])


@action("emit", shorthand="event", mutating=False, check=_check, inline=True)
async def EMIT(ctx: ActionContext, args: EmitArgs) -> dict[str, Any]:
    """Emit event ``event`` with ``data`` from this run's VM; rules can listen to it with ``on:``."""
    ctx.emit(args.event, args.data, vm=args.vm)
    return {"event": args.event, "data": args.data}
