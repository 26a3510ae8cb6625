"""libvirt's typed domain events as catalog entries, and how libvirt's numbers read.

Through libvirt a VM sends two kinds of events:

* QEMU's own QMP events, passed through unchanged (``STOP``, ``BLOCK_IO_ERROR``
  ...): rules written for QMP VMs match them as they are.  Note that under
  libvirt ``BLOCK_IO_ERROR`` carries ``device: ""`` and a node name such as
  ``libvirt-1-format``.
* libvirt's typed domain events, named ``LIBVIRT_<ID>`` after libvirt's
  ``VIR_DOMAIN_EVENT_ID_<ID>`` (:data:`LIBVIRT_EVENTS`), with the disk's
  libvirt alias and source path, libvirt's lifecycle reasons and so on.

:func:`with_libvirt_events` adds them to a catalog, and extends
``REACTOR_VM_CONNECTED`` with libvirt's domain ``state`` and ``reason``.  The
number → name tables are libvirt's enums (``virDomainEventType``,
``virDomainState`` ...), written out so this module imports without
libvirt-python.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from reactor.model.catalog.catalog import Catalog
from reactor.model.catalog.schema import EventSchema, FieldSpec, TypeSpec
from reactor.model.runstate import from_libvirt

__all__ = [
    "LIBVIRT_EVENTS",
    "LIFECYCLE_DETAILS",
    "LIFECYCLE_EVENTS",
    "STATE_REASONS",
    "STATES",
    "enum_name",
    "run_state",
    "with_libvirt_events",
]

#: virDomainEventType, by number.
LIFECYCLE_EVENTS: tuple[str, ...] = (
    "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended", "crashed",
)

#: The detail of each lifecycle event (virDomainEvent*DetailType), by number.
LIFECYCLE_DETAILS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "defined": ("added", "updated", "renamed", "from_snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error",
                  "postcopy", "postcopy_failed"),
    "resumed": ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "pmsuspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
})

#: virDomainState, by number.
STATES: tuple[str, ...] = (
    "nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended",
)

#: The reason of each state (virDomain*Reason), by number.
STATE_REASONS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "nostate": ("unknown",),
    "running": ("unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused", "migration_canceled",
                "save_canceled", "wakeup", "crashed", "postcopy", "postcopy_failed"),
    "blocked": ("unknown",),
    "paused": ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from_snapshot",
               "shutting_down", "snapshot", "crashed", "starting_up", "postcopy", "postcopy_failed", "api_error"),
    "shutdown": ("unknown", "user"),
    "shutoff": ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot",
                "daemon"),
    "crashed": ("unknown", "panicked"),
    "pmsuspended": ("unknown",),
})

WATCHDOG_ACTIONS = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "inject-nmi")
IO_ERROR_ACTIONS = ("none", "pause", "report")
DISK_CHANGE_REASONS = ("missing-on-start", "drop-missing-on-start")
TRAY_CHANGE_REASONS = ("open", "close")
BLOCK_JOB_TYPES = ("unknown", "pull", "copy", "commit", "active-commit", "backup")
BLOCK_JOB_STATUSES = ("completed", "failed", "canceled", "ready")
AGENT_STATES = ("none", "connected", "disconnected")
AGENT_REASONS = ("unknown", "domain-started", "channel")
MEMORY_FAILURE_RECIPIENTS = ("hypervisor", "guest")
MEMORY_FAILURE_ACTIONS = ("ignore", "inject", "fatal", "reset")


def enum_name(values: tuple[str, ...], number: int) -> str:
    """``values[number]``, or ``unknown-N`` for a number newer than this table."""
    return values[number] if 0 <= number < len(values) else f"unknown-{number}"


def run_state(state: str, reason: str) -> str:
    """The QEMU RunState (what ``vm.status`` says for a QMP VM) for a libvirt state and reason."""
    return from_libvirt(state, reason)


_STR = TypeSpec("str", "str")
_INT = TypeSpec("int", "int")
_BOOL = TypeSpec("bool", "bool")


def _enum(name: str, values: tuple[str, ...]) -> TypeSpec:
    return TypeSpec("enum", name, values=values)


def _f(name: str, t: TypeSpec, doc: str, *, optional: bool = False) -> FieldSpec:
    return FieldSpec(name=name, type=t, optional=optional, doc=doc)


def _event(name: str, doc: str, *fields: FieldSpec) -> EventSchema:
    return EventSchema(name=name, fields=MappingProxyType({f.name: f for f in fields}), doc=doc, builtin=True)


_ALL_DETAILS = tuple(dict.fromkeys(d for ds in LIFECYCLE_DETAILS.values() for d in ds))
_ALIAS = _f("alias", _STR, "the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)")

#: libvirt's typed domain events, by reactor event name.
LIBVIRT_EVENTS: Mapping[str, EventSchema] = MappingProxyType({
    e.name: e
    for e in (
        _event(
            "LIBVIRT_LIFECYCLE",
            "libvirt: the domain was defined, undefined, started, suspended, resumed, stopped, shut down, "
            "PM-suspended or crashed (VIR_DOMAIN_EVENT_ID_LIFECYCLE).",
            _f("event", _enum("LibvirtLifecycleEvent", LIFECYCLE_EVENTS), "what happened"),
            _f("detail", _enum("LibvirtLifecycleDetail", _ALL_DETAILS), "why (libvirt's detail for that event)"),
        ),
        _event("LIBVIRT_REBOOT", "libvirt: the guest rebooted (VIR_DOMAIN_EVENT_ID_REBOOT)."),
        _event(
            "LIBVIRT_RTC_CHANGE", "libvirt: the guest changed its RTC (VIR_DOMAIN_EVENT_ID_RTC_CHANGE).",
            _f("offset", _INT, "new offset from the host's UTC, in seconds"),
        ),
        _event(
            "LIBVIRT_WATCHDOG", "libvirt: the guest's watchdog fired (VIR_DOMAIN_EVENT_ID_WATCHDOG).",
            _f("action", _enum("LibvirtWatchdogAction", WATCHDOG_ACTIONS), "what the hypervisor did"),
        ),
        _event(
            "LIBVIRT_IO_ERROR_REASON",
            "libvirt: a disk I/O error, with the disk's alias and source path "
            "(VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON).",
            _f("path", _STR, "the disk's source path (empty for network disks)"),
            _ALIAS,
            _f("action", _enum("LibvirtIOErrorAction", IO_ERROR_ACTIONS), "what the hypervisor did"),
            _f("reason", _STR, "the error: 'enospc' when the host is out of space, else empty or QEMU's reason"),
        ),
        _event("LIBVIRT_CONTROL_ERROR",
               "libvirt: libvirt lost control of the domain's monitor (VIR_DOMAIN_EVENT_ID_CONTROL_ERROR)."),
        _event(
            "LIBVIRT_BLOCK_JOB", "libvirt: a block job changed state (VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2).",
            _f("disk", _STR, "the disk's target (vda) or source path"),
            _f("type", _enum("LibvirtBlockJobType", BLOCK_JOB_TYPES), "the kind of job"),
            _f("status", _enum("LibvirtBlockJobStatus", BLOCK_JOB_STATUSES), "how it stands"),
        ),
        _event(
            "LIBVIRT_DISK_CHANGE", "libvirt: a disk's media was changed or dropped (VIR_DOMAIN_EVENT_ID_DISK_CHANGE).",
            _f("old_path", _STR, "the old source path", optional=True),
            _f("new_path", _STR, "the new source path", optional=True),
            _ALIAS,
            _f("reason", _enum("LibvirtDiskChangeReason", DISK_CHANGE_REASONS), "why"),
        ),
        _event(
            "LIBVIRT_TRAY_CHANGE", "libvirt: a removable disk's tray moved (VIR_DOMAIN_EVENT_ID_TRAY_CHANGE).",
            _ALIAS,
            _f("reason", _enum("LibvirtTrayChangeReason", TRAY_CHANGE_REASONS), "open or close"),
        ),
        _event("LIBVIRT_PMWAKEUP", "libvirt: the guest woke up (VIR_DOMAIN_EVENT_ID_PMWAKEUP)."),
        _event("LIBVIRT_PMSUSPEND", "libvirt: the guest suspended to RAM (VIR_DOMAIN_EVENT_ID_PMSUSPEND)."),
        _event("LIBVIRT_PMSUSPEND_DISK",
               "libvirt: the guest suspended to disk (VIR_DOMAIN_EVENT_ID_PMSUSPEND_DISK)."),
        _event(
            "LIBVIRT_BALLOON_CHANGE", "libvirt: the balloon's size changed (VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE).",
            _f("actual", _INT, "the guest's memory now, in KiB"),
        ),
        _event("LIBVIRT_DEVICE_ADDED", "libvirt: a device was hot-plugged (VIR_DOMAIN_EVENT_ID_DEVICE_ADDED).",
               _ALIAS),
        _event("LIBVIRT_DEVICE_REMOVED",
               "libvirt: a device was hot-unplugged (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED).", _ALIAS),
        _event("LIBVIRT_DEVICE_REMOVAL_FAILED",
               "libvirt: the guest refused to release a device (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED).",
               _ALIAS),
        _event(
            "LIBVIRT_AGENT_LIFECYCLE",
            "libvirt: the guest agent (dis)connected (VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE).",
            _f("state", _enum("LibvirtAgentState", AGENT_STATES), "connected or disconnected"),
            _f("reason", _enum("LibvirtAgentReason", AGENT_REASONS), "why"),
        ),
        _event(
            "LIBVIRT_BLOCK_THRESHOLD",
            "libvirt: a disk's write threshold was crossed (VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD; set with "
            "virsh domblkthreshold).",
            _f("dev", _STR, "the disk's target (vda) or vda[1] for a backing image"),
            _f("path", _STR, "the image's source path", optional=True),
            _f("threshold", _INT, "the threshold that was crossed, in bytes"),
            _f("excess", _INT, "bytes written beyond the threshold"),
        ),
        _event(
            "LIBVIRT_MEMORY_FAILURE", "libvirt: a hardware memory error (VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE).",
            _f("recipient", _enum("LibvirtMemoryFailureRecipient", MEMORY_FAILURE_RECIPIENTS), "who saw it"),
            _f("action", _enum("LibvirtMemoryFailureAction", MEMORY_FAILURE_ACTIONS), "what was done"),
            _f("action_required", _BOOL, "whether the error must be handled"),
            _f("recursive", _BOOL, "whether it happened while handling another one"),
        ),
        _event(
            "LIBVIRT_JOB_COMPLETED", "libvirt: a domain job (migration, save, dump) completed "
            "(VIR_DOMAIN_EVENT_ID_JOB_COMPLETED).",
            _f("stats", TypeSpec("any", None), "the job's statistics, libvirt's typed parameters"),
        ),
    )
})

_CONNECTED_EXTRA = (
    _f("state", _enum("LibvirtDomainState", STATES), "libvirt VMs: libvirt's domain state", optional=True),
    _f("reason", _STR, "libvirt VMs: the reason of that state (paused: user, ioerror, watchdog ...)",
       optional=True),
    _f("source", _STR, "where the VM's events come from: 'libvirt' (absent for QMP connections)", optional=True),
)


def with_libvirt_events(catalog: Catalog) -> Catalog:
    """``catalog`` plus :data:`LIBVIRT_EVENTS`, with ``REACTOR_VM_CONNECTED`` given libvirt's optional
    ``state``, ``reason`` and ``source`` fields (kept when the catalog has them already)."""
    for schema in LIBVIRT_EVENTS.values():
        catalog = catalog.with_event(schema)
    connected = catalog.get("REACTOR_VM_CONNECTED")
    if connected is not None:
        fields = dict(connected.fields)
        added = False
        for f in _CONNECTED_EXTRA:
            if f.name not in fields:
                fields[f.name] = f
                added = True
        if added:
            catalog = catalog.with_event(EventSchema(
                name=connected.name, fields=MappingProxyType(fields), doc=connected.doc,
                versions=connected.versions, builtin=connected.builtin,
            ))
    return catalog
