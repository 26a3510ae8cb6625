"""systemd's notify protocol (``Type=notify``), spoken directly on ``$NOTIFY_SOCKET``.

The daemon says ``READY=1`` once its rules are loaded and its connections
started, ``RELOADING=1`` … ``READY=1`` around a reload, ``STOPPING=1`` when it
begins to stop, and ``STATUS=…`` lines for ``systemctl status``.  When the
unit sets ``WatchdogSec=``, systemd passes ``$WATCHDOG_USEC`` and
:meth:`Notifier.watchdog` sends ``WATCHDOG=1`` at half that interval — from
the event loop itself, so a loop that is blocked stops the keep-alives and
systemd restarts the daemon.  The same task measures the loop's lag and logs
when a tick comes late.

No dependency: a message is one datagram on an ``AF_UNIX``/``SOCK_DGRAM``
socket; a path starting with ``@`` is in the abstract namespace.  Without
``$NOTIFY_SOCKET`` every call does nothing.  A send that fails is logged once
and never raised: the daemon must not stop because systemd went away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between keep-alives (half of ``$WATCHDOG_USEC``), or None when no watchdog applies to us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends sd_notify messages; a no-op without a notify socket.

    ``Notifier()`` reads ``$NOTIFY_SOCKET`` (and ``$WATCHDOG_USEC``); tests
    pass ``address`` and ``watchdog`` explicitly.
    """

    def __init__(self, address: str | None = None, *, watchdog: float | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self.address: str | None = addr
        self.watchdog_interval: float | None = watchdog if watchdog is not None else (
            watchdog_interval(env) if addr else None)
        #: Seconds the loop was late on the last watchdog tick, and the worst seen.
        self.lag = 0.0
        self.max_lag = 0.0
        self.sent = 0
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False when nothing was sent."""
        if self.address is None:
            return False
        msg = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(msg, self._target())
        except OSError as err:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, err)
                self._warned = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload)
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    async def watchdog(self, *, lag_warning: float = 1.0) -> None:
        """Send ``WATCHDOG=1`` every interval, from the loop; log when the loop lags (runs until cancelled)."""
        interval = self.watchdog_interval
        if interval is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.lag = max(0.0, loop.time() - due)
            if self.lag > self.max_lag:
                self.max_lag = self.lag
            if self.lag > lag_warning:
                log.warning("event loop lagged %.2fs behind (watchdog every %.2fs)", self.lag, interval)
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
