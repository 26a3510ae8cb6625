"""The ``resume`` action against a real QEMU and the tiny guest (the daemon is real too).

* an operator's ``stop``: resume does nothing, the VM stays paused;
* a full (tmpfs) disk: the probe keeps the VM paused until space is back, then
  one ``cont``, the guest's write succeeds (WRITE-OK);
* a disk that keeps failing (blkdebug without ``once``), with ``kill -9`` of the
  daemon in the middle: exactly ``attempts`` conts over both daemons, with
  growing gaps, then REACTOR_RESUME_GAVE_UP and the VM left paused.

The blkdebug write error that heals after one cont is the shipped rule's test
(tests/daemon/test_daemon.py::test_shipped_rule_resumes_after_write_error); the same
rule against a libvirt domain is in tests/sources/test_libvirt.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from daemon_fixtures import Monitor, connected, make_vm, running, summary, wait_runs, write_config
from qemu_fixtures import QemuVMFactory, guest_kernel, qemu_vm_factory
from resume_fixtures import journal, poll, space_probe_rules

from reactor.testing.qemu import GuestImage, blkdebug_disk, raw_disk

__all__ = ["guest_kernel", "qemu_vm_factory"]

pytestmark = pytest.mark.qemu

REACTOR = str(Path(sys.executable).parent / "reactor")


OPERATOR_RULES = """
rules:
  - name: resume-on-stop
    on: STOP
    actions:
      - resume: {settle: 0s, verify: 1s}
        register: r
"""


async def test_operator_stop_is_not_resumed(qemu_vm_factory: QemuVMFactory, tmp_path: Path) -> None:
    await make_vm(qemu_vm_factory, tmp_path, "op", paused=False)
    cfg = write_config(tmp_path, ["op"], OPERATOR_RULES)
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "op")
        await mon.connect(tmp_path / "op.test.qmp")
        await mon.execute("stop")
        runs = await wait_runs(tmp_path / "state", lambda rs: any(r.ended for r in rs))
        await asyncio.sleep(0.5)
        assert await mon.status() == "paused"
    (run,) = runs
    assert run.status == "ok", summary(run)
    assert run.steps[-1].result["resumed"] is False
    assert run.steps[-1].result["reason"] == "status is paused, not io-error"
    assert journal(tmp_path / "state")[1] == []   # not an attempt


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only: skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, image: Path) -> Path:
    """A sparse 16 MiB image on ``mnt`` (every first write to a block needs a free page), then a ballast
    file that takes every free page; returns the ballast."""
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    ballast = mnt / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=4k"], capture_output=True, check=False)
    assert os.statvfs(mnt).f_bavail == 0
    return ballast


@pytest.mark.guest
async def test_full_disk_resumed_once_space_is_back(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path, small_disk: Path
) -> None:
    image = small_disk / "disk.raw"
    disk = raw_disk(image, node_name="d0")
    disk_args = (*disk.args[:-1], disk.args[-1] + ",werror=stop,rerror=stop")
    ballast = await asyncio.to_thread(fill, small_disk, image)
    vm = await make_vm(qemu_vm_factory, tmp_path, "full", guest=guest_kernel, append="reactor.scenario=ioerror",
                       extra=list(disk_args))
    cfg = write_config(tmp_path, ["full"], space_probe_rules(small_disk))
    async with running(cfg) as daemon, Monitor() as mon:
        await connected(daemon, "full")
        await mon.connect(tmp_path / "full.test.qmp")
        await mon.wait_status("io-error", 90)
        await poll(lambda: [r for r in journal(tmp_path / "state")[1] if r.outcome == "probe-failed"][1:], 30,
                   "two failed probes")
        assert await mon.status() == "io-error"   # no cont while the disk is full
        ballast.unlink()
        runs = await wait_runs(tmp_path / "state", lambda rs: any(r.ended for r in rs), timeout=60)
        await vm.wait_serial("REACTOR-WRITE-OK", 30)
        assert await mon.status() == "running"
    (run,) = runs
    result = run.steps[-1].result
    assert result["resumed"] is True, summary(run)
    outcomes = [h["outcome"] for h in result["history"]]
    assert outcomes[-1] == "resumed" and set(outcomes[:-1]) == {"probe-failed"}, outcomes
    rows = journal(tmp_path / "state")[1]
    assert len([r for r in rows if r.phase == "cont"]) == 1


KEEPS_FAILING = """
rules:
  - name: resume-io
    on: BLOCK_IO_ERROR
    match: {action: stop}
    actions:
      - resume: {settle: 0s, verify: 2s, attempts: 3, within: 1h, backoff: 3s, max_backoff: 1m, stagger: 0s}
        register: r
  - name: resume-at-connect
    on: REACTOR_VM_CONNECTED
    match: {status: io-error}
    actions:
      - resume: {settle: 0s, verify: 2s, attempts: 3, within: 1h, backoff: 3s, max_backoff: 1m, stagger: 0s}
        register: r
