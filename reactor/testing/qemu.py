"""Launch real QEMU processes for tests and demos: guest-less VMs and the tiny guest.

A :class:`QemuVM` is one ``qemu-system-x86_64`` process, always with
``-accel tcg -display none -nodefaults -no-user-config`` (KVM is avoided on
purpose: it is not available everywhere and fails on some Linux guests).  Its
QMP monitor is a unix socket, either served by QEMU (``qmp_mode="server"``, the
usual case) or dialled out to a listener such as reactor's ``listen:``
(``qmp_mode="connect"``, ``server=off`` with ``reconnect-ms=1000`` on QEMU 9.2 and
later, ``reconnect=1`` before: QEMU 9.2 deprecated the second, QEMU 7.2 lacks the
first).  This module starts and stops processes only; it does not speak QMP (reactor has its own client, tests
may use ``qemu.qmp.QMPClient``).

The tiny guest (see ``examples/guest/``) is the stock Debian kernel booted via
PVH with a busybox initramfs whose ``/init`` picks a scenario from the kernel
command line and reports on the serial console:

=========  ==========================================  ===========================
scenario   devices added by the launcher                what the guest does
=========  ==========================================  ===========================
idle       none                                         sleeps
ioerror    raw disk behind blkdebug (node ``d0``),      4 KiB O_DIRECT write;
           ``werror=stop,rerror=stop``                  ``REACTOR-WRITE-OK``
watchdog   ``i6300esb``, ``-action watchdog=pause``,    arms the watchdog, stops
           qcow2 disk (node ``q0``) for snapshots       feeding it
panic      ``pvpanic``, ``-action panic=pause``         ``echo c > sysrq-trigger``
=========  ==========================================  ===========================

Every process is started under ``setpriv --pdeathsig KILL`` when available and
is killed by :meth:`QemuVM.aclose`, on a failed start, and at interpreter exit,
so no QEMU outlives the test run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from reactor.errors import ReactorError

__all__ = [
    "BUILD_SCRIPT",
    "READY_MARKER",
    "SCENARIOS",
    "Disk",
    "GuestBuildError",
    "GuestImage",
    "QemuError",
    "QemuExitedError",
    "QemuVM",
    "QmpMode",
    "Scenario",
    "SerialTimeoutError",
    "blkdebug_disk",
    "build_guest",
    "find_guest",
    "guest_dir",
    "guest_paths",
    "qcow2_disk",
    "qemu_version",
    "raw_disk",
    "reconnect_option",
]

log = logging.getLogger(__name__)

Scenario = Literal["idle", "ioerror", "watchdog", "panic"]
SCENARIOS: tuple[Scenario, ...] = ("idle", "ioerror", "watchdog", "panic")
QmpMode = Literal["server", "connect"]

#: The line prefix the guest prints once its drivers are loaded.
READY_MARKER = "REACTOR-GUEST-READY"

#: The guest build script, in a source checkout.
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "guest" / "build-guest.sh"

_BASE_ARGS = ("-accel", "tcg", "-display", "none", "-nodefaults", "-no-user-config")


@functools.cache
def qemu_version(binary: str = "qemu-system-x86_64") -> tuple[int, int]:
    """``(major, minor)`` of ``binary --version`` ((0, 0) when it cannot be read); cached per binary."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def reconnect_option(binary: str = "qemu-system-x86_64") -> str:
    """The chardev option that makes a client socket redial every second, for this QEMU."""
    return "reconnect-ms=1000" if qemu_version(binary) >= (9, 2) else "reconnect=1"
_MiB = 1024 * 1024


class QemuError(ReactorError):
    """A QEMU process could not be started, or misbehaved."""


class QemuExitedError(QemuError):
    """The QEMU process exited when it should be running; ``stderr`` holds its last words."""

    def __init__(self, name: str, returncode: int | None, stderr: str) -> None:
        self.name = name
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"qemu {name!r} exited with {returncode}: {stderr.strip()[-2000:] or '(no stderr)'}")


