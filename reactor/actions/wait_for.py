"""``wait_for``: wait for a later event from the same VM (or ``vm``).

Events that arrived after the previous step began count too, so
``qmp: cont`` then ``wait_for: RESUME`` cannot miss a fast ``RESUME``.
``match`` uses the rule language's ``match`` syntax on the event's data
(scalars, lists as one-of, one-operator mappings, ``any``/``all``/``not``).
Literal event names and the ``match`` paths and values are checked against
the event catalog when the rules load, like a rule's ``on`` and ``match``.
The result is the event as plain data (``event``, ``data``, ``timestamp``,
``vm``); the step fails after ``timeout`` (default 30 s).

In a dry run the step is skipped (recorded as ``dry-run``): what it waits for
almost always follows a command that the dry run did not send (``qmp: cont``
then ``wait_for: RESUME``), so waiting would only end in a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reactor.actions.action import ActionContext, Duration, action
from reactor.actions.emit import EVENT_NAME
from reactor.errors import ActionError, ArgumentErrors, ProblemKey
from reactor.model.event import Event
from reactor.rules.matcher import explain_match

__all__ = ["DEFAULT_TIMEOUT", "WAIT_FOR", "WaitForArgs"]


#: The default of ``timeout``.
DEFAULT_TIMEOUT = Duration(30.0)


@dataclass(frozen=True, slots=True)
class WaitForArgs:
    event: list[str] | str
    match: dict[str, Any] = field(default_factory=dict)
    vm: str | None = None
    timeout: Duration = DEFAULT_TIMEOUT


def _names(args: WaitForArgs) -> list[str]:
    return [args.event] if isinstance(args.event, str) else list(args.event)


def _check(args: WaitForArgs) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    names = _names(args)
    if not names:
        problems.append(("event", "event must name at least one event"))
    for i, name in enumerate(names):
        if "{{" not in name and not EVENT_NAME.match(name):
            where = "event" if isinstance(args.event, str) else f"event[{i}]"
            problems.append((where, f"event name {name!r} must be upper case letters, digits and _"))
    if args.timeout <= 0:
        problems.append(("timeout", "timeout must be positive"))
    if problems:
        raise ArgumentErrors(problems)


def _as_data(event: Event) -> dict[str, Any]:
    return {"event": event.name, "data": dict(event.data), "timestamp": event.timestamp, "vm": event.vm}


@action("wait_for", shorthand="event", mutating=True, check=_check, events=("event", "match"))
async def WAIT_FOR(ctx: ActionContext, args: WaitForArgs) -> dict[str, Any]:
    """Wait up to ``timeout`` (default 30s) for ``event`` (a name or a list) from this run's VM (or ``vm``)
    whose data satisfies ``match``; the result is that event."""
    match = None
    if args.match:
        spec = args.match

        def match(event: Event) -> bool:
            return not explain_match(spec, event.data)

    names = _names(args)
    try:
        event = await ctx.wait_for(names, match=match, vm=args.vm, timeout=args.timeout)
    except TimeoutError as err:
        vm = args.vm or ctx.vm.name
        raise ActionError(f"no {'/'.join(names)} from {vm} within {args.timeout:g}s") from err
    ctx.log.info("got %s from %s", event.name, event.vm)
    return _as_data(event)
