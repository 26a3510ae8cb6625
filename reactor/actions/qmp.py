"""``qmp``: run a QMP command on the event's VM (or another one by name).

``qmp: cont`` is the short form; the long form is
``{execute, arguments, vm, timeout, allow_destructive}``.  The command's
``return`` value is the step's result (``register:`` it to use it later).
QEMU's error answer fails the step with its class and description
(``cont: GenericError: ...``), which is what the journal and the log show.

When the rules load, a literal command name is checked against the QMP
command catalog of the supported QEMU versions ("did you mean"), and literal
``arguments`` against the command's QAPI schema (names, required ones, types);
templated values are left to QEMU.  A VM whose QEMU lacks a command a rule
uses is warned about when it connects.

Commands whose name starts with ``query-`` or ``x-query-``, and the few other
read-only ones in :data:`READ_ONLY`, are not mutating: a dry run sends them
(so templates that use their results still render) and skips everything else.

The command policy (see docs/security.md):

* the commands in :data:`DESTRUCTIVE` (``quit``, ``human-monitor-command``,
  ``migrate``, removing or adding devices and backends ...) are refused unless
  the step opts in with ``allow_destructive: true``; a literal name is refused
  when the rules load (``PATH:LINE:COL``), a templated one when it renders;
* the config's ``qmp: {deny: [COMMAND-GLOB...]}`` refuses more commands, with
  no opt-in;
* the config's ``qmp: {allow: {RULE-GLOB: [COMMAND-GLOB...]}}`` restricts a
  rule whose name matches a RULE-GLOB to the commands listed under the globs
  it matches (rules matching no glob are not restricted).

The last two are enforced when the step runs (the rule set does not know the
config), through the :class:`QmpPolicy` resource; without a daemon (replay,
``reactor.testing`` without sections) only the built-in deny-list applies.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reactor.actions.action import ActionContext, Duration, Resource, action
from reactor.errors import ActionError, ArgumentErrors, ProblemKey

__all__ = [
    "COMMAND_NAME",
    "DEFAULT_TIMEOUT",
    "DESTRUCTIVE",
    "QMP",
    "READ_ONLY",
    "CommandPolicy",
    "QmpArgs",
    "QmpPolicy",
    "command_problem",
    "policy_refusal",
    "is_read_only",
]

#: A QMP command name as QEMU spells them (``cont``, ``block-job-resume``, ``x-query-...``).
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: Commands that change nothing besides those starting with ``query-``/``x-query-``.
READ_ONLY = frozenset(
    ["qom-get", "qom-list", "qom-list-types", "qom-list-properties", "device-list-properties"]
)

#: Refused unless a step says ``allow_destructive: true``: commands that end or
#: migrate the VM, run arbitrary monitor commands (``migrate`` to ``exec:`` runs
#: a host shell command), revert or delete state, or add and remove devices and
#: host-side backends (which open host files and sockets).  ``stop``, ``cont``,
#: ``system_reset``, ``system_powerdown`` and ``dump-guest-memory`` are the usual
#: recovery and forensics tools and stay allowed.
DESTRUCTIVE = frozenset([
    "quit", "human-monitor-command",
    "migrate", "migrate-incoming", "migrate-recover", "x-exit-preconfig",
    "snapshot-load", "snapshot-delete", "blockdev-snapshot-delete-internal-sync",
    "device_add", "device_del", "blockdev-add", "blockdev-del", "blockdev-create", "blockdev-reopen",
    "block_resize", "drive-mirror", "blockdev-mirror", "drive-backup",
    "object-add", "object-del", "chardev-add", "chardev-change", "chardev-remove",
    "netdev_add", "netdev_del", "nbd-server-start", "nbd-server-add", "block-export-add",
    "xen-save-devices-state", "xen-load-devices-state",
])


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
    #: Opt in to a command of :data:`DESTRUCTIVE` (never to the config's ``deny``).
    allow_destructive: bool = False


def command_problem(command: str, allow_destructive: bool, action: str = "qmp") -> str | None:
    """What the load-time checks of a command name (also after each render) refuse it for, or None."""
    if not COMMAND_NAME.match(command):
        return f"{command[:80]!r} is not a QMP command name (lower case, digits, - and _)"
    if command == "qmp_capabilities":
        return "qmp_capabilities is negotiated by reactor itself"
    if command in DESTRUCTIVE and not allow_destructive:
        return (f"{command} is destructive and refused by default; if this rule really means it, "
                f"opt in with `{action}: {{execute: {command}, allow_destructive: true}}`")
    return None


def policy_refusal(ctx: ActionContext, command: str) -> str | None:
    """Why the config's ``qmp.deny``/``qmp.allow`` refuse ``command`` for this run's rule (None: allowed)."""
    return _policy(ctx).refusal(ctx.rule, command)


def _check(args: QmpArgs) -> None:
    # Called at load for literal arguments and again after every render of templated ones.
    problems: list[tuple[ProblemKey, str]] = []
    refused = command_problem(args.execute, args.allow_destructive)
    if refused is not None:
        problems.append(("execute", refused))
    if args.timeout <= 0:
        problems.append(("timeout", "timeout must be positive"))
    if problems:
        raise ArgumentErrors(problems)


def _mutating(args: QmpArgs) -> bool:
    return not is_read_only(args.execute)


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """The config's part of the command policy: ``deny`` globs, per-rule ``allow`` lists."""

    deny: tuple[str, ...] = ()
    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, qmp: Any) -> CommandPolicy:
        """From ``Config.qmp`` (anything with ``deny`` and ``allow``; None for none)."""
        deny = tuple(getattr(qmp, "deny", ()) or ())
        allow = {str(k): tuple(v) for k, v in dict(getattr(qmp, "allow", None) or {}).items()}
        return cls(deny=deny, allow=allow)

    def refusal(self, rule: str, command: str) -> str | None:
        """Why ``rule`` may not send ``command`` (None when it may)."""
        if _any_glob(command, self.deny):
            return f"{command} is denied by the config (qmp.deny)"
        lists = [cmds for glob, cmds in self.allow.items() if fnmatch.fnmatchcase(rule, glob)]
        if lists and not any(_any_glob(command, cmds) for cmds in lists):
            allowed = sorted({c for cmds in lists for c in cmds})
            return f"{command} is not in rule {rule}'s allow-list (qmp.allow: {', '.join(allowed)})"
        return None