class SerialTimeoutError(QemuError):
    """Text did not appear on the guest's serial console in time."""

    def __init__(self, name: str, text: str, timeout: float, tail: str) -> None:
        self.name = name
        self.text = text
        self.tail = tail
        super().__init__(f"{text!r} not on the serial console of {name!r} after {timeout:g}s; tail:\n{tail}")


class GuestBuildError(QemuError):
    """The tiny guest is not built and could not be built."""


# --- the guest image ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built guest: an uncompressed kernel (booted via PVH) and its initramfs."""

    vmlinux: Path
    initramfs: Path
    kernel_version: str


def guest_dir() -> Path:
    """Where build-guest.sh puts the guest: ``$REACTOR_GUEST_DIR`` or ``~/.cache/reactor-guest``."""
    env = os.environ.get("REACTOR_GUEST_DIR")
    return Path(env) if env else Path.home() / ".cache" / "reactor-guest"


def find_guest(directory: Path | None = None) -> GuestImage | None:
    """The guest already built in ``directory`` (default :func:`guest_dir`), or None."""
    d = directory or guest_dir()
    vmlinux, initramfs, stamp = d / "vmlinux", d / "initramfs.gz", d / "stamp"
    if not (vmlinux.is_file() and initramfs.is_file() and stamp.is_file()):
        return None
    version = ""
    for line in stamp.read_text(errors="replace").splitlines():
        key, _, value = line.partition(": ")
        if key == "kernel-version":
            version = value.strip()
    return GuestImage(vmlinux=vmlinux, initramfs=initramfs, kernel_version=version)


def build_guest(
    directory: Path | None = None, *, script: Path | None = None, timeout: float = 900
) -> GuestImage:
    """Run build-guest.sh (a no-op when up to date) and return the guest; blocking.

    Raises :class:`GuestBuildError` with the script's output when it fails.
    """
    script = script or Path(os.environ.get("REACTOR_GUEST_BUILD_SCRIPT", BUILD_SCRIPT))
    if not script.is_file():
        raise GuestBuildError(f"guest build script not found: {script} (needs a source checkout of reactor)")
    d = directory or guest_dir()
    env = dict(os.environ, REACTOR_GUEST_DIR=str(d))
    try:
        proc = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GuestBuildError(f"{script}: {err}") from err
    if proc.returncode != 0:
        raise GuestBuildError(
            f"{script} failed with {proc.returncode}:\n{(proc.stdout + proc.stderr).strip()[-4000:]}"
        )
    image = find_guest(d)
    if image is None:
        raise GuestBuildError(f"{script} succeeded but left no guest in {d}")
    return image


def guest_paths(*, build: bool = False, directory: Path | None = None) -> tuple[Path, Path] | None:
    """``(vmlinux, initramfs)`` of the built guest; None when absent and ``build`` is false.

    With ``build=True`` a missing or stale guest is built (see :func:`build_guest`).
    """
    image = build_guest(directory) if build else find_guest(directory)
    return None if image is None else (image.vmlinux, image.initramfs)


# --- disks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disk:
    """A disk image and the QEMU arguments that attach it.

    ``node_name`` is the block node the guest device uses (what BLOCK_IO_ERROR
    names in ``node-name``); ``args`` holds the ``-blockdev``/``-device`` options.
    """

    path: Path
    fmt: Literal["raw", "qcow2"]
    node_name: str
    size: int
    args: tuple[str, ...]

    def create(self) -> None:
        """Create the image if it does not exist yet (existing images are kept)."""
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "raw":
            with self.path.open("wb") as f:
                f.truncate(self.size)
            return
        try:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(self.path), str(self.size)],
                check=True, capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise QemuError(f"qemu-img create {self.path}: {err}") from err


def _device(node: str, device_id: str | None, options: str = "") -> tuple[str, ...]:
    if device_id is None:
        return ()
    return ("-device", f"virtio-blk-pci,drive={node},id={device_id}{options}")


