"""Correlation over time: ``after`` (sequence), ``count`` and ``unless`` (absence), per key, restart-safe.

The engine calls :meth:`Correlator.check` for a rule with a correlation once
its ``match`` and ``if`` held (``after`` → ``count`` → ``unless``, then the
engine goes on with ``threshold``, ``throttle`` and ``mode``),
:meth:`Correlator.cancel` before the rules for every event some rule's
``unless`` names (:attr:`Correlator.cancelling`), and :meth:`Correlator.observe`
after them for every event some rule's ``after`` names (:attr:`Correlator.names`;
other events pay a set lookup each).  An event is only ever compared with events
before it: the trigger never counts as its own ``after`` event nor cancels its
own pending match.

Windows are half-open, in the engine clock's time (event time in replay): an
event exactly ``within`` before the trigger is not ``after`` it, a count entry
exactly ``within`` old has expired, and a cancelling event exactly at a
pending match's deadline is too late (the run starts; in replay the deadline
is handled before events with the same timestamp).

State is per rule and key: the last ``after`` event, at most ``min - 1``
counted matches, at most one pending match.  Expired entries are dropped when
their key is touched and by a sweep of the rule's table every
``SWEEP_EVERY`` new keys or when it is full.  A rule holds at most
``MAX_KEYS`` keys per form; past that a new key is refused (a pending match
is journaled ``dropped``), counted in :attr:`Correlator.overflow` and in the
``overflow`` outcome of ``reactor_runs``.

Everything is written through to the journal (``record_correlation``) with
the digest of the rule's correlations: :meth:`Correlator.restore` at start-up
re-arms pending matches with the time they have left, runs the ones whose
deadline passed while reactor was down once their VM connected
(``REACTOR_VM_CONNECTED``; the run's outcome is ``late``, ``vars.late`` is
true), and drops (journaled) the state of rules that are gone or whose
correlation changed; :meth:`Correlator.set_rules` does the same on reload.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from reactor.actions.action import VMHandle
from reactor.engine.clock import Clock, Timer
from reactor.model.duration import format_duration
from reactor.model.event import Event
from reactor.rules.rule import Correlation, Rule, RuleSet


class EngineView(Protocol):
    """What the correlator needs of the engine that owns it (:class:`reactor.engine.engine.Engine` is one)."""

    catalog: Any
    clock: Clock
    journal: Any
    output: Any
    seq: int
    run_outcomes: Counter[tuple[str, str]]
    _tg: asyncio.TaskGroup | None
    _stopping: asyncio.Event | None

    def vm_for(self, name: str) -> VMHandle: ...
    def _admit(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None, seq: int,
               preset: Mapping[str, Any] | None) -> None: ...
    def _journal_event(self, event: Event) -> int | None: ...
    def _not_run(self, rule: Rule, event: Event, event_id: int | None, outcome: str, why: str) -> None: ...
    def _output(self, record: dict[str, Any]) -> None: ...

__all__ = ["MAX_KEYS", "SWEEP_EVERY", "Correlator", "EngineView", "Pending"]

log = logging.getLogger(__name__)

#: Keys one rule may hold per form (pending matches, partial counts, remembered ``after`` events).
MAX_KEYS = 10_000
#: A rule's table is swept of expired entries after this many new keys.
SWEEP_EVERY = 1024
#: Cancellations remembered per rule for ``/api/rules`` and the traces page.
RECENT_CANCELLED = 20

#: A deadline due before the engine runs (just restored) is tried again this much later.
RETRY_NOT_RUNNING = 0.25

_CONNECTED = "REACTOR_VM_CONNECTED"


def _why_dropped(now: Rule | None) -> str:
    """Why a rule's correlation state goes at a reload (``now``: the rule of that name in the new set)."""
    if now is None:
        return "the rule is gone"
    if not now.correlated:
        return "its correlation was removed"
    return "its correlation changed" if now.enabled else "the rule was disabled"


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(slots=True, eq=False)
class Pending:
    """A match of an ``unless`` rule held until ``deadline`` (or cancelled before it)."""

    rule: str
    key: str
    event: Event
    event_id: int | None
    since: float
    deadline: float
    run_id: int | None          # the journal row with outcome "pending"
    vars: dict[str, Any]        # what after/count gave (vars.after, vars.count)
    timer: Timer | None = None
    late: bool = False          # restored past its deadline: runs when its VM connects

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "vm": self.event.vm, "event": self.event.name, "since": self.since,
                "until": self.deadline, "run": self.run_id, "late": self.late}


