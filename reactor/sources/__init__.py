"""Event sources: the plugin API for sources (:mod:`.runner`), QMP, libvirt and VM discovery.

``reactor.sources`` keeps the names plugin authors import (``source``, ``SourceSpec``, ...).
"""

from reactor.sources.runner import (
    DEFAULT_SOURCE_VM,
    TIMER,
    BoundSource,
    CronSchedule,
    SourceContext,
    SourceEntry,
    SourceRegistry,
    SourceRunner,
    SourceSpec,
    TimerConfig,
    builtin_sources,
    parse_sources,
    source,
)

__all__ = [
    "BoundSource",
    "CronSchedule",
    "DEFAULT_SOURCE_VM",
    "SourceContext",
    "SourceEntry",
    "SourceRegistry",
    "SourceRunner",
    "SourceSpec",
    "TIMER",
    "TimerConfig",
    "builtin_sources",
    "parse_sources",
    "source",
]
