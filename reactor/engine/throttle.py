"""Throttle windows: at most N runs of a rule per key within a sliding window.

State is in memory for speed and written through to the journal so that a
restart does not reset a window (a rule allowing 3 ``cont`` per hour does not
send a 4th because the daemon restarted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from reactor.rules.rule import Throttle

__all__ = ["Throttles"]


class Throttles:
    def __init__(self, persist: Callable[[str, str, float], None] | None = None) -> None:
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._persist = persist

    def load(self, state: Mapping[tuple[str, str], list[float]]) -> None:
        for key, stamps in state.items():
            self._windows[key] = deque(sorted(stamps))

    def allow(self, rule: str, throttle: Throttle, key: str, now: float) -> bool:
        """Count a run at ``now`` if the window has room; False (not counted) when throttled."""
        window = self._windows.get((rule, key))
        if window is None:
            window = self._windows[(rule, key)] = deque()
        horizon = now - throttle.within
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= throttle.max:
            return False
        window.append(now)
        if self._persist is not None:
            self._persist(rule, key, now)
        return True

    def keep_only(self, rules: set[str]) -> None:
        """Forget windows of rules that no longer exist (after a reload)."""
        for key in [k for k in self._windows if k[0] not in rules]:
            del self._windows[key]
