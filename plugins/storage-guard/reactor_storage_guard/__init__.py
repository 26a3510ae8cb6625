"""``storage_guard``: before resuming a VM, check that its storage can take writes again.

For every block device of the VM (``query-block``), the step fails when

* the device's ``io-status`` is not allowed (default: ``ok`` and ``nospace``
  are; ``failed`` — an I/O error other than ENOSPC — is not), or
* the filesystem holding the device's image file has less than ``min_free``
  bytes available (``statvfs``; reactor must run on the VM's host).

Put it before ``qmp: cont`` so a rule does not resume a VM into the same
error, pause, resume, pause... (the flapping KubeVirt had to cure with
backoff)::

    rules:
      - name: guarded-resume
        on: BLOCK_IO_ERROR
        match: {action: stop}
        throttle: {max: 3, within: 1h}
        actions:
          - storage_guard: {min_free: 2G}
          - qmp: cont
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reactor.plugin import ActionContext, ActionError, Duration, action

__all__ = ["GUARD", "GuardArgs", "image_path", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: str | int) -> int:
    """Bytes for ``1073741824``, ``"512M"``, ``"2G"``, ``"1.5TiB"`` (binary units); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 512M or 2G, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, not {value}")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"expected a size like 512M or 2G, not {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _human(n: int) -> str:
    for unit in ("P", "T", "G", "M", "K"):
        size = _UNITS[unit.lower()]
        if n >= size:
            return f"{n / size:.1f}{unit}iB"
    return f"{n}B"


@dataclass(frozen=True)
class GuardArgs:
    #: Bytes that must be available on the filesystem of every image (``512M``, ``2G``, or a number).
    min_free: str | int = "1G"
    #: Only these devices (device names, node names or qdev ids); default all with a medium.
    devices: list[str] = field(default_factory=list)
    #: The ``io-status`` values that do not fail the check.
    allow_io_status: list[str] = field(default_factory=lambda: ["ok", "nospace"])
    #: Fail when an image is not a local file (NBD, iSCSI ...) instead of skipping its space check.
    require_local: bool = False
    #: Timeout of the ``query-block`` command.
    timeout: Duration = Duration(10.0)  # noqa: RUF009


def _check(args: GuardArgs) -> None:
    if "{{" not in str(args.min_free):
        try:
            parse_size(args.min_free)
        except ValueError as err:
            raise ValueError(f"min_free: {err}") from err
    unknown = set(args.allow_io_status) - {"ok", "failed", "nospace"}
    if unknown:
        raise ValueError(f"allow_io_status: {sorted(unknown)[0]!r} is not one of ok, failed, nospace")


def _files(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if node.get("driver") == "file" and isinstance(node.get("filename"), str):
            yield node["filename"]
        for v in node.values():
            yield from _files(v)


def image_path(filename: str) -> str | None:
    """The local file behind a QEMU image filename (``json:{...}`` descriptions too); None if not local."""
    if filename.startswith("json:"):
        try:
            desc = json.loads(filename[5:])
        except ValueError:
            return None
        return next(_files(desc), None)
    if "://" in filename or filename.startswith(("nbd:", "iscsi:", "rbd:", "gluster:")):
        return None
    return filename


def _names(dev: Mapping[str, Any]) -> set[str]:
    inserted = dev.get("inserted") or {}
    return {n for n in (dev.get("device"), dev.get("qdev"), inserted.get("node-name")) if n}


@action("storage_guard", shorthand="min_free", mutating=False, check=_check)
async def GUARD(ctx: ActionContext, args: GuardArgs) -> dict[str, Any]:
    """Fail unless every block device's io-status is allowed and its image's filesystem has ``min_free``
    bytes available; the result lists each device checked."""
    need = parse_size(args.min_free)
    blocks = await ctx.vm.execute("query-block", timeout=args.timeout)
    wanted = set(args.devices)
    seen: set[str] = set()
    report: list[dict[str, Any]] = []
    problems: list[str] = []
    for dev in blocks:
        inserted = dev.get("inserted")
        names = _names(dev)
        if inserted is None or (wanted and not names & wanted):
            continue
        seen |= names
        label = dev.get("device") or inserted.get("node-name") or dev.get("qdev") or "?"
        status = dev.get("io-status", "ok")
        entry: dict[str, Any] = {"device": label, "io_status": status}
        if status not in args.allow_io_status:
            problems.append(f"{label}: io-status is {status!r}")
        filename = (inserted.get("image") or {}).get("filename") or inserted.get("file") or ""
        path = image_path(filename)
        if path is None:
            entry["skipped"] = f"not a local file: {filename}"
            if args.require_local:
                problems.append(f"{label}: {filename} is not a local file")
        else:
            try:
                st = os.statvfs(path)
            except OSError as err:
                problems.append(f"{label}: cannot check {path}: {err.strerror or err}")
            else:
                free = st.f_bavail * st.f_frsize
                entry.update(path=path, free=free)
                if free < need:
                    problems.append(f"{label}: only {_human(free)} free on the filesystem of {path} "
                                    f"(needs {_human(need)})")
        report.append(entry)
    missing = wanted - seen
    if missing:
        problems.append(f"no such block device with a medium: {', '.join(sorted(missing))}")
    if problems:
        raise ActionError("storage not ready: " + "; ".join(problems))
    ctx.log.info("storage ok for %d device(s)", len(report))
    return {"devices": report}
