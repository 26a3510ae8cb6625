"""Typed event classes, one per catalog event.  GENERATED: do not edit.

Regenerate with ``python -m reactor.model.catalog.generate`` (from the QAPI files
under reactor/model/catalog/sources/).  Each class subclasses :class:`reactor.model.event.Event`;
its properties read ``data`` (QMP member names, dashes → underscores).  Optional
members read as None when absent.  Enum types are ``Literal`` aliases and object
types are ``TypedDict``s named after their QAPI type.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from reactor.model.event import Event

__all__ = [
    "EVENT_CLASSES",
    "ACPIOSTInfo",
    "ACPISlotType",
    "AcpiDeviceOst",
    "BalloonChange",
    "BlockErrorAction",
    "BlockExportDeleted",
    "BlockImageCorrupted",
    "BlockIoError",
    "BlockJobCancelled",
    "BlockJobCompleted",
    "BlockJobError",
    "BlockJobPending",
    "BlockJobReady",
    "BlockWriteThreshold",
    "COLOExitReason",
    "COLOMode",
    "ColoExit",
    "CpuPolarizationChange",
    "DeviceDeleted",
    "DeviceTrayMoved",
    "DeviceUnplugGuestError",
    "DumpCompleted",
    "DumpQueryResult",
    "DumpStatus",
    "FailoverNegotiated",
    "GuestCrashloaded",
    "GuestPanicAction",
    "GuestPanicInformation",
    "GuestPanicInformationType",
    "GuestPanicked",
    "GuestPvshutdown",
    "HvBalloonStatusReport",
    "IoOperationType",
    "JobStatus",
    "JobStatusChange",
    "JobType",
    "LibvirtAgentLifecycle",
    "LibvirtAgentReason",
    "LibvirtAgentState",
    "LibvirtBalloonChange",
    "LibvirtBlockJob",
    "LibvirtBlockJobStatus",
    "LibvirtBlockJobType",
    "LibvirtBlockThreshold",
    "LibvirtControlError",
    "LibvirtDeviceAdded",
    "LibvirtDeviceRemovalFailed",
    "LibvirtDeviceRemoved",
    "LibvirtDiskChange",
    "LibvirtDiskChangeReason",
    "LibvirtDomainState",
    "LibvirtIOErrorAction",
    "LibvirtIoErrorReason",
    "LibvirtJobCompleted",
    "LibvirtLifecycle",
    "LibvirtLifecycleDetail",
    "LibvirtLifecycleEvent",
    "LibvirtMemoryFailure",
    "LibvirtMemoryFailureAction",
    "LibvirtMemoryFailureRecipient",
    "LibvirtPmsuspend",
    "LibvirtPmsuspendDisk",
    "LibvirtPmwakeup",
    "LibvirtReboot",
    "LibvirtRtcChange",
    "LibvirtTrayChange",
    "LibvirtTrayChangeReason",
    "LibvirtWatchdog",
    "LibvirtWatchdogAction",
    "MemUnplugError",
    "MemoryDeviceSizeChange",
    "MemoryFailure",
    "MemoryFailureAction",
    "MemoryFailureFlags",
    "MemoryFailureRecipient",
    "Migration",
    "MigrationPass",
    "MigrationStatus",
    "NetdevStreamConnected",
    "NetdevStreamDisconnected",
    "NetdevVhostUserConnected",
    "NetdevVhostUserDisconnected",
    "NetworkAddressFamily",
    "NicRxFilterChanged",
    "Powerdown",
    "PrManagerStatusChanged",
    "QapiVfioMigrationState",
    "QuorumFailure",
    "QuorumOpType",
    "QuorumReportBad",
    "RdmaGidStatusChanged",
    "ReactorActionFailed",
    "ReactorResumeGaveUp",
    "ReactorRulesReloaded",
    "ReactorTimer",
    "ReactorVmConnected",
    "ReactorVmDisconnected",
    "Reset",
    "Resume",
    "RtcChange",
    "RunState",
    "S390CpuPolarization",
    "S390CrashReason",
    "SclpCpiInfoAvailable",
    "Shutdown",
    "ShutdownCause",
    "SocketAddress",
    "SocketAddressType",
    "SpiceBasicInfo",
    "SpiceChannel",
    "SpiceConnected",
    "SpiceDisconnected",
    "SpiceInitialized",
    "SpiceMigrateCompleted",
    "SpiceServerInfo",
    "Stop",
    "Suspend",
    "SuspendDisk",
    "UnplugPrimary",
    "VfioMigration",
    "VfuClientHangup",
    "VncBasicInfo",
    "VncClientInfo",
    "VncConnected",
    "VncDisconnected",
    "VncInitialized",
    "VncServerInfo",
    "VserportChange",
    "Wakeup",
    "Watchdog",
    "WatchdogAction",
]

ACPISlotType = Literal["DIMM", "CPU"]


ACPIOSTInfo = TypedDict(
    "ACPIOSTInfo",
    {
        "device": NotRequired[str],
        "slot": str,
        "slot-type": ACPISlotType,
        "source": int,
        "status": int,
    },
)


IoOperationType = Literal["read", "write"]


BlockErrorAction = Literal["ignore", "report", "stop"]


JobType = Literal[
    "commit",
    "stream",
    "mirror",
    "backup",
    "create",
    "amend",
    "snapshot-load",
    "snapshot-save",
    "snapshot-delete",
]


COLOMode = Literal["none", "primary", "secondary"]


COLOExitReason = Literal["none", "request", "error", "processing"]


S390CpuPolarization = Literal["horizontal", "vertical"]


DumpStatus = Literal["none", "active", "completed", "failed"]


class DumpQueryResult(TypedDict):
    status: DumpStatus
    completed: int
    total: int


GuestPanicAction = Literal["pause", "poweroff", "run"]


GuestPanicInformationType = Literal["hyper-v", "s390", "tdx"]


S390CrashReason = Literal["unknown", "disabled-wait", "extint-loop", "pgmint-loop", "opint-loop"]


GuestPanicInformation = TypedDict(
    "GuestPanicInformation",
    {
        "type": GuestPanicInformationType,
        "arg1": NotRequired[int],
        "arg2": NotRequired[int],
        "arg3": NotRequired[int],
        "arg4": NotRequired[int],
        "arg5": NotRequired[int],
        "core": NotRequired[int],
        "psw-mask": NotRequired[int],
        "psw-addr": NotRequired[int],
        "reason": NotRequired[S390CrashReason],
        "error-code": NotRequired[int],
        "message": NotRequired[str],
        "gpa": NotRequired[int],
    },
)


JobStatus = Literal[
    "undefined",
    "created",
    "running",
    "paused",
    "ready",
    "standby",
    "waiting",
    "pending",
    "aborting",
    "concluded",
    "null",
]


LibvirtAgentState = Literal["none", "connected", "disconnected"]


LibvirtAgentReason = Literal["unknown", "domain-started", "channel"]


LibvirtBlockJobType = Literal["unknown", "pull", "copy", "commit", "active-commit", "backup"]


LibvirtBlockJobStatus = Literal["completed", "failed", "canceled", "ready"]


LibvirtDiskChangeReason = Literal["missing-on-start", "drop-missing-on-start"]


LibvirtIOErrorAction = Literal["none", "pause", "report"]


LibvirtLifecycleEvent = Literal[
    "defined",
    "undefined",
    "started",
    "suspended",
    "resumed",
    "stopped",
    "shutdown",
    "pmsuspended",
    "crashed",
]


LibvirtLifecycleDetail = Literal[
    "added",
    "updated",
    "renamed",
    "from_snapshot",
    "removed",
    "booted",
    "migrated",
    "restored",
    "wakeup",
    "recreated",
    "paused",
    "ioerror",
    "watchdog",
    "api_error",
    "postcopy",
    "postcopy_failed",
    "unpaused",
    "shutdown",
    "destroyed",
    "crashed",
    "saved",
    "failed",
    "finished",
    "guest",
    "host",
    "memory",
    "disk",
    "panicked",
    "crashloaded",
]


LibvirtMemoryFailureRecipient = Literal["hypervisor", "guest"]


LibvirtMemoryFailureAction = Literal["ignore", "inject", "fatal", "reset"]


LibvirtTrayChangeReason = Literal["open", "close"]


LibvirtWatchdogAction = Literal["none", "pause", "reset", "poweroff", "shutdown", "debug", "inject-nmi"]


MemoryFailureRecipient = Literal["hypervisor", "guest"]


MemoryFailureAction = Literal["ignore", "inject", "fatal", "reset"]


MemoryFailureFlags = TypedDict(
    "MemoryFailureFlags",
    {
        "action-required": bool,
        "recursive": bool,
    },
)


MigrationStatus = Literal[
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-device",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover-setup",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
]


SocketAddressType = Literal["inet", "unix", "vsock", "fd"]


SocketAddress = TypedDict(
    "SocketAddress",
    {
        "type": SocketAddressType,
        "host": NotRequired[str],
        "port": NotRequired[str],
        "numeric": NotRequired[bool],
        "to": NotRequired[int],
        "ipv4": NotRequired[bool],
        "ipv6": NotRequired[bool],
        "keep-alive": NotRequired[bool],
        "keep-alive-count": NotRequired[int],
        "keep-alive-idle": NotRequired[int],
        "keep-alive-interval": NotRequired[int],
        "mptcp": NotRequired[bool],
        "path": NotRequired[str],
        "abstract": NotRequired[bool],
        "tight": NotRequired[bool],
        "cid": NotRequired[str],
        "str": NotRequired[str],
    },
)


QuorumOpType = Literal["read", "write", "flush"]


RunState = Literal[
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
]


LibvirtDomainState = Literal[
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
]


ShutdownCause = Literal[
    "none",
    "host-error",
    "host-qmp-quit",
    "host-qmp-system-reset",
    "host-signal",
    "host-ui",
    "guest-shutdown",
    "guest-reset",
    "guest-panic",
    "subsystem-reset",
    "snapshot-load",
]


NetworkAddressFamily = Literal["ipv4", "ipv6", "unix", "vsock", "unknown"]


class SpiceBasicInfo(TypedDict):
    host: str
    port: str
    family: NetworkAddressFamily


class SpiceServerInfo(TypedDict):
    host: str
    port: str
    family: NetworkAddressFamily
    auth: NotRequired[str]


SpiceChannel = TypedDict(
    "SpiceChannel",
    {
        "host": str,
        "port": str,
        "family": NetworkAddressFamily,
        "connection-id": int,
        "channel-type": int,
        "channel-id": int,
        "tls": bool,
    },
)


QapiVfioMigrationState = Literal[
    "stop",
    "running",
    "stop-copy",
    "resuming",
    "running-p2p",
    "pre-copy",
    "pre-copy-p2p",
]


class VncServerInfo(TypedDict):
    host: str
    service: str
    family: NetworkAddressFamily
    websocket: bool
    auth: NotRequired[str]


class VncBasicInfo(TypedDict):
    host: str
    service: str
    family: NetworkAddressFamily
    websocket: bool


class VncClientInfo(TypedDict):
    host: str
    service: str
    family: NetworkAddressFamily
    websocket: bool
    x509_dname: NotRequired[str]
    sasl_username: NotRequired[str]


WatchdogAction = Literal["reset", "shutdown", "poweroff", "pause", "debug", "none", "inject-nmi"]


class AcpiDeviceOst(Event):
    """Emitted when guest executes ACPI _OST method.

    Since: 2.1

    QMP event ``ACPI_DEVICE_OST`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "ACPI_DEVICE_OST"

    @property
    def info(self) -> ACPIOSTInfo:
        """OSPM Status Indication"""
        v: ACPIOSTInfo = self.data["info"]
        return v


class BalloonChange(Event):
    """Emitted when the guest changes the actual BALLOON level. This value is equivalent to the @actual
    field return by the `query-balloon` command

    Since: 1.2

    QMP event ``BALLOON_CHANGE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BALLOON_CHANGE"

    @property
    def actual(self) -> int:
        """the logical size of the VM in bytes. Formula used: logical_vm_size = vm_ram_size - balloon_size
        """
        v: int = self.data["actual"]
        return v


class BlockExportDeleted(Event):
    """Emitted when a block export is removed and its id can be reused.

    Since: 5.2

    QMP event ``BLOCK_EXPORT_DELETED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_EXPORT_DELETED"

    @property
    def id_(self) -> str:
        """Block export id."""
        v: str = self.data["id"]
        return v


class BlockImageCorrupted(Event):
    """Emitted when a disk image is being marked corrupt. The image can be identified by its device or node
    name. The 'device' field is always present for compatibility reasons, but it can be empty ("") if
    the image does not have a device name associated.

    Since: 1.7

    QMP event ``BLOCK_IMAGE_CORRUPTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_IMAGE_CORRUPTED"

    @property
    def device(self) -> str:
        """device name. This is always present for compatibility reasons, but it can be empty ("") if the
        image does not have a device name associated.
        """
        v: str = self.data["device"]
        return v

    @property
    def node_name(self) -> str | None:
        """node name (Since: 2.4)"""
        v: str | None = self.data.get("node-name")
        return v

    @property
    def msg(self) -> str:
        """informative message for human consumption, such as the kind of corruption being detected. It
        should not be parsed by machine as it is not guaranteed to be stable
        """
        v: str = self.data["msg"]
        return v

    @property
    def offset(self) -> int | None:
        """if the corruption resulted from an image access, this is the host's access offset into the image
        """
        v: int | None = self.data.get("offset")
        return v

    @property
    def size(self) -> int | None:
        """if the corruption resulted from an image access, this is the access size"""
        v: int | None = self.data.get("size")
        return v

    @property
    def fatal(self) -> bool:
        """if set, the image is marked corrupt and therefore unusable after this event and must be repaired
        (Since 2.2; before, every `BLOCK_IMAGE_CORRUPTED` event was fatal)
        """
        v: bool = self.data["fatal"]
        return v


class BlockIoError(Event):
    """Emitted when a disk I/O error occurs

    Since: 0.13

    QMP event ``BLOCK_IO_ERROR`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_IO_ERROR"

    @property
    def qom_path(self) -> str | None:
        """path to the device object in the QOM tree (since 9.2) (QEMU 10.2)"""
        v: str | None = self.data.get("qom-path")
        return v

    @property
    def device(self) -> str:
        """device name. This is always present for compatibility reasons, but it can be empty ("") if the
        image does not have a device name associated.
        """
        v: str = self.data["device"]
        return v

    @property
    def node_name(self) -> str | None:
        """node name. Note that errors may be reported for the root node that is directly attached to a
        guest device rather than for the node where the error occurred. The node name is not present if
        the drive is empty. (Since: 2.8)
        """
        v: str | None = self.data.get("node-name")
        return v

    @property
    def operation(self) -> IoOperationType:
        """I/O operation"""
        v: IoOperationType = self.data["operation"]
        return v

    @property
    def action(self) -> BlockErrorAction:
        """action that has been taken"""
        v: BlockErrorAction = self.data["action"]
        return v

    @property
    def nospace(self) -> bool | None:
        """true if I/O error was caused due to a no-space condition. This key is only present if
        query-block's io-status is present, please see `query-block` documentation for more information
        (since: 2.2)
        """
        v: bool | None = self.data.get("nospace")
        return v

    @property
    def reason(self) -> str:
        """human readable string describing the error cause. (This field is a debugging aid for humans, it
        should not be parsed by applications) (since: 2.2)
        """
        v: str = self.data["reason"]
        return v


