"""``resume``: the guarded resume of a VM that QEMU paused on an I/O error.

Resending ``cont`` blindly turns a storage outage into a storm of pause/resume
flaps.  ``resume`` is the safe form (RULES.md, "Guarded resume")::

    - resume:
        settle: 2s          # wait before each attempt's cont
        probe:              # steps that must pass before each cont (any action)
          - exec: {argv: [/usr/local/bin/storage-ok], timeout: 5s}
        verify: 10s         # the VM must stay running this long after cont
        attempts: 3         # failed attempts within `within` before giving up
        within: 1h
        backoff: 30s        # before the next attempt, doubling per failure ...
        max_backoff: 10m    # ... up to this
        max_concurrent: 4   # VMs in a resume at once, daemon-wide
        stagger: 500ms      # between two conts, daemon-wide

One step does, for the run's VM:

1. ``query-status``.  Unless the VM is paused by an I/O error (``io-error``)
   the step ends, successfully, with ``{resumed: false, reason}``.
2. If the VM's failed attempts within ``within`` (kept in the journal, so a
   restart does not reset them) reached ``attempts``: give up (below).  If the
   last failure is younger than its backoff (``backoff * 2^(failures-1)``,
   at most ``max_backoff``), wait for the rest of it.
3. Wait for a slot of the daemon-wide :class:`ResumeCoordinator` (at most
   ``max_concurrent`` VMs in a resume, first come first served), then
   ``settle``, then each ``probe`` step (bounded by its ``timeout``, else the
   action's default, else 30 s); a failing probe ends the attempt.
4. ``cont`` (``stagger`` after the daemon's previous one; through libvirt's
   ``virDomainResume`` for libvirt VMs), then ``verify``: a STOP or a
   BLOCK_IO_ERROR from the VM within it is a *flap*, and so is a VM not
   ``running`` at its end.  The slot is released.
5. A failed attempt (flap, failed probe, QEMU's error answer to ``cont``) goes
   back to 2.  A verified one ends the step with ``{resumed: true}``.

Giving up leaves the VM paused, emits ``REACTOR_RESUME_GAVE_UP`` (``attempts``,
``last_error``, ``since``) and ends the step successfully with
``{resumed: false, reason: "gave up: ..."}`` (a decision, not an error; rules
notify from the event).  A VM that disconnects mid-resume fails the step (the
attempt is recorded; ``REACTOR_VM_CONNECTED`` with ``status: io-error`` is the
rule to pick it up again).  A dry run sends only the queries (``query-status``
and probes that only read), takes no slot and records no attempt.

The result: ``resumed``, ``attempts`` (made by this step), ``waited``
(seconds spent waiting for a slot and in backoff), ``reason``, ``failures``
(within the window, before the last attempt), ``history`` (each attempt of
this step: outcome, error, probes, times) and, when there were any,
``decisions`` (each backoff and the give-up, with the failures behind them).
A probe step with ``on_error: continue`` does not block the attempt.  Every attempt is also a row of the journal's
``resume_attempts`` table; probe steps are journaled as ``probe:ACTION`` steps
of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reactor.actions.action import ActionContext, DaemonContext, Duration, Resource, Steps, action
from reactor.errors import ActionError, ArgumentErrors, ProblemKey, QMPCommandError, QMPConnectionError
from reactor.model.duration import format_duration
from reactor.model.event import Event
from reactor.ops.journal import ResumeRecord

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_STAGGER",
    "FAILURES",
    "PROBE_TIMEOUT",
    "RESUME",
    "ResumeArgs",
    "ResumeCoordinator",
]

log = logging.getLogger(__name__)

#: Defaults of ``max_concurrent`` and ``stagger`` (RULES.md leaves them open).
DEFAULT_MAX_CONCURRENT = 4
DEFAULT_STAGGER = Duration(0.5)
#: The bound of a probe step that has no ``timeout`` and whose action has no default.
PROBE_TIMEOUT = 30.0
#: How long a ``query-status`` or ``cont`` may take.
COMMAND_TIMEOUT = 10.0
#: Attempt outcomes that count toward backoff and giving up (``interrupted``: cont was sent, then reactor
#: stopped before the outcome was known; counted, to err on the side of fewer conts).
FAILURES = frozenset(["flap", "probe-failed", "cont-failed", "interrupted"])
#: Events that end a verify window (a flap; a disconnect).
_FLAP_EVENTS = frozenset(["STOP", "BLOCK_IO_ERROR", "REACTOR_VM_DISCONNECTED"])


_SETTLE = Duration(2.0)
_VERIFY = Duration(10.0)
_WITHIN = Duration(3600.0)
_BACKOFF = Duration(30.0)
_MAX_BACKOFF = Duration(600.0)


@dataclass(frozen=True, slots=True)
class ResumeArgs:
    settle: Duration = _SETTLE
    probe: Steps = field(default_factory=Steps)
    verify: Duration = _VERIFY
    attempts: int = 3
    within: Duration = _WITHIN
    backoff: Duration = _BACKOFF
    max_backoff: Duration = _MAX_BACKOFF
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    stagger: Duration = DEFAULT_STAGGER


def _check(args: ResumeArgs) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    if args.attempts < 1:
        problems.append(("attempts", f"attempts: {args.attempts} must be at least 1"))
    if args.max_concurrent < 1:
        problems.append(("max_concurrent", f"max_concurrent: {args.max_concurrent} must be at least 1"))
    if args.within <= 0:
        problems.append(("within", "within: must be greater than zero"))
    if args.max_backoff < args.backoff:
        problems.append((("max_backoff", "backoff"),
                         f"max_backoff: {format_duration(args.max_backoff)} is less than backoff "
                         f"({format_duration(args.backoff)})"))
    if problems:
        raise ArgumentErrors(problems)


# --- the coordinator ---------------------------------------------------------------------------


class _Ticket:
    """A VM's place in the queue for a resume slot."""

    __slots__ = ("fut", "limit", "queued", "rule", "run_id", "vm")

    def __init__(self, vm: str, rule: str, run_id: int, limit: int, queued: float) -> None:
        self.vm = vm
        self.rule = rule
        self.run_id = run_id
        self.limit = limit
        self.queued = queued
        self.fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Watch:
    """Collects a VM's flap events from the moment it is made (before ``cont`` is sent)."""

    __slots__ = ("events", "names", "wake")

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.events: list[Event] = []
        self.wake = asyncio.Event()

    def offer(self, event: Event) -> None:
        if event.name in self.names:
            self.events.append(event)
            self.wake.set()

    async def wait(self, seconds: float, sleep: Callable[[float], Any]) -> Event | None:
        """The first flap event within ``seconds`` (None when the window passed quietly)."""
        if self.events:
            return self.events[0]
        waiter = asyncio.ensure_future(self.wake.wait())
        sleeper = asyncio.ensure_future(sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
        return self.events[0] if self.events else None


class ResumeCoordinator(Resource):
    """The daemon-wide side of ``resume``: slots, stagger, flap watching, attempt history, live state.

    Shared by every rule that uses ``resume``: at most ``max_concurrent`` VMs
    (the value of the step asking) hold a slot at once; the others wait in
    arrival order (a strict FIFO: a VM never overtakes one that asked first).
    ``cont`` s are spaced by ``stagger``.  The history of attempts per VM is
    read from the journal on first use and appended to as attempts end.
    """

    def __init__(self, daemon: DaemonContext) -> None:
        super().__init__(daemon)
        self._queue: deque[_Ticket] = deque()
        self._active: dict[str, _Ticket] = {}
        self._last_cont = -math.inf
        self._cont_lock = asyncio.Lock()
        self._watches: dict[str, list[_Watch]] = {}
        self._history: dict[str, list[ResumeRecord]] = {}
        self._journal: Any = None
        #: VM -> (rule, run id) of the one step resuming it (one at a time per VM, whatever the rule)
        self.owners: dict[str, tuple[str, int]] = {}
        #: VM -> what its resume is doing now (for /api/vms and the traces page)
        self.states: dict[str, dict[str, Any]] = {}
        #: attempt outcomes, give-ups ("gave-up") and steps that found nothing to do ("not-io-error")
        self.outcomes: Counter[str] = Counter()

    async def start(self) -> None:
        self.daemon.subscribe(self._on_event)
        try:
            self._journal = self.daemon.journal
        except Exception:   # no journal (tests' FakeDaemon): history lives in memory only
            self._journal = None

    # -- slots ------------------------------------------------------------------------------
    def enqueue(self, vm: str, rule: str, run_id: int, limit: int, now: float) -> _Ticket:
        """Take a place in the queue now (synchronously: arrival order is the order of calls)."""
        ticket = _Ticket(vm, rule, run_id, limit, now)
        self._queue.append(ticket)
        self._pump()
        return ticket

    def release(self, ticket: _Ticket) -> None:
        """Give the slot back, or leave the queue."""
        if self._active.get(ticket.vm) is ticket:
            del self._active[ticket.vm]
        else:
            with contextlib.suppress(ValueError):
                self._queue.remove(ticket)
        ticket.fut.cancel()
        self._pump()

    def _pump(self) -> None:
        while self._queue and len(self._active) < self._queue[0].limit:
            ticket = self._queue.popleft()
            if ticket.fut.done():
                continue
            self._active[ticket.vm] = ticket
            ticket.fut.set_result(None)

    def position(self, ticket: _Ticket) -> int:
        """1-based place in the queue; 0 once it holds a slot."""
        for i, t in enumerate(self._queue):
            if t is ticket:
                return i + 1
        return 0

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """VM -> its resume's state now (phase, since, rule, run, attempt...; ``position`` when waiting)."""
        places = {t.vm: i + 1 for i, t in enumerate(self._queue)}
        out = {}
        for vm, st in self.states.items():
            st = dict(st)
            if st.get("phase") == "waiting":
                st["position"] = places.get(vm, 0)
            out[vm] = st
        return out

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def cont_turn(self, stagger: float, ctx: ActionContext, send: Callable[[], Any]) -> float:
        """Await ``send()`` (the cont) at least ``stagger`` after the previous cont; the time it was sent."""
        async with self._cont_lock:
            wait = self._last_cont + stagger - ctx.now()
            if wait > 0:
                await ctx.sleep(wait)
            sent = self._last_cont = ctx.now()
        await send()
        return sent

    # -- events -----------------------------------------------------------------------------
    def watch(self, vm: str) -> _Watch:
        w = _Watch(_FLAP_EVENTS)
        self._watches.setdefault(vm, []).append(w)
        return w

    def unwatch(self, vm: str, w: _Watch) -> None:
        lst = self._watches.get(vm)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(w)
            if not lst:
                del self._watches[vm]

    def _on_event(self, event: Event) -> None:
        watches = self._watches.get(event.vm)
        if watches:
            for w in watches:
                w.offer(event)

    # -- history ----------------------------------------------------------------------------
    async def history(self, vm: str) -> list[ResumeRecord]:
        cached = self._history.get(vm)
        if cached is not None:
            return cached
        rows: list[ResumeRecord] = []
        if self._journal is not None:
            try:
                rows = await asyncio.to_thread(self._journal.resume_history, vm)
            except Exception as err:   # a journal that cannot be read: start from nothing, say so
                log.warning("%s: cannot read the resume history from the journal: %s", vm, err)
        return self._history.setdefault(vm, rows)

    def record(self, r: ResumeRecord) -> None:
        self._history.setdefault(r.vm, []).append(r)
        if len(self._history[r.vm]) > 2000:
            del self._history[r.vm][:1000]
        if r.phase == "end":
            self.outcomes[r.outcome] += 1
        if self._journal is not None:
            try:
                self._journal.record_resume(r)
            except Exception:
                log.exception("journal: cannot record a resume attempt")


def failures(rows: list[ResumeRecord], since: float) -> list[ResumeRecord]:
    """The failed attempts ending after ``since``, oldest first (a cont without an outcome: interrupted)."""
    ended = {r.attempt for r in rows if r.phase == "end"}
    out = []
    for r in rows:
        if r.ended < since:
            continue
        if r.phase == "end" and r.outcome in FAILURES:
            out.append(r)
        elif r.phase == "cont" and r.attempt not in ended:
            out.append(ResumeRecord(r.vm, r.rule, r.run_id, r.attempt, "end", "interrupted", r.queued, r.started,
                                    r.cont, r.ended, "reactor stopped during the attempt"))
    return out


def backoff_delay(args: ResumeArgs, n_failures: int) -> float:
    """The wait after the ``n_failures``-th failure: ``backoff`` doubling per failure, at most ``max_backoff``."""
    if n_failures <= 0:
        return 0.0
    return float(min(args.backoff * (2.0 ** min(n_failures - 1, 60)), args.max_backoff))


# --- the action --------------------------------------------------------------------------------


class _Disconnected(Exception):
    pass


async def _status(ctx: ActionContext) -> str:
    try:
        reply = await ctx.vm.execute("query-status", timeout=COMMAND_TIMEOUT)
    except (QMPConnectionError, TimeoutError) as err:
        known = ctx.vm.status
        if ctx.dry_run and isinstance(err, QMPConnectionError) and known not in ("disconnected", "unknown", ""):
            return known   # replay --dry-run: no QMP at all, the state the events left
        raise _Disconnected(f"query-status: {err or 'no answer'}") from err
    if not isinstance(reply, dict) or not isinstance(reply.get("status"), str):
        raise ActionError(f"query-status: unexpected answer {reply!r}")
    return str(reply["status"])


def _coordinator(ctx: ActionContext) -> ResumeCoordinator | None:
    try:
        return ctx.resource(ResumeCoordinator)
    except ActionError:
        return None


@action("resume", mutating=False, resources=(ResumeCoordinator,), check=_check)
async def RESUME(ctx: ActionContext, args: ResumeArgs) -> dict[str, Any]:
    """Resume the VM if QEMU paused it on an I/O error: settle, probes, cont, verify; back off on flaps and give
    up (REACTOR_RESUME_GAVE_UP) after ``attempts`` failures within ``within``; daemon-wide ``max_concurrent``
    and ``stagger``."""
    vm = ctx.vm.name
    coord = _coordinator(ctx)
    began = ctx.now()
    if coord is not None and not ctx.dry_run:
        owner = coord.owners.get(vm)
        if owner is not None:   # another rule's run (the flap's BLOCK_IO_ERROR, a connect) is resuming it
            ctx.log.info("%s: a resume of it is in progress (rule %s, run %s): leaving it to that one", vm, *owner)
            return {"resumed": False, "attempts": 0, "waited": 0.0, "failures": 0, "history": [],
                    "reason": f"a resume of {vm} is in progress (rule {owner[0]}, run {owner[1]})"}
        coord.owners[vm] = (ctx.rule, ctx.run_id)
    # the place in the queue is taken before anything awaits: the order of arrival is the order of events
    ticket = None if coord is None or ctx.dry_run else coord.enqueue(vm, ctx.rule, ctx.run_id,
                                                                    args.max_concurrent, began)
    history: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []   # backoffs and the give-up, with their reasons
    waited = 0.0

    def result(resumed: bool, reason: str, n_failures: int) -> dict[str, Any]:
        out = {"resumed": resumed, "attempts": len(history), "waited": round(waited, 3), "reason": reason,
               "failures": n_failures, "history": history}
        if decisions:
            out["decisions"] = decisions
        return out

    def state(phase: str, **more: Any) -> None:
        if coord is not None and not ctx.dry_run:
            attempt = len(history) + 1 if phase == "backoff" else len(history)   # the next one, or the current one
            coord.states[vm] = {"phase": phase, "since": ctx.now(), "rule": ctx.rule, "run": ctx.run_id,
                                "attempt": attempt, **more}

    try:
        status = await _first_status(ctx)
        if status != "io-error":
            if coord is not None:
                coord.outcomes["not-io-error"] += 1
            ctx.log.info("%s is %s, not paused by an I/O error: nothing to resume", vm, status)
            return result(False, f"status is {status}, not io-error", 0)
        if ctx.dry_run:
            for step in args.probe:
                probed = await ctx.run_step(step, label="probe", timeout=PROBE_TIMEOUT)
                if not probed.ok and step.on_error != "continue":
                    return result(False, f"dry run: probe {step.name} failed: {probed.error}", 0)
            ctx.log.info("dry run: would send cont to %s (io-error)", vm)
            return result(False, "dry run: would send cont (status io-error)", 0)
        if coord is None:
            raise ActionError("resume needs the daemon's resume coordinator (not available here)")
        while True:
            rows = await coord.history(vm)
            now = ctx.now()
            failed = failures(rows, now - args.within)
            if len(failed) >= args.attempts:
                given = _given_up(rows, failed[-1], ctx.event.timestamp)
                if given is not None:   # the same episode (an event of the last flap, seen after the give-up)
                    decisions.append({"at": now, "decision": "gave-up-already", "failures": len(failed),
                                      "last_error": given.error})
                    return result(False, f"gave up already (rule {given.rule}, run {given.run_id}); the VM stays "
                                         "paused", len(failed))
                decisions.append({"at": now, "decision": "give-up", "failures": len(failed),
                                  "last_error": failed[-1].error})
                return _give_up(ctx, coord, args, failed, history, result)
            if failed:
                delay = failed[-1].ended + backoff_delay(args, len(failed)) - now
                if delay > 0:
                    if ticket is not None:
                        coord.release(ticket)
                        ticket = None
                    state("backoff", until=now + delay, failures=len(failed))
                    decisions.append({"at": now, "decision": "backoff", "seconds": round(delay, 3),
                                      "failures": len(failed), "last_error": failed[-1].error})
                    ctx.log.info("%s: %d failed attempt(s) within %s; next attempt in %s", vm, len(failed),
                                 format_duration(args.within), _ago(delay))
                    await ctx.sleep(delay)
                    waited += delay
                    status = await _recheck(ctx)
                    if status != "io-error":
                        return result(False, f"status is {status}, not io-error (after backoff)", len(failed))
            if ticket is None:
                ticket = coord.enqueue(vm, ctx.rule, ctx.run_id, args.max_concurrent, ctx.now())
            outcome, error = await _attempt(ctx, coord, args, ticket, history, state, len(failed))
            waited += history[-1]["waited"]
            coord.release(ticket)
            ticket = None
            if outcome == "resumed":
                coord.states.pop(vm, None)
                return result(True, "resumed", len(failed))
            if outcome == "disconnected":
                raise ActionError(f"{vm} disconnected during the resume: {error}")
            if outcome == "gone":   # resumed or paused by someone else meanwhile
                return result(False, error or "not io-error any more", len(failed))
            ctx.log.warning("%s: resume attempt %d failed (%s): %s", vm, len(history), outcome, error)
    finally:
        if ticket is not None and coord is not None:
            coord.release(ticket)
        if coord is not None and coord.owners.get(vm) == (ctx.rule, ctx.run_id):
            del coord.owners[vm]
        if coord is not None:
            mine = coord.states.get(vm, {})
            if mine.get("run") == ctx.run_id and mine.get("phase") != "gave-up":
                del coord.states[vm]


async def _first_status(ctx: ActionContext, grace: float = 2.0) -> str:
    """The status when the step starts.  QEMU emits BLOCK_IO_ERROR before the VM has stopped: a run started by
    one (``action: stop``) that finds the VM still ``running`` asks again for up to ``grace`` seconds."""
    status = await _recheck(ctx)
    ev = ctx.event
    if status == "running" and ev.name == "BLOCK_IO_ERROR" and ev.vm == ctx.vm.name and ev.data.get("action") == "stop":
        for _ in range(int(grace / 0.1)):
            await ctx.sleep(0.1)
            status = await _recheck(ctx)
            if status != "running":
                break
    return status


async def _recheck(ctx: ActionContext) -> str:
    try:
        return await _status(ctx)
    except _Disconnected as err:
        raise ActionError(f"{ctx.vm.name}: cannot read its run state: {err}") from err


async def _attempt(ctx: ActionContext, coord: ResumeCoordinator, args: ResumeArgs, ticket: _Ticket,
                   history: list[dict[str, Any]], state: Callable[..., None],
                   prior_failures: int) -> tuple[str, str | None]:
    """One attempt: slot, settle, probes, cont, verify.  (outcome, error); records it."""
    vm = ctx.vm.name
    n = len(history) + 1
    attempt_id = f"{ctx.run_id}.{n}"
    entry: dict[str, Any] = {"attempt": n, "queued": ticket.queued}
    history.append(entry)
    state("waiting", position=coord.position(ticket), failures=prior_failures)
    if not ticket.fut.done():
        ctx.log.info("%s: waiting for a resume slot (%d ahead, %d in a resume)", vm,
                     coord.position(ticket) - 1, coord.active)
    await ticket.fut
    started = ctx.now()
    entry["started"] = started
    entry["waited"] = round(started - ticket.queued, 3)
    cont_at: float | None = None

    def done(outcome: str, error: str | None) -> tuple[str, str | None]:
        ended = ctx.now()
        entry.update(outcome=outcome, error=error, ended=ended)
        if outcome != "gone":
            coord.record(ResumeRecord(vm, ctx.rule, ctx.run_id, attempt_id, "end", outcome, ticket.queued, started,
                                      cont_at, ended, error))
        return outcome, error

    try:
        status = await _status(ctx)
        if status != "io-error":
            return done("gone", f"status is {status}, not io-error (before attempt {n})")
        state("settle")
        await ctx.sleep(args.settle)
        probes: list[dict[str, Any]] = []
        entry["probes"] = probes
        for step in args.probe:
            state("probe", probe=step.name)
            outcome = await ctx.run_step(step, label="probe", timeout=PROBE_TIMEOUT)
            probes.append({"action": step.name, "status": outcome.status, "error": outcome.error})
            if not outcome.ok and step.on_error != "continue":
                return done("probe-failed", f"probe {step.name}: {outcome.error}")
        state("cont")
        watch = coord.watch(vm)
        try:
            async def send() -> None:
                await ctx.vm.execute("cont", timeout=COMMAND_TIMEOUT)

            try:
                cont_at = await coord.cont_turn(args.stagger, ctx, _recording(ctx, coord, args, ticket, attempt_id,
                                                                               started, send))
            except QMPCommandError as err:
                return done("cont-failed", f"cont: {err}")
            entry["cont"] = cont_at
            ctx.log.info("%s: cont sent (attempt %d); verifying for %s", vm, n, format_duration(args.verify))
            state("verify", until=ctx.now() + args.verify)
            event = await watch.wait(args.verify, ctx.sleep)
            if event is not None and event.name == "REACTOR_VM_DISCONNECTED":
                return done("disconnected", f"disconnected during verify: {event.data.get('reason', '')}")
            if event is not None:
                if event.name == "BLOCK_IO_ERROR":   # QEMU stops the VM right after: let the STOP arrive too
                    await _settled_stop(ctx, watch)
                detail = ", ".join(f"{k}={v}" for k, v in sorted(event.data.items()) if k in ("reason", "operation"))
                return done("flap", f"{event.name} {_ago(ctx.now() - cont_at)} after cont"
                                    + (f" ({detail})" if detail else ""))
        finally:
            coord.unwatch(vm, watch)
        status = await _status(ctx)
        if status != "running":
            return done("flap", f"status is {status} after verify, not running")
        return done("resumed", None)
    except _Disconnected as err:
        return done("disconnected", str(err))
    except QMPConnectionError as err:
        return done("disconnected", str(err))
    except TimeoutError as err:
        return done("disconnected", f"no answer: {err}")


def _recording(ctx: ActionContext, coord: ResumeCoordinator, args: ResumeArgs, ticket: _Ticket, attempt_id: str,
               started: float, send: Callable[[], Any]) -> Callable[[], Any]:
    """``send`` preceded by the attempt's 'cont' row (on disk before QEMU gets the cont)."""
    async def go() -> None:
        now = ctx.now()
        coord.record(ResumeRecord(ctx.vm.name, ctx.rule, ctx.run_id, attempt_id, "cont", "cont", ticket.queued,
                                  started, now, now, None))
        flush = getattr(coord._journal, "flush", None)
        if flush is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await flush()
        await send()
    return go


def _ago(seconds: float) -> str:
    return f"{max(0.0, seconds) * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


async def _settled_stop(ctx: ActionContext, watch: _Watch, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if any(e.name == "STOP" for e in watch.events):
            return
        await ctx.sleep(0.05)


#: How much later than a give-up the event of a new run may be and still belong to the same episode.
_EPISODE_SLACK = 1.0


def _given_up(rows: list[ResumeRecord], last_failure: ResumeRecord, trigger: float) -> ResumeRecord | None:
    """The give-up row that already covers ``last_failure``, when the run's triggering event (``trigger``,
    its timestamp) is not newer than it: that run must not give up (and notify) a second time."""
    for r in reversed(rows):
        if r.outcome == "gave-up" and r.ended >= last_failure.ended:
            return r if trigger <= r.ended + _EPISODE_SLACK else None
        if r.ended < last_failure.ended:
            break
    return None


def _give_up(ctx: ActionContext, coord: ResumeCoordinator, args: ResumeArgs, failed: list[ResumeRecord],
             history: list[dict[str, Any]], result: Callable[[bool, str, int], dict[str, Any]]) -> dict[str, Any]:
    vm = ctx.vm.name
    last = failed[-1]
    since = failed[0].started
    now = ctx.now()
    coord.record(ResumeRecord(vm, ctx.rule, ctx.run_id, f"{ctx.run_id}.gave-up", "end", "gave-up", None, now, None,
                              now, last.error))
    coord.states[vm] = {"phase": "gave-up", "since": now, "rule": ctx.rule, "run": ctx.run_id,
                        "failures": len(failed), "last_error": last.error}
    ctx.emit("REACTOR_RESUME_GAVE_UP", {"attempts": len(failed), "last_error": last.error or last.outcome,
                                        "since": since, "rule": ctx.rule})
    reason = (f"gave up: {len(failed)} failed attempts within {format_duration(args.within)} "
              f"(last: {last.error or last.outcome}); the VM stays paused")
    ctx.log.warning("%s: %s", vm, reason)
    return result(False, reason, len(failed))   # the VM stays visible as given up until its next resume
