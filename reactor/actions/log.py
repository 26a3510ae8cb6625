"""``log``: write a message to reactor's log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from reactor.actions.action import ActionContext, action

__all__ = ["LOG", "LogArgs"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


@dataclass(frozen=True, slots=True)
class LogArgs:
    message: str
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


@action("log", shorthand="message", mutating=False, inline=True)
async def LOG(ctx: ActionContext, args: LogArgs) -> str:
    """Write ``message`` to reactor's log at ``level`` (default info)."""
    ctx.log.log(_LEVELS[args.level], "%s", args.message)
    return args.message
