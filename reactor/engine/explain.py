"""``reactor explain``: for one event, every rule that listens to it and why it would (not) run.

For each rule whose ``on`` names the event (or is ``"*"``), in definition
order, the checks the engine makes, in the engine's order: ``enabled``,
``vms``, each ``match`` entry (the ones that fail, with the event's values),
``if`` (its value, or the error that counts as no match), then — for a rule
that matches — what ``throttle`` and ``mode`` would do given the journal:
how many runs the throttle window already holds for this key, whether a
run of the rule for this VM is in progress, and for a rule with a ``resume``
step the VM's failed resume attempts in the journal (the next backoff, or that
it would give up).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from reactor.engine.engine import StaticVM, status_after
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
    ``throttled``, ``dropped`` (mode), ``counted`` (toward a ``threshold``;
    the count itself lives in the daemon's memory), ``no-match`` or ``disabled``.
    ``failed`` names the first check that failed (``enabled``, ``vms``,
    ``match``, ``if``) and ``reasons`` says how, with values.
    """

    rule: str
    position: str
    outcome: str
    failed: str | None = None
    reasons: tuple[str, ...] = ()
    throttle: str | None = None
    mode: str | None = None
    threshold: str | None = None
    resume: str | None = None

    @property
    def matched(self) -> bool:
        return self.failed is None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["matched"] = self.matched
        return out


def _listens(rule: Rule, name: str) -> bool:
    return rule.on is None or name in rule.on


def explain(event: Event, rules: RuleSet, *, labels: Mapping[str, str] | None = None, status: str = "running",
            journal: Journal | None = None, now: float | None = None) -> list[Verdict]:
    """A :class:`Verdict` for every rule listening to ``event``, in definition order."""
    now = time.time() if now is None else now
    vm = StaticVM(event.vm, labels or {}, status_after(event, status))
    out: list[Verdict] = []
    for rule in sorted((r for r in rules.rules if _listens(r, event.name)), key=lambda r: r.index):
        out.append(_one(rule, event, vm, journal, now))
    return out


def _one(rule: Rule, event: Event, vm: StaticVM, journal: Journal | None, now: float) -> Verdict:
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
    if rule.threshold is not None:
        t = rule.threshold
        return Verdict(rule.name, pos, "counted", threshold=(
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
    return Verdict(rule.name, pos, outcome, None, (), throttle, mode, resume=_resume(rule, event, journal, now))


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
          "disabled": "disabled"}


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
        if v.throttle:
            lines.append(f"      throttle: {v.throttle}")
        if v.threshold:
            lines.append(f"      threshold: {v.threshold}")
        if v.mode:
            lines.append(f"      mode {v.mode}")
        if v.resume:
            lines.append(f"      resume: {v.resume}")
    return "\n".join(lines)
