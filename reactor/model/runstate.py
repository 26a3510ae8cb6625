"""Which events change a VM's run state, and to what: the one model of it.

``vm.status`` is QEMU's run state, the ``status`` of ``query-status`` (its
``RunState`` enum, :data:`RUN_STATES`), or ``unknown`` before anything was
learnt.  Every part of reactor that follows a VM's state from events uses
:class:`RunState`: the live QMP connection, ``reactor replay`` and
``reactor explain``, the libvirt source and the MQTT mirror that feeds the
fleet view.  The transitions, as QEMU makes them (7.2 and 10.2)::

    STOP                 running/unknown -> paused (suspended -> paused, remembered)
                         any other state stays (the stop was announced, below)
    RESUME               -> running (-> suspended when stopped while suspended: QEMU >= 9.0)
    BLOCK_IO_ERROR       action stop, while running:  -> io-error
    WATCHDOG             action pause, while running: -> watchdog
                         action poweroff: -> shutdown (QEMU exits at once, without SHUTDOWN)
    GUEST_PANICKED       action pause or poweroff, while running: -> guest-panicked
                         (poweroff: SHUTDOWN follows, and QEMU exits)
    SHUTDOWN             -> shutdown (QEMU then exits, or stays stopped with -no-shutdown)
    RESET                not running/inmigrate/finish-migrate -> prelaunch (needs cont)
    SUSPEND              -> suspended
    WAKEUP               -> running
    MIGRATION            status completed: inmigrate -> paused (destination without autostart),
                         running stays (destination, RESUME came first), else -> postmigrate (source)
    REACTOR_VM_CONNECTED -> its ``status`` (query-status at connect)
    LIBVIRT_LIFECYCLE    libvirt's state for the event and detail, as QEMU's run state

The announcing events (``BLOCK_IO_ERROR``, ``WATCHDOG``, ``GUEST_PANICKED``,
``SHUTDOWN``) set the state at once, so a rule triggered by one sees the
state the VM is being put in (QEMU's own ``STOP`` follows and keeps it); the
paused reason is the state (``io-error``, ``watchdog`` ...).  ``SUSPEND_DISK``
changes nothing (QEMU shuts down: ``SHUTDOWN`` follows), nor do the other
``action`` values (``reset``: ``RESET`` follows; ``shutdown``: the guest is asked to power
down; ``report``, ``ignore``, ``inject-nmi``, ``debug``, ``none``, ``run``).  "While running"
includes ``unknown``: a state reactor has not learnt yet.
``REACTOR_VM_DISCONNECTED`` keeps the last known state (``vm.connected`` says
whether reactor can reach the VM).  States that QEMU enters with a bare
``STOP`` (``debug``, ``save-vm``, ``finish-migrate``, ``internal-error``) read
as ``paused`` (reactor reads ``query-status`` when it connects).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENTS", "RUN_STATES", "UNKNOWN", "RunState", "from_libvirt", "lifecycle_state"]

#: QEMU's RunState enum (the union over the supported versions; the same in 7.2 and 10.2).
RUN_STATES: tuple[str, ...] = (
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
)

#: ``vm.status`` before anything is known about the VM.
UNKNOWN = "unknown"

#: The events that can change a VM's run state (all others leave it as it is).
EVENTS: frozenset[str] = frozenset({
    "STOP", "RESUME", "BLOCK_IO_ERROR", "WATCHDOG", "GUEST_PANICKED", "SHUTDOWN", "RESET", "SUSPEND", "WAKEUP",
    "MIGRATION", "REACTOR_VM_CONNECTED", "LIBVIRT_LIFECYCLE",
})

_QEMU_STATES = frozenset(RUN_STATES)
#: The announcing events: {the ``action`` that stops the VM: the state it stops in}.
_ANNOUNCED: dict[str, dict[str, str]] = {
    "BLOCK_IO_ERROR": {"stop": "io-error"},
    "WATCHDOG": {"pause": "watchdog", "poweroff": "shutdown"},
    "GUEST_PANICKED": {"pause": "guest-panicked", "poweroff": "guest-panicked"},
}
#: RESET leaves these as they are (QEMU's main loop); from any other state the VM is in prelaunch after it.
_RESET_KEEPS = frozenset({"running", "inmigrate", "finish-migrate"})


#: libvirt's suspended-event details that name a different state reason.
_SUSPEND_REASON = {"paused": "user", "restored": "from_snapshot"}


def from_libvirt(state: str, reason: str) -> str:
    """QEMU's run state for a libvirt domain ``state`` (virDomainState) and its ``reason``."""
    if state == "running" or state == "blocked":
        return "running"
    if state == "paused":
        return {
            "ioerror": "io-error", "watchdog": "watchdog", "crashed": "guest-panicked", "starting_up": "prelaunch",
            "migration": "postmigrate", "save": "save-vm", "snapshot": "save-vm",
        }.get(reason, "paused")
    if state == "shutdown":
        return "shutdown"
    if state == "crashed":
        return "guest-panicked"
    if state == "pmsuspended":
        return "suspended"
    return "shutdown"  # shutoff / nostate: no QEMU process


