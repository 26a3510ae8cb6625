"""``snapshot``: take an internal or external snapshot and keep the newest ``keep``.

Every snapshot reactor takes is tagged ``reactor-SERIES-YYYYmmddTHHMMSS.ffffffZ``
(``SERIES`` is ``name``, default the rule's name), so reactor recognises its own:
``keep: N`` only ever deletes snapshots whose tag starts with ``reactor-SERIES-``,
oldest first, and never touches snapshots anybody else made.

``mode: internal`` (default) stores the snapshot inside the qcow2 images:

* with ``vmstate: true`` (default) through QMP's ``snapshot-save`` job (disks
  plus RAM and device state, saved in the first device), waiting for the job
  to conclude and failing with the job's error;
* with ``vmstate: false`` a disk-only ``transaction`` of
  ``blockdev-snapshot-internal-sync``, one per device.

``mode: external`` makes one ``blockdev-snapshot-sync`` per device in one
``transaction``: the current image becomes the read-only backing file and
a new qcow2 overlay, ``DIR/VM-NODE-TAG.qcow2``, takes the writes.  ``dir`` is
required.  ``keep`` is refused for external snapshots: removing an overlay from
a live backing chain needs a ``block-commit`` that rewrites the base image,
which reactor leaves to the operator.

``devices`` are block node names (what ``-blockdev node-name=`` says, what
``BLOCK_IO_ERROR`` carries in ``node-name``); by default every writable
device's top node (qcow2 ones only, for internal snapshots).  The result is
``{tag, mode, devices, vmstate, overlays, deleted}``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reactor.actions.action import ActionContext, Duration, VMHandle, action
from reactor.errors import ActionError, ArgumentErrors, ProblemKey
from reactor.model.event import Event

__all__ = ["DEFAULT_TIMEOUT", "PREFIX", "SNAPSHOT", "SnapshotArgs", "snapshot_tag"]

#: Every tag reactor makes starts with this.
PREFIX = "reactor-"

_SERIES = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


#: The default of ``timeout``.
DEFAULT_TIMEOUT = Duration(300.0)


@dataclass(frozen=True, slots=True)
class SnapshotArgs:
    name: str | None = None
    mode: Literal["internal", "external"] = "internal"
    vmstate: bool = True
    devices: list[str] = field(default_factory=list)
    keep: int | None = None
    dir: str | None = None
    vm: str | None = None
    timeout: Duration = DEFAULT_TIMEOUT


def _check(args: SnapshotArgs) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    if args.name is not None and "{{" not in args.name and not _SERIES.match(args.name):
        problems.append(("name", f"name {args.name!r}: letters, digits, '.', '_' and '-' only"))
    if args.keep is not None and args.keep < 1:
        problems.append(("keep", "keep must be at least 1"))
    if args.mode == "external":
        if args.dir is None:
            problems.append((("dir", "mode"), "mode external needs dir: the directory for the overlay images"))
        if args.keep is not None:
            problems.append((("keep", "mode"), "keep applies to internal snapshots only (external overlays "
                             "are part of the disk's backing chain; reactor never removes them)"))
    if args.timeout <= 0:
        problems.append(("timeout", "timeout must be positive"))
    if problems:
        raise ArgumentErrors(problems)


def snapshot_tag(series: str, now: float) -> str:
    """The tag of a snapshot of ``series`` taken at ``now`` (seconds since the epoch)."""
    stamp = _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{PREFIX}{series}-{stamp}"


async def _devices(vm: VMHandle, internal: bool) -> list[str]:
    block = await vm.execute("query-block")
    nodes: list[str] = []
    for dev in block if isinstance(block, list) else []:
        ins = dev.get("inserted") if isinstance(dev, dict) else None
        if not isinstance(ins, dict) or ins.get("ro") or not ins.get("node-name"):
            continue
        if internal and ins.get("drv") != "qcow2":
            continue
        nodes.append(str(ins["node-name"]))
    if not nodes:
        kind = "writable qcow2" if internal else "writable"
        raise ActionError(f"{vm.name}: no {kind} block device to snapshot (name them with devices:)")
    return nodes


async def _wait_job(ctx: ActionContext, vm: VMHandle, job_id: str, timeout: float) -> None:
    def ended(event: Event) -> bool:
        return event.data.get("id") == job_id and event.data.get("status") in ("concluded", "null")

    try:
        await ctx.wait_for("JOB_STATUS_CHANGE", match=ended, vm=vm.name, timeout=timeout)
    except TimeoutError as err:
        raise ActionError(f"job {job_id} did not end within {timeout:g}s") from err
    jobs = await vm.execute("query-jobs")
    error = None
    for job in jobs if isinstance(jobs, list) else []:
        if isinstance(job, dict) and job.get("id") == job_id:
            error = job.get("error")
            if job.get("status") == "concluded":
                await vm.execute("job-dismiss", {"id": job_id})
    if error:
        raise ActionError(f"job {job_id} failed: {error}")


async def _internal(ctx: ActionContext, vm: VMHandle, args: SnapshotArgs, tag: str,
                    devices: list[str]) -> str | None:
    if not args.vmstate:
        await vm.execute("transaction", {"actions": [
            {"type": "blockdev-snapshot-internal-sync", "data": {"device": d, "name": tag}} for d in devices
        ]})
        return None
    job_id = f"reactor-snap-{ctx.run_id}-{ctx.step}"
    await vm.execute("snapshot-save", {"job-id": job_id, "tag": tag, "vmstate": devices[0], "devices": devices})
    await _wait_job(ctx, vm, job_id, args.timeout)
    return devices[0]


def _node_name(tag: str, node: str) -> str:
    return "rx" + hashlib.sha1(f"{tag}\0{node}".encode()).hexdigest()[:16]


async def _external(vm: VMHandle, args: SnapshotArgs, tag: str, devices: list[str]) -> list[str]:
    assert args.dir is not None
    directory = Path(args.dir)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    overlays = [str((directory / f"{vm.name}-{d}-{tag}.qcow2").resolve()) for d in devices]
    await vm.execute("transaction", {"actions": [
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": d, "snapshot-file": f, "snapshot-node-name": _node_name(tag, d),
                  "format": "qcow2", "mode": "absolute-paths"}}
        for d, f in zip(devices, overlays, strict=True)
    ]})
    return overlays


async def _prune(vm: VMHandle, series: str, keep: int, devices: list[str]) -> list[str]:
    """Delete the oldest ``reactor-SERIES-*`` snapshots beyond ``keep``; the tags deleted."""
    prefix = f"{PREFIX}{series}-"
    nodes = await vm.execute("query-named-block-nodes")
    found: dict[str, tuple[int, int]] = {}
    holders: dict[str, list[str]] = {}
    for node in nodes if isinstance(nodes, list) else []:
        name = node.get("node-name") if isinstance(node, dict) else None
        if name not in devices:
            continue
        for snap in (node.get("image") or {}).get("snapshots") or []:
            tag = str(snap.get("name", ""))
            if not tag.startswith(prefix):
                continue  # not one of ours: never touched
            when = (int(snap.get("date-sec", 0)), int(snap.get("date-nsec", 0)))
            found[tag] = min(found.get(tag, when), when)
            holders.setdefault(tag, []).append(str(name))
    ordered = sorted(found, key=lambda t: (found[t], t))
    doomed = ordered[: max(0, len(ordered) - keep)]
    for tag in doomed:
        for node_name in holders[tag]:
            await vm.execute("blockdev-snapshot-delete-internal-sync", {"device": node_name, "name": tag})
    return doomed


async def _through_libvirt(ctx: ActionContext, vm: Any, args: SnapshotArgs, series: str,
                           tag: str) -> dict[str, Any]:
    await vm.create_snapshot(tag, vmstate=args.vmstate, timeout=args.timeout)
    deleted: list[str] = []
    if args.keep is not None:
        prefix = f"reactor-{series}-"
        ours = [str(s["name"]) for s in await vm.snapshots() if str(s.get("name", "")).startswith(prefix)]
        for old in ours[: max(0, len(ours) - args.keep)]:
            await vm.delete_snapshot(old)
            deleted.append(old)
    ctx.log.info("snapshot %s of %s through libvirt%s", tag, vm.name,
                 f"; deleted {', '.join(deleted)}" if deleted else "")
    return {"tag": tag, "mode": "internal", "devices": [], "vmstate": args.vmstate, "overlays": [],
            "deleted": deleted, "via": "libvirt"}


@action("snapshot", shorthand="name", check=_check)
async def SNAPSHOT(ctx: ActionContext, args: SnapshotArgs) -> dict[str, Any]:
    """Snapshot the VM's disks (``mode: internal`` with ``vmstate``, or ``external`` overlays in ``dir``),
    tagged ``reactor-NAME-TIME``; with ``keep: N`` delete the oldest reactor-made ones of that name beyond N."""
    vm = ctx.vm if args.vm is None else ctx.vm_named(args.vm)
    series = args.name or ctx.rule
    if not _SERIES.match(series):
        raise ActionError(f"snapshot name {series!r}: letters, digits, '.', '_' and '-' only")
    internal = args.mode == "internal"
    tag = snapshot_tag(series, ctx.now())
    create = getattr(vm, "create_snapshot", None)
    if internal and callable(create):
        # a libvirt VM: snapshots go through libvirt's API so libvirt's view stays true
        return await _through_libvirt(ctx, vm, args, series, tag)
    devices = list(args.devices) or await _devices(vm, internal)
    result: dict[str, Any] = {"tag": tag, "mode": args.mode, "devices": devices, "vmstate": None,
                              "overlays": [], "deleted": []}
    if internal:
        result["vmstate"] = await _internal(ctx, vm, args, tag, devices)
        if args.keep is not None:
            result["deleted"] = await _prune(vm, series, args.keep, devices)
    else:
        result["overlays"] = await _external(vm, args, tag, devices)
    ctx.log.info("snapshot %s of %s on %s%s", tag, vm.name, ", ".join(devices),
                 f"; deleted {', '.join(result['deleted'])}" if result["deleted"] else "")
    return result
