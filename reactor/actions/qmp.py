"""``qmp``: run a QMP command on the event's VM (or another one by name).

``qmp: cont`` is the short form; the long form is
``{execute, arguments, vm, timeout}``.  The command's ``return`` value is the
step's result (``register:`` it to use it later).  QEMU's error answer fails
the step with its class and description (``cont: GenericError: ...``), which
is what the journal and the log show.

Commands whose name starts with ``query-`` or ``x-query-``, and the few other
read-only ones in :data:`READ_ONLY`, are not mutating: a dry run sends them
(so templates that use their results still render) and skips everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..action import ActionContext, Duration, action
from ..errors import ActionError

__all__ = ["COMMAND_NAME", "DEFAULT_TIMEOUT", "QMP", "READ_ONLY", "QmpArgs", "is_read_only"]

#: A QMP command name as QEMU spells them (``cont``, ``block-job-resume``, ``x-query-...``).
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: Commands that change nothing besides those starting with ``query-``/``x-query-``.
READ_ONLY = frozenset(
    ["qom-get", "qom-list", "qom-list-types", "qom-list-properties", "device-list-properties"]
)


def is_read_only(command: str) -> bool:
    """Whether ``command`` only reads state (a dry run may send it)."""
    return command.startswith(("query-", "x-query-")) or command in READ_ONLY


#: The default of ``timeout``.
DEFAULT_TIMEOUT = Duration(10.0)


@dataclass(frozen=True, slots=True)
class QmpArgs:
    execute: str
    arguments: dict[str, Any] = field(default_factory=dict)
    vm: str | None = None
    timeout: Duration = DEFAULT_TIMEOUT


def _check(args: QmpArgs) -> None:
    if "{{" not in args.execute and not COMMAND_NAME.match(args.execute):
        raise ValueError(f"{args.execute!r} is not a QMP command name (lower case, digits, - and _)")
    if args.execute == "qmp_capabilities":
        raise ValueError("qmp_capabilities is negotiated by reactor itself")
    if args.timeout <= 0:
        raise ValueError("timeout must be positive")


def _mutating(args: QmpArgs) -> bool:
    return not is_read_only(args.execute)


@action("qmp", shorthand="execute", mutating=_mutating, check=_check)
async def QMP(ctx: ActionContext, args: QmpArgs) -> Any:
    """Run QMP command ``execute`` with ``arguments`` on the event's VM (or ``vm``); the result is its
    ``return`` value.  Fails with QEMU's error class and description, or after ``timeout`` (default 10s)."""
    vm = ctx.vm if args.vm is None else ctx.vm_named(args.vm)
    try:
        return await vm.execute(args.execute, args.arguments or None, timeout=args.timeout)
    except TimeoutError as err:
        raise ActionError(f"{args.execute}: no answer from {vm.name} within {args.timeout:g}s") from err
