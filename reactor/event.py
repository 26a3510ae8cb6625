"""Events as reactor sees them: a QMP event plus the VM (and host) it came from.

Every event on the bus is an :class:`Event`.  Events named in the catalog are
instances of a generated subclass (``reactor.events.BlockIoError`` ...) whose
properties give typed access to the fields (dashes become underscores), while
``data`` keeps QMP's own names.  Events the catalog does not know (a newer
QEMU) are plain :class:`Event` objects: delivered, never an error.  An event
whose data does not fit its schema is still delivered, with ``problems``
saying what did not fit.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Event"]

_UTC = _dt.UTC


class Event:
    """One event.  Immutable: attributes cannot be set after construction.

    ``timestamp`` is seconds since the epoch (QMP's seconds + microseconds);
    ``seq`` is a per-VM sequence number given by the source that produced the
    event (0 when unknown); ``problems`` lists where ``data`` did not fit the
    event's schema (empty when it fits, or when the event is not in the catalog).
    """

    __slots__ = ("name", "data", "timestamp", "vm", "host", "seq", "problems")

    #: The QMP event name a generated subclass stands for (None on the base class).
    NAME: ClassVar[str | None] = None

    name: str
    data: Mapping[str, Any]
    timestamp: float
    vm: str
    host: str | None
    seq: int
    problems: tuple[str, ...]

    def __init__(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        timestamp: float = 0.0,
        vm: str = "vm0",
        host: str | None = None,
        seq: int = 0,
        problems: tuple[str, ...] = (),
    ) -> None:
        s = object.__setattr__
        s(self, "name", name)
        s(self, "data", {} if data is None else data)
        s(self, "timestamp", timestamp)
        s(self, "vm", vm)
        s(self, "host", host)
        s(self, "seq", seq)
        s(self, "problems", problems)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} vm={self.vm!r} data={dict(self.data)!r}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.name == other.name
            and self.data == other.data
            and self.timestamp == other.timestamp
            and self.vm == other.vm
            and self.host == other.host
        )

    def __hash__(self) -> int:
        return hash((self.name, self.timestamp, self.vm, self.host))

    @property
    def valid(self) -> bool:
        """True when ``data`` fits the event's schema (or the event is unknown)."""
        return not self.problems

    @property
    def time(self) -> _dt.datetime:
        """The timestamp as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.timestamp, _UTC)

    @property
    def id(self) -> str:
        """A stable id for deduplication: host/vm/seq (seq 0 falls back to the timestamp)."""
        tail = str(self.seq) if self.seq else f"t{self.timestamp:.6f}"
        return f"{self.host or '-'}/{self.vm}/{tail}"

    def to_qmp(self) -> dict[str, Any]:
        """The event as a QMP object, with ``vm`` (and ``host`` when known) added."""
        secs = int(self.timestamp)
        obj: dict[str, Any] = {
            "event": self.name,
            "data": dict(self.data),
            "timestamp": {"seconds": secs, "microseconds": round((self.timestamp - secs) * 1e6)},
            "vm": self.vm,
        }
        if self.host is not None:
            obj["host"] = self.host
        if self.seq:
            obj["seq"] = self.seq
        return obj