class Correlator:
    """The correlation state of one engine's rules."""

    def __init__(self, engine: EngineView) -> None:
        self._engine = engine
        self._rules: dict[str, Rule] = {}
        self._sigs: dict[str, str] = {}
        self._watch: dict[str, list[tuple[Rule, Correlation]]] = {}
        #: Event names some rule's ``after`` names (plus REACTOR_VM_CONNECTED while late matches wait): for
        #: :meth:`observe`, after the rules.
        self.names: frozenset[str] = frozenset()
        #: Event names some rule's ``unless`` names: for :meth:`cancel`, before the rules.
        self.cancelling: frozenset[str] = frozenset()
        self._after: dict[str, dict[str, tuple[float, Event]]] = {}
        self._counts: dict[str, dict[str, deque[tuple[float, Event]]]] = {}
        self._pending: dict[str, dict[str, Pending]] = {}
        self._late: dict[str, list[Pending]] = {}
        self._new_keys: Counter[str] = Counter()
        self.cancelled: dict[str, deque[dict[str, Any]]] = {}
        #: New keys refused per rule because its table was full (MAX_KEYS).
        self.overflow: Counter[str] = Counter()

    # -- rules ------------------------------------------------------------------------------
    def set_rules(self, rules: RuleSet) -> None:
        """Take a new rule set: keep the state of rules whose correlations did not change, drop the rest."""
        new = {r.name: r for r in rules.rules if r.correlated and r.enabled}   # disabled: its state is dropped
        for name, sig in list(self._sigs.items()):
            r = new.get(name)
            if r is None or r.correlation_signature != sig:
                self._drop(name, _why_dropped(rules.get(name)))
        self._rules = new
        self._sigs = {n: r.correlation_signature for n, r in new.items()}
        watch: dict[str, list[tuple[Rule, Correlation]]] = {}
        for r in new.values():
            if not r.enabled:
                continue
            for c in (r.after, r.unless):
                if c is not None:
                    for n in sorted(c.events):
                        watch.setdefault(n, []).append((r, c))
        self._watch = watch
        self._refresh_names()

    def _refresh_names(self) -> None:
        after = frozenset(n for n, lst in self._watch.items() if any(c.form == "after" for _, c in lst))
        self.names = after | (frozenset([_CONNECTED]) if self._late else frozenset())
        self.cancelling = frozenset(n for n, lst in self._watch.items() if any(c.form == "unless" for _, c in lst))

    def _drop(self, rule: str, why: str) -> None:
        dropped = 0
        for p in list(self._pending.pop(rule, {}).values()):
            if p.timer is not None:
                p.timer.cancel()
            self._end_pending(p, "dropped", f"reload: {why}; the pending match was dropped")
            dropped += 1
        for vm, lst in list(self._late.items()):
            for p in [p for p in lst if p.rule == rule]:
                lst.remove(p)
                self._end_pending(p, "dropped", f"reload: {why}; the late match was dropped")
                dropped += 1
            if not lst:
                del self._late[vm]
        counts = len(self._counts.pop(rule, {}))
        afters = len(self._after.pop(rule, {}))
        self.cancelled.pop(rule, None)
        self._persist("del", rule, None, None)
        if dropped or counts or afters:
            self._engine.run_outcomes[(rule, "state_dropped")] += 1
            log.info("%s: %s: dropped %d pending match(es), %d count(s), %d after event(s)", rule, why, dropped,
                     counts, afters)

    # -- the trigger side -------------------------------------------------------------------
    def check(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None) -> dict[str, Any] | None:
        """``after`` → ``count`` → ``unless`` for a match of ``rule``: the run's vars to go on now, else None.

        A bug here fails this match (logged, counted as ``correlation_error``), never the engine."""
        try:
            return self._check(rule, event, vm, event_id)
        except Exception:
            log.exception("%s: correlation failed for %s from %s", rule.name, event.name, event.vm)
            self._engine.run_outcomes[(rule.name, "correlation_error")] += 1
            return None

    def _check(self, rule: Rule, event: Event, vm: VMHandle, event_id: int | None) -> dict[str, Any] | None:
        eng = self._engine
        now = eng.clock.now()
        preset: dict[str, Any] = {}
        c = rule.after
        if c is not None:
            got = self._after.get(rule.name, {}).get(c.key(event.vm, event.data, event.host))
            if got is None or now - got[0] >= c.within:
                eng.run_outcomes[(rule.name, "no_after")] += 1
                return None
            preset["after"] = got[1].to_qmp()
        c = rule.count
        if c is not None:
            counted = self._count(rule, c, event, now)
            if counted is None:
                return None
            preset["count"] = counted
        c = rule.unless
        if c is not None:
            self._hold(rule, c, event, vm, event_id, preset, now)
            return None
        return preset

    def _count(self, rule: Rule, c: Correlation, event: Event, now: float) -> dict[str, Any] | None:
        eng = self._engine
        key = c.key(event.vm, event.data, event.host)
        table = self._counts.setdefault(rule.name, {})
        window = table.get(key)
        horizon = now - c.within
        if window is None:
            if not self._room(rule.name, table, c, now):
                return None
            window = table[key] = deque()
        expired = False
        while window and window[0][0] <= horizon:
            window.popleft()
            expired = True
        if expired:
            self._persist("del", rule.name, "count", key, horizon)
        window.append((now, event))
        if len(window) < c.min:
            self._persist("add", rule.name, "count", key, now, event)
            eng.run_outcomes[(rule.name, "counted")] += 1
            return None
        del table[key]
        if len(window) > 1:
            self._persist("del", rule.name, "count", key)
        return {"n": len(window), "first": window[0][0], "events": [e.to_qmp() for _, e in window]}

    def _hold(self, rule: Rule, c: Correlation, event: Event, vm: VMHandle, event_id: int | None,
              preset: dict[str, Any], now: float) -> None:
        eng = self._engine
        key = c.key(event.vm, event.data, event.host)
        table = self._pending.setdefault(rule.name, {})
        p = table.get(key)
        if p is not None:
            eng._not_run(rule, event, event_id, "dropped",
                         f"unless: a match is pending for {key} since {_iso(p.since)} (until {_iso(p.deadline)})")
            return
        if len(table) >= MAX_KEYS:
            self.overflow[rule.name] += 1
            eng._not_run(rule, event, event_id, "overflow", f"unless: {MAX_KEYS} matches pending already (the bound)")
            return
        deadline = now + c.within
        run_id: int | None = None
        if eng.journal is not None:
            try:
                run_id = int(eng.journal.start_run(rule=rule.name, vm=event.vm, event_id=event_id,
                                                   event_name=event.name, started=now, outcome="pending"))
            except Exception:
                log.exception("journal: cannot record a pending match")
        p = table[key] = Pending(rule.name, key, event, event_id, now, deadline, run_id, preset)
        p.timer = eng.clock.call_at(deadline, lambda: self._due(p))
        self._persist("add", rule.name, "unless", key, now, p)
        eng.run_outcomes[(rule.name, "pending")] += 1
        if log.isEnabledFor(logging.DEBUG):   # the journal has it; one line per STOP would flood the log
            log.debug("%s: %s from %s pending until %s unless %s", rule.name, event.name, event.vm,
                      _iso(deadline), "/".join(sorted(c.events)))
        if eng.output is not None:
            eng._output({"type": "pending", "rule": rule.name, "vm": event.vm, "event": event.name, "time": now,
                         "until": deadline, "reason": f"held {format_duration(c.within)} (until {_iso(deadline)}) "
                                                      f"unless {'/'.join(sorted(c.events))}"})

    @staticmethod
    def _pending_state(p: Pending) -> dict[str, Any]:
        return {"event": p.event.to_qmp(), "event_id": p.event_id, "deadline": p.deadline, "run_id": p.run_id,
                "vars": p.vars}

    def _room(self, rule: str, table: dict[str, Any], c: Correlation, now: float) -> bool:
        """Whether ``table`` may take one more key (sweeping expired ones when due); counts an overflow if not."""
        self._new_keys[rule] += 1
        if len(table) >= MAX_KEYS or self._new_keys[rule] % SWEEP_EVERY == 0:
            horizon = now - c.within
            for k in [k for k, v in table.items() if (v[-1][0] if isinstance(v, deque) else v[0]) <= horizon]:
                del table[k]
                self._persist("del", rule, c.form, k)
        if len(table) < MAX_KEYS:
            return True
        self.overflow[rule] += 1
        self._engine.run_outcomes[(rule, "overflow")] += 1
        return False

    # -- the other events -------------------------------------------------------------------
    def cancel(self, event: Event, vm: VMHandle) -> None:
        """An event some ``unless`` names, before the rules see it: cancel the pending matches it satisfies.

        Before the rules, so that a trigger never cancels its own pending match, and an event that is both
        a rule's trigger and its ``unless`` event cancels the match pending before it and is then held in
        its place (``on: STOP`` with ``unless: {event: STOP}``: the last STOP of a burst runs).
        """
        try:
            self._observe(event, vm, "unless")
        except Exception:   # a bug: this event's correlations are lost (logged), never the engine
            log.exception("correlation failed for %s from %s", event.name, event.vm)

    def observe(self, event: Event, vm: VMHandle) -> None:
        """An event some ``after`` names, after the rules saw it (never its own ``after``): remember it."""
        try:
            self._observe(event, vm, "after")
        except Exception:   # a bug: this event's correlations are lost (logged), never the engine
            log.exception("correlation failed for %s from %s", event.name, event.vm)

    def _observe(self, event: Event, vm: VMHandle, form: str) -> None:
        now = self._engine.clock.now()
        if form == "after" and event.name == _CONNECTED and self._late:
            for p in self._late.pop(event.vm, []):
                self._run(p, now)
            self._refresh_names()
        for rule, c in self._watch.get(event.name, ()):
            if c.form != form or (form == "unless" and not self._pending.get(rule.name)):
                continue   # the other form, or nothing pending: nothing to cancel
            if rule.vms is not None and not rule.vms.matches(event.vm, vm.labels):
                continue
            if c.match is not None and not c.match(event.data):
                continue
            if c.form == "after":
                key = c.key(event.vm, event.data, event.host)
                table = self._after.setdefault(rule.name, {})
                if key not in table and not self._room(rule.name, table, c, now):
                    continue
                table[key] = (now, event)
                self._persist("del", rule.name, "after", key)
                self._persist("add", rule.name, "after", key, now, event)
                continue
            pending = self._pending.get(rule.name)
            held = pending.get(c.key(event.vm, event.data, event.host)) if pending else None
            if held is None:
                continue
            if now >= held.deadline:   # the timer is late: at the deadline the run wins
                self._due(held)
                continue
            self._cancel(held, event, now)

    def _cancel(self, p: Pending, by: Event, now: float) -> None:
        eng = self._engine
        del self._pending[p.rule][p.key]
        if p.timer is not None:
            p.timer.cancel()
        self._persist("del", p.rule, "unless", p.key)
        by_id = None
        journal = eng.journal
        if journal is not None and journal.record_events != "none":
            by_id = eng._journal_event(by)
        ref = f" (event #{by_id})" if by_id is not None else ""
        why = (f"cancelled by {by.name} from {by.vm} at {_iso(now)}{ref}, "
               f"{format_duration(round(now - p.since, 3))} after the trigger")
        self._end_pending(p, "cancelled", why)
        eng.run_outcomes[(p.rule, "cancelled")] += 1
        recent = self.cancelled.setdefault(p.rule, deque(maxlen=RECENT_CANCELLED))
        recent.append({"key": p.key, "vm": p.event.vm, "since": p.since, "at": now, "by": by.name,
                       "by_vm": by.vm, "by_data": dict(by.data), "run": p.run_id})
        log.debug("%s: pending %s from %s %s", p.rule, p.event.name, p.event.vm, why)
        eng._output({"type": "cancelled", "rule": p.rule, "vm": p.event.vm, "event": p.event.name, "time": now,
                     "reason": why, "by": by.name})

    def _end_pending(self, p: Pending, status: str, why: str) -> None:
        eng = self._engine
        if eng.journal is not None and p.run_id is not None:
            try:
                eng.journal.end_run(p.run_id, status=status, ended=eng.clock.now(), error=why)
            except Exception:
                log.exception("journal: cannot record the end of a pending match")

    # -- deadlines --------------------------------------------------------------------------
    def _due(self, p: Pending) -> None:
        """A pending match's deadline: nothing cancelled it, so the run starts (with the trigger as event)."""
        try:
            self._deadline(p)
        except Exception:   # a bug: this match is lost (logged); the clock and the engine go on
            log.exception("%s: the deadline of a pending match from %s failed", p.rule, p.event.vm)

    def _deadline(self, p: Pending) -> None:
        eng = self._engine
        table = self._pending.get(p.rule)
        if table is None or table.get(p.key) is not p:
            return   # cancelled or dropped meanwhile
        if eng._tg is None:
            if eng._stopping is None:   # restored at start-up, due before the engine runs: a moment later
                p.timer = eng.clock.call_at(eng.clock.now() + RETRY_NOT_RUNNING, lambda: self._due(p))
            return   # stopping: the journal keeps it for the next start
        del table[p.key]
        self._run(p, self._engine.clock.now())

    def _run(self, p: Pending, now: float) -> None:
        eng = self._engine
        rule = self._rules.get(p.rule)
        self._persist("del", p.rule, "unless", p.key)
        if rule is None:
            return
        late = p.late
        c = rule.unless
        names = "/".join(sorted(c.events)) if c is not None else "event"
        self._end_pending(p, "late" if late else "elapsed",
                          f"no {names} within {format_duration(c.within if c else 0)}: the run started"
                          + (" late (the deadline passed while reactor was down)" if late else ""))
        eng.run_outcomes[(p.rule, "late" if late else "elapsed")] += 1
        preset = dict(p.vars)
        preset["pending_since"] = p.since
        if late:
            preset["late"] = True
        eng._admit(rule, p.event, eng.vm_for(p.event.vm), p.event_id, eng.seq, preset)

    # -- restart ----------------------------------------------------------------------------
    def restore(self, rows: Iterable[tuple[str, str, str, float, str, Mapping[str, Any]]], now: float,
                pending_runs: Iterable[int] = ()) -> None:
        """State from the journal (``Journal.load_correlation``), at start-up after :meth:`set_rules`.

        ``pending_runs``: the ids of runs the journal has as ``pending``; those no state row re-arms
        (a kill between the two writes) are ended ``interrupted``.
        """
        eng = self._engine
        rows = list(rows)
        armed = {st.get("run_id") for _, form, _, _, _, st in rows if form == "unless" and isinstance(st, dict)}
        stale: set[str] = set()
        for row in rows:
            try:
                self._restore_row(row, now, stale)
            except Exception as err:   # a damaged row: dropped, the start goes on
                log.warning("journal: unreadable correlation state %r (%s: %s): dropped", row[:4],
                            type(err).__name__, err)
                stale.add(row[0])
        for name in stale:
            self._persist("del", name, None, None)
        for name, rule in self._rules.items():
            if rule.count is not None:
                self._persist("del", name, "count", None, now - rule.count.within)
            if rule.after is not None:
                self._persist("del", name, "after", None, now - rule.after.within)
        for table in self._counts.values():
            for window in table.values():
                window_sorted = sorted(window, key=lambda e: e[0])
                window.clear()
                window.extend(window_sorted)
        if eng.journal is not None:
            for rid in pending_runs:
                if rid not in armed:
                    eng.journal.end_run(rid, status="interrupted", ended=now,
                                        error="restart: the journal had no state for this pending match")
        late = sum(len(v) for v in self._late.values())
        pending = sum(len(t) for t in self._pending.values())
        if pending or late:
            log.info("restored %d pending match(es) (%d past their deadline: they run when their VM connects)",
                     pending + late, late)
        self._refresh_names()

    def _restore_row(self, row: tuple[str, str, str, float, str, Mapping[str, Any]], now: float,
                     stale: set[str]) -> None:
        eng = self._engine
        rule_name, form, key, ts, sig, state = row
        rule = self._rules.get(rule_name)
        c: Correlation | None = getattr(rule, form, None) if rule is not None else None
        if rule is None or c is None or sig != self._sigs.get(rule_name):
            stale.add(rule_name)
            if form == "unless" and state.get("run_id") is not None and eng.journal is not None:
                why = "is gone" if rule is None else "changed"
                eng.journal.end_run(int(state["run_id"]), status="dropped", ended=now,
                                    error=f"restart: the rule's correlation {why}; the pending match was dropped")
            return
        obj = state["event"]
        event = eng.catalog.make_event(obj, vm=obj.get("vm", "vm0"), host=obj.get("host"))
        if form == "after":
            if now - ts < c.within:
                self._after.setdefault(rule_name, {})[key] = (ts, event)
        elif form == "count":
            if now - ts < c.within:
                self._counts.setdefault(rule_name, {}).setdefault(key, deque()).append((ts, event))
        elif form == "unless":
            p = Pending(rule_name, key, event, state.get("event_id"), ts, float(state["deadline"]),
                        state.get("run_id"), dict(state.get("vars") or {}))
            if p.deadline > now:
                self._pending.setdefault(rule_name, {})[key] = p
                p.timer = eng.clock.call_at(p.deadline, lambda: self._due(p))
            else:
                p.late = True
                self._late.setdefault(event.vm, []).append(p)

    # -- persistence ------------------------------------------------------------------------
    def _persist(self, op: str, rule: str, form: str | None, key: str | None, ts: float | None = None,
                 state: Event | Pending | None = None) -> None:
        """Write a change through to the journal (its state built only then: no journal, no cost)."""
        journal = self._engine.journal
        if journal is None:
            return
        record = getattr(journal, "record_correlation", None)
        if record is None:
            return
        row: dict[str, Any] | None = None
        if isinstance(state, Pending):
            row = self._pending_state(state)
        elif state is not None:
            row = {"event": state.to_qmp()}
        try:
            record(op, rule, form, key, ts, self._sigs.get(rule, ""), row)
        except Exception:
            log.exception("journal: cannot record correlation state")

    # -- views ------------------------------------------------------------------------------
    def snapshot(self, rule: str) -> dict[str, Any]:
        """The state of one rule for ``/api/rules`` and the traces page."""
        now = self._engine.clock.now()
        r = self._rules.get(rule)
        out: dict[str, Any] = {}
        if r is None:
            return out
        if r.after is not None:
            w = r.after.within
            out["after"] = {k: {"at": t, "event": e.name} for k, (t, e) in self._after.get(rule, {}).items()
                            if now - t < w}
        if r.count is not None:
            w = r.count.within
            out["counts"] = {k: sum(1 for t, _ in win if now - t < w) for k, win in self._counts.get(rule, {}).items()}
            out["counts"] = {k: n for k, n in out["counts"].items() if n}
        if r.unless is not None:
            pend = [p.to_json() for p in self._pending.get(rule, {}).values()]
            pend += [p.to_json() for lst in self._late.values() for p in lst if p.rule == rule]
            out["pending"] = sorted(pend, key=lambda p: p["until"])
            out["cancelled"] = list(self.cancelled.get(rule, ()))
        if self.overflow.get(rule):
            out["overflow"] = self.overflow[rule]
        return out

    def sizes(self) -> dict[tuple[str, str], int]:
        """Keys held per (rule, form), for metrics."""
        out: dict[tuple[str, str], int] = {}
        for form, tables in (("after", self._after), ("count", self._counts), ("unless", self._pending)):
            for rule, table in tables.items():
                out[(rule, form)] = len(table)
        for lst in self._late.values():
            for p in lst:
                out[(p.rule, "unless")] = out.get((p.rule, "unless"), 0) + 1
        return out