class BlockJobCancelled(Event):
    """Emitted when a block job has been cancelled

    Since: 1.1

    QMP event ``BLOCK_JOB_CANCELLED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_JOB_CANCELLED"

    @property
    def type(self) -> JobType:
        """job type"""
        v: JobType = self.data["type"]
        return v

    @property
    def device(self) -> str:
        """The job identifier. Originally the device name but other values are allowed since QEMU 2.7"""
        v: str = self.data["device"]
        return v

    @property
    def len(self) -> int:
        """maximum progress value"""
        v: int = self.data["len"]
        return v

    @property
    def offset(self) -> int:
        """current progress value. On success this is equal to len. On failure this is less than len"""
        v: int = self.data["offset"]
        return v

    @property
    def speed(self) -> int:
        """rate limit, bytes per second"""
        v: int = self.data["speed"]
        return v


class BlockJobCompleted(Event):
    """Emitted when a block job has completed

    Since: 1.1

    QMP event ``BLOCK_JOB_COMPLETED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_JOB_COMPLETED"

    @property
    def type(self) -> JobType:
        """job type"""
        v: JobType = self.data["type"]
        return v

    @property
    def device(self) -> str:
        """The job identifier. Originally the device name but other values are allowed since QEMU 2.7"""
        v: str = self.data["device"]
        return v

    @property
    def len(self) -> int:
        """maximum progress value"""
        v: int = self.data["len"]
        return v

    @property
    def offset(self) -> int:
        """current progress value. On success this is equal to len. On failure this is less than len"""
        v: int = self.data["offset"]
        return v

    @property
    def speed(self) -> int:
        """rate limit, bytes per second"""
        v: int = self.data["speed"]
        return v

    @property
    def error(self) -> str | None:
        """error message. Only present on failure. This field contains a human-readable error message.
        There are no semantics other than that streaming has failed and clients should not try to
        interpret the error string
        """
        v: str | None = self.data.get("error")
        return v


