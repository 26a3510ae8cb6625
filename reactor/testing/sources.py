"""Run an event source on a virtual clock and collect what it emitted.

::

    ticks = await run_source("timer", {"name": "nightly", "cron": "0 2 * * *", "timezone": "UTC"},
                             start=0.0, until=3 * 86400)
    assert [e.timestamp for e in ticks] == [7200.0, 93600.0, 180000.0]

The events can then go through rules with :func:`reactor.testing.run_rules`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from reactor.engine.clock import VirtualClock
from reactor.errors import ConfigError
from reactor.model.event import Event
from reactor.rules.arguments import convert
from reactor.sources import BoundSource, SourceSpec, builtin_sources

__all__ = ["run_source"]


def _config(spec: SourceSpec, config: Mapping[str, Any] | Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        value = config
    else:
        try:
            value = convert(spec.config, dict(typing.cast(Mapping[str, Any], config or {})))
        except ValueError as err:
            raise ConfigError(None, f"sources: {spec.name}: {err}") from err
    if spec.check is not None:
        try:
            spec.check(value)
        except ValueError as err:
            raise ConfigError(None, f"sources: {spec.name}: {err}") from err
    return value


async def run_source(spec: SourceSpec | str, config: Mapping[str, Any] | Any = None, *, until: float,
                     start: float = 0.0, host: str = "test-host", label: str | None = None) -> list[Event]:
    """Run ``spec`` (or a built-in source by name) from virtual time ``start`` to ``until``.

    The source is cancelled at ``until``; what it raised before is raised here.
    """
    if isinstance(spec, str):
        found = builtin_sources().get(spec)
        if found is None:
            raise ValueError(f"no built-in source {spec!r}")
        spec = found
    value = _config(spec, config)
    clock = VirtualClock(start)
    events: list[Event] = []
    ctx = BoundSource(label or spec.name, host=host, clock=clock, put=events.append)
    run = spec.run

    async def main() -> None:
        await run(ctx, value)

    task = asyncio.create_task(main(), name=f"reactor.testing.source[{ctx.name}]")
    try:
        while True:
            for _ in range(100):       # let the source run until it sleeps on the clock (or ends)
                await asyncio.sleep(0)
                if task.done() or clock.sleepers():
                    break
            if task.done() or not clock.wake_due(until):
                break
        clock.set(until)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # the caller's own cancellation goes on
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return events
