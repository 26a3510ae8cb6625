"""The action contract: what a step does, declared once, validated at load.

An action is an async function ``run(ctx, args)`` plus a frozen dataclass that
declares its arguments.  :func:`action` turns such a function into an
:class:`ActionSpec`, which the registry holds.  Built-in actions and plugins
use exactly this API (see ``reactor.plugin``)::

    @dataclass(frozen=True)
    class Args:
        message: str
        level: Literal["debug", "info", "warning", "error"] = "info"

    @action("log", shorthand="message", mutating=False)
    async def log(ctx: ActionContext, args: Args) -> None:
        ctx.log.log(logging.getLevelName(args.level.upper()), "%s", args.message)

Argument types reactor understands (and checks at rule load): ``str``,
``int``, ``float``, ``bool``, :data:`Duration` (``"5s"``, ``"500ms"``,
a number of seconds), ``Literal[...]``, ``list[T]``, ``dict[str, T]``,
``T | None``, ``Any``/``object`` (any YAML value), nested dataclasses and
:class:`Steps` (a list of steps, checked at load like a rule's ``actions``, run
with :meth:`ActionContext.run_step`: the ``probe`` of ``resume``).
A string containing ``{{`` is a template: it is compiled at load, rendered per
run, and the rendered text is converted to the field's type.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, NewType, Protocol, TypeVar, get_type_hints, runtime_checkable

from reactor.errors import PluginError

if TYPE_CHECKING:
    from reactor.model.event import Event

__all__ = [
    "ActionContext",
    "ActionSpec",
    "DaemonContext",
    "Duration",
    "JournalHandle",
    "OutboxEntry",
    "Resource",
    "StepOutcome",
    "Steps",
    "VMHandle",
    "action",
]

#: Seconds, written in rules as ``500ms``, ``5s``, ``10m``, ``1h``, ``1d`` or a number.
Duration = NewType("Duration", float)



class Steps(tuple[Any, ...]):
    """An argument type: a list of steps that an action runs itself (``resume``'s ``probe``).

    The rule loader compiles each item exactly like a step of a rule's
    ``actions`` (action name, arguments, ``timeout``, ``when``, ``register``...),
    with ``PATH:LINE:COL`` errors; the action runs them with
    :meth:`ActionContext.run_step`.  Never templated as a whole (each step's own
    arguments are).
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What came of a nested step run with :meth:`ActionContext.run_step`."""

    #: ``ok``, ``failed``, ``timeout``, ``skipped`` (its ``when`` was false) or ``dry-run``
    status: str
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The step did not fail (skipped and dry-run steps count as passed)."""
        return self.status in ("ok", "skipped", "dry-run")


A = TypeVar("A")
R = TypeVar("R", bound="Resource")


@runtime_checkable
class VMHandle(Protocol):
    """A VM as an action sees it."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def status(self) -> str:
        """The last known QEMU run state (``running``, ``paused``, ``io-error`` ...)."""
        ...

    @property
    def connected(self) -> bool: ...

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run a QMP command; return its ``return`` value.

        Raises :class:`reactor.errors.VMCommandError` when QEMU answers with an
        error, :class:`reactor.errors.VMConnectionError` when the VM is not
        connected, and :class:`reactor.errors.VMCommandTimeout` (also a TimeoutError) past ``timeout``.
        """
        ...


class OutboxEntry(Protocol):
    """One message kept in the journal's outbox until its broker acknowledged it."""

    @property
    def id(self) -> int: ...

    @property
    def broker(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def qos(self) -> int: ...

    @property
    def retain(self) -> bool: ...

    @property
    def created(self) -> float: ...


@runtime_checkable
class JournalHandle(Protocol):
    """The part of the journal a plugin uses (``DaemonContext.journal``): records that survive a restart.

    Writes are queued and flushed in batches by the daemon (they never block); when the journal is
    unhealthy they are counted and dropped, not raised.
    """

    def record_event(self, name: str, vm: str, host: str | None, timestamp: float, data: Mapping[str, Any],
                     problems: tuple[str, ...] = ()) -> int:
        """Record an event (shown by ``reactor journal`` and the HTTP API); its id."""
        ...

    def outbox_put(self, broker: str, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Keep a message for ``broker`` until :meth:`outbox_ack`; its id."""
        ...

    def outbox_ack(self, msg_id: int) -> None:
        """Forget an outbox message: its broker acknowledged it."""
        ...

    def outbox_pending(self, broker: str, limit: int = 10000) -> Sequence[OutboxEntry]:
        """The messages not yet acknowledged for ``broker``, oldest first (after a restart: resend them)."""
        ...


class DaemonContext(Protocol):
    """What a :class:`Resource` gets when the daemon (or replay) starts it."""

    @property
    def config(self) -> Any:
        """The loaded ``reactor.daemon.config.Config``."""
        ...

    @property
    def dry_run(self) -> bool: ...

    def section(self, name: str) -> Any:
        """The raw value of a top-level config section (None when absent)."""
        ...

    @property
    def host(self) -> str:
        """This reactor's host name (config ``host:``, default the machine's name)."""
        ...

    @property
    def journal(self) -> JournalHandle:
        """The journal (for outboxes and records that must survive a restart); JournalError when none."""
        ...

    def emit(self, event: Event) -> None:
        """Put an event on the bus (from a source or a resource)."""
        ...

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback`` synchronously for every event on the bus.

        It runs on the event path: it must only queue work, never block.
        """
        ...

    def start_task(self, coro: Awaitable[None], name: str) -> None:
        """Run a long-lived task in the daemon's TaskGroup."""
        ...


class Resource:
    """A shared, long-lived object actions use (a broker client, an HTTP session).

    The daemon creates one instance per class the loaded rules need, awaits
    :meth:`start` before events flow and :meth:`aclose` on stop.  Actions get
    it with ``ctx.resource(MyResource)``.
    """

    def __init__(self, daemon: DaemonContext) -> None:
        self.daemon = daemon

    async def start(self) -> None:
        """Open connections, start background tasks (via ``daemon.start_task``)."""

    async def aclose(self) -> None:
        """Release everything; called once, also after a failed start."""


class ActionContext(Protocol):
    """What an action receives for one step of one run."""

    @property
    def event(self) -> Event:
        """The event that started the run."""
        ...

    @property
    def vm(self) -> VMHandle:
        """The VM the event came from."""
        ...

    @property
    def rule(self) -> str: ...

    @property
    def run_id(self) -> int: ...

    @property
    def step(self) -> int:
        """The 0-based index of this step in the rule's ``actions``."""
        ...

    @property
    def vars(self) -> Mapping[str, Any]:
        """Results registered by earlier steps (``register: NAME``)."""
        ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger bound to the rule, VM and run."""
        ...

    @property
    def dry_run(self) -> bool: ...

    def now(self) -> float:
        """The current time (virtual in replay), seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on the engine's clock (virtual in replay)."""
        ...

    def vm_named(self, name: str) -> VMHandle:
        """Another VM by name; raises ActionError when unknown."""
        ...

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        """Put a derived event on the bus, from this run's VM unless ``vm`` is given."""
        ...

    async def wait_for(
        self,
        name: str | list[str],
        *,
        match: Callable[[Event], bool] | None = None,
        vm: str | None = None,
        timeout: float,
    ) -> Event:
        """Wait for an event from this run's VM (or ``vm``).

        Events that arrived after the previous step of this run began count too,
        so ``qmp: cont`` followed by ``wait_for: RESUME`` cannot miss the event.
        Raises :class:`TimeoutError` after ``timeout``; cancellation-safe.
        """
        ...

    def resource(self, cls: type[R]) -> R:
        """The daemon's shared instance of a :class:`Resource` class."""
        ...

    async def run_step(self, step: Any, *, label: str, timeout: float | None = None) -> StepOutcome:
        """Run one step of a :class:`Steps` argument as the run would run it (``when``, templates, dry
        run, ``retry``, ``register``), bounded by its ``timeout`` (else the action's default, else
        ``timeout``), recorded in the journal under this step as ``LABEL:ACTION``.  A failure is
        returned, not raised (and is no ``REACTOR_ACTION_FAILED``)."""
        ...


def _always(_args: Any) -> bool:
    return True


def _never(_args: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """A registered action: its name, its argument dataclass and its coroutine."""

    name: str
    args: type[Any]
    run: Callable[[ActionContext, Any], Awaitable[object]]
    #: The field a scalar form (``sleep: 5s``, ``qmp: cont``) fills.
    shorthand: str | None = None
    #: Whether a run with these (rendered) arguments changes anything; dry runs skip those.
    mutating: Callable[[Any], bool] = _always
    #: Extra load-time validation of the (unrendered) arguments; raise ValueError (several problems at
    #: once: :class:`ArgumentErrors`).
    check: Callable[[Any], None] | None = None
    #: Resource classes the action uses; started when a loaded rule uses the action.
    resources: tuple[type[Resource], ...] = ()
    #: (argument naming events, argument with a ``match`` on their data or None): checked
    #: against the event catalog at load like a rule's ``on``/``match`` (``wait_for``).
    events: tuple[str, str | None] | None = None
    #: (argument naming a QMP command, argument with its arguments or None): checked
    #: against the QMP command catalog at load (``qmp``, ``libvirt_qmp``).
    command: tuple[str, str | None] | None = None
    #: Default step timeout in seconds (None: no default).
    timeout: float | None = None
    #: The action finishes without waiting for anything (no I/O, no sleep): it runs
    #: directly in its run instead of an isolating task, and a run made only of
    #: inline steps runs at once, without a task of its own.  Only for actions that
    #: never suspend; one that does anyway still works, just without those savings.
    inline: bool = False
    doc: str = ""
    origin: str = "builtin"
    hints: Mapping[str, Any] = field(default_factory=dict)


def action(
    name: str,
    *,
    shorthand: str | None = None,
    mutating: bool | Callable[[Any], bool] = True,
    check: Callable[[Any], None] | None = None,
    resources: tuple[type[Resource], ...] = (),
    timeout: float | None = None,
    inline: bool = False,
    events: tuple[str, str | None] | None = None,
    command: tuple[str, str | None] | None = None,
) -> Callable[[Callable[[ActionContext, A], Awaitable[object]]], ActionSpec]:
    """Declare an action.  The decorated function's second parameter must be
    annotated with a dataclass: that dataclass declares the arguments.

    ``events=("event", "match")`` says which arguments name events and match
    their data, ``command=("execute", "arguments")`` which name a QMP command
    and its arguments: the loader checks their literal values against the
    event and command catalogs (``PATH:LINE:COL``, "did you mean").
    """

    def wrap(fn: Callable[[ActionContext, A], Awaitable[object]]) -> ActionSpec:
        try:
            hints = get_type_hints(fn)
        except Exception as err:
            raise PluginError(f"action {name!r}: cannot resolve annotations: {err}") from err
        params = [p for p in hints if p != "return"]
        if len(params) < 2:
            raise PluginError(f"action {name!r}: run(ctx, args) must annotate args with a dataclass")
        args_type = hints[params[1]]
        if not (isinstance(args_type, type) and is_dataclass(args_type)):
            raise PluginError(f"action {name!r}: args must be a dataclass, not {args_type!r}")
        try:
            arg_hints = get_type_hints(args_type)
        except Exception as err:
            raise PluginError(f"action {name!r}: cannot resolve argument types: {err}") from err
        if shorthand is not None and shorthand not in arg_hints:
            raise PluginError(f"action {name!r}: shorthand {shorthand!r} is not an argument")
        for what, pair in (("events", events), ("command", command)):
            for arg in pair or ():
                if arg is not None and arg not in arg_hints:
                    raise PluginError(f"action {name!r}: {what} names {arg!r}, which is not an argument")
        mut: Callable[[Any], bool]
        mut = mutating if callable(mutating) else _always if mutating else _never
        return ActionSpec(
            name=name,
            args=args_type,
            run=fn,
            shorthand=shorthand,
            mutating=mut,
            check=check,
            resources=resources,
            timeout=timeout,
            inline=inline,
            events=events,
            command=command,
            doc=(fn.__doc__ or "").strip(),
            origin=getattr(fn, "__module__", "?"),
            hints=arg_hints,
        )

    return wrap
