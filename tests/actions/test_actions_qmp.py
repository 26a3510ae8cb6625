"""The ``qmp``, ``wait_for`` and ``snapshot`` actions, through the real daemon.

Argument checks run at rule load (no process needed).  Behaviour is checked
with the daemon connected to fake QMP servers (errors, timeouts, another VM
by name, events racing the command) and to real guest-less QEMU with qcow2
disks (internal snapshots with and without vmstate, ``keep`` leaving other
people's snapshots alone, external overlays).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from actions_fixtures import running, wait_runs, write_config
from fakeqmp import FakeQMP
from qemu.qmp import QMPClient
from qemu_fixtures import QemuVMFactory, qemu_vm_factory

from reactor.errors import LoadError
from reactor.rules.loader import load_rules_text
from reactor.testing.qemu import QemuVM, qcow2_disk

__all__ = ["qemu_vm_factory"]


# --- helpers ------------------------------------------------------------------------------


def load_error(text: str) -> str:
    with pytest.raises(LoadError) as info:
        load_rules_text([("r.yaml", text)])
    return str(info.value)


def one_rule(action: str) -> str:
    return f"rules:\n  - name: r\n    on: STOP\n    actions:\n      - {action}\n"


# --- load-time checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("qmp: Cont", "'Cont' is not a QMP command name"),
        ("qmp: qmp_capabilities", "negotiated by reactor itself"),
        ("qmp: {execute: cont, timeout: 0s}", "timeout must be positive"),
        ("qmp: {execute: cont, argumentz: {}}", "argumentz"),
        ("wait_for: resume", "event name 'resume' must be upper case"),
        ("wait_for: {event: SHUTDOWN, match: {reason: {like: x}}}", "reason: unknown operator 'like'"),
        ("wait_for: {event: []}", "event must name at least one event"),
        ("snapshot: {mode: external}", "mode external needs dir"),
        ("snapshot: {mode: external, dir: /tmp, keep: 2}", "keep applies to internal snapshots only"),
        ("snapshot: {keep: 0}", "keep must be at least 1"),
        ("snapshot: {name: 'a b'}", "letters, digits"),
        ("snapshot: {mode: copy}", "not one of internal, external"),
    ],
)
def test_arguments_are_checked_at_load(action: str, message: str) -> None:
    assert message in load_error(one_rule(action))


def test_valid_forms_load() -> None:
    rules = load_rules_text([("r.yaml", """
rules:
  - name: r
    on: BLOCK_IO_ERROR
    actions:
      - qmp: cont
      - qmp: {execute: block-job-resume, arguments: {device: "{{ event.data.device }}"}, vm: other, timeout: 2s}
      - wait_for: {event: SHUTDOWN, match: {any: [{reason: host-qmp-quit}, {guest: true}]}}
      - wait_for: {event: [RESUME, SHUTDOWN], timeout: 5s}
      - snapshot: nightly
      - snapshot: {mode: external, dir: /var/lib/overlays, devices: [d0]}
      - snapshot: {vmstate: false, keep: 3, devices: ["{{ event.data['node-name'] }}"]}
""")])
    assert [s.name for s in rules.rules[0].steps] == ["qmp"] * 2 + ["wait_for"] * 2 + ["snapshot"] * 3


# --- qmp and wait_for against fake QMP servers ------------------------------------------------


async def test_qmp_on_another_vm_by_name(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "a.qmp", name="a", status="running") as a, \
            FakeQMP(tmp_path / "b.qmp", name="b", status="paused") as b:
        cfg = write_config(tmp_path, {"a": a.address, "b": b.address}, """
rules:
  - name: follow
    on: STOP
    vms: a
    actions:
      - qmp: {execute: cont, vm: b}
      - wait_for: {event: RESUME, vm: b, timeout: 5s}
""")
        async with running(cfg):
            await a.wait_sessions()
            await b.wait_sessions()
            await asyncio.sleep(0.2)  # both connected (REACTOR_VM_CONNECTED delivered)
            a.emit("STOP")
            (run,) = await wait_runs(tmp_path / "state", "follow")
    assert run.status == "ok", run
    assert run.vm == "a"
    assert ("cont", {}) in [(c, args) for c, args in b.commands]
    assert "cont" not in [c for c, _ in a.commands]
    assert run.steps[1].result["vm"] == "b"


async def test_qmp_error_and_timeout_are_recorded(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "f.qmp", name="f", hang_on={"system_reset"}) as fake:
        cfg = write_config(tmp_path, {"f": fake.address}, """
rules:
  - name: errors
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: "{{ 'no-such-command' }}"
        on_error: continue
      - qmp: {execute: system_reset, timeout: 300ms}
        on_error: continue
      - qmp: query-status
        register: st
""")
        async with running(cfg):
            (run,) = await wait_runs(tmp_path / "state", "errors")
    assert [(s.status, s.error) for s in run.steps] == [
        ("failed", "no-such-command: CommandNotFound: The command no-such-command has not been found"),
        ("failed", "system_reset: no answer from f within 0.3s"),
        ("ok", None),
    ]
    assert run.steps[2].result["status"] == "paused"  # the connection survived the timeout


async def test_wait_for_sees_an_event_that_came_with_the_reply(tmp_path: Path) -> None:
    # The fake, like QEMU, writes STOP before stop's reply: wait_for must still see it.
    async with FakeQMP(tmp_path / "f.qmp", name="f", status="running") as fake:
        cfg = write_config(tmp_path, {"f": fake.address}, """
