"""libvirt's event loop, run once per process on its own thread.

libvirt-python delivers events only while ``virEventRunDefaultImpl()`` runs,
and ``virEventRegisterDefaultImpl()`` must be called before the first
connection is opened.  :func:`ensure_event_loop` does both, once, and keeps the
loop on a daemon thread (``reactor-libvirt-events``) off the asyncio thread;
callbacks running there hand their work to asyncio with
``loop.call_soon_threadsafe``.  The thread lives as long as the process (libvirt
offers no way to unregister the implementation).

libvirt's default error handler prints every error to stderr; it is replaced
by one that logs at debug level (reactor reports the errors it acts on).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["ensure_event_loop", "import_libvirt"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def import_libvirt() -> tuple[Any, Any]:
    """``(libvirt, libvirt_qemu)``; raises :class:`~reactor.errors.PluginError` when libvirt-python is missing."""
    try:
        import libvirt  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import libvirt_qemu  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as err:
        from reactor.errors import PluginError

        raise PluginError(
            "libvirt support needs libvirt-python: pip install 'reactor[libvirt]' "
            "(it builds against libvirt's C library: apt-get install libvirt-dev pkg-config gcc)"
        ) from err
    return libvirt, libvirt_qemu


def _quiet(_ctx: object, err: Any) -> None:
    log.debug("libvirt: %s", err[2] if isinstance(err, tuple | list) and len(err) > 2 else err)


def _run(libvirt: Any) -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # the boundary: one iteration of libvirt's loop
            log.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start its thread (idempotent)."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt, _ = import_libvirt()
        libvirt.registerErrorHandler(_quiet, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run, args=(libvirt,), name="reactor-libvirt-events", daemon=True)
        thread.start()
        _thread = thread
