"""Typed events for tests, built through the catalog exactly as reactor builds them from QMP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reactor.model.catalog import default_catalog
from reactor.model.event import Event

__all__ = ["make_event", "qmp_time"]


def qmp_time(when: float) -> dict[str, int]:
    """A QMP ``timestamp`` object for ``when`` (seconds since the epoch)."""
    secs = int(when)
    return {"seconds": secs, "microseconds": round((when - secs) * 1_000_000)}


def make_event(name: str, data: Mapping[str, Any] | None = None, *, vm: str = "vm0", at: float = 1000.0,
               host: str | None = None, seq: int = 0) -> Event:
    """The typed event reactor would make for QMP event ``name`` from ``vm`` at time ``at``.

    Events in the catalog are instances of their generated class
    (``reactor.model.catalog.events.BlockIoError`` ...); data that does not fit the schema
    is kept, with ``event.problems`` saying why (assert ``event.valid`` to
    catch typos in tests)::

        ev = make_event("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "stop",
                                           "reason": "No space left on device", "nospace": True})
    """
    obj = {"event": name, "data": dict(data or {}), "timestamp": qmp_time(at)}
    return default_catalog().make_event(obj, vm=vm, host=host, seq=seq)