def raw_disk(
    path: Path, *, node_name: str = "d0", size: int = 16 * _MiB, device_id: str | None = "vd0"
) -> Disk:
    """A raw file as one ``file`` node; a virtio-blk device unless ``device_id`` is None."""
    args = ("-blockdev", f"driver=file,filename={path},node-name={node_name}", *_device(node_name, device_id))
    return Disk(path=path, fmt="raw", node_name=node_name, size=size, args=args)


def blkdebug_disk(
    path: Path,
    *,
    node_name: str = "d0",
    file_node: str = "f0",
    size: int = 16 * _MiB,
    event: str = "pwritev",
    iotype: str = "write",
    errno: int = 5,
    once: bool = True,
    werror: str = "stop",
    rerror: str = "stop",
    device_id: str | None = "vd0",
) -> Disk:
    """A raw file behind a blkdebug node that fails the first write with EIO.

    With the default ``werror=stop`` the guest's write stops the VM (BLOCK_IO_ERROR
    on ``node_name``, STOP, status ``io-error``); after ``cont`` the retried write
    succeeds because the error fires ``once``.  With ``device_id=None`` only the
    nodes are created (e.g. as a ``blockdev-mirror`` target).
    """
    blkdebug = (
        f"driver=blkdebug,image={file_node},node-name={node_name},"
        f"inject-error.0.event={event},inject-error.0.iotype={iotype},"
        f"inject-error.0.errno={errno},inject-error.0.once={'on' if once else 'off'}"
    )
    args = (
        "-blockdev", f"driver=file,filename={path},node-name={file_node}",
        "-blockdev", blkdebug,
        *_device(node_name, device_id, f",werror={werror},rerror={rerror}"),
    )
    return Disk(path=path, fmt="raw", node_name=node_name, size=size, args=args)


def qcow2_disk(
    path: Path, *, node_name: str = "q0", size: int = 64 * _MiB, device_id: str | None = "vd0"
) -> Disk:
    """A qcow2 image (created with qemu-img), able to hold internal snapshots and vmstate."""
    file_node = f"{node_name}-file"
    args = (
        "-blockdev", f"driver=file,filename={path},node-name={file_node}",
        "-blockdev", f"driver=qcow2,file={file_node},node-name={node_name}",
        *_device(node_name, device_id),
    )
    return Disk(path=path, fmt="qcow2", node_name=node_name, size=size, args=args)


# --- processes ------------------------------------------------------------------------

