"""storage_guard against a fake VM's query-block and the real filesystem of tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from reactor_storage_guard import GUARD, image_path, parse_size

from reactor.errors import ActionError, LoadError, RuleError
from reactor.testing import FakeVM, load_test_rules, make_event, run_action, run_rules


def block(device: str, filename: str, io_status: str | None = "ok", node: str = "") -> dict[str, Any]:
    dev: dict[str, Any] = {"device": device, "qdev": f"/machine/{device}", "locked": False, "removable": False,
                           "inserted": {"node-name": node or f"#block{device}", "file": filename,
                                        "image": {"filename": filename, "format": "raw"}}}
    if io_status is not None:
        dev["io-status"] = io_status
    return dev


@pytest.fixture
def disk(tmp_path: Path) -> str:
    p = tmp_path / "disk.img"
    p.write_bytes(b"\0" * 4096)
    return str(p)


def free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_sizes() -> None:
    assert [parse_size(v) for v in ("512", "1K", "2G", "1.5MiB", 10)] == [512, 1024, 2 << 30, 1572864, 10]
    with pytest.raises(ValueError, match="expected a size like 512M"):
        parse_size("lots")


def test_image_paths() -> None:
    assert image_path("/var/lib/vm.qcow2") == "/var/lib/vm.qcow2"
    assert image_path("nbd://host/x") is None
    desc = {"driver": "blkdebug", "config": "/x.cfg", "image": {"driver": "file", "filename": "/data/d.raw"}}
    assert image_path("json:" + json.dumps(desc)) == "/data/d.raw"


async def test_passes_with_enough_space_and_reports_devices(disk: str) -> None:
    vm = FakeVM("web-1", responses={"query-block": [block("d0", disk, "nospace"), {"device": "cd0"}]})
    result = await run_action(GUARD, {"min_free": "1K"}, vm=vm)
    assert result["devices"] == [{"device": "d0", "io_status": "nospace", "path": disk, "free": result["devices"][0]
                                  ["free"]}]
    assert result["devices"][0]["free"] > 1024
    assert vm.commands == [("query-block", {})]


async def test_fails_without_enough_space(disk: str) -> None:
    vm = FakeVM("web-1", responses={"query-block": [block("d0", disk)]})
    need = free(disk) + (1 << 40)
    with pytest.raises(ActionError, match=r"d0: only .* free on the filesystem of .*disk.img \(needs"):
        await run_action(GUARD, {"min_free": need}, vm=vm)


async def test_fails_on_a_real_io_error_and_on_unknown_devices(disk: str) -> None:
    vm = FakeVM("web-1", responses={"query-block": [block("d0", disk, "failed"), block("d1", disk)]})
    with pytest.raises(ActionError, match="d0: io-status is 'failed'"):
        await run_action(GUARD, {"min_free": 0}, vm=vm)
    assert await run_action(GUARD, {"min_free": 0, "devices": ["d1"]}, vm=vm)
    assert await run_action(GUARD, {"min_free": 0, "allow_io_status": ["ok", "failed"]}, vm=vm)
    with pytest.raises(ActionError, match="no such block device with a medium: d9"):
        await run_action(GUARD, {"devices": ["d9"]}, vm=vm)


async def test_non_local_images_are_skipped_unless_required() -> None:
    vm = FakeVM("web-1", responses={"query-block": [block("d0", "nbd://10.0.0.1/export")]})
    result = await run_action(GUARD, {}, vm=vm)
    assert result["devices"][0]["skipped"].startswith("not a local file")
    with pytest.raises(ActionError, match="is not a local file"):
        await run_action(GUARD, {"require_local": True}, vm=vm)


async def test_bad_arguments_are_load_errors_with_positions() -> None:
    with pytest.raises(RuleError, match="min_free"):
        await run_action(GUARD, {"min_free": "lots"})
    with pytest.raises(LoadError) as info:
        load_test_rules("""
            rules:
              - name: r
                on: BLOCK_IO_ERROR
                actions:
                  - storage_guard: {min_free: lots, allow_io_status: [ok, broken]}
            """, actions=[GUARD])
    assert [str(e) for e in info.value.errors] == [   # at the value (a check's "KEY: ..." error, since #13)
        "rules.yaml:6:35: storage_guard: min_free: expected a size like 512M or 2G, not 'lots'"]


RULES = """
rules:
  - name: guarded-resume
    on: BLOCK_IO_ERROR
    match: {action: stop}
    actions:
      - storage_guard: {min_free: MIN}
      - qmp: cont
"""


@pytest.mark.parametrize(("enough", "resumed"), [(True, True), (False, False)])
async def test_a_rule_resumes_only_when_the_guard_passes(disk: str, enough: bool, resumed: bool) -> None:
    vm = FakeVM("web-1", status="io-error", responses={"query-block": [block("d0", disk, "nospace")]})
    need = 1024 if enough else free(disk) + (1 << 40)
    event = make_event("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "stop",
                                          "reason": "No space left on device", "nospace": True}, vm="web-1")
    out = await run_rules(RULES.replace("MIN", str(need)), [event], actions=[GUARD], vms=[vm])
    assert [(c.action, c.status) for c in out.calls] == (
        [("storage_guard", "ok"), ("qmp", "ok")] if resumed else [("storage_guard", "failed")])
    assert (vm.status == "running") is resumed
    assert len(out.emitted("REACTOR_ACTION_FAILED")) == (0 if resumed else 1)
