"""Event sources: async producers of events, declared like actions, configured under ``sources:``.

A source is an async function ``run(ctx, config)`` plus a frozen dataclass
that declares its configuration; :func:`source` turns it into a
:class:`SourceSpec`.  It runs until the daemon stops, putting events on the
bus with ``ctx.emit(...)``::

    @dataclass(frozen=True)
    class TickConfig:
        every: Duration

    @source("tick")
    async def tick(ctx: SourceContext, config: TickConfig) -> None:
        while True:
            await ctx.sleep(config.every)
            ctx.emit("TICK", {"at": ctx.now()})

Built-in sources register first; packages add theirs through the entry-point
group ``reactor.sources`` and ``plugins:`` directories (see
:mod:`reactor.daemon.plugins`).  The config's ``sources:`` section is a list of
one-key mappings, each validated against the source's dataclass at load
(errors at ``PATH:LINE:COL``)::

    sources:
      - timer: {name: nightly, cron: "0 2 * * *"}
      - timer: {name: paused-check, every: 1m, vm: [web-1, web-2]}

:class:`SourceRunner` (a :class:`~reactor.actions.action.Resource` the daemon starts
when the section is present) runs each configured source as a named task and
survives a source that raises: the failure is logged and recorded in the
journal (``REACTOR_SOURCE_FAILED``), and the source restarts after a jittered,
capped exponential backoff.  A source that returns has finished; it is not
restarted.

The built-in ``timer`` source emits ``REACTOR_TIMER`` (data ``name``,
``count``) every ``every`` or on a five-field ``cron`` schedule.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as _dt
import logging
import random
import re
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, get_type_hints

from reactor.actions.action import ActionSpec, DaemonContext, Duration, Resource
from reactor.engine.clock import Clock, RealClock
from reactor.errors import ConfigError, PluginError, Position, RuleError
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode

if TYPE_CHECKING:
    from reactor.model.event import Event

__all__ = [
    "BoundSource",
    "CronSchedule",
    "DEFAULT_SOURCE_VM",
    "SourceContext",
    "SourceEntry",
    "SourceRegistry",
    "SourceRunner",
    "SourceSpec",
    "TIMER",
    "TimerConfig",
    "builtin_sources",
    "parse_sources",
    "source",
]

log = logging.getLogger("reactor.sources")

C = TypeVar("C")

#: The VM name events from a source carry when the source does not say (``vm:`` of a timer).
DEFAULT_SOURCE_VM = "reactor"


class SourceContext(Protocol):
    """What a running source receives."""

    @property
    def name(self) -> str:
        """This configured instance's label (``timer:nightly``), for logs and task names."""
        ...

    @property
    def host(self) -> str:
        """This reactor's host name; events from the source carry it."""
        ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger bound to the source."""
        ...

    def now(self) -> float:
        """The current time (virtual under :mod:`reactor.testing`), seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on the daemon's clock (virtual under :mod:`reactor.testing`)."""
        ...

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        """Put an event on the bus, stamped now, from ``vm`` (default ``reactor``).

        Events named in the catalog are typed and checked like QMP's; the bus
        is bounded, so under overload an event may be dropped (counted)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A registered source: its name, its config dataclass and its coroutine."""

    name: str
    config: type[Any]
    run: Callable[[SourceContext, Any], Awaitable[None]]
    #: Extra load-time validation of the config; raise ValueError.
    check: Callable[[Any], None] | None = None
    doc: str = ""
    origin: str = "builtin"
    hints: Mapping[str, Any] = field(default_factory=dict)


def source(
    name: str, *, check: Callable[[Any], None] | None = None
) -> Callable[[Callable[[SourceContext, C], Awaitable[None]]], SourceSpec]:
    """Declare a source.  The decorated function's second parameter must be
    annotated with a dataclass: that dataclass declares the configuration."""

    def wrap(fn: Callable[[SourceContext, C], Awaitable[None]]) -> SourceSpec:
        if not re.match(r"^[a-z][a-z0-9_]*$", name):
            raise PluginError(f"source {name!r}: names are lower case letters, digits and _")
        try:
            hints = get_type_hints(fn)
        except Exception as err:
            raise PluginError(f"source {name!r}: cannot resolve annotations: {err}") from err
        params = [p for p in hints if p != "return"]
        if len(params) < 2:
            raise PluginError(f"source {name!r}: run(ctx, config) must annotate config with a dataclass")
        config_type = hints[params[1]]
        if not (isinstance(config_type, type) and is_dataclass(config_type)):
            raise PluginError(f"source {name!r}: config must be a dataclass, not {config_type!r}")
        try:
            config_hints = get_type_hints(config_type)
        except Exception as err:
            raise PluginError(f"source {name!r}: cannot resolve config types: {err}") from err
        return SourceSpec(name=name, config=config_type, run=fn, check=check, doc=(fn.__doc__ or "").strip(),
                          origin=getattr(fn, "__module__", "?"), hints=config_hints)

    return wrap


