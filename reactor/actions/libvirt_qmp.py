"""Actions for libvirt VMs: raw QMP by explicit request, and libvirt snapshots.

::

    - libvirt_qmp: query-block                         # through virDomainQemuMonitorCommand
    - libvirt_qmp: {execute: block-set-write-threshold, arguments: {node-name: libvirt-1-format, write-threshold: 0}}
    - libvirt_snapshot: {name: "pre-resume-{{ event.timestamp.timestamp() | int }}", keep: 3}

``qmp: cont`` needs none of these: on a libvirt VM the ``qmp`` action's
commands already go through libvirt's API (see :mod:`reactor.sources.libvirt.domain`).
``libvirt_qmp`` is the explicit opt-in for everything else: libvirt marks a
domain that received raw monitor commands as *tainted* (``custom-monitor``).
On a QMP VM it is the same as ``qmp``, so a rule can use it for both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reactor.actions.action import ActionContext, ActionSpec, VMHandle, action
from reactor.actions.qmp import QmpPolicy, command_problem, policy_refusal
from reactor.errors import ActionError, ArgumentErrors

__all__ = ["LIBVIRT_ACTIONS", "LIBVIRT_QMP", "LIBVIRT_SNAPSHOT", "LibvirtQmpArgs", "LibvirtSnapshotArgs"]


@dataclass(frozen=True)
class LibvirtQmpArgs:
    execute: str
    arguments: dict[str, Any] | None = None
    vm: str | None = None
    #: Opt in to a destructive command (the same deny-list as the ``qmp`` action).
    allow_destructive: bool = False


def _check_qmp(args: LibvirtQmpArgs) -> None:
    refused = command_problem(args.execute, args.allow_destructive, "libvirt_qmp")
    if refused is not None:
        raise ArgumentErrors([("execute", refused)])


def _target(ctx: ActionContext, name: str | None) -> VMHandle:
    return ctx.vm if name is None else ctx.vm_named(name)


def _read_only(args: Any) -> bool:
    command = getattr(args, "execute", "")
    return not (isinstance(command, str) and command.startswith("query-"))


async def _libvirt_qmp(ctx: ActionContext, args: LibvirtQmpArgs) -> Any:
    """Run a QMP command; on a libvirt VM through libvirt's monitor passthrough (which taints the domain)."""
    refusal = policy_refusal(ctx, args.execute)
    if refusal is not None:
        raise ActionError(refusal)
    from reactor.sources.libvirt.domain import LibvirtVM  # at run time: `reactor check` needs only the spec

    vm = _target(ctx, args.vm)
    if isinstance(vm, LibvirtVM):
        ctx.log.info("%s: %s through libvirt's monitor passthrough (libvirt marks the domain tainted)",
                     vm.name, args.execute)
        return await vm.monitor_command(args.execute, args.arguments)
    return await vm.execute(args.execute, args.arguments)


LIBVIRT_QMP: ActionSpec = action("libvirt_qmp", shorthand="execute", mutating=_read_only, check=_check_qmp,
                                 resources=(QmpPolicy,), command=("execute", "arguments"))(_libvirt_qmp)


@dataclass(frozen=True)
class LibvirtSnapshotArgs:
    name: str
    vmstate: bool = True
    keep: int | None = None
    vm: str | None = None


def _check_snapshot(args: Any) -> None:
    keep = getattr(args, "keep", None)
    if isinstance(keep, int) and keep < 1:
        raise ArgumentErrors([("keep", f"keep: {keep} must be at least 1")])


async def _libvirt_snapshot(ctx: ActionContext, args: LibvirtSnapshotArgs) -> dict[str, Any]:
    """Take an internal snapshot through libvirt's snapshot API; keep the newest ``keep`` reactor made."""
    from reactor.sources.libvirt.domain import REACTOR_SNAPSHOT, LibvirtVM  # at run time, as above

    vm = _target(ctx, args.vm)
    if not isinstance(vm, LibvirtVM):
        raise ActionError(f"{vm.name} is not a libvirt VM (use the snapshot action for QMP VMs)")
    made = await vm.create_snapshot(args.name, vmstate=args.vmstate,
                                    description=f"{REACTOR_SNAPSHOT} rule {ctx.rule}")
    deleted: list[str] = []
    if args.keep is not None:
        ours = [s for s in await vm.snapshots() if str(s["description"]).startswith(REACTOR_SNAPSHOT)]
        for snap in ours[: max(0, len(ours) - args.keep)]:
            await vm.delete_snapshot(snap["name"])
            deleted.append(snap["name"])
    return {"name": made["name"], "vmstate": args.vmstate, "deleted": deleted}


LIBVIRT_SNAPSHOT: ActionSpec = action("libvirt_snapshot", shorthand="name", check=_check_snapshot,
                                      timeout=600.0)(_libvirt_snapshot)

#: The actions to register (``registry.add(spec)`` for each).
LIBVIRT_ACTIONS: tuple[ActionSpec, ...] = (LIBVIRT_QMP, LIBVIRT_SNAPSHOT)
