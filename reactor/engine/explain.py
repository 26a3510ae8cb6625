"""``reactor explain``: for one event, every rule that listens to it and why it would (not) run.

For each rule whose ``on`` names the event (or is ``"*"``), in definition
order, the checks the engine makes, in the engine's order: ``enabled``,
``vms``, each ``match`` entry (the ones that fail, with the event's values),
``if`` (its value, or the error that counts as no match), then — for a rule
that matches — what ``throttle`` and ``mode`` would do given the journal:
how many runs the throttle window already holds for this key, and whether a
run of the rule for this VM is in progress, and for a rule with a ``resume``
step the VM's failed resume attempts in the journal (the next backoff, or that
it would give up).  Correlations over time
(``after`` → ``count`` → ``unless``) are read from the journal's correlation
state: which ``after`` event held (or that none did), the count so far, a
match pending for this key and until when (or that this one would be held),
and the last pending match a cancelling event ended.  Rules whose
``after``/``unless`` name the event (without listening to it) get a verdict
``correlates``: the pending match it would cancel, or that it would be
remembered as an ``after`` event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from reactor.engine.engine import StaticVM
from reactor.engine.view import names_for
from reactor.errors import JournalError, TemplateError
from reactor.model.duration import format_duration
from reactor.model.event import Event
from reactor.ops.journal import Journal
from reactor.rules.matcher import explain_match
from reactor.rules.rule import Rule, RuleSet

__all__ = ["Verdict", "explain", "format_verdicts"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one rule would or would not run for the event.

    ``outcome``: ``run`` (matched, would start a run), ``queued``,
    ``throttled``, ``dropped`` (mode), ``counted`` (toward a ``threshold``),
    ``below-count`` (toward a ``count``), ``pending`` (held by ``unless``),
    ``duplicate`` (a match is already pending for the key), ``correlates`` (the
    event is another rule's ``after``/``unless`` event), ``no-match`` or
    ``disabled``.  ``failed`` names the first check that failed (``enabled``,
    ``vms``, ``match``, ``if``, ``after``) and ``reasons`` says how, with
    values; ``correlation`` says what each correlation found.
    """

    rule: str
    position: str
    outcome: str
    failed: str | None = None
    reasons: tuple[str, ...] = ()
    throttle: str | None = None
    mode: str | None = None
    threshold: str | None = None
    correlation: tuple[str, ...] = ()
    resume: str | None = None

    @property
    def matched(self) -> bool:
        return self.failed is None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["correlation"] = list(self.correlation)
        out["matched"] = self.matched
        return out


def _listens(rule: Rule, name: str) -> bool:
    return rule.on is None or name in rule.on


def explain(event: Event, rules: RuleSet, *, labels: Mapping[str, str] | None = None, status: str = "running",
            journal: Journal | None = None, now: float | None = None) -> list[Verdict]:
    """A :class:`Verdict` for every rule listening to ``event``, in definition order."""
    now = time.time() if now is None else now
    vm = StaticVM(event.vm, labels or {}, status)
    vm.runstate = vm.runstate.after(event.name, event.data)  # the state the event leaves the VM in
    out: list[Verdict] = []
    state = _State(journal)
    for rule in sorted(rules.rules, key=lambda r: r.index):
        if _listens(rule, event.name):
            out.append(_one(rule, event, vm, journal, now, state))
        elif rule.enabled and any(event.name in c.events for c in (rule.after, rule.unless) if c is not None):
            out.append(_correlates(rule, event, vm, journal, now, state))
    return out


class _State:
    """The journal's correlation rows, read once per rule."""

    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal
        self._rows: dict[str, list[tuple[str, str, str, float, str, Any]]] = {}

    def rows(self, rule: str, form: str, key: str) -> list[tuple[str, str, str, float, str, Any]]:
        if self.journal is None:
            return []
        if rule not in self._rows:
            try:
                self._rows[rule] = self.journal.load_correlation(rule)
            except JournalError:      # a journal from before correlations (schema 1), read-only
                self._rows[rule] = []
        return [r for r in self._rows[rule] if r[1] == form and r[2] == key]