class BlockJobError(Event):
    """Emitted when a block job encounters an error

    Since: 1.3

    QMP event ``BLOCK_JOB_ERROR`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_JOB_ERROR"

    @property
    def device(self) -> str:
        """The job identifier. Originally the device name but other values are allowed since QEMU 2.7"""
        v: str = self.data["device"]
        return v

    @property
    def operation(self) -> IoOperationType:
        """I/O operation"""
        v: IoOperationType = self.data["operation"]
        return v

    @property
    def action(self) -> BlockErrorAction:
        """action that has been taken"""
        v: BlockErrorAction = self.data["action"]
        return v


class BlockJobPending(Event):
    """Emitted when a block job is awaiting explicit authorization to finalize graph changes via
    `job-finalize`. If this job is part of a transaction, it will not emit this event until the
    transaction has converged first.

    Since: 2.12

    QMP event ``BLOCK_JOB_PENDING`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_JOB_PENDING"

    @property
    def type(self) -> JobType:
        """job type"""
        v: JobType = self.data["type"]
        return v

    @property
    def id_(self) -> str:
        """The job identifier."""
        v: str = self.data["id"]
        return v


class BlockJobReady(Event):
    """Emitted when a block job is ready to complete

    Since: 1.3

    QMP event ``BLOCK_JOB_READY`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_JOB_READY"

    @property
    def type(self) -> JobType:
        """job type"""
        v: JobType = self.data["type"]
        return v

    @property
    def device(self) -> str:
        """The job identifier. Originally the device name but other values are allowed since QEMU 2.7"""
        v: str = self.data["device"]
        return v

    @property
    def len(self) -> int:
        """maximum progress value"""
        v: int = self.data["len"]
        return v

    @property
    def offset(self) -> int:
        """current progress value. On success this is equal to len. On failure this is less than len"""
        v: int = self.data["offset"]
        return v

    @property
    def speed(self) -> int:
        """rate limit, bytes per second"""
        v: int = self.data["speed"]
        return v


class BlockWriteThreshold(Event):
    """Emitted when writes on block device reaches or exceeds the configured write threshold. For
    thin-provisioned devices, this means the device should be extended to avoid pausing for disk
    exhaustion. The event is one shot. Once triggered, it needs to be re-registered with another
    `block-set-write-threshold` command.

    Since: 2.3

    QMP event ``BLOCK_WRITE_THRESHOLD`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "BLOCK_WRITE_THRESHOLD"

    @property
    def node_name(self) -> str:
        """graph node name on which the threshold was exceeded."""
        v: str = self.data["node-name"]
        return v

    @property
    def amount_exceeded(self) -> int:
        """amount of data which exceeded the threshold, in bytes."""
        v: int = self.data["amount-exceeded"]
        return v

    @property
    def write_threshold(self) -> int:
        """last configured threshold, in bytes."""
        v: int = self.data["write-threshold"]
        return v


class ColoExit(Event):
    """Emitted when VM finishes COLO mode due to some errors happening or at the request of users.

    Since: 3.1

    QMP event ``COLO_EXIT`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "COLO_EXIT"

    @property
    def mode(self) -> COLOMode:
        """report COLO mode when COLO exited."""
        v: COLOMode = self.data["mode"]
        return v

    @property
    def reason(self) -> COLOExitReason:
        """describes the reason for the COLO exit."""
        v: COLOExitReason = self.data["reason"]
        return v


class CpuPolarizationChange(Event):
    """Emitted when the guest asks to change the polarization.

    The guest can tell the host (via the PTF instruction) whether the CPUs should be provisioned using
    horizontal or vertical polarization.

    On horizontal polarization the host is expected to provision all vCPUs equally.

    On vertical polarization the host can provision each vCPU differently. The guest will get
    information on the details of the provisioning the next time it uses the STSI(15) instruction.

    Since: 8.2

    QMP event ``CPU_POLARIZATION_CHANGE`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "CPU_POLARIZATION_CHANGE"

    @property
    def polarization(self) -> S390CpuPolarization:
        """polarization specified by the guest"""
        v: S390CpuPolarization = self.data["polarization"]
        return v


class DeviceDeleted(Event):
    """Emitted whenever the device removal completion is acknowledged by the guest. At this point, it's
    safe to reuse the specified device ID. Device removal can be initiated by the guest or by HMP/QMP
    commands.

    Since: 1.5

    QMP event ``DEVICE_DELETED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "DEVICE_DELETED"

    @property
    def device(self) -> str | None:
        """the device's ID if it has one"""
        v: str | None = self.data.get("device")
        return v

    @property
    def path(self) -> str:
        """the device's QOM path"""
        v: str = self.data["path"]
        return v


