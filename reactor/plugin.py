"""The one public module for plugin authors: everything an action or a source is written against.

An **action** is an async function ``run(ctx, args)`` declared with
:func:`action`; its arguments are a frozen dataclass that reactor checks when
the rules load (a wrong argument is an error at the rule's ``PATH:LINE:COL``)::

    from dataclasses import dataclass
    from reactor.plugin import ActionContext, ActionError, Duration, action

    @dataclass(frozen=True)
    class GuardArgs:
        device: str
        min_free: int = 1 << 30
        timeout: Duration = Duration(5.0)

    @action("guard", shorthand="device", mutating=False)
    async def guard(ctx: ActionContext, args: GuardArgs) -> dict[str, int]:
        \"\"\"Fail the run unless DEVICE ...\"\"\"
        blocks = await ctx.vm.execute("query-block", timeout=args.timeout)
        ...
        if problem:
            raise ActionError(f"{args.device}: ...")     # fails the step, recorded in the journal
        return {"free": free}                            # the step's result (``register:`` it)

The :class:`ActionContext` gives the typed ``event``, the ``vm``
(:class:`VMHandle`, ``execute()`` for QMP), ``emit()`` onto the bus, ``log``
(bound to rule, VM and run), ``vars`` (results registered by earlier steps),
``wait_for()`` (cancellation-safe), ``sleep()``/``now()`` on the engine's clock
(virtual in replay and tests) and ``resource()`` for shared, long-lived
objects: subclass :class:`Resource` (``start()`` once when the daemon starts,
``aclose()`` on stop) and list it in ``@action(resources=...)``.  An argument
typed :class:`Steps` holds nested steps (checked at load like a rule's
``actions``), which the action runs with ``ctx.run_step()`` (a
:class:`StepOutcome`); the built-in ``resume`` runs its ``probe`` this way.

A **source** is an async producer of events declared with :func:`source`; it
gets a :class:`SourceContext` (``emit()``, ``sleep()``, ``now()``, ``log``) and
a config dataclass validated from the config's ``sources:`` section.

Installed packages register through the entry-point groups
``reactor.actions`` and ``reactor.sources``; ``plugins:`` directories in the
config hold plain modules.  Test plugins with :mod:`reactor.testing`.
See ``docs/plugins.md`` for a tutorial and the reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reactor.actions.action import (
    ActionContext,
    ActionSpec,
    DaemonContext,
    Duration,
    JournalHandle,
    OutboxEntry,
    Resource,
    StepOutcome,
    Steps,
    VMHandle,
    action,
)
from reactor.errors import (
    ActionError,
    ArgumentErrors,
    EventTimeout,
    JournalError,
    PluginError,
    ProblemKey,
    QMPCommandError,
    QMPConnectionError,
    ReactorError,
    ReactorTimeoutError,
    StateError,
    StepTimeout,
    TemplateError,
    VMCommandError,
    VMCommandTimeout,
    VMConnectionError,
)
from reactor.model.event import Event
from reactor.sources import SourceContext, SourceSpec, source

__all__ = [
    "API_VERSION",
    "ActionContext",
    "ActionError",
    "ActionSpec",
    "ArgumentErrors",
    "DaemonContext",
    "Duration",
    "Event",
    "EventTimeout",
    "JournalError",
    "JournalHandle",
    "OutboxEntry",
    "PluginError",
    "ProblemKey",
    "QMPCommandError",
    "QMPConnectionError",
    "ReactorError",
    "ReactorTimeoutError",
    "Resource",
    "SourceContext",
    "SourceSpec",
    "StateError",
    "StepOutcome",
    "StepTimeout",
    "Steps",
    "TemplateError",
    "VMCommandError",
    "VMCommandTimeout",
    "VMConnectionError",
    "VMHandle",
    "action",
    "secret",
    "source",
]

#: The version of this API.  It changes only in incompatible ways; additions keep it.
API_VERSION = 1


def secret(default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value is shown as ``***`` in the journal, logs and dry runs.

    Fields whose name looks secret (``password``, ``token``, ``api_key`` ...)
    are redacted anyway; use this for the others::

        @dataclass(frozen=True)
        class Args:
            url: str
            credentials: str | None = secret(None)
    """
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"secret": True})
    return dataclasses.field(default=default, metadata={"secret": True})
