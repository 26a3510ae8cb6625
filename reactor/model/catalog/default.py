"""The catalog the daemon, the rule loader and the CLI use: QEMU's events, reactor's own and libvirt's.

It sits above :mod:`~reactor.model.catalog.catalog` (the :class:`Catalog` type) and
:mod:`~reactor.model.catalog.libvirt` (libvirt's typed events), so neither imports the other's user.
"""

from __future__ import annotations

import functools

import orjson

from reactor.errors import CatalogError
from reactor.model.catalog.builtin import BUILTIN_EVENTS
from reactor.model.catalog.catalog import EVENTS_JSON, Catalog
from reactor.model.catalog.libvirt import with_libvirt_events
from reactor.model.catalog.schema import event_from_json

__all__ = ["default_catalog"]


@functools.cache
def default_catalog() -> Catalog:
    """QEMU's events (every supported version) plus reactor's own and libvirt's; loaded once."""
    try:
        raw = orjson.loads(EVENTS_JSON.read_bytes())
        events = {n: event_from_json(n, e) for n, e in raw["events"].items()}
        versions = tuple(raw["qemu_versions"])
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError) as err:
        raise CatalogError(f"{EVENTS_JSON}: cannot load the event catalog: {err}") from err
    events.update(BUILTIN_EVENTS)
    # libvirt's typed events are in every catalog, so libvirt rules load anywhere
    return with_libvirt_events(Catalog(events, qemu_versions=versions))