def _at(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


def _correlate(rule: Rule, event: Event, journal: Journal | None, now: float,
               state: _State) -> tuple[str | None, str | None, list[str]]:
    """after → count → unless for a match: (the outcome when it stops there, the failed check, what each found)."""
    lines: list[str] = []
    none = "no journal given: assuming no earlier events" if journal is None else ""
    c = rule.after
    if c is not None:
        key = c.key(event.vm, event.data, event.host)
        held = [r for r in state.rows(rule.name, "after", key) if now - r[3] < c.within]
        names = "/".join(sorted(c.events))
        if not held:
            lines.append(f"after: no {names} of {key!r} in the {format_duration(c.within)} before"
                         + (f" ({none})" if none else "") + ": no match")
            return "no-match", "after", lines
        ts, obj = held[-1][3], held[-1][5].get("event", {})
        lines.append(f"after: held by {obj.get('event', names)} of {key!r} at {_at(ts)} "
                     f"({format_duration(round(now - ts, 3))} before)")
    c = rule.count
    if c is not None:
        key = c.key(event.vm, event.data, event.host)
        n = len([r for r in state.rows(rule.name, "count", key) if now - r[3] < c.within]) + 1
        if n < c.min:
            lines.append(f"count: this would be match {n} of {c.min} for {key!r} within "
                         f"{format_duration(c.within)}" + (f" ({none})" if none else "") + "; not run yet")
            return "below-count", None, lines
        lines.append(f"count: this would be match {n} of {c.min} for {key!r}: it runs, and the count restarts")
    c = rule.unless
    if c is not None:
        key = c.key(event.vm, event.data, event.host)
        names = "/".join(sorted(c.events))
        rows = state.rows(rule.name, "unless", key)
        if rows:
            since, deadline = rows[0][3], float(rows[0][5].get("deadline", 0.0))
            if deadline > now:
                lines.append(f"unless: a match for {key!r} is pending since {_at(since)} until {_at(deadline)}: "
                             "this one would be dropped")
            else:
                lines.append(f"unless: a match for {key!r} from {_at(since)} passed its deadline {_at(deadline)} "
                             "while reactor was down: it runs (late) when the VM connects; this one would be dropped")
            return "duplicate", None, lines
        lines.append(f"unless: would be held pending until {_at(now + c.within)}; cancelled by a {names}"
                     + (f" matching {c.match_source!r}" if c.match_source else "") + f" of {key!r} before then")
        lines.extend(_last_cancelled(rule, event, journal))
        return "pending", None, lines
    return None, None, lines


def _last_cancelled(rule: Rule, event: Event, journal: Journal | None) -> list[str]:
    if journal is None:
        return []
    last = journal.runs(rule=rule.name, vm=event.vm, status="cancelled", limit=1, with_steps=False)
    if last and last[0].outcome == "pending":
        return [f"unless: the last pending match of {event.vm} (run {last[0].id}) was {last[0].error}"]
    return []


def _correlates(rule: Rule, event: Event, vm: StaticVM, journal: Journal | None, now: float,
                state: _State) -> Verdict:
    """The event is named by the rule's ``after``/``unless``: what it would do to that state."""
    pos = str(rule.pos)
    lines: list[str] = []
    if rule.vms is not None and not rule.vms.matches(event.vm, vm.labels):
        return Verdict(rule.name, pos, "no-match", "vms", (f"VM {event.vm!r} is not one the rule watches",))
    for c in (rule.after, rule.unless):
        if c is None or event.name not in c.events:
            continue
        if c.match is not None and not c.match(event.data):
            reasons = explain_match(c.match_source, event.data) or ["match: did not hold"]
            lines.append(f"{c.form}: {event.name} does not satisfy its match: " + "; ".join(reasons))
            continue
        key = c.key(event.vm, event.data, event.host)
        if c.form == "after":
            lines.append(f"after: remembered for {key!r}: a match of the rule within {format_duration(c.within)} "
                         "would run")
            continue
        rows = state.rows(rule.name, "unless", key)
        if journal is None:
            lines.append(f"unless: would cancel a match pending for {key!r} (no journal given: none known)")
        elif rows and float(rows[0][5].get("deadline", 0.0)) > now:
            lines.append(f"unless: would cancel the match pending for {key!r} since {_at(rows[0][3])} "
                         f"(until {_at(float(rows[0][5]['deadline']))})")
        else:
            lines.append(f"unless: no match pending for {key!r}: nothing to cancel")
            lines.extend(_last_cancelled(rule, event, journal))
    return Verdict(rule.name, pos, "correlates", None, (), correlation=tuple(lines))


def _one(rule: Rule, event: Event, vm: StaticVM, journal: Journal | None, now: float, state: _State) -> Verdict:
    pos = str(rule.pos)
    if not rule.enabled:
        return Verdict(rule.name, pos, "disabled", "enabled", ("the rule has enabled: false",))
    if rule.vms is not None and not rule.vms.matches(event.vm, vm.labels):
        want = []
        if rule.vms.names:
            want.append(f"names {list(rule.vms.names)}")
        if rule.vms.labels:
            want.append(f"labels {dict(rule.vms.labels)}")
        return Verdict(rule.name, pos, "no-match", "vms",
                       (f"VM {event.vm!r} (labels {dict(vm.labels)}) is not one of {' and '.join(want)}",))
    if rule.match is not None and not rule.match(event.data):
        reasons = explain_match(rule.match_source, event.data) or ["match: did not hold"]
        return Verdict(rule.name, pos, "no-match", "match", tuple(reasons))
    if rule.condition is not None:
        try:
            value = rule.condition.evaluate(names_for(event, vm, rule.name, now, {}))
        except TemplateError as err:
            return Verdict(rule.name, pos, "no-match", "if", (f"if {rule.condition.source!r} failed: {err} "
                                                               "(an error counts as no match)",))
        if not value:
            return Verdict(rule.name, pos, "no-match", "if", (f"if {rule.condition.source!r} is {value!r}",))
    corr: tuple[str, ...] = ()
    if rule.correlations:
        stop, failed, lines = _correlate(rule, event, journal, now, state)
        corr = tuple(lines)
        if stop is not None:
            return Verdict(rule.name, pos, stop, failed, (), correlation=corr)
    if rule.threshold is not None:
        t = rule.threshold
        return Verdict(rule.name, pos, "counted", correlation=corr, threshold=(
            f"runs once {t.count} distinct {'+'.join(t.distinct)} matched within {format_duration(t.within)}"
            + (f" per {'+'.join(t.per)}" if t.per else "")
            + "; the count so far is in the running daemon's memory"))
    mode, busy = _mode(rule, event, journal)
    outcome = "run"
    if busy and rule.mode == "single":
        outcome = "dropped"
    elif busy and rule.mode == "queued":
        outcome = "queued"
    throttle, allowed = _throttle(rule, event, journal, now)
    if not allowed and outcome != "dropped":
        outcome = "throttled"
    return Verdict(rule.name, pos, outcome, None, (), throttle, mode, correlation=corr,
                   resume=_resume(rule, event, journal, now))


def _resume(rule: Rule, event: Event, journal: Journal | None, now: float) -> str | None:
    from reactor.actions.resume import ResumeArgs, backoff_delay, failures

    args = next((s.args.static for s in rule.steps if isinstance(s.args.static, ResumeArgs)), None)
    if args is None:
        return None
    if journal is None:
        return "no journal given: assuming no earlier resume attempts"
    try:
        failed = failures(journal.resume_history(event.vm), now - args.within)
    except JournalError as err:   # a journal older than the resume history (not migrated yet)
        return f"no resume history in the journal ({err})"
    head = f"{len(failed)} failed attempt(s) of {event.vm} within {format_duration(args.within)}"
    if len(failed) >= args.attempts:
        return f"{head} (limit {args.attempts}): would give up (REACTOR_RESUME_GAVE_UP), the VM stays paused"
    if not failed:
        return f"{head}: the first attempt would start after settle ({format_duration(args.settle)})"
    wait = failed[-1].ended + backoff_delay(args, len(failed)) - now
    last = failed[-1].error or failed[-1].outcome
    return (f"{head} (limit {args.attempts}; last: {last}): "
            + (f"would back off {format_duration(math.ceil(wait))} first" if wait > 0 else "backoff over"))


def _throttle(rule: Rule, event: Event, journal: Journal | None, now: float) -> tuple[str | None, bool]:
    t = rule.throttle
    if t is None:
        return None, True
    key = t.key(event.vm, event.data, event.host)
    window = f"{t.max} per {format_duration(t.within)} per {'+'.join(t.per)} (key {key!r})"
    if journal is None:
        return f"{window}; no journal given: assuming no earlier runs", True
    stamps = journal.load_throttle(now - t.within).get((rule.name, key), [])
    used = len([s for s in stamps if s > now - t.within])
    if used < t.max:
        return f"{window}: {used} used, this run would be #{used + 1}", True
    oldest = min(stamps)
    return (f"{window}: all {used} used; would be throttled (a slot frees in "
            f"{format_duration(math.ceil(oldest + t.within - now))})"), False


def _mode(rule: Rule, event: Event, journal: Journal | None) -> tuple[str, bool]:
    if journal is None:
        return f"{rule.mode}: no journal given: assuming no run in progress", False
    active = journal.runs(rule=rule.name, vm=event.vm, status="running", limit=rule.max_parallel + 1,
                          with_steps=False)
    if not active:
        return f"{rule.mode}: no run of this rule for {event.vm} in progress", False
    ids = ", ".join(str(r.id) for r in active)
    what = {
        "single": "the new match would be dropped",
        "queued": f"the new match would be queued (up to {rule.max_queued})",
        "parallel": (f"would run alongside (max {rule.max_parallel})" if len(active) < rule.max_parallel
                     else f"would be dropped: {rule.max_parallel} runs already"),
        "restart": "the running one would be cancelled and a new run started",
    }[rule.mode]
    return f"{rule.mode}: run {ids} in progress; {what}", rule.mode == "single" or (
        rule.mode == "parallel" and len(active) >= rule.max_parallel)


_WORDS = {"run": "MATCH: would run", "queued": "MATCH: would be queued", "throttled": "MATCH: throttled",
          "dropped": "MATCH: dropped (mode)", "counted": "MATCH: counted toward its threshold", "no-match": "no match",
          "disabled": "disabled", "pending": "MATCH: held pending (unless)",
          "below-count": "MATCH: counted (runs when the count is reached)",
          "duplicate": "MATCH: dropped (a match is already pending)",
          "correlates": "correlates (the rule's after/unless names this event)"}


def format_verdicts(event: Event, verdicts: list[Verdict]) -> str:
    """The human form ``reactor explain`` prints."""
    lines = [f"{event.name} from {event.vm}: {len(verdicts)} rule{'s' if len(verdicts) != 1 else ''} listen"]
    if event.problems:
        lines.append("  (the event does not fit its schema: " + "; ".join(event.problems) + ")")
    for v in verdicts:
        head = f"  {v.rule} ({v.position}): {_WORDS[v.outcome]}"
        if v.failed:
            head += f" — {v.failed} failed"
        lines.append(head)
        lines.extend(f"      {r}" for r in v.reasons)
        lines.extend(f"      {c}" for c in v.correlation)
        if v.throttle:
            lines.append(f"      throttle: {v.throttle}")
        if v.threshold:
            lines.append(f"      threshold: {v.threshold}")
        if v.mode:
            lines.append(f"      mode {v.mode}")
        if v.resume:
            lines.append(f"      resume: {v.resume}")
    return "\n".join(lines)
