"""The rule model: frozen, slotted dataclasses that keep their source positions.

Produced only by :mod:`reactor.rules.loader`; the engine reads them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reactor.actions.action import ActionSpec, Steps
from reactor.errors import Position
from reactor.model.duration import format_duration
from reactor.rules.arguments import Arguments
from reactor.rules.template import Expression

__all__ = ["Correlation", "Mode", "Retry", "Rule", "RuleSet", "Step", "Threshold", "Throttle", "VMSelector",
           "event_key"]

Mode = Literal["single", "queued", "parallel", "restart"]
Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int
    backoff: float
    max_backoff: float

    def delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (attempt counts from 1)."""
        return float(min(self.backoff * (2 ** (attempt - 1)), self.max_backoff))


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    action: ActionSpec
    args: Arguments
    pos: Position
    timeout: float | None = None
    retry: Retry | None = None
    on_error: Literal["stop", "continue"] = "stop"
    register: str | None = None
    when: Expression | None = None

    @property
    def name(self) -> str:
        return self.action.name

    def describe(self) -> dict[str, Any]:
        """The step as written (``{action: arguments}``), for journals and pages."""
        return {self.action.name: self.args.raw}

    def walk(self) -> tuple[Step, ...]:
        """This step and every step nested in its arguments (a :class:`Steps` argument), depth first."""
        out: list[Step] = [self]
        for value in self.args.fields.values():
            if isinstance(value, Steps):
                for sub in value:
                    out.extend(sub.walk())
        return tuple(out)


def event_key(keys: tuple[str, ...], vm: str, data: Mapping[str, Any], host: str | None = None,
              sep: str = "|") -> str:
    """The values of ``keys`` ("vm", "host" or "data.<path>") for one event, joined by ``sep``."""
    parts = []
    for p in keys:
        if p == "vm":
            parts.append(vm)
        elif p == "host":
            parts.append(host or "")
        else:
            value: Any = data
            for seg in p[5:].split("."):
                value = value.get(seg) if isinstance(value, Mapping) else None
            parts.append("" if value is None else str(value))
    return sep.join(parts)


@dataclass(frozen=True, slots=True)
class Throttle:
    max: int
    within: float
    per: tuple[str, ...]   # "vm", "host" or "data.<path>"

    def key(self, vm: str, data: Mapping[str, Any], host: str | None = None) -> str:
        return event_key(self.per, vm, data, host)


@dataclass(frozen=True, slots=True)
class Threshold:
    """Run only once ``count`` distinct matches (by ``distinct``) fell within ``within`` (per ``per`` group).

    An extension of the rule language (RULES.md has no counting): "more than 5 VMs
    on different hosts paused within a minute" is ``{count: 6, within: 1m,
    distinct: [host, vm]}``.
    """

    count: int
    within: float
    distinct: tuple[str, ...]   # "vm", "host" or "data.<path>"; default (host, vm)
    per: tuple[str, ...] = ()   # groups counted apart; default: one count for the rule


@dataclass(frozen=True, slots=True)
class Correlation:
    """One correlation over time of a rule: ``after`` (sequence), ``count`` or ``unless`` (absence).

    ``after``/``unless`` name other ``events`` (with an optional ``match`` on their
    data); ``count`` counts the rule's own matches up to ``min``.  Keys (``per``)
    are as in :class:`Throttle`.  Windows are half-open: an event exactly
    ``within`` seconds away is outside (as for ``throttle`` and ``threshold``).
    """

    form: Literal["after", "count", "unless"]
    within: float
    per: tuple[str, ...] = ("vm",)
    events: frozenset[str] = frozenset()
    match: Predicate | None = field(default=None, compare=False, repr=False)
    #: the `match` mapping as written (what equality and the signature compare)
    match_source: Any = None
    min: int = 0
    pos: Position | None = field(default=None, compare=False)
    #: per is the default [vm]: the key is the VM name (the common case, without event_key)
    by_vm: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_vm", self.per == ("vm",))

    def key(self, vm: str, data: Mapping[str, Any], host: str | None = None) -> str:
        return vm if self.by_vm else event_key(self.per, vm, data, host)

    @property
    def signature(self) -> str:
        """A short digest of what the correlation means (its state is kept across reloads while it holds)."""
        text = repr((self.form, self.within, self.per, sorted(self.events), self.match_source, self.min))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]

    def describe(self) -> str:
        """The correlation in words, for ``explain``, the API and the log."""
        per = "+".join(self.per)
        if self.form == "count":
            return f"count: the {self.min}th match of the same {per} within {format_duration(self.within)}"
        names = "/".join(sorted(self.events))
        cond = f" matching {self.match_source!r}" if self.match_source else ""
        if self.form == "after":
            return f"after: a {names}{cond} of the same {per} in the {format_duration(self.within)} before"
        return f"unless: held {format_duration(self.within)}, cancelled by a {names}{cond} of the same {per}"


@dataclass(frozen=True, slots=True)
class VMSelector:
    names: tuple[str, ...] = ()                 # globs; empty: any name
    labels: Mapping[str, str] = None  # type: ignore[assignment]
    #: the name globs compiled into one pattern
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.names and self.pattern is None:
            rx = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in self.names))
            object.__setattr__(self, "pattern", rx)

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.pattern is not None and self.pattern.match(name) is None:
            return False
        if self.labels:
            for k, v in self.labels.items():
                got = labels.get(k)
                if got is None or not fnmatch.fnmatchcase(str(got), v):
                    return False
        return True

    def literal_names(self) -> tuple[str, ...] | None:
        """The names when every one is a plain name (no glob characters) and no labels."""
        if not self.names or self.labels or any(set(g) & set("*?[") for g in self.names):
            return None
        return self.names


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pos: Position
    on: frozenset[str] | None          # None: "*"
    steps: tuple[Step, ...]
    description: str = ""
    vms: VMSelector | None = None
    match: Predicate | None = None
    #: top-level `field: literal` equalities of `match`, for the matcher's index
    literals: Mapping[str, tuple[Any, ...]] = None  # type: ignore[assignment]
    #: the `match` mapping as written, for `explain` and the traces page
    match_source: Any = None
    condition: Expression | None = None
    throttle: Throttle | None = None
    threshold: Threshold | None = None
    after: Correlation | None = None
    count: Correlation | None = None
    unless: Correlation | None = None
    mode: Mode = "single"
    max_queued: int = 10
    max_parallel: int = 10
    enabled: bool = True
    index: int = 0                      # order of definition across files
    #: has after, count or unless (one attribute for the engine's dispatch to test)
    correlated: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "correlated",
                           self.after is not None or self.count is not None or self.unless is not None)

    def __repr__(self) -> str:
        return f"<Rule {self.name} @ {self.pos}>"

    @property
    def correlations(self) -> tuple[Correlation, ...]:
        """``after``, ``count``, ``unless`` (those the rule has), in the engine's order of evaluation."""
        return tuple(c for c in (self.after, self.count, self.unless) if c is not None)

    @property
    def correlation_signature(self) -> str:
        """Digest of the rule's correlations ("" without any): state survives a reload while it is unchanged."""
        return "+".join(c.signature for c in self.correlations)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules as loaded, in definition order, plus the names rules emit."""

    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()       # files read
    emitted: frozenset[str] = frozenset()

    def get(self, name: str) -> Rule | None:
        for r in self.rules:
            if r.name == name:
                return r
        return None

    def __len__(self) -> int:
        return len(self.rules)