def lifecycle_state(event: str, detail: str) -> tuple[str, str] | None:
    """libvirt's domain (state, reason) after a lifecycle ``event`` with ``detail``; None: unchanged."""
    match event:
        case "started":
            return ("running", detail)
        case "suspended":
            return ("paused", _SUSPEND_REASON.get(detail, detail))
        case "resumed":
            return ("running", "unpaused")
        case "shutdown":
            return ("shutdown", "user")
        case "pmsuspended":
            return ("pmsuspended", "unknown")
        case "crashed":
            return ("crashed", detail)
        case "stopped":
            return ("shutoff", detail)
    return None


def _running(status: str) -> bool:
    """Running, or not a state of QEMU's (unknown): an event that stops the VM applies."""
    return status == "running" or status not in _QEMU_STATES


@dataclass(frozen=True, slots=True)
class RunState:
    """A VM's run state: ``status`` (QEMU's RunState value, or ``unknown``) and what QEMU remembers.

    ``suspended`` is true when the VM was stopped while suspended: QEMU (9.0 and later) returns it
    to ``suspended`` on ``cont``.  Immutable; :meth:`after` gives the state after one event.
    """

    status: str = UNKNOWN
    suspended: bool = False

    def after(self, name: str, data: Mapping[str, Any] | None = None) -> RunState:
        """The state after the event ``name`` with ``data`` (the same object when nothing changes)."""
        if name not in EVENTS:
            return self
        d: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        status = self.status
        if name == "STOP":
            if status == "suspended":
                return RunState("paused", suspended=True)
            return RunState("paused") if _running(status) else self
        if name == "RESUME":
            return RunState("suspended" if self.suspended else "running")
        if name in _ANNOUNCED:
            stopped = _ANNOUNCED[name].get(str(d.get("action")))
            return RunState(stopped) if stopped is not None and _running(status) else self
        if name == "SHUTDOWN":
            return RunState("shutdown")
        if name == "RESET":
            return self if status in _RESET_KEEPS or status not in _QEMU_STATES else RunState("prelaunch")
        if name == "SUSPEND":
            return RunState("suspended")
        if name == "WAKEUP":
            return RunState("running")
        if name == "MIGRATION":
            if d.get("status") != "completed" or status == "running":
                return self
            return RunState("paused" if status == "inmigrate" else "postmigrate")
        if name == "REACTOR_VM_CONNECTED":
            new = d.get("status")
            return RunState(new) if isinstance(new, str) and new else self
        # LIBVIRT_LIFECYCLE
        state = lifecycle_state(str(d.get("event", "")), str(d.get("detail", "")))
        return self if state is None else RunState(from_libvirt(*state))
