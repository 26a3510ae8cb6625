"""libvirt-managed VMs: an event source, VM handles and actions through libvirt.

Install with ``pip install 'reactor[libvirt]'`` (libvirt-python, which builds
against libvirt's C library).  Configured with a ``libvirt:`` section
(:func:`parse_libvirt`); see docs/libvirt.md.  Nothing here imports
libvirt-python until a connection is opened, so config parsing, the catalog
and ``reactor check`` work without it.

* :mod:`.config` — the ``libvirt:`` section;
* :mod:`reactor.model.catalog.libvirt` — ``LIBVIRT_*`` event schemas, :func:`with_libvirt_events`;
* :mod:`.loop` — libvirt's event loop thread;
* :mod:`.source` — :class:`LibvirtSource` (``async run(emit)``);
* :mod:`.domain` — :class:`LibvirtVM` (a ``VMHandle``: QMP commands as libvirt calls);
* :mod:`.hub` — :class:`LibvirtHub`, the daemon resource;
* :mod:`reactor.actions.libvirt_qmp` — the ``libvirt_qmp`` and ``libvirt_snapshot`` actions.
"""

from reactor.model.catalog.libvirt import LIBVIRT_EVENTS, with_libvirt_events
from reactor.sources.libvirt.config import DEFAULT_URI, LibvirtConfig, parse_libvirt
from reactor.sources.libvirt.domain import MAPPED_COMMANDS, LibvirtVM
from reactor.sources.libvirt.hub import LibvirtHub
from reactor.sources.libvirt.source import LibvirtConnectionError, LibvirtSource, LinkState

__all__ = [
    "DEFAULT_URI",
    "LIBVIRT_EVENTS",
    "LibvirtConfig",
    "LibvirtConnectionError",
    "LibvirtHub",
    "LibvirtSource",
    "LibvirtVM",
    "LinkState",
    "MAPPED_COMMANDS",
    "parse_libvirt",
    "with_libvirt_events",
]