class DeviceTrayMoved(Event):
    """Emitted whenever the tray of a removable device is moved by the guest or by HMP/QMP commands

    Since: 1.1

    QMP event ``DEVICE_TRAY_MOVED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "DEVICE_TRAY_MOVED"

    @property
    def device(self) -> str:
        """Block device name. This is always present for compatibility reasons, but it can be empty ("") if
        the image does not have a device name associated.
        """
        v: str = self.data["device"]
        return v

    @property
    def id_(self) -> str:
        """The name or QOM path of the guest device (since 2.8)"""
        v: str = self.data["id"]
        return v

    @property
    def tray_open(self) -> bool:
        """true if the tray has been opened or false if it has been closed"""
        v: bool = self.data["tray-open"]
        return v


class DeviceUnplugGuestError(Event):
    """Emitted when a device hot unplug fails due to a guest reported error.

    Since: 6.2

    QMP event ``DEVICE_UNPLUG_GUEST_ERROR`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "DEVICE_UNPLUG_GUEST_ERROR"

    @property
    def device(self) -> str | None:
        """the device's ID if it has one"""
        v: str | None = self.data.get("device")
        return v

    @property
    def path(self) -> str:
        """the device's QOM path"""
        v: str = self.data["path"]
        return v


class DumpCompleted(Event):
    """Emitted when background dump has completed

    Since: 2.6

    QMP event ``DUMP_COMPLETED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "DUMP_COMPLETED"

    @property
    def result(self) -> DumpQueryResult:
        """final dump status"""
        v: DumpQueryResult = self.data["result"]
        return v

    @property
    def error(self) -> str | None:
        """human-readable error string that provides hint on why dump failed. Only presents on failure. The
        user should not try to interpret the error string.
        """
        v: str | None = self.data.get("error")
        return v


class FailoverNegotiated(Event):
    """Emitted when VIRTIO_NET_F_STANDBY was enabled during feature negotiation. Failover primary devices
    which were hidden (not hotplugged when requested) before will now be hotplugged by the virtio-net
    standby device.

    Since: 4.2

    QMP event ``FAILOVER_NEGOTIATED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "FAILOVER_NEGOTIATED"

    @property
    def device_id(self) -> str:
        """QEMU device id of the unplugged device"""
        v: str = self.data["device-id"]
        return v


class GuestCrashloaded(Event):
    """Emitted when guest OS crash loaded is detected

    Since: 5.0

    QMP event ``GUEST_CRASHLOADED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "GUEST_CRASHLOADED"

    @property
    def action(self) -> GuestPanicAction:
        """action that has been taken, currently always "run\""""
        v: GuestPanicAction = self.data["action"]
        return v

    @property
    def info(self) -> GuestPanicInformation | None:
        """information about a panic"""
        v: GuestPanicInformation | None = self.data.get("info")
        return v


class GuestPanicked(Event):
    """Emitted when guest OS panic is detected

    Since: 1.5

    QMP event ``GUEST_PANICKED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "GUEST_PANICKED"

    @property
    def action(self) -> GuestPanicAction:
        """action that has been taken, currently always "pause\""""
        v: GuestPanicAction = self.data["action"]
        return v

    @property
    def info(self) -> GuestPanicInformation | None:
        """information about a panic (since 2.9)"""
        v: GuestPanicInformation | None = self.data.get("info")
        return v


class GuestPvshutdown(Event):
    """Emitted when guest submits a shutdown request via pvpanic interface

    Since: 9.1

    QMP event ``GUEST_PVSHUTDOWN`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "GUEST_PVSHUTDOWN"


class HvBalloonStatusReport(Event):
    """Emitted when the hv-balloon driver receives a "STATUS" message from the guest.

    Since: 8.2

    QMP event ``HV_BALLOON_STATUS_REPORT`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "HV_BALLOON_STATUS_REPORT"

    @property
    def committed(self) -> int:
        """the amount of memory in use inside the guest plus the amount of the memory unusable inside the
        guest (ballooned out, offline, etc.)
        """
        v: int = self.data["committed"]
        return v

    @property
    def available(self) -> int:
        """the amount of the memory inside the guest available for new allocations ("free")"""
        v: int = self.data["available"]
        return v


class JobStatusChange(Event):
    """Emitted when a job transitions to a different status.

    Since: 3.0

    QMP event ``JOB_STATUS_CHANGE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "JOB_STATUS_CHANGE"

    @property
    def id_(self) -> str:
        """The job identifier"""
        v: str = self.data["id"]
        return v

    @property
    def status(self) -> JobStatus:
        """The new job status"""
        v: JobStatus = self.data["status"]
        return v


class LibvirtAgentLifecycle(Event):
    """libvirt: the guest agent (dis)connected (VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE).

    libvirt's domain event ``LIBVIRT_AGENT_LIFECYCLE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_AGENT_LIFECYCLE"

    @property
    def state(self) -> LibvirtAgentState:
        """connected or disconnected"""
        v: LibvirtAgentState = self.data["state"]
        return v

    @property
    def reason(self) -> LibvirtAgentReason:
        """why"""
        v: LibvirtAgentReason = self.data["reason"]
        return v


class LibvirtBalloonChange(Event):
    """libvirt: the balloon's size changed (VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE).

    libvirt's domain event ``LIBVIRT_BALLOON_CHANGE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_BALLOON_CHANGE"

    @property
    def actual(self) -> int:
        """the guest's memory now, in KiB"""
        v: int = self.data["actual"]
        return v


class LibvirtBlockJob(Event):
    """libvirt: a block job changed state (VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2).

    libvirt's domain event ``LIBVIRT_BLOCK_JOB``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_BLOCK_JOB"

    @property
    def disk(self) -> str:
        """the disk's target (vda) or source path"""
        v: str = self.data["disk"]
        return v

    @property
    def type(self) -> LibvirtBlockJobType:
        """the kind of job"""
        v: LibvirtBlockJobType = self.data["type"]
        return v

    @property
    def status(self) -> LibvirtBlockJobStatus:
        """how it stands"""
        v: LibvirtBlockJobStatus = self.data["status"]
        return v


class LibvirtBlockThreshold(Event):
    """libvirt: a disk's write threshold was crossed (VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD; set with virsh
    domblkthreshold).

    libvirt's domain event ``LIBVIRT_BLOCK_THRESHOLD``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_BLOCK_THRESHOLD"

    @property
    def dev(self) -> str:
        """the disk's target (vda) or vda[1] for a backing image"""
        v: str = self.data["dev"]
        return v

    @property
    def path(self) -> str | None:
        """the image's source path"""
        v: str | None = self.data.get("path")
        return v

    @property
    def threshold(self) -> int:
        """the threshold that was crossed, in bytes"""
        v: int = self.data["threshold"]
        return v

    @property
    def excess(self) -> int:
        """bytes written beyond the threshold"""
        v: int = self.data["excess"]
        return v


class LibvirtControlError(Event):
    """libvirt: libvirt lost control of the domain's monitor (VIR_DOMAIN_EVENT_ID_CONTROL_ERROR).

    libvirt's domain event ``LIBVIRT_CONTROL_ERROR``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_CONTROL_ERROR"


class LibvirtDeviceAdded(Event):
    """libvirt: a device was hot-plugged (VIR_DOMAIN_EVENT_ID_DEVICE_ADDED).

    libvirt's domain event ``LIBVIRT_DEVICE_ADDED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_DEVICE_ADDED"

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v


class LibvirtDeviceRemovalFailed(Event):
    """libvirt: the guest refused to release a device (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED).

    libvirt's domain event ``LIBVIRT_DEVICE_REMOVAL_FAILED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_DEVICE_REMOVAL_FAILED"

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v


class LibvirtDeviceRemoved(Event):
    """libvirt: a device was hot-unplugged (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED).

    libvirt's domain event ``LIBVIRT_DEVICE_REMOVED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_DEVICE_REMOVED"

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v


class LibvirtDiskChange(Event):
    """libvirt: a disk's media was changed or dropped (VIR_DOMAIN_EVENT_ID_DISK_CHANGE).

    libvirt's domain event ``LIBVIRT_DISK_CHANGE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_DISK_CHANGE"

    @property
    def old_path(self) -> str | None:
        """the old source path"""
        v: str | None = self.data.get("old_path")
        return v

    @property
    def new_path(self) -> str | None:
        """the new source path"""
        v: str | None = self.data.get("new_path")
        return v

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v

    @property
    def reason(self) -> LibvirtDiskChangeReason:
        """why"""
        v: LibvirtDiskChangeReason = self.data["reason"]
        return v


class LibvirtIoErrorReason(Event):
    """libvirt: a disk I/O error, with the disk's alias and source path
    (VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON).

    libvirt's domain event ``LIBVIRT_IO_ERROR_REASON``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_IO_ERROR_REASON"

    @property
    def path(self) -> str:
        """the disk's source path (empty for network disks)"""
        v: str = self.data["path"]
        return v

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v

    @property
    def action(self) -> LibvirtIOErrorAction:
        """what the hypervisor did"""
        v: LibvirtIOErrorAction = self.data["action"]
        return v

    @property
    def reason(self) -> str:
        """the error: 'enospc' when the host is out of space, else empty or QEMU's reason"""
        v: str = self.data["reason"]
        return v


