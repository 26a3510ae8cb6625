"""Threshold windows: a rule runs once N distinct matches fell within a sliding window.

The count is of *distinct* keys (by default host + VM), so one VM repeating its
event counts once; when the count reaches the threshold the rule runs once, for
the event that reached it, and the window starts empty again (the next run
needs N fresh distinct matches).  The state is in memory: a restart starts
counting anew (throttle windows, by contrast, are kept in the journal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reactor.rules.rule import Threshold, event_key

__all__ = ["Crossing", "Thresholds"]


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold reached: the distinct keys counted (oldest first) and the group they were counted in."""

    count: int
    members: tuple[str, ...]
    group: str

    def as_vars(self) -> dict[str, Any]:
        """What a run sees as ``vars.threshold``."""
        return {"count": self.count, "members": list(self.members), "group": self.group}


class Thresholds:
    def __init__(self) -> None:
        # (rule, group) -> member key -> time of its latest match, oldest first
        self._windows: dict[tuple[str, str], dict[str, float]] = {}

    def observe(self, rule: str, threshold: Threshold, vm: str, host: str | None, data: Mapping[str, Any],
                now: float) -> Crossing | None:
        """Count one match at ``now``; the crossing when it completes the threshold (the window is then emptied)."""
        group = event_key(threshold.per, vm, data, host, "/")
        member = event_key(threshold.distinct, vm, data, host, "/")   # "host1/web-7", as remote VMs are named
        window = self._windows.get((rule, group))
        if window is None:
            window = self._windows[(rule, group)] = {}
        horizon = now - threshold.within
        while window:                 # oldest first: stop at the first one still inside
            oldest = next(iter(window))
            if window[oldest] > horizon:
                break
            del window[oldest]
        window.pop(member, None)      # a repeat moves to the end with its new time
        window[member] = now
        if len(window) < threshold.count:
            return None
        members = tuple(window)
        del self._windows[(rule, group)]
        return Crossing(len(members), members, group)

    def pending(self, rule: str, threshold: Threshold, now: float) -> dict[str, int]:
        """Distinct matches counted so far per group (for ``explain`` and the API)."""
        horizon = now - threshold.within
        return {group: sum(1 for t in window.values() if t > horizon)
                for (r, group), window in self._windows.items() if r == rule}

    def keep_only(self, rules: set[str]) -> None:
        """Forget the windows of rules that are gone or have no threshold any more (after a reload)."""
        self._windows = {k: w for k, w in self._windows.items() if k[0] in rules}
