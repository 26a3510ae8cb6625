"""Every configured libvirt connection, as one daemon :class:`~reactor.actions.action.Resource`.

The daemon starts a :class:`LibvirtHub` when its config has a ``libvirt:``
section: one :class:`~reactor.sources.libvirt.source.LibvirtSource` per entry, each
run as the named task ``reactor.sources.libvirt[URI]`` in the daemon's TaskGroup,
putting events on the bus with ``daemon.emit``.  :meth:`LibvirtHub.get` finds
a libvirt VM by name (the daemon's VM lookup asks it after its QMP fleet), so
actions on libvirt VMs go through libvirt.  The libvirt actions declare it as
their resource.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from reactor.actions.action import DaemonContext, Resource
from reactor.model.catalog import Catalog, default_catalog
from reactor.model.catalog.libvirt import with_libvirt_events
from reactor.sources.libvirt.config import LibvirtConfig
from reactor.sources.libvirt.domain import LibvirtVM
from reactor.sources.libvirt.source import LibvirtSource

__all__ = ["LibvirtHub"]

log = logging.getLogger(__name__)


class LibvirtHub(Resource):
    """The libvirt sources of one daemon (config ``libvirt:``), and VM lookup across them."""

    def __init__(self, daemon: DaemonContext, *, catalog: Catalog | None = None,
                 configs: Iterable[LibvirtConfig] | None = None) -> None:
        super().__init__(daemon)
        section = daemon.section("libvirt") if configs is None else configs
        self.configs: tuple[LibvirtConfig, ...] = tuple(section or ())
        self.catalog = catalog or with_libvirt_events(default_catalog())
        self.sources: list[LibvirtSource] = [
            LibvirtSource(cfg, make_event=self.catalog.make_event, host=daemon.host) for cfg in self.configs
        ]

    async def start(self) -> None:
        for src in self.sources:
            self.daemon.start_task(src.run(self.daemon.emit), name=f"reactor.sources.libvirt[{src.uri}]")

    async def aclose(self) -> None:
        for src in self.sources:
            await src.aclose()

    def get(self, name: str) -> LibvirtVM | None:
        """The libvirt VM called ``name`` (the first source that watches one), or None."""
        for src in self.sources:
            vm = src.get(name)
            if vm is not None:
                return vm
        return None

    def __iter__(self) -> Iterator[LibvirtVM]:
        for src in self.sources:
            yield from src
