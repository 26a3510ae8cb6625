"""``sleep``: wait (on the engine's clock, virtual in replay)."""

from __future__ import annotations

from dataclasses import dataclass

from reactor.actions.action import ActionContext, Duration, action

__all__ = ["SLEEP", "SleepArgs"]


@dataclass(frozen=True, slots=True)
class SleepArgs:
    duration: Duration


@action("sleep", shorthand="duration", mutating=False)
async def SLEEP(ctx: ActionContext, args: SleepArgs) -> None:
    """Wait for ``duration`` (``2s``, ``500ms``...)."""
    await ctx.sleep(args.duration)