_LIVE: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_LIVE):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class QemuVM:
    """One QEMU process; an ``async with`` object (started on enter, killed on exit).

    Keyword-only arguments:

    ``name``        the VM's name (file names, ``-name``)
    ``workdir``     where the socket, logs and disks go (created)
    ``qmp_path``    the QMP unix socket (default ``workdir/NAME.qmp``)
    ``qmp_mode``    ``"server"``: QEMU listens on ``qmp_path``;
                    ``"connect"``: QEMU dials out to ``qmp_path`` and keeps retrying every second
    ``machine``     ``-machine`` value
    ``guest``       the tiny guest to boot; None for a guest-less VM
    ``scenario``    the guest's scenario; adds the devices it needs (see the module docstring)
    ``disks``       more disks; each is created before start
    ``extra_args``  more QEMU arguments
    ``paused``      start with ``-S``; default: paused when guest-less (saves CPU)
    ``append``      more kernel command-line arguments
    """

    def __init__(
        self,
        *,
        name: str,
        workdir: Path,
        qmp_path: Path | None = None,
        qmp_mode: QmpMode = "server",
        machine: str = "q35",
        memory_mb: int = 256,
        guest: GuestImage | None = None,
        scenario: Scenario | None = None,
        disks: Sequence[Disk] = (),
        extra_args: Sequence[str] = (),
        paused: bool | None = None,
        append: str = "",
        qemu_binary: str = "qemu-system-x86_64",
        start_timeout: float = 15.0,
    ) -> None:
        if scenario is not None and scenario not in SCENARIOS:
            raise QemuError(f"unknown guest scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
        if scenario is not None and guest is None:
            raise QemuError(f"scenario {scenario!r} needs a guest image (see build_guest())")
        self.name = name
        self.workdir = Path(workdir)
        self.qmp_path = qmp_path or self.workdir / f"{name}.qmp"
        self.qmp_mode: QmpMode = qmp_mode
        self.guest = guest
        self.scenario: Scenario | None = scenario if scenario is not None or guest is None else "idle"
        self.serial_log = self.workdir / f"{name}.serial.log"
        self.stderr_log = self.workdir / f"{name}.stderr.log"
        self.start_timeout = start_timeout
        self.paused = guest is None if paused is None else paused

        scenario_disks, scenario_args = self._scenario_setup()
        self.disks: tuple[Disk, ...] = (*scenario_disks, *disks)
        argv = [qemu_binary, *_BASE_ARGS, "-name", name, "-machine", machine, "-m", str(memory_mb)]
        if qmp_mode == "server":
            argv += ["-chardev", f"socket,id=qmp,path={self.qmp_path},server=on,wait=off"]
        else:
            argv += ["-chardev", f"socket,id=qmp,path={self.qmp_path},server=off,{reconnect_option(qemu_binary)}"]
        argv += ["-mon", "chardev=qmp,mode=control", "-serial", f"file:{self.serial_log}"]
        if guest is not None:
            cmdline = f"console=ttyS0 quiet reactor.scenario={self.scenario} {append}".strip()
            argv += ["-kernel", str(guest.vmlinux), "-initrd", str(guest.initramfs), "-append", cmdline]
        for disk in self.disks:
            argv += disk.args
        argv += scenario_args
        argv += extra_args
        if self.paused:
            argv.append("-S")
        self.argv: tuple[str, ...] = tuple(argv)

        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: IO[bytes] | None = None
        self._log = log.getChild(name)

    def _scenario_setup(self) -> tuple[list[Disk], list[str]]:
        match self.scenario:
            case "ioerror":
                return [blkdebug_disk(self.workdir / f"{self.name}-disk.raw")], []
            case "watchdog":
                return [qcow2_disk(self.workdir / f"{self.name}-disk.qcow2")], [
                    "-device", "i6300esb", "-action", "watchdog=pause",
                ]
            case "panic":
                return [], ["-device", "pvpanic", "-action", "panic=pause"]
            case _:
                return [], []

    # --- state ---

    @property
    def pid(self) -> int | None:
        """The QEMU process id while it has been started and not yet reaped."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process is alive (as far as asyncio has noticed)."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has been reaped."""
        return None if self._proc is None else self._proc.returncode

    @property
    def node_name(self) -> str | None:
        """The block node of the first disk (``d0`` for ioerror, ``q0`` for watchdog)."""
        return self.disks[0].node_name if self.disks else None

    def serial_text(self) -> str:
        """Everything the guest printed on its serial console so far."""
        try:
            return self.serial_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self) -> str:
        """QEMU's stderr so far."""
        return _tail(self.stderr_log, 1 << 20)

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start QEMU; in server mode, return once QMP answers (QEMU is fully up).

        Raises :class:`QemuExitedError` if QEMU exits during start-up (bad
        arguments...), :class:`QemuError` if the socket does not appear in time.
        The process is killed on any failure.
        """
        if self.running:
            raise QemuError(f"qemu {self.name!r} is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._prepare_files)
        argv = list(self.argv)
        setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self._close_stderr()
        self._stderr = self.stderr_log.open("ab")
        self._log.debug("starting: %s", " ".join(self.argv))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as err:
            self._close_stderr()
            raise QemuError(f"cannot run {self.argv[0]}: {err}") from err
        _LIVE.add(self._proc.pid)
        try:
            await self._wait_started()
        except BaseException:
            await self.kill()
            raise
        self._log.debug("started: pid %d", self._proc.pid)

    def _prepare_files(self) -> None:
        if self.qmp_mode == "server":
            self.qmp_path.unlink(missing_ok=True)
        for disk in self.disks:
            disk.create()

    async def _wait_started(self) -> None:
        assert self._proc is not None
        try:
            async with asyncio.timeout(self.start_timeout):
                while self._proc.returncode is None:
                    if self.qmp_mode == "connect" or await self._greeted():
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError as err:
            raise QemuError(
                f"qemu {self.name!r}: no QMP greeting on {self.qmp_path} after {self.start_timeout:g}s; "
                f"stderr: {self.stderr_text().strip()[-2000:]}"
            ) from err
        await self._proc.wait()
        self._reaped()
        raise QemuExitedError(self.name, self._proc.returncode, self.stderr_text())

    async def _greeted(self) -> bool:
        """Whether QEMU answers a QMP command: every device exists and the main loop runs.

        (The greeting alone proves nothing: QMP's I/O runs in its own thread.)  The
        probe connection is closed at once; QEMU then serves the next client.
        """
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.qmp_path))
        except OSError:
            return False
        answers = 0
        try:
            writer.write(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            while answers < 2:
                line = await reader.readline()
                if not line:
                    break
                answers += b'"return"' in line
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return answers == 2

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit (e.g. after QMP ``quit``); return its exit status."""
        if self._proc is None:
            raise QemuError(f"qemu {self.name!r} was never started")
        async with asyncio.timeout(timeout):
            rc = await self._proc.wait()
        self._reaped()
        return rc

    async def _signal_and_wait(self, sig: signal.Signals, timeout: float | None) -> int | None:
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            return None

    async def kill(self) -> int | None:
        """SIGKILL the process (a QEMU crash, as QMP sees it) and reap it."""
        rc = await self._signal_and_wait(signal.SIGKILL, None)
        self._close_stderr()
        return rc

    async def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (QEMU emits SHUTDOWN and exits); SIGKILL if still alive after ``timeout``."""
        rc = await self._signal_and_wait(signal.SIGTERM, timeout)
        if rc is None:
            rc = await self.kill()
        self._close_stderr()
        return rc

    def stop(self) -> None:
        """SIGSTOP the process: a hung QEMU that keeps its socket open but never answers."""
        self._send(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT a process stopped with :meth:`stop`."""
        self._send(signal.SIGCONT)

    def _send(self, sig: signal.Signals) -> None:
        if not self.running:
            raise QemuError(f"qemu {self.name!r} is not running")
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)

    async def restart(self) -> None:
        """Kill the process if it runs, then start it again: same arguments, socket and disks."""
        await self.kill()
        await self.start()

    async def aclose(self) -> None:
        """Kill the process (if any) and release its files. Safe to call twice."""
        await self.kill()

    def _reaped(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            _LIVE.discard(self._proc.pid)

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # --- the serial console ---

    async def wait_serial(self, text: str, timeout: float = 60.0, *, poll: float = 0.05) -> str:
        """Wait until ``text`` appears on the serial console; return the line that holds it.

        Raises :class:`SerialTimeoutError` (with the console's tail) after
        ``timeout`` seconds, :class:`QemuExitedError` if QEMU exits first.
        """
        buf = b""
        needle = text.encode()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        buf = self.serial_log.read_bytes()
                    except FileNotFoundError:
                        buf = b""
                    at = buf.find(needle)
                    if at >= 0:
                        start = buf.rfind(b"\n", 0, at) + 1
                        end = buf.find(b"\n", at)
                        line = buf[start : end if end >= 0 else len(buf)]
                        return line.decode(errors="replace").rstrip("\r")
                    if self._proc is None or self._proc.returncode is not None:
                        raise QemuExitedError(self.name, self.returncode, self.stderr_text())
                    await asyncio.sleep(poll)
        except TimeoutError as err:
            tail = buf[-3000:].decode(errors="replace")
            raise SerialTimeoutError(self.name, text, timeout, tail) from err

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"rc {self.returncode}"
        return f"<QemuVM {self.name!r} scenario={self.scenario} {state}>"
