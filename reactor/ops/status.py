"""What the HTTP listener reads of a running daemon: a narrow, read-only :class:`DaemonStatus`.

The daemon (:class:`reactor.daemon.daemon.Daemon`) satisfies it structurally and
hands itself to :class:`reactor.ops.http.HttpServer`; the listener never imports
the daemon module, so the arrows point from the daemon down to ``ops``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from reactor.actions.action import DaemonContext, Resource
from reactor.engine.engine import Engine
from reactor.sources.fleet import Fleet

__all__ = ["DaemonStatus", "ReloadOutcome"]


class ReloadOutcome(Protocol):
    """The last reload, as ``/api/status`` shows it (a :class:`reactor.daemon.reload.ReloadResult`)."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def errors(self) -> tuple[str, ...]: ...


class DaemonStatus(DaemonContext, Protocol):
    """The daemon as its HTTP API sees it: the context every resource gets, plus the state to report."""

    @property
    def engine(self) -> Engine | None:
        """The running engine (None before the rules are loaded)."""

    @property
    def fleet(self) -> Fleet | None:
        """The QMP VMs (None before they are started)."""

    @property
    def resources(self) -> Mapping[type[Resource], Resource]:
        """The started resources, by class (the fleet link, the MQTT hub ...)."""

    @property
    def ready(self) -> asyncio.Event:
        """Set once the daemon has started."""

    @property
    def reloads(self) -> int: ...

    @property
    def last_reload(self) -> ReloadOutcome | None: ...