class SourceRegistry:
    """Source name -> :class:`SourceSpec`."""

    def __init__(self) -> None:
        self._sources: dict[str, SourceSpec] = {}

    def add(self, spec: SourceSpec, *, origin: str | None = None) -> None:
        if not isinstance(spec, SourceSpec):
            raise PluginError(f"{origin or '?'}: {spec!r} is not a source (use @reactor.plugin.source)")
        if spec.name in self._sources:
            first = self._sources[spec.name].origin
            raise PluginError(f"source {spec.name!r} from {origin or spec.origin} is already defined by {first}")
        if origin is not None and origin != spec.origin:
            import dataclasses

            spec = dataclasses.replace(spec, origin=origin)
        self._sources[spec.name] = spec

    def get(self, name: str) -> SourceSpec | None:
        return self._sources.get(name)

    def names(self) -> list[str]:
        return sorted(self._sources)

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __iter__(self) -> Iterator[SourceSpec]:
        return iter(sorted(self._sources.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._sources)


# --- the sources: section ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One configured source: which one, its validated config, where it was written."""

    spec: SourceSpec
    config: Any
    label: str
    position: Position | None = None


def _as_action(spec: SourceSpec) -> ActionSpec:
    """The source seen as an action, to reuse the arguments compiler (positions, did-you-mean)."""

    async def never(_ctx: Any, _args: Any) -> None:  # pragma: no cover - never run
        return None

    return ActionSpec(name=spec.name, args=spec.config, run=never, check=spec.check, hints=spec.hints)


def _compile(spec: SourceSpec, node: Node, key_pos: Position) -> tuple[Any, list[ConfigError]]:
    from reactor.rules.arguments import compile_arguments

    errors: list[RuleError] = []
    compiled = compile_arguments(_as_action(spec), node, key_pos, errors)
    out = [ConfigError(e.position, f"sources: {e.message}") for e in errors]
    if compiled is None:
        return None, out
    if compiled.static is None:
        return None, [*out, ConfigError(node.pos, f"sources: {spec.name}: templates ({{{{ }}}}) are not "
                                                  "allowed in a source's configuration")]
    return compiled.static, out


def _label(spec: SourceSpec, config: Any, index: int) -> str:
    name = getattr(config, "name", None)
    return f"{spec.name}:{name}" if isinstance(name, str) and name else f"{spec.name}#{index}"


def parse_sources(node: Node, *, registry: SourceRegistry | None = None) -> tuple[SourceEntry, ...]:
    """Validate the ``sources:`` section; raises :class:`ConfigError` at the first problem's position.

    ``registry`` defaults to the built-in sources; the daemon's config passes the one
    :func:`reactor.daemon.plugins.load_plugins` made (entry points and ``plugins:`` directories too).
    """
    if registry is None:
        registry = builtin_sources()
    if isinstance(node, ScalarNode) and node.value is None:
        return ()
    if not isinstance(node, SeqNode):
        raise ConfigError(node.pos, f"sources: expected a list of sources, got {node.kind}")
    entries: list[SourceEntry] = []
    labels: dict[str, Position] = {}
    errors: list[ConfigError] = []
    for index, item in enumerate(node.items):
        if not isinstance(item, MapNode) or len(item) != 1:
            errors.append(ConfigError(item.pos, "sources: each source is a mapping with one key, the source's "
                                                f"name (one of: {', '.join(registry.names())})"))
            continue
        ((name, body),) = item.items()
        spec = registry.get(name)
        if spec is None:
            from reactor.rules.source import close_match

            hint = close_match(name, registry.names())
            errors.append(ConfigError(item.key_pos(name), f"sources: unknown source {name!r}"
                                      + (f" (did you mean {hint!r}?)" if hint
                                         else f"; sources are: {', '.join(registry.names())}")))
            continue
        config, problems = _compile(spec, body, item.key_pos(name))
        errors.extend(problems)
        if config is None:
            continue
        label = _label(spec, config, index)
        if label in labels:
            errors.append(ConfigError(item.pos, f"sources: {label} is configured twice (first at {labels[label]})"))
            continue
        labels[label] = item.pos
        entries.append(SourceEntry(spec=spec, config=config, label=label, position=item.pos))
    if errors:
        raise errors[0]
    return tuple(entries)


# --- running sources ----------------------------------------------------------------------

def _qmp_time(now: float) -> dict[str, int]:
    secs = int(now)
    return {"seconds": secs, "microseconds": int((now - secs) * 1_000_000)}


class BoundSource:
    """The :class:`SourceContext` of one configured source: emits onto a callback."""

    def __init__(self, label: str, *, host: str, clock: Clock, put: Callable[[Event], None]) -> None:
        from reactor.model.catalog import default_catalog

        self._label = label
        self._host = host
        self._clock = clock
        self._put = put
        self._make = default_catalog().make_event
        self._log = logging.LoggerAdapter(logging.getLogger(f"reactor.rules.source.{label}"), {"source": label})
        self.emitted = 0

    @property
    def name(self) -> str:
        return self._label

    @property
    def host(self) -> str:
        return self._host

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._log

    def now(self) -> float:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        obj = {"event": name, "data": dict(data or {}), "timestamp": _qmp_time(self._clock.now())}
        self.emitted += 1
        self._put(self._make(obj, vm=vm or DEFAULT_SOURCE_VM, host=self._host))


class SourceRunner(Resource):
    """Runs the configured sources in the daemon's task group; restarts those that fail.

    ``restarts`` counts restarts per source label; ``failures`` keeps the last
    error of each.
    """

    #: First and largest delay before restarting a failed source (seconds); jitter ±20%.
    backoff_first = 1.0
    backoff_max = 60.0
    #: A source that ran this long before failing starts over from the first delay.
    backoff_reset = 60.0

    def __init__(self, daemon: DaemonContext, entries: Iterable[SourceEntry] | None = None,
                 *, clock: Clock | None = None) -> None:
        super().__init__(daemon)
        self.entries = tuple(entries if entries is not None else daemon.section("sources") or ())
        self.clock = clock or RealClock()
        self.restarts: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def start(self) -> None:
        for entry in self.entries:
            self.daemon.start_task(self._supervise(entry), name=f"reactor.rules.source[{entry.label}]")
            log.info("source %s started (%s)", entry.label, entry.spec.origin)

    async def aclose(self) -> None:
        self._closing = True
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                log.error("source task %s ignores cancellation; it keeps running until the process exits",
                          t.get_name())

    def _record(self, entry: SourceEntry, message: str) -> None:
        try:
            journal = self.daemon.journal
        except Exception:
            return
        try:
            journal.record_event("REACTOR_SOURCE_FAILED", DEFAULT_SOURCE_VM, self.daemon.host, self.clock.now(),
                                 {"source": entry.label, "error": message})
        except Exception:
            log.exception("journal: cannot record the failure of source %s", entry.label)

    async def _supervise(self, entry: SourceEntry) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        ctx = BoundSource(entry.label, host=self.daemon.host, clock=self.clock, put=self.daemon.emit)
        delay = self.backoff_first
        try:
            while not self._closing:
                began = self.clock.monotonic()
                try:
                    await entry.spec.run(ctx, entry.config)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    message = f"{type(err).__name__}: {err}"
                    self.failures[entry.label] = message
                    self.restarts[entry.label] = self.restarts.get(entry.label, 0) + 1
                    if self.clock.monotonic() - began >= self.backoff_reset:
                        delay = self.backoff_first
                    wait = delay * random.uniform(0.8, 1.2)
                    log.error("source %s failed: %s; restarting in %.1fs", entry.label, message, wait,
                              exc_info=err)
                    self._record(entry, message)
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                log.info("source %s finished", entry.label)
                return
        finally:
            if task is not None:
                self._tasks.discard(task)


# --- cron ----------------------------------------------------------------------------------

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # mon=1 ... sun=0
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS))


