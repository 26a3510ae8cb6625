"""A libvirt domain as rules and actions see it: a :class:`~reactor.actions.action.VMHandle`.

Commands go through libvirt's API so libvirt's view of the domain stays true:

===================  ============================================
QMP command          libvirt call
===================  ============================================
``cont``             ``virDomainResume``
``stop``             ``virDomainSuspend``
``system_reset``     ``virDomainReset``
``system_powerdown`` ``virDomainShutdown``
``system_wakeup``    ``virDomainPMWakeup``
``inject-nmi``       ``virDomainInjectNMI``
``quit``             ``virDomainDestroy``
``query-status``     ``virDomainGetState`` (QMP's reply shape)
``query-name``       the domain's name
``snapshot-save``    ``virDomainSnapshotCreateXML`` (``tag``; ``vmstate`` → memory)
``snapshot-load``    ``virDomainRevertToSnapshot``
``snapshot-delete``  ``virDomainSnapshotDelete``
===================  ============================================

Any other command raises :class:`~reactor.errors.VMCommandError` with class
``NotThroughLibvirt``: sending raw QMP behind libvirt's back makes libvirt
mark the domain *tainted* (``custom-monitor``), so it happens only through
:meth:`LibvirtVM.monitor_command`, which a rule must ask for by name (the
``libvirt_qmp`` action).  libvirt calls block, so they run in a worker thread;
a timeout stops waiting but cannot stop the call itself.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from reactor.errors import VMCommandError, VMCommandTimeout, VMConnectionError
from reactor.model.catalog.libvirt import STATE_REASONS, STATES, enum_name, run_state
from reactor.model.runstate import RunState
from reactor.sources.libvirt.loop import import_libvirt

__all__ = ["MAPPED_COMMANDS", "REACTOR_SNAPSHOT", "LibvirtLink", "LibvirtVM"]

#: The description prefix of snapshots reactor made (``keep`` deletes only those).
REACTOR_SNAPSHOT = "reactor:"

#: QMP commands that run as libvirt API calls.
MAPPED_COMMANDS: tuple[str, ...] = (
    "cont", "stop", "system_reset", "system_powerdown", "system_wakeup", "inject-nmi", "quit",
    "query-status", "query-name", "snapshot-save", "snapshot-load", "snapshot-delete",
)


class LibvirtLink(Protocol):
    """What a domain needs of the connection it was found on (a
    :class:`~reactor.sources.libvirt.source.LibvirtSource`): read-only, so this module sits below the source."""

    @property
    def uri(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def connection(self) -> Any:
        """The open ``virConnect``, None while disconnected."""


class LibvirtVM:
    """One domain watched through a :class:`~reactor.sources.libvirt.source.LibvirtSource`.  Satisfies ``VMHandle``.

    ``status`` is QEMU's run state (as for a QMP VM), kept from the events;
    ``state`` and ``reason`` are libvirt's (``paused``, ``ioerror``).
    ``connected`` is true while the domain runs and libvirt is reachable.
    """

    def __init__(self, source: LibvirtLink, name: str, labels: Mapping[str, str]) -> None:
        self._source = source
        self._name = name
        self._labels = dict(labels)
        self.state = "shutoff"
        self.reason = "unknown"
        #: QEMU's run state, kept by reactor.model.runstate from the events (``shutdown``: no QEMU process)
        self.runstate = RunState(run_state(self.state, self.reason))
        self.active = False
        self.persistent = True

    # -- VMHandle --
    @property
    def status(self) -> str:
        return self.runstate.status

    @property
    def name(self) -> str:
        return self._name

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def connected(self) -> bool:
        return self.active and self._source.connected

    @property
    def uri(self) -> str:
        return self._source.uri

    def __repr__(self) -> str:
        return f"<LibvirtVM {self._name!r} {self.state}/{self.reason} status={self.status}>"

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run a QMP command the libvirt way (see the module docstring); QMP's reply shape."""
        args = dict(arguments or {})
        call = _MAPPING.get(command)
        if call is None:
            raise VMCommandError(
                command, "NotThroughLibvirt",
                f"{self._name} is managed by libvirt: {command} is not mapped to libvirt's API; "
                "use the libvirt_qmp action to send it through libvirt's monitor passthrough "
                "(libvirt then marks the domain tainted)",
            )
        return await self._call(command, lambda dom: call(self, dom, args), timeout)

    async def monitor_command(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Send a raw QMP command through ``virDomainQemuMonitorCommand``; its ``return`` value.

        libvirt marks the domain tainted (``custom-monitor``) from then on.
        """
        _, libvirt_qemu = import_libvirt()
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = dict(arguments)
        text = json.dumps(msg)

        def run(dom: Any) -> Any:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, text, 0))
            if "error" in reply:
                error = reply["error"] if isinstance(reply["error"], dict) else {}
                raise VMCommandError(command, str(error.get("class", "GenericError")), str(error.get("desc", "")))
            return reply.get("return")

        return await self._call(command, run, timeout)

    # -- snapshots through libvirt's API --
    async def create_snapshot(
        self, name: str, *, vmstate: bool = True, description: str = REACTOR_SNAPSHOT, timeout: float = 300.0
    ) -> dict[str, Any]:
        """An internal snapshot (disks, and memory when ``vmstate`` and the domain runs)."""
        xml = _snapshot_xml(name, description, vmstate)

        def run(dom: Any) -> dict[str, Any]:
            snap = dom.snapshotCreateXML(xml, 0)
            return {"name": snap.getName(), "vmstate": vmstate}

        return cast(dict[str, Any], await self._call("snapshot-save", run, timeout))

    async def delete_snapshot(self, name: str, *, timeout: float = 60.0) -> None:
        await self._call("snapshot-delete", lambda dom: dom.snapshotLookupByName(name, 0).delete(0), timeout)

    async def snapshots(self, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The domain's snapshots, oldest first: ``{name, created, description}``."""

        def run(dom: Any) -> list[dict[str, Any]]:
            out = []
            for snap in dom.listAllSnapshots(0):
                xml = snap.getXMLDesc(0)
                out.append({"name": snap.getName(), "created": _tag_int(xml, "creationTime"),
                            "description": _tag_text(xml, "description")})
            out.sort(key=lambda s: (s["created"], s["name"]))
            return out

        return cast(list[dict[str, Any]], await self._call("snapshots", run, timeout))

    async def _call(self, command: str, fn: Callable[[Any], Any], timeout: float) -> Any:
        libvirt, _ = import_libvirt()
        conn = self._source.connection
        if conn is None:
            raise VMConnectionError(f"{self._name}: libvirt at {self._source.uri} is not connected")

        def run() -> Any:
            try:
                dom = conn.lookupByName(self._name)
                return fn(dom)
            except libvirt.libvirtError as err:
                code = err.get_error_code()
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    raise VMConnectionError(f"{self._name}: no such libvirt domain") from err
                if code == libvirt.VIR_ERR_OPERATION_INVALID and not self.active:
                    raise VMConnectionError(f"{self._name}: the domain is not running") from err
                raise VMCommandError(command, "LibvirtError", err.get_error_message() or str(err)) from err

        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(run)
        except TimeoutError as err:
            raise VMCommandTimeout(f"{self._name}: {command}: no answer from libvirt within {timeout:g}s") from err


def _tag_text(xml: str, tag: str) -> str:
    start = xml.find(f"<{tag}>")
    end = xml.find(f"</{tag}>")
    if start < 0 or end < 0:
        return ""
    from xml.sax.saxutils import unescape

    return unescape(xml[start + len(tag) + 2:end])


def _tag_int(xml: str, tag: str) -> int:
    text = _tag_text(xml, tag)
    return int(text) if text.isdigit() else 0


def _status(vm: LibvirtVM, dom: Any, _args: dict[str, Any]) -> dict[str, Any]:
    state, reason = dom.state()
    s = enum_name(STATES, state)
    r = enum_name(STATE_REASONS.get(s, ("unknown",)), reason)
    status = run_state(s, r)
    return {"status": status, "running": status == "running", "singlestep": False}


def _done(_result: object) -> dict[str, Any]:
    return {}


def _snapshot_xml(name: str, description: str, vmstate: bool) -> str:
    memory = "" if vmstate else "<memory snapshot='no'/>"
    escape = functools.partial(html.escape, quote=False)  # &, <, > as xml.sax.saxutils.escape, without its imports
    return (f"<domainsnapshot><name>{escape(name)}</name><description>{escape(description)}</description>"
            f"{memory}</domainsnapshot>")


def _snapshot_save(vm: LibvirtVM, dom: Any, args: dict[str, Any]) -> dict[str, Any]:
    tag = str(args.get("tag") or f"reactor-{int(time.time())}")
    dom.snapshotCreateXML(_snapshot_xml(tag, REACTOR_SNAPSHOT, bool(args.get("vmstate", True))), 0)
    return {}


_MAPPING: dict[str, Callable[[LibvirtVM, Any, dict[str, Any]], Any]] = {
    "cont": lambda vm, dom, a: _done(dom.resume()),
    "stop": lambda vm, dom, a: _done(dom.suspend()),
    "system_reset": lambda vm, dom, a: _done(dom.reset(0)),
    "system_powerdown": lambda vm, dom, a: _done(dom.shutdown()),
    "system_wakeup": lambda vm, dom, a: _done(dom.pMWakeup(0)),
    "inject-nmi": lambda vm, dom, a: _done(dom.injectNMI(0)),
    "quit": lambda vm, dom, a: _done(dom.destroy()),
    "query-status": _status,
    "query-name": lambda vm, dom, a: {"name": dom.name()},
    "snapshot-save": _snapshot_save,
    "snapshot-load": lambda vm, dom, a: _done(dom.revertToSnapshot(dom.snapshotLookupByName(str(a.get("tag")), 0))),
    "snapshot-delete": lambda vm, dom, a: _done(dom.snapshotLookupByName(str(a.get("tag")), 0).delete(0)),
}