"""


class Daemon:
    """``reactor run`` as a subprocess, so that SIGKILL hits the whole process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([REACTOR, "run", "-c", str(self.config)], stdout=out, stderr=out)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
async def daemon_proc(tmp_path: Path) -> AsyncIterator[list[Daemon]]:
    made: list[Daemon] = []
    try:
        yield made
    finally:
        for d in made:
            d.stop()


@pytest.mark.guest
async def test_a_disk_that_keeps_failing_gives_up_after_attempts_conts_across_a_kill_9(
    qemu_vm_factory: QemuVMFactory, guest_kernel: GuestImage, tmp_path: Path, daemon_proc: list[Daemon]
) -> None:
    disk = blkdebug_disk(tmp_path / "bad.raw", once=False)   # every write fails, forever
    vm = await make_vm(qemu_vm_factory, tmp_path, "bad", guest=guest_kernel, append="reactor.scenario=ioerror",
                       disks=[disk])
    cfg = write_config(tmp_path, ["bad"], KEEPS_FAILING)
    state = tmp_path / "state"
    d = Daemon(cfg, tmp_path / "reactor.log")
    daemon_proc.append(d)
    d.start()
    # the first cont, its flap, and then the kill -9 during the backoff before the second
    await poll(lambda: (state / "journal.db").exists() and [r for r in journal(state)[1] if r.outcome == "flap"],
               120, "the first flap")
    d.kill9()
    rows = journal(state)[1]   # killed during the 3 s backoff: one cont, one flap
    assert [(r.phase, r.outcome) for r in rows] == [("cont", "cont"), ("end", "flap")]
    d.start()   # reconnects; the VM is paused on io-error: the connect rule resumes it, with the history
    await poll(lambda: [r for r in journal(state)[1] if r.outcome == "gave-up"], 60, "the give-up")
    await asyncio.sleep(3)   # nothing more happens
    d.stop()
    runs, rows, events = journal(state)
    conts = [r for r in rows if r.phase == "cont"]
    assert len(conts) == 3, [(r.phase, r.outcome, r.error) for r in rows]
    assert [r.outcome for r in rows if r.phase == "end"] == ["flap", "flap", "flap", "gave-up"]
    gaps = [b.cont - a.cont for a, b in itertools.pairwise(conts)]   # type: ignore[operator]
    assert 3.0 <= gaps[0] < gaps[1], gaps   # backoff 3s, then 6s (plus the flap and the restart)
    assert gaps[1] >= 6.0, gaps
    assert sum(1 for e in events if e.name == "RESUME") == 3
    (gave_up,) = [e for e in events if e.name == "REACTOR_RESUME_GAVE_UP"]
    assert gave_up.data["attempts"] == 3 and gave_up.data["since"] == pytest.approx(rows[0].started)
    assert rows[-1].rule == "resume-at-connect"   # after the restart, the connect rule carried on the count
    # the flaps' BLOCK_IO_ERRORs during it started resume-io runs that left the VM to the run in progress
    # (or, for the last flap's, found the VM given up already: one give-up, one REACTOR_RESUME_GAVE_UP)
    busy = [r.steps[-1].result["reason"] for r in runs if r.rule == "resume-io" and r.outcome == "started"
            and r.steps and r.steps[-1].result and r.steps[-1].result["attempts"] == 0]
    assert busy and all(b.startswith(("a resume of bad is in progress (rule resume-at-connect",
                                      "gave up already (rule resume-at-connect")) for b in busy), busy
    async with Monitor() as mon:
        await mon.connect(vm.qmp_path)
        assert await mon.status() == "io-error"   # left paused
    assert "REACTOR-WRITE-OK" not in vm.serial_text()