class LibvirtJobCompleted(Event):
    """libvirt: a domain job (migration, save, dump) completed (VIR_DOMAIN_EVENT_ID_JOB_COMPLETED).

    libvirt's domain event ``LIBVIRT_JOB_COMPLETED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_JOB_COMPLETED"

    @property
    def stats(self) -> Any:
        """the job's statistics, libvirt's typed parameters"""
        v: Any = self.data["stats"]
        return v


class LibvirtLifecycle(Event):
    """libvirt: the domain was defined, undefined, started, suspended, resumed, stopped, shut down,
    PM-suspended or crashed (VIR_DOMAIN_EVENT_ID_LIFECYCLE).

    libvirt's domain event ``LIBVIRT_LIFECYCLE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_LIFECYCLE"

    @property
    def event(self) -> LibvirtLifecycleEvent:
        """what happened"""
        v: LibvirtLifecycleEvent = self.data["event"]
        return v

    @property
    def detail(self) -> LibvirtLifecycleDetail:
        """why (libvirt's detail for that event)"""
        v: LibvirtLifecycleDetail = self.data["detail"]
        return v


class LibvirtMemoryFailure(Event):
    """libvirt: a hardware memory error (VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE).

    libvirt's domain event ``LIBVIRT_MEMORY_FAILURE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_MEMORY_FAILURE"

    @property
    def recipient(self) -> LibvirtMemoryFailureRecipient:
        """who saw it"""
        v: LibvirtMemoryFailureRecipient = self.data["recipient"]
        return v

    @property
    def action(self) -> LibvirtMemoryFailureAction:
        """what was done"""
        v: LibvirtMemoryFailureAction = self.data["action"]
        return v

    @property
    def action_required(self) -> bool:
        """whether the error must be handled"""
        v: bool = self.data["action_required"]
        return v

    @property
    def recursive(self) -> bool:
        """whether it happened while handling another one"""
        v: bool = self.data["recursive"]
        return v


class LibvirtPmsuspend(Event):
    """libvirt: the guest suspended to RAM (VIR_DOMAIN_EVENT_ID_PMSUSPEND).

    libvirt's domain event ``LIBVIRT_PMSUSPEND``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_PMSUSPEND"


class LibvirtPmsuspendDisk(Event):
    """libvirt: the guest suspended to disk (VIR_DOMAIN_EVENT_ID_PMSUSPEND_DISK).

    libvirt's domain event ``LIBVIRT_PMSUSPEND_DISK``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_PMSUSPEND_DISK"


class LibvirtPmwakeup(Event):
    """libvirt: the guest woke up (VIR_DOMAIN_EVENT_ID_PMWAKEUP).

    libvirt's domain event ``LIBVIRT_PMWAKEUP``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_PMWAKEUP"


class LibvirtReboot(Event):
    """libvirt: the guest rebooted (VIR_DOMAIN_EVENT_ID_REBOOT).

    libvirt's domain event ``LIBVIRT_REBOOT``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_REBOOT"


class LibvirtRtcChange(Event):
    """libvirt: the guest changed its RTC (VIR_DOMAIN_EVENT_ID_RTC_CHANGE).

    libvirt's domain event ``LIBVIRT_RTC_CHANGE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_RTC_CHANGE"

    @property
    def offset(self) -> int:
        """new offset from the host's UTC, in seconds"""
        v: int = self.data["offset"]
        return v


class LibvirtTrayChange(Event):
    """libvirt: a removable disk's tray moved (VIR_DOMAIN_EVENT_ID_TRAY_CHANGE).

    libvirt's domain event ``LIBVIRT_TRAY_CHANGE``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_TRAY_CHANGE"

    @property
    def alias(self) -> str:
        """the device's libvirt alias (<alias name=...>, e.g. virtio-disk0, ua-usb1)"""
        v: str = self.data["alias"]
        return v

    @property
    def reason(self) -> LibvirtTrayChangeReason:
        """open or close"""
        v: LibvirtTrayChangeReason = self.data["reason"]
        return v


class LibvirtWatchdog(Event):
    """libvirt: the guest's watchdog fired (VIR_DOMAIN_EVENT_ID_WATCHDOG).

    libvirt's domain event ``LIBVIRT_WATCHDOG``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "LIBVIRT_WATCHDOG"

    @property
    def action(self) -> LibvirtWatchdogAction:
        """what the hypervisor did"""
        v: LibvirtWatchdogAction = self.data["action"]
        return v


class MemoryDeviceSizeChange(Event):
    """Emitted when the size of a memory device changes. Only emitted for memory devices that can actually
    change the size (e.g., virtio-mem due to guest action).

    Since: 5.1

    QMP event ``MEMORY_DEVICE_SIZE_CHANGE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "MEMORY_DEVICE_SIZE_CHANGE"

    @property
    def id_(self) -> str | None:
        """device's ID"""
        v: str | None = self.data.get("id")
        return v

    @property
    def size(self) -> int:
        """the new size of memory that the device provides"""
        v: int = self.data["size"]
        return v

    @property
    def qom_path(self) -> str:
        """path to the device object in the QOM tree (since 6.2)"""
        v: str = self.data["qom-path"]
        return v


