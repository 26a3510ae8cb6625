"""Events as reactor sees them: a QMP event plus the VM (and host) it came from.

Every event on the bus is an :class:`Event`.  Events named in the catalog are
instances of a generated subclass (``reactor.model.catalog.events.BlockIoError`` ...) whose
properties give typed access to the fields (dashes become underscores), while
``data`` keeps QMP's own names.  Events the catalog does not know (a newer
QEMU) are plain :class:`Event` objects: delivered, never an error.  An event
whose data does not fit its schema is still delivered, with ``problems``
saying what did not fit.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
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
        # The slots' own setters (bound below the class): __setattr__ refuses every write.
        _set_name(self, name)
        _set_data(self, {} if data is None else data)
        _set_timestamp(self, timestamp)
        _set_vm(self, vm)
        _set_host(self, host)
        _set_seq(self, seq)
        _set_problems(self, problems)

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


# Each slot's member descriptor ``__set__``, captured once: the hot path makes an
# event per QMP event, and a direct descriptor call costs about half of
# ``object.__setattr__(self, "name", value)`` (which looks the attribute up first).
_Setter = Callable[[Event, Any], None]
_set_name: _Setter
_set_data: _Setter
_set_timestamp: _Setter
_set_vm: _Setter
_set_host: _Setter
_set_seq: _Setter
_set_problems: _Setter
(_set_name, _set_data, _set_timestamp, _set_vm, _set_host, _set_seq, _set_problems) = (
    Event.__dict__[slot].__set__ for slot in Event.__slots__
)
