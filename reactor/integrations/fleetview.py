"""The fleet as a central reactor sees it: hosts' presence, VMs' last state, and event dedupe.

Every host's reactor publishes (see ``docs/fleet.md``), through its local
broker bridged to the core broker:

* ``<prefix>/<host>/status``: ``online``/``offline``, retained, with ``offline``
  as the last will (the event mirror of ``reactor.integrations.mqtt``);
* ``<prefix>-bridge/<host>``: ``1``/``0``, retained, the host broker's bridge
  notification (its last will on the core broker is ``0``: a host cut off from
  the core shows as unreachable even though its reactor still runs).  It lies
  outside ``<prefix>/#`` on purpose: the local copy of the notification (``0``
  while disconnected) would otherwise be forwarded by ``topic <prefix>/# out``
  after the reconnect's ``1`` and overwrite it;
* ``<prefix>/<host>/<vm>/status``: the VM's run state, retained.

:class:`FleetView` folds those messages into one picture
(:meth:`FleetView.snapshot`, the data of ``/api/fleet`` and
``reactor fleet status``).  :class:`Dedupe` remembers, per host and VM, the
ids of recent events so that duplicates (QoS 1 redeliveries after lost
acknowledgements, which carry no DUP flag once a broker forwards them) are
dropped.  :class:`Lag` keeps a histogram of how late events arrive (the
fleet's delivery latency).  :func:`fetch_status` reads the retained topics
straight from a broker, for the command line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import time
from typing import Any

from reactor.integrations.mqttclient import MqttClient
from reactor.model.event import Event

__all__ = ["LAG_BOUNDS_MS", "Dedupe", "FleetView", "Lag", "fetch_status", "format_status"]

#: Event ids remembered per host/VM.
DEDUPE_PER_VM = 4096
#: Host/VM pairs remembered by :class:`Dedupe` (least recently seen forgotten first).
DEDUPE_VMS = 100_000

#: Upper bounds (ms) of :class:`Lag`'s buckets: 10 per decade from 0.1 ms to 100 s, then one open bucket.
LAG_BOUNDS_MS: tuple[float, ...] = tuple(10 ** (k / 10) for k in range(-10, 51))


class Lag:
    """How late events arrive: a histogram of (arrival - the event's timestamp) in milliseconds.

    Ten buckets per decade (a quantile is the upper bound of its bucket, at
    most 26 % above the true value).  Events from other hosts: it measures
    their clocks against this one too (NTP), as request expiries do.
    """

    __slots__ = ("counts", "max_ms", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BOUNDS_MS) + 1)
        self.max_ms = 0.0
        self.n = 0

    def add(self, ms: float) -> None:
        self.n += 1
        if ms > self.max_ms:
            self.max_ms = ms
        k = math.ceil(10 * math.log10(ms)) + 10 if ms > 0.1 else 0
        self.counts[k if k < len(LAG_BOUNDS_MS) else len(LAG_BOUNDS_MS)] += 1

    def quantile(self, q: float, counts: list[int] | None = None) -> float:
        """The ``q`` quantile (0..1) in ms, as its bucket's upper bound (0 without events)."""
        counts = self.counts if counts is None else counts
        total = sum(counts)
        if not total:
            return 0.0
        want = q * total
        seen = 0
        for k, c in enumerate(counts):
            seen += c
            if c and seen >= want:
                return min(LAG_BOUNDS_MS[k], self.max_ms) if k < len(LAG_BOUNDS_MS) else self.max_ms
        return self.max_ms

    def summary(self) -> dict[str, Any]:
        """``{n, p50, p99, max}`` (ms) and ``buckets``: {upper bound in ms: count} for the non-empty ones."""
        buckets = {(f"{LAG_BOUNDS_MS[k]:.4g}" if k < len(LAG_BOUNDS_MS) else "inf"): c
                   for k, c in enumerate(self.counts) if c}  # fmt: skip
        return {"n": self.n, "p50": round(self.quantile(0.5), 3), "p99": round(self.quantile(0.99), 3),
                "max": round(self.max_ms, 3), "buckets": buckets}  # fmt: skip


class Dedupe:
    """Bounded LRU memory of event ids, per host and VM.

    The key of an event is ``(seq, timestamp)``: the sequence alone restarts
    at 1 when a host's reactor restarts, while a redelivered message carries
    both unchanged.
    """

    def __init__(self, per_vm: int = DEDUPE_PER_VM, vms: int = DEDUPE_VMS) -> None:
        self.per_vm = per_vm
        self.vms = vms
        self._seen: collections.OrderedDict[tuple[str | None, str], collections.OrderedDict[tuple[Any, ...], None]]
        self._seen = collections.OrderedDict()
        self.duplicates = 0
        self.accepted = 0

    def seen(self, ev: Event) -> bool:
        """True when ``ev`` was seen before (a duplicate); else remember it and return False."""
        key = (ev.host, ev.vm)
        ids = self._seen.get(key)
        if ids is None:
            ids = self._seen[key] = collections.OrderedDict()
            if len(self._seen) > self.vms:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        eid = (ev.seq, ev.timestamp) if ev.seq else (ev.name, ev.timestamp)
        if eid in ids:
            ids.move_to_end(eid)
            self.duplicates += 1
            return True
        ids[eid] = None
        if len(ids) > self.per_vm:
            ids.popitem(last=False)
        self.accepted += 1
        return False


class FleetView:
    """Hosts' presence and VMs' last state, from the retained status topics."""

    def __init__(self, prefix: str = "reactor") -> None:
        self.prefix = prefix
        self.hosts: dict[str, dict[str, Any]] = {}

    def _host(self, host: str) -> dict[str, Any]:
        h = self.hosts.get(host)
        if h is None:
            h = self.hosts[host] = {"reactor": None, "bridge": None, "since": None, "last_event": None,
                                    "events": 0, "vms": {}}
        return h

    def handle(self, topic: str, payload: bytes, now: float | None = None) -> bool:
        """Fold a status message in; False when ``topic`` is not a status topic of ``prefix``."""
        text = payload.decode("utf-8", "replace").strip()
        now = time.time() if now is None else now
        bridge = f"{self.prefix}-bridge/"
        if topic.startswith(bridge) and "/" not in topic[len(bridge):]:
            h = self._host(topic[len(bridge):])
            value = {"1": "connected", "0": "disconnected"}.get(text, text)
            if h["bridge"] != value:
                h["bridge"] = value
                h["since"] = now
            return True
        parts = topic.split("/")
        base = self.prefix.split("/")
        n = len(base)
        if parts[:n] != base:
            return False
        rest = parts[n:]
        if len(rest) == 2 and rest[1] == "status":
            h = self._host(rest[0])
            if h["reactor"] != text:
                h["reactor"] = text
                h["since"] = now
            return True
        if len(rest) == 3 and rest[2] == "status":
            vms = self._host(rest[0])["vms"]
            vm = vms.get(rest[1])
            if not text:  # a retained message cleared
                vms.pop(rest[1], None)
            elif vm is None or vm["status"] != text:
                vms[rest[1]] = {"status": text, "since": now}
            return True
        return False

    def on_event(self, ev: Event) -> None:
        """An event arrived from a host: note when."""
        if ev.host is None:
            return
        h = self._host(ev.host)
        h["last_event"] = ev.timestamp
        h["events"] += 1

    def online(self, host: str) -> bool:
        """The host's reactor says ``online`` and its bridge (when reported) is connected."""
        h = self.hosts.get(host)
        return bool(h and h["reactor"] == "online" and h["bridge"] in (None, "connected"))

    def vm_status(self, host: str, vm: str) -> str:
        h = self.hosts.get(host)
        entry = h["vms"].get(vm) if h else None
        return str(entry["status"]) if entry else "unknown"

    def snapshot(self) -> dict[str, Any]:
        """``{"hosts": {HOST: {online, reactor, bridge, since, last_event, events, vms: {VM: {status, since}}}}}``."""
        hosts: dict[str, Any] = {}
        for name in sorted(self.hosts):
            h = self.hosts[name]
            hosts[name] = {**h, "online": self.online(name), "vms": dict(sorted(h["vms"].items()))}
        return {"prefix": self.prefix, "hosts": hosts}


def format_status(snapshot: dict[str, Any]) -> str:
    """``reactor fleet status``: one line per host, then one per VM."""
    lines: list[str] = []
    hosts = snapshot.get("hosts", {})
    if not hosts:
        return f"no hosts seen under prefix {snapshot.get('prefix', 'reactor')!r}\n"
    for name, h in hosts.items():
        state = "online" if h["online"] else "OFFLINE"
        vms = h["vms"]
        by: collections.Counter[str] = collections.Counter(v["status"] for v in vms.values())
        summary = ", ".join(f"{n} {s}" for s, n in sorted(by.items())) or "no VMs"
        lines.append(f"{name:<20} {state:<8} reactor={h['reactor'] or '?'} bridge={h['bridge'] or '?'}  "
                     f"{len(vms)} VMs: {summary}")
        for vm, v in vms.items():
            lines.append(f"  {vm:<30} {v['status']}")
    return "\n".join(lines) + "\n"


async def fetch_status(
    host: str, port: int = 1883, *, prefix: str = "reactor", wait: float = 1.0,
    username: str | None = None, password: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Read the retained status topics from a broker for ``wait`` seconds; the :meth:`FleetView.snapshot`."""
    view = FleetView(prefix)
    client = MqttClient(host, port, client_id=f"reactor-status-{os.getpid()}", username=username, password=password,
                        on_message=view.handle, name="status")
    async with client:
        await client.subscribe([(f"{prefix}/+/status", 0), (f"{prefix}-bridge/+", 0), (f"{prefix}/+/+/status", 0)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await client.wait_closed()
    return view.snapshot()