class MemoryFailure(Event):
    """Emitted when a memory failure occurs on host side.

    Since: 5.2

    QMP event ``MEMORY_FAILURE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "MEMORY_FAILURE"

    @property
    def recipient(self) -> MemoryFailureRecipient:
        """recipient is defined as `MemoryFailureRecipient`."""
        v: MemoryFailureRecipient = self.data["recipient"]
        return v

    @property
    def action(self) -> MemoryFailureAction:
        """action that has been taken."""
        v: MemoryFailureAction = self.data["action"]
        return v

    @property
    def flags(self) -> MemoryFailureFlags:
        """flags for `MemoryFailureAction`."""
        v: MemoryFailureFlags = self.data["flags"]
        return v


class MemUnplugError(Event):
    """Emitted when memory hot unplug error occurs.

    Since: 2.4

    QMP event ``MEM_UNPLUG_ERROR`` (QEMU 7.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "MEM_UNPLUG_ERROR"

    @property
    def device(self) -> str:
        """device name"""
        v: str = self.data["device"]
        return v

    @property
    def msg(self) -> str:
        """Informative message"""
        v: str = self.data["msg"]
        return v


class Migration(Event):
    """Emitted when a migration event happens

    Since: 2.4

    QMP event ``MIGRATION`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "MIGRATION"

    @property
    def status(self) -> MigrationStatus:
        """`MigrationStatus` describing the current migration status."""
        v: MigrationStatus = self.data["status"]
        return v


class MigrationPass(Event):
    """Emitted from the source side of a migration at the start of each pass (when it syncs the dirty
    bitmap)

    Since: 2.6

    QMP event ``MIGRATION_PASS`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "MIGRATION_PASS"

    @property
    def pass_(self) -> int:
        """An incrementing count (starting at 1 on the first pass)"""
        v: int = self.data["pass"]
        return v


class NetdevStreamConnected(Event):
    """Emitted when the netdev stream backend is connected

    Since: 7.2

    QMP event ``NETDEV_STREAM_CONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "NETDEV_STREAM_CONNECTED"

    @property
    def netdev_id(self) -> str:
        """QEMU netdev id that is connected"""
        v: str = self.data["netdev-id"]
        return v

    @property
    def addr(self) -> SocketAddress:
        """The destination address"""
        v: SocketAddress = self.data["addr"]
        return v


class NetdevStreamDisconnected(Event):
    """Emitted when the netdev stream backend is disconnected

    Since: 7.2

    QMP event ``NETDEV_STREAM_DISCONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "NETDEV_STREAM_DISCONNECTED"

    @property
    def netdev_id(self) -> str:
        """QEMU netdev id that is disconnected"""
        v: str = self.data["netdev-id"]
        return v


class NetdevVhostUserConnected(Event):
    """Emitted when the vhost-user chardev is connected

    Since: 10.0

    QMP event ``NETDEV_VHOST_USER_CONNECTED`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "NETDEV_VHOST_USER_CONNECTED"

    @property
    def netdev_id(self) -> str:
        """QEMU netdev id that is connected"""
        v: str = self.data["netdev-id"]
        return v

    @property
    def chardev_id(self) -> str:
        """The character device id used by the QEMU netdev"""
        v: str = self.data["chardev-id"]
        return v


class NetdevVhostUserDisconnected(Event):
    """Emitted when the vhost-user chardev is disconnected

    Since: 10.0

    QMP event ``NETDEV_VHOST_USER_DISCONNECTED`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "NETDEV_VHOST_USER_DISCONNECTED"

    @property
    def netdev_id(self) -> str:
        """QEMU netdev id that is disconnected"""
        v: str = self.data["netdev-id"]
        return v


class NicRxFilterChanged(Event):
    """Emitted once until the `query-rx-filter` command is executed, the first event will always be emitted

    Since: 1.6

    QMP event ``NIC_RX_FILTER_CHANGED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "NIC_RX_FILTER_CHANGED"

    @property
    def name_(self) -> str | None:
        """net client name"""
        v: str | None = self.data.get("name")
        return v

    @property
    def path(self) -> str:
        """device path"""
        v: str = self.data["path"]
        return v


class Powerdown(Event):
    """Emitted when the virtual machine is powered down through the power control system, such as via ACPI.

    Since: 0.12

    QMP event ``POWERDOWN`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "POWERDOWN"


class PrManagerStatusChanged(Event):
    """Emitted whenever the connected status of a persistent reservation manager changes.

    Since: 3.0

    QMP event ``PR_MANAGER_STATUS_CHANGED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "PR_MANAGER_STATUS_CHANGED"

    @property
    def id_(self) -> str:
        """The id of the PR manager object"""
        v: str = self.data["id"]
        return v

    @property
    def connected(self) -> bool:
        """true if the PR manager is connected to a backend"""
        v: bool = self.data["connected"]
        return v


class QuorumFailure(Event):
    """Emitted by the Quorum block driver if it fails to establish a quorum

    Since: 2.0

    QMP event ``QUORUM_FAILURE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "QUORUM_FAILURE"

    @property
    def reference(self) -> str:
        """device name if defined else node name"""
        v: str = self.data["reference"]
        return v

    @property
    def sector_num(self) -> int:
        """number of the first sector of the failed read operation"""
        v: int = self.data["sector-num"]
        return v

    @property
    def sectors_count(self) -> int:
        """failed read operation sector count"""
        v: int = self.data["sectors-count"]
        return v


class QuorumReportBad(Event):
    """Emitted to report a corruption of a Quorum file

    Since: 2.0

    QMP event ``QUORUM_REPORT_BAD`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "QUORUM_REPORT_BAD"

    @property
    def type(self) -> QuorumOpType:
        """quorum operation type (Since 2.6)"""
        v: QuorumOpType = self.data["type"]
        return v

    @property
    def error(self) -> str | None:
        """error message. Only present on failure. This field contains a human-readable error message.
        There are no semantics other than that the block layer reported an error and clients should not
        try to interpret the error string.
        """
        v: str | None = self.data.get("error")
        return v

    @property
    def node_name(self) -> str:
        """the graph node name of the block driver state"""
        v: str = self.data["node-name"]
        return v

    @property
    def sector_num(self) -> int:
        """number of the first sector of the failed read operation"""
        v: int = self.data["sector-num"]
        return v

    @property
    def sectors_count(self) -> int:
        """failed read operation sector count"""
        v: int = self.data["sectors-count"]
        return v


class RdmaGidStatusChanged(Event):
    """Emitted when guest driver adds/deletes GID to/from device

    Since: 4.0

    QMP event ``RDMA_GID_STATUS_CHANGED`` (QEMU 7.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "RDMA_GID_STATUS_CHANGED"

    @property
    def netdev(self) -> str:
        """RoCE Network Device name"""
        v: str = self.data["netdev"]
        return v

    @property
    def gid_status(self) -> bool:
        """Add or delete indication"""
        v: bool = self.data["gid-status"]
        return v

    @property
    def subnet_prefix(self) -> int:
        """Subnet Prefix"""
        v: int = self.data["subnet-prefix"]
        return v

    @property
    def interface_id(self) -> int:
        """(undocumented)"""
        v: int = self.data["interface-id"]
        return v


class ReactorActionFailed(Event):
    """Emitted by reactor when a step of a rule's action failed.

    reactor's own event ``REACTOR_ACTION_FAILED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_ACTION_FAILED"

    @property
    def rule(self) -> str:
        """name of the rule"""
        v: str = self.data["rule"]
        return v

    @property
    def step(self) -> int:
        """index of the failed step (0-based)"""
        v: int = self.data["step"]
        return v

    @property
    def action(self) -> str:
        """name of the action that failed"""
        v: str = self.data["action"]
        return v

    @property
    def error(self) -> str:
        """what went wrong"""
        v: str = self.data["error"]
        return v


class ReactorResumeGaveUp(Event):
    """Emitted by the resume action when a VM kept failing after being resumed: it stays paused.

    reactor's own event ``REACTOR_RESUME_GAVE_UP``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_RESUME_GAVE_UP"

    @property
    def attempts(self) -> int:
        """failed resume attempts within the window (the `attempts` limit)"""
        v: int = self.data["attempts"]
        return v

    @property
    def last_error(self) -> str:
        """what ended the last attempt (a flap, a failed probe, an error to cont)"""
        v: str = self.data["last_error"]
        return v

    @property
    def since(self) -> float:
        """when the first of those attempts began (seconds since the epoch)"""
        v: float = self.data["since"]
        return v

    @property
    def rule(self) -> str | None:
        """the rule whose resume gave up"""
        v: str | None = self.data.get("rule")
        return v


class ReactorRulesReloaded(Event):
    """Emitted by reactor after it (re)loaded its rules.

    reactor's own event ``REACTOR_RULES_RELOADED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_RULES_RELOADED"

    @property
    def ok(self) -> bool:
        """true when the rules loaded; false when the old rules stay in force"""
        v: bool = self.data["ok"]
        return v

    @property
    def errors(self) -> list[str]:
        """the load errors (empty when ok)"""
        v: list[str] = self.data["errors"]
        return v

    @property
    def rules(self) -> int | None:
        """number of rules now in force"""
        v: int | None = self.data.get("rules")
        return v


class ReactorTimer(Event):
    """Emitted by reactor when a timer started by a rule fires.

    reactor's own event ``REACTOR_TIMER``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_TIMER"

    @property
    def name_(self) -> str:
        """name of the timer"""
        v: str = self.data["name"]
        return v

    @property
    def count(self) -> int | None:
        """how many times this timer has fired"""
        v: int | None = self.data.get("count")
        return v


class ReactorVmConnected(Event):
    """Emitted by reactor when its QMP connection to a VM is up.

    reactor's own event ``REACTOR_VM_CONNECTED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_VM_CONNECTED"

    @property
    def status(self) -> RunState:
        """the VM's run state"""
        v: RunState = self.data["status"]
        return v

    @property
    def qemu_version(self) -> str:
        """QEMU's version (major.minor.micro)"""
        v: str = self.data["qemu_version"]
        return v

    @property
    def state(self) -> LibvirtDomainState | None:
        """libvirt VMs: libvirt's domain state"""
        v: LibvirtDomainState | None = self.data.get("state")
        return v

    @property
    def reason(self) -> str | None:
        """libvirt VMs: the reason of that state (paused: user, ioerror, watchdog ...)"""
        v: str | None = self.data.get("reason")
        return v

    @property
    def source(self) -> str | None:
        """where the VM's events come from: 'libvirt' (absent for QMP connections)"""
        v: str | None = self.data.get("source")
        return v


class ReactorVmDisconnected(Event):
    """Emitted by reactor when its QMP connection to a VM is lost or closed.

    reactor's own event ``REACTOR_VM_DISCONNECTED``.
    """

    __slots__ = ()
    NAME: ClassVar[str] = "REACTOR_VM_DISCONNECTED"

    @property
    def reason(self) -> str:
        """why the connection ended"""
        v: str = self.data["reason"]
        return v


class Reset(Event):
    """Emitted when the virtual machine is reset

    Since: 0.12

    QMP event ``RESET`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "RESET"

    @property
    def guest(self) -> bool:
        """If true, the reset was triggered by a guest request (such as a guest-initiated ACPI reboot
        request or other hardware-specific action) rather than a host request (such as the QMP command
        `system_reset`). (since 2.10)
        """
        v: bool = self.data["guest"]
        return v

    @property
    def reason(self) -> ShutdownCause:
        """The `ShutdownCause` of the `RESET`. (since 4.0)"""
        v: ShutdownCause = self.data["reason"]
        return v


class Resume(Event):
    """Emitted when the virtual machine resumes execution

    Since: 0.12

    QMP event ``RESUME`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "RESUME"


class RtcChange(Event):
    """Emitted when the guest changes the RTC time.

    Since: 0.13

    QMP event ``RTC_CHANGE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "RTC_CHANGE"

    @property
    def offset(self) -> int:
        """offset in seconds between base RTC clock (as specified by -rtc base), and new RTC clock value
        """
        v: int = self.data["offset"]
        return v

    @property
    def qom_path(self) -> str:
        """path to the RTC object in the QOM tree"""
        v: str = self.data["qom-path"]
        return v


class SclpCpiInfoAvailable(Event):
    """Emitted when the Control-Program Identification data is available in the QOM tree.

    Since: 10.2

    QMP event ``SCLP_CPI_INFO_AVAILABLE`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SCLP_CPI_INFO_AVAILABLE"


class Shutdown(Event):
    """Emitted when the virtual machine has shut down, indicating that QEMU is about to exit.

    Since: 0.12

    QMP event ``SHUTDOWN`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SHUTDOWN"

    @property
    def guest(self) -> bool:
        """If true, the shutdown was triggered by a guest request (such as a guest-initiated ACPI shutdown
        request or other hardware-specific action) rather than a host request (such as sending QEMU a
        SIGINT). (since 2.10)
        """
        v: bool = self.data["guest"]
        return v

    @property
    def reason(self) -> ShutdownCause:
        """The `ShutdownCause` which resulted in the `SHUTDOWN`. (since 4.0)"""
        v: ShutdownCause = self.data["reason"]
        return v


class SpiceConnected(Event):
    """Emitted when a SPICE client establishes a connection

    Since: 0.14

    QMP event ``SPICE_CONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SPICE_CONNECTED"

    @property
    def server(self) -> SpiceBasicInfo:
        """server information"""
        v: SpiceBasicInfo = self.data["server"]
        return v

    @property
    def client(self) -> SpiceBasicInfo:
        """client information"""
        v: SpiceBasicInfo = self.data["client"]
        return v


class SpiceDisconnected(Event):
    """Emitted when the SPICE connection is closed

    Since: 0.14

    QMP event ``SPICE_DISCONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SPICE_DISCONNECTED"

    @property
    def server(self) -> SpiceBasicInfo:
        """server information"""
        v: SpiceBasicInfo = self.data["server"]
        return v

    @property
    def client(self) -> SpiceBasicInfo:
        """client information"""
        v: SpiceBasicInfo = self.data["client"]
        return v


class SpiceInitialized(Event):
    """Emitted after initial handshake and authentication takes place (if any) and the SPICE channel is up
    and running

    Since: 0.14

    QMP event ``SPICE_INITIALIZED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SPICE_INITIALIZED"

    @property
    def server(self) -> SpiceServerInfo:
        """server information"""
        v: SpiceServerInfo = self.data["server"]
        return v

    @property
    def client(self) -> SpiceChannel:
        """client information"""
        v: SpiceChannel = self.data["client"]
        return v


class SpiceMigrateCompleted(Event):
    """Emitted when SPICE migration has completed

    Since: 1.3

    QMP event ``SPICE_MIGRATE_COMPLETED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SPICE_MIGRATE_COMPLETED"


class Stop(Event):
    """Emitted when the virtual machine is stopped

    Since: 0.12

    QMP event ``STOP`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "STOP"


class Suspend(Event):
    """Emitted when guest enters a hardware suspension state, for example, S3 state, which is sometimes
    called standby state

    Since: 1.1

    QMP event ``SUSPEND`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SUSPEND"


class SuspendDisk(Event):
    """Emitted when guest enters a hardware suspension state with data saved on disk, for example, S4
    state, which is sometimes called hibernate state

    Since: 1.2

    QMP event ``SUSPEND_DISK`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "SUSPEND_DISK"


class UnplugPrimary(Event):
    """Emitted from source side of a migration when migration state is WAIT_UNPLUG. Device was unplugged by
    guest operating system. Device resources in QEMU are kept on standby to be able to re-plug it in
    case of migration failure.

    Since: 4.2

    QMP event ``UNPLUG_PRIMARY`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "UNPLUG_PRIMARY"

    @property
    def device_id(self) -> str:
        """QEMU device id of the unplugged device"""
        v: str = self.data["device-id"]
        return v


class VfioMigration(Event):
    """This event is emitted when a VFIO device migration state is changed.

    Since: 9.1

    QMP event ``VFIO_MIGRATION`` (QEMU 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VFIO_MIGRATION"

    @property
    def device_id(self) -> str:
        """The device's id, if it has one."""
        v: str = self.data["device-id"]
        return v

    @property
    def qom_path(self) -> str:
        """The device's QOM path."""
        v: str = self.data["qom-path"]
        return v

    @property
    def device_state(self) -> QapiVfioMigrationState:
        """The new changed device migration state."""
        v: QapiVfioMigrationState = self.data["device-state"]
        return v


class VfuClientHangup(Event):
    """Emitted when the client of a TYPE_VFIO_USER_SERVER closes the communication channel

    Since: 7.1

    QMP event ``VFU_CLIENT_HANGUP`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VFU_CLIENT_HANGUP"

    @property
    def vfu_id(self) -> str:
        """ID of the TYPE_VFIO_USER_SERVER object. It is the last component of @vfu-qom-path referenced
        below
        """
        v: str = self.data["vfu-id"]
        return v

    @property
    def vfu_qom_path(self) -> str:
        """path to the TYPE_VFIO_USER_SERVER object in the QOM tree"""
        v: str = self.data["vfu-qom-path"]
        return v

    @property
    def dev_id(self) -> str:
        """ID of attached PCI device"""
        v: str = self.data["dev-id"]
        return v

    @property
    def dev_qom_path(self) -> str:
        """path to attached PCI device in the QOM tree"""
        v: str = self.data["dev-qom-path"]
        return v


class VncConnected(Event):
    """Emitted when a VNC client establishes a connection

    Since: 0.13

    QMP event ``VNC_CONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VNC_CONNECTED"

    @property
    def server(self) -> VncServerInfo:
        """server information"""
        v: VncServerInfo = self.data["server"]
        return v

    @property
    def client(self) -> VncBasicInfo:
        """client information"""
        v: VncBasicInfo = self.data["client"]
        return v


class VncDisconnected(Event):
    """Emitted when the connection is closed

    Since: 0.13

    QMP event ``VNC_DISCONNECTED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VNC_DISCONNECTED"

    @property
    def server(self) -> VncServerInfo:
        """server information"""
        v: VncServerInfo = self.data["server"]
        return v

    @property
    def client(self) -> VncClientInfo:
        """client information"""
        v: VncClientInfo = self.data["client"]
        return v


class VncInitialized(Event):
    """Emitted after authentication takes place (if any) and the VNC session is made active

    Since: 0.13

    QMP event ``VNC_INITIALIZED`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VNC_INITIALIZED"

    @property
    def server(self) -> VncServerInfo:
        """server information"""
        v: VncServerInfo = self.data["server"]
        return v

    @property
    def client(self) -> VncClientInfo:
        """client information"""
        v: VncClientInfo = self.data["client"]
        return v


class VserportChange(Event):
    """Emitted when the guest opens or closes a virtio-serial port.

    Since: 2.1

    QMP event ``VSERPORT_CHANGE`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "VSERPORT_CHANGE"

    @property
    def id_(self) -> str:
        """device identifier of the virtio-serial port"""
        v: str = self.data["id"]
        return v

    @property
    def open(self) -> bool:
        """true if the guest has opened the virtio-serial port"""
        v: bool = self.data["open"]
        return v


class Wakeup(Event):
    """Emitted when the guest has woken up from suspend state and is running

    Since: 1.1

    QMP event ``WAKEUP`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "WAKEUP"


class Watchdog(Event):
    """Emitted when the watchdog device's timer is expired

    Since: 0.13

    QMP event ``WATCHDOG`` (QEMU 7.2, 10.2).
    """

    __slots__ = ()
    NAME: ClassVar[str] = "WATCHDOG"

    @property
    def action(self) -> WatchdogAction:
        """action that has been taken"""
        v: WatchdogAction = self.data["action"]
        return v


#: Every typed event class, by QMP event name.
EVENT_CLASSES: dict[str, type[Event]] = {
    "ACPI_DEVICE_OST": AcpiDeviceOst,
    "BALLOON_CHANGE": BalloonChange,
    "BLOCK_EXPORT_DELETED": BlockExportDeleted,
    "BLOCK_IMAGE_CORRUPTED": BlockImageCorrupted,
    "BLOCK_IO_ERROR": BlockIoError,
    "BLOCK_JOB_CANCELLED": BlockJobCancelled,
    "BLOCK_JOB_COMPLETED": BlockJobCompleted,
    "BLOCK_JOB_ERROR": BlockJobError,
    "BLOCK_JOB_PENDING": BlockJobPending,
    "BLOCK_JOB_READY": BlockJobReady,
    "BLOCK_WRITE_THRESHOLD": BlockWriteThreshold,
    "COLO_EXIT": ColoExit,
    "CPU_POLARIZATION_CHANGE": CpuPolarizationChange,
    "DEVICE_DELETED": DeviceDeleted,
    "DEVICE_TRAY_MOVED": DeviceTrayMoved,
    "DEVICE_UNPLUG_GUEST_ERROR": DeviceUnplugGuestError,
    "DUMP_COMPLETED": DumpCompleted,
    "FAILOVER_NEGOTIATED": FailoverNegotiated,
    "GUEST_CRASHLOADED": GuestCrashloaded,
    "GUEST_PANICKED": GuestPanicked,
    "GUEST_PVSHUTDOWN": GuestPvshutdown,
    "HV_BALLOON_STATUS_REPORT": HvBalloonStatusReport,
    "JOB_STATUS_CHANGE": JobStatusChange,
    "LIBVIRT_AGENT_LIFECYCLE": LibvirtAgentLifecycle,
    "LIBVIRT_BALLOON_CHANGE": LibvirtBalloonChange,
    "LIBVIRT_BLOCK_JOB": LibvirtBlockJob,
    "LIBVIRT_BLOCK_THRESHOLD": LibvirtBlockThreshold,
    "LIBVIRT_CONTROL_ERROR": LibvirtControlError,
    "LIBVIRT_DEVICE_ADDED": LibvirtDeviceAdded,
    "LIBVIRT_DEVICE_REMOVAL_FAILED": LibvirtDeviceRemovalFailed,
    "LIBVIRT_DEVICE_REMOVED": LibvirtDeviceRemoved,
    "LIBVIRT_DISK_CHANGE": LibvirtDiskChange,
    "LIBVIRT_IO_ERROR_REASON": LibvirtIoErrorReason,
    "LIBVIRT_JOB_COMPLETED": LibvirtJobCompleted,
    "LIBVIRT_LIFECYCLE": LibvirtLifecycle,
    "LIBVIRT_MEMORY_FAILURE": LibvirtMemoryFailure,
    "LIBVIRT_PMSUSPEND": LibvirtPmsuspend,
    "LIBVIRT_PMSUSPEND_DISK": LibvirtPmsuspendDisk,
    "LIBVIRT_PMWAKEUP": LibvirtPmwakeup,
    "LIBVIRT_REBOOT": LibvirtReboot,
    "LIBVIRT_RTC_CHANGE": LibvirtRtcChange,
    "LIBVIRT_TRAY_CHANGE": LibvirtTrayChange,
    "LIBVIRT_WATCHDOG": LibvirtWatchdog,
    "MEMORY_DEVICE_SIZE_CHANGE": MemoryDeviceSizeChange,
    "MEMORY_FAILURE": MemoryFailure,
    "MEM_UNPLUG_ERROR": MemUnplugError,
    "MIGRATION": Migration,
    "MIGRATION_PASS": MigrationPass,
    "NETDEV_STREAM_CONNECTED": NetdevStreamConnected,
    "NETDEV_STREAM_DISCONNECTED": NetdevStreamDisconnected,
    "NETDEV_VHOST_USER_CONNECTED": NetdevVhostUserConnected,
    "NETDEV_VHOST_USER_DISCONNECTED": NetdevVhostUserDisconnected,
    "NIC_RX_FILTER_CHANGED": NicRxFilterChanged,
    "POWERDOWN": Powerdown,
    "PR_MANAGER_STATUS_CHANGED": PrManagerStatusChanged,
    "QUORUM_FAILURE": QuorumFailure,
    "QUORUM_REPORT_BAD": QuorumReportBad,
    "RDMA_GID_STATUS_CHANGED": RdmaGidStatusChanged,
    "REACTOR_ACTION_FAILED": ReactorActionFailed,
    "REACTOR_RESUME_GAVE_UP": ReactorResumeGaveUp,
    "REACTOR_RULES_RELOADED": ReactorRulesReloaded,
    "REACTOR_TIMER": ReactorTimer,
    "REACTOR_VM_CONNECTED": ReactorVmConnected,
    "REACTOR_VM_DISCONNECTED": ReactorVmDisconnected,
    "RESET": Reset,
    "RESUME": Resume,
    "RTC_CHANGE": RtcChange,
    "SCLP_CPI_INFO_AVAILABLE": SclpCpiInfoAvailable,
    "SHUTDOWN": Shutdown,
    "SPICE_CONNECTED": SpiceConnected,
    "SPICE_DISCONNECTED": SpiceDisconnected,
    "SPICE_INITIALIZED": SpiceInitialized,
    "SPICE_MIGRATE_COMPLETED": SpiceMigrateCompleted,
    "STOP": Stop,
    "SUSPEND": Suspend,
    "SUSPEND_DISK": SuspendDisk,
    "UNPLUG_PRIMARY": UnplugPrimary,
    "VFIO_MIGRATION": VfioMigration,
    "VFU_CLIENT_HANGUP": VfuClientHangup,
    "VNC_CONNECTED": VncConnected,
    "VNC_DISCONNECTED": VncDisconnected,
    "VNC_INITIALIZED": VncInitialized,
    "VSERPORT_CHANGE": VserportChange,
    "WAKEUP": Wakeup,
    "WATCHDOG": Watchdog,
}
