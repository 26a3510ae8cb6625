"""libvirt-managed VMs: an event source, VM handles and actions through libvirt.

Install with ``pip install 'reactor[libvirt]'`` (libvirt-python, which builds
against libvirt's C library).  Configured with a ``libvirt:`` section
(:func:`parse_libvirt`); see docs/libvirt.md.  Nothing here imports
libvirt-python until a connection is opened, so config parsing, the catalog
and ``reactor check`` work without it.

* :mod:`.config` — the ``libvirt:`` section;
* :mod:`.catalog` — ``LIBVIRT_*`` event schemas, :func:`with_libvirt_events`;
* :mod:`.loop` — libvirt's event loop thread;
* :mod:`.source` — :class:`LibvirtSource` (``async run(emit)``);
* :mod:`.domain` — :class:`LibvirtVM` (a ``VMHandle``: QMP commands as libvirt calls);
* :mod:`.hub` — :class:`LibvirtHub`, the daemon resource;
* :mod:`.actions` — ``libvirt_qmp`` and ``libvirt_snapshot``.
"""

from .actions import LIBVIRT_ACTIONS, LIBVIRT_QMP, LIBVIRT_SNAPSHOT
from .catalog import LIBVIRT_EVENTS, with_libvirt_events
from .config import DEFAULT_URI, LibvirtConfig, parse_libvirt
from .domain import MAPPED_COMMANDS, LibvirtVM
from .hub import LibvirtHub
from .source import LibvirtConnectionError, LibvirtSource, LinkState

__all__ = [
    "DEFAULT_URI",
    "LIBVIRT_ACTIONS",
    "LIBVIRT_EVENTS",
    "LIBVIRT_QMP",
    "LIBVIRT_SNAPSHOT",
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