rules:
  - name: race
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: stop
      - wait_for: {event: STOP, timeout: 2s}
      - wait_for: {event: [RESET, SHUTDOWN], match: {reason: {in: [guest-reset, guest-shutdown]}}, timeout: 5s}
      - wait_for: {event: POWERDOWN, timeout: 300ms}
""")
        async with running(cfg):
            await fake.wait_sessions()
            await asyncio.sleep(0.3)
            fake.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})  # does not match
            fake.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
            (run,) = await wait_runs(tmp_path / "state", "race")
    assert [s.status for s in run.steps] == ["ok", "ok", "ok", "failed"], run
    assert run.steps[2].result["event"] == "SHUTDOWN"
    assert run.steps[2].result["data"]["reason"] == "guest-shutdown"
    assert run.steps[3].error == "no POWERDOWN from f within 0.3s"


# --- snapshots on real QEMU -----------------------------------------------------------------


class Monitor:
    def __init__(self) -> None:
        self.client = QMPClient("test")

    async def __aenter__(self) -> Monitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return await self.client.execute(cmd, args)

    async def snapshots(self, node: str) -> list[str]:
        nodes = await self.execute("query-named-block-nodes")
        (found,) = [n for n in nodes if n["node-name"] == node]
        return [s["name"] for s in found["image"].get("snapshots", [])]


async def qcow2_vm(factory: QemuVMFactory, tmp: Path, name: str) -> QemuVM:
    disk = qcow2_disk(tmp / f"{name}.qcow2", node_name="q0", device_id="vd0")
    return await factory(name=name, qmp_path=tmp / f"{name}.test.qmp", disks=[disk], extra_args=[
        "-chardev", f"socket,id=reactor,path={tmp / (name + '.qmp')},server=on,wait=off",
        "-mon", "chardev=reactor,mode=control",
    ])


@pytest.mark.qemu
async def test_internal_snapshots_keep_only_deletes_reactors_own(
    qemu_vm_factory: QemuVMFactory, tmp_path: Path
) -> None:
    vm = await qcow2_vm(qemu_vm_factory, tmp_path, "snap")
    async with Monitor() as mon:
        await mon.client.connect(str(vm.qmp_path))
        for tag in ("manual", "reactor-other-20000101T000000.000000Z"):  # someone else's; another series
            await mon.execute("blockdev-snapshot-internal-sync", {"device": "q0", "name": tag})
        cfg = write_config(tmp_path, {"snap": str(tmp_path / "snap.qmp")}, """
rules:
  - name: full-at-connect
    on: REACTOR_VM_CONNECTED
    actions:
      - snapshot: boot
  - name: disk-only-on-reset
    on: RESET
    mode: queued
    actions:
      - snapshot: {name: s, vmstate: false, keep: 2}
""")
        async with running(cfg):
            (boot,) = await wait_runs(tmp_path / "state", "full-at-connect", timeout=60)
            for _ in range(4):
                await mon.execute("system_reset")
                await asyncio.sleep(0.01)  # distinct timestamps
            runs = await wait_runs(tmp_path / "state", "disk-only-on-reset", 4)
            tags = await mon.snapshots("q0")
    assert boot.status == "ok", boot
    full = boot.steps[0].result
    assert full["tag"].startswith("reactor-boot-") and full["vmstate"] == "q0" and full["devices"] == ["q0"]
    assert all(r.status == "ok" for r in runs), [(r.status, r.error, r.steps) for r in runs]
    made = [r.steps[0].result["tag"] for r in runs]
    assert [r.steps[0].result["deleted"] for r in runs] == [[], [], [made[0]], [made[1]]]
    assert sorted(tags) == sorted(["manual", "reactor-other-20000101T000000.000000Z", full["tag"], *made[2:]])


@pytest.mark.qemu
async def test_external_snapshot_puts_an_overlay_on_top(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    vm = await qcow2_vm(qemu_vm_factory, tmp_path, "ext")
    overlays = tmp_path / "overlays"
    cfg = write_config(tmp_path, {"ext": str(tmp_path / "ext.qmp")}, f"""
rules:
  - name: external
    on: REACTOR_VM_CONNECTED
    actions:
      - snapshot: {{name: before-upgrade, mode: external, dir: {overlays}}}
""")
    async with running(cfg):
        (run,) = await wait_runs(tmp_path / "state", "external")
    assert run.status == "ok", run
    result = run.steps[0].result
    (overlay,) = result["overlays"]
    assert Path(overlay).parent == overlays and await asyncio.to_thread(Path(overlay).is_file)
    assert Path(overlay).name == f"ext-q0-{result['tag']}.qcow2"
    async with Monitor() as mon:
        await mon.client.connect(str(vm.qmp_path))
        block = await mon.execute("query-block")
    (dev,) = [d for d in block if d.get("inserted")]
    assert dev["inserted"]["file"] == overlay
    assert dev["inserted"]["image"]["backing-image"]["filename"] == str(vm.disks[0].path)
