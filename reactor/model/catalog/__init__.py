"""The typed QMP event catalog (QEMU 7.2 and 10.2, plus reactor's own events).

``default_catalog()`` is the catalog the daemon, the rule loader and the CLI
use; ``reactor.model.catalog.events`` has one typed class per event.  Regenerate the data with
``python -m reactor.model.catalog.generate`` (see docs/catalog.md).
"""

from reactor.model.catalog.builtin import BUILTIN_EVENTS, RUN_STATES
from reactor.model.catalog.catalog import EVENTS_JSON, Catalog, CatalogStats
from reactor.model.catalog.default import default_catalog
from reactor.model.catalog.schema import EventSchema, FieldSpec, TypeSpec

__all__ = [
    "BUILTIN_EVENTS",
    "Catalog",
    "CatalogStats",
    "EVENTS_JSON",
    "EventSchema",
    "FieldSpec",
    "RUN_STATES",
    "TypeSpec",
    "default_catalog",
]