def _cron_field(text: str, what: str, lo: int, hi: int, names: Mapping[str, int]) -> frozenset[int]:
    def num(s: str) -> int:
        v = names.get(s.lower())
        if v is None:
            if not s.isdigit():
                raise ValueError(f"cron {what}: {s!r} is not a number")
            v = int(s)
        if not lo <= v <= hi:
            raise ValueError(f"cron {what}: {v} is outside {lo}-{hi}")
        return v

    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise ValueError(f"cron {what}: step {step_s!r} must be a positive number")
            step = int(step_s)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_s, _, b_s = rng.partition("-")
            a, b = num(a_s), num(b_s)
            if a > b:
                raise ValueError(f"cron {what}: range {rng!r} runs backwards")
        else:
            a = num(rng)
            b = hi if step_s else a
        out.update(range(a, b + 1, step))
    return frozenset(out)


class CronSchedule:
    """A five-field cron expression (``minute hour day-of-month month day-of-week``).

    Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``,
    lists ``a,b``, month and day names (``jan``, ``mon``); ``@hourly``,
    ``@daily``, ``@weekly``, ``@monthly``, ``@yearly`` too.  As in cron, when
    both day fields are restricted a day matching either one counts.
    """

    def __init__(self, expr: str, tz: _dt.tzinfo | None = None) -> None:
        self.expr = expr
        text = _MACROS.get(expr.strip().lower(), expr)
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday), got {len(parts)}")
        sets = [_cron_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, dow = sets
        self.weekdays = frozenset(d % 7 for d in dow)   # 7 is Sunday too
        self._dom_any = parts[2] == "*"
        self._dow_any = parts[4] == "*"
        self.tz = tz

    def _day_ok(self, d: _dt.datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self._dom_any and self._dow_any:
            return True
        if self._dom_any:
            return dow
        if self._dow_any:
            return dom
        return dom or dow

    def next_after(self, when: float) -> float:
        """The first time strictly after ``when`` (epoch seconds) that the schedule names."""
        tz = self.tz or _dt.datetime.now().astimezone().tzinfo
        t = _dt.datetime.fromtimestamp(when, tz).replace(second=0, microsecond=0) + _dt.timedelta(minutes=1)
        for _ in range(200_000):
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + _dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(t):
                t = t.replace(hour=0, minute=0) + _dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + _dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += _dt.timedelta(minutes=1)
                continue
            ts = t.timestamp()
            if ts > when:
                return ts
            t += _dt.timedelta(minutes=1)
        raise ValueError(f"cron {self.expr!r} never fires")


# --- the built-in timer -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TimerConfig:
    """``timer``: emit ``REACTOR_TIMER`` periodically."""

    #: The timer's name: ``event.data.name`` in rules (``match: {name: nightly}``).
    name: str
    #: Fire every DURATION (counted from the daemon's start) ...
    every: Duration | None = None
    #: ... or on a cron schedule (``"0 2 * * *"``: 02:00 every day).
    cron: str | None = None
    #: The VM (or VMs: one event each) the event comes from; default ``reactor``.
    vm: str | list[str] | None = None
    #: The cron schedule's time zone (``Europe/Paris``, ``UTC``); default the host's.
    timezone: str | None = None
    #: Also fire once when the source starts.
    immediately: bool = False


def _zone(name: str | None) -> _dt.tzinfo | None:
    if name is None:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"timezone: unknown time zone {name!r}") from err


def _check_timer(config: TimerConfig) -> None:
    if (config.every is None) == (config.cron is None):
        raise ValueError("give exactly one of 'every' and 'cron'")
    if config.every is not None and config.every < 1:
        raise ValueError(f"every: {config.every:g}s is too short (at least 1s)")
    tz = _zone(config.timezone)
    if config.cron is not None:
        schedule = CronSchedule(config.cron, tz)
        schedule.next_after(0.0)
    if config.timezone is not None and config.cron is None:
        raise ValueError("timezone only applies to 'cron'")
    if not config.name:
        raise ValueError("name must not be empty")


def _vms(config: TimerConfig) -> list[str]:
    if config.vm is None:
        return [DEFAULT_SOURCE_VM]
    return [config.vm] if isinstance(config.vm, str) else list(config.vm)


@source("timer", check=_check_timer)
async def TIMER(ctx: SourceContext, config: TimerConfig) -> None:
    """Emit ``REACTOR_TIMER`` (data ``name``, ``count``) every ``every`` or on a ``cron`` schedule,
    from ``vm`` (a name or a list: one event each; default ``reactor``)."""
    vms = _vms(config)
    schedule = CronSchedule(config.cron, _zone(config.timezone)) if config.cron is not None else None
    count = 0

    def fire() -> None:
        nonlocal count
        count += 1
        for vm in vms:
            ctx.emit("REACTOR_TIMER", {"name": config.name, "count": count}, vm=vm)

    if config.immediately:
        fire()
    due = ctx.now()
    while True:
        now = ctx.now()
        if schedule is not None:
            due = schedule.next_after(now)
        else:
            assert config.every is not None
            due += config.every
            if due <= now:  # we fell behind (a suspended host): skip the missed ticks
                due = now + config.every - ((now - due) % config.every)
        # Sleep in slices of at most a minute so wall-clock jumps are noticed.
        while (left := due - ctx.now()) > 0:
            await ctx.sleep(min(left, 60.0))
        fire()


def builtin_sources() -> SourceRegistry:
    """A new registry holding every built-in source."""
    reg = SourceRegistry()
    reg.add(TIMER)
    return reg