def _any_glob(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


class QmpPolicy(Resource):
    """The daemon's command policy, read from its config (``qmp: {deny, allow}``) when a step asks."""

    _cached: tuple[object, CommandPolicy] | None = None

    def policy(self) -> CommandPolicy:
        config = getattr(self.daemon, "config", None)
        qmp = getattr(config, "qmp", None)
        cached = self._cached
        if cached is None or cached[0] is not qmp:   # a reloaded config is a new object
            cached = (qmp, CommandPolicy.from_config(qmp))
            self._cached = cached
        return cached[1]


_NO_POLICY = CommandPolicy()


def _policy(ctx: ActionContext) -> CommandPolicy:
    try:
        res = ctx.resource(QmpPolicy)
    except ActionError:   # no daemon (replay): only the built-in deny-list
        return _NO_POLICY
    return res.policy()


@action("qmp", shorthand="execute", mutating=_mutating, check=_check, resources=(QmpPolicy,),
        command=("execute", "arguments"))
async def QMP(ctx: ActionContext, args: QmpArgs) -> Any:
    """Run QMP command ``execute`` with ``arguments`` on the event's VM (or ``vm``); the result is its
    ``return`` value.  Fails with QEMU's error class and description, or after ``timeout`` (default 10s).
    Destructive commands (``quit``, ``human-monitor-command`` ...) need ``allow_destructive: true``."""
    refusal = policy_refusal(ctx, args.execute)
    if refusal is not None:
        raise ActionError(refusal)
    vm = ctx.vm if args.vm is None else ctx.vm_named(args.vm)
    try:
        return await vm.execute(args.execute, args.arguments or None, timeout=args.timeout)
    except TimeoutError as err:
        raise ActionError(f"{args.execute}: no answer from {vm.name} within {args.timeout:g}s") from err
