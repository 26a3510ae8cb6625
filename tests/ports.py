"""Free loopback ports for the servers tests start (mosquitto, the HTTP listener).

A port taken with ``bind(0)`` comes from the kernel's ephemeral range, the same
range every outgoing connection of the run draws its local port from; between
closing the probe socket and the server binding it, a client connection can take
it ("Address already in use").  Ports are therefore picked below that range.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port that is free now and outside the ephemeral range (when one is found)."""
    top = max(_ephemeral_low(), 12000)
    for _ in range(200):
        port = random.randrange(10000, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
