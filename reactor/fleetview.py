"""The fleet as a central reactor sees it: hosts' presence, VMs' last state, and event dedupe.

Every host's reactor publishes (see ``docs/fleet.md``), through its local
broker bridged to the core broker:

* ``<prefix>/<host>/status``: ``online``/``offline``, retained, with ``offline``
  as the last will (the event mirror of ``reactor.mqtt``);
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
dropped.  :func:`fetch_status` reads the retained topics straight from a
broker, for the command line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any

import aiomqtt

from .event import Event

__all__ = ["Dedupe", "FleetView", "fetch_status", "format_status"]

#: Event ids remembered per host/VM.
DEDUPE_PER_VM = 4096
#: Host/VM pairs remembered by :class:`Dedupe` (least recently seen forgotten first).
DEDUPE_VMS = 100_000


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
    async with aiomqtt.Client(host, port, username=username, password=password, timeout=10) as client:
        await client.subscribe([(f"{prefix}/+/status", 0), (f"{prefix}-bridge/+", 0), (f"{prefix}/+/+/status", 0)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for message in client.messages:
                    payload = message.payload
                    data = payload if isinstance(payload, (bytes, bytearray)) else str(payload or "").encode()
                    view.handle(message.topic.value, bytes(data))
    return view.snapshot()
