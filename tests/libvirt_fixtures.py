"""A private libvirtd for tests: its own config, state and socket under a tmp dir.

``libvirtd`` (session fixture) starts one ``libvirtd`` as root in its own mount
namespace (``unshare -m``): ``/etc/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt`` and ``/run/libvirt`` are bind
mounts of directories under the tmp dir, so the daemon neither sees nor
touches the machine's libvirt state, and its socket lives in the tmp dir
(``qemu:///system?socket=...``).  It runs under this file's reaper
(``python libvirt_fixtures.py reap -- CMD...``): a child subreaper that reaps
QEMU processes the moment they exit (PID 1 on CI machines reaps orphans
slowly, which makes every ``destroy`` slow), kills what is left when libvirtd
exits, and dies with the test process.  The daemon is stopped by PID.

Requirements (Debian 12): ``libvirt-daemon libvirt-daemon-driver-qemu
libvirt-clients``, the ``libvirt-python`` module, root, and the
``libvirt-qemu`` user and group (created here when missing: libvirtd looks
them up before reading qemu.conf).  Without them the tests are skipped, unless
``REACTOR_REQUIRE_LIBVIRT=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["LibvirtDaemon", "libvirtd", "start_libvirtd"]

LIBVIRTD = "/usr/sbin/libvirtd"
_MOUNTS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/run/libvirt")

_LIBVIRTD_CONF = """\
unix_sock_dir = "{sock}"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{log}"
keepalive_interval = 2
"""

_QEMU_CONF = """\
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


@dataclass
class LibvirtDaemon:
    """A running private libvirtd."""

    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.root / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def small(self) -> Path:
        """A 2 MiB tmpfs that QEMU and the tests both see (for disks that fill up)."""
        return self.root / "small"

    @property
    def log(self) -> Path:
        return self.root / "libvirtd.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def restart(self, timeout: float = 30.0) -> None:
        """Restart libvirtd (SIGHUP to the reaper: SIGTERM, then a new libvirtd); running QEMUs stay."""
        before = self.daemon_pid()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.daemon_pid() in (before, None) or not _listening(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd did not come back (see {self.log})")
            time.sleep(0.05)

    def daemon_pid(self) -> int | None:
        """libvirtd's own PID (from its pid file), None while there is none."""
        try:
            return int((self.root / "libvirtd.pid").read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (the reaper forwards it and kills leftover QEMUs), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if os.path.ismount(self.small):
            subprocess.run(["umount", "-l", str(self.small)], check=False)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _requirements() -> str | None:
    """Why a private libvirtd cannot run here (None: it can)."""
    if sys.platform != "linux":
        return "libvirt tests need Linux"
    if os.geteuid() != 0:
        return "the private libvirtd runs as root (qemu:///system on a private socket)"
    if not os.path.exists(LIBVIRTD):
        return f"{LIBVIRTD} is missing (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing"
    try:
        import libvirt  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (pip install 'reactor[libvirt]')"
    return None


def _ensure_qemu_user() -> None:
    """libvirtd looks ``libvirt-qemu`` up before reading qemu.conf (Debian's libvirt-daemon-system makes it)."""
    try:
        pwd.getpwnam("libvirt-qemu")
        return
    except KeyError:
        pass
    subprocess.run(["groupadd", "--system", "-f", "libvirt-qemu"], check=True)
    subprocess.run(
        ["useradd", "--system", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin",
         "libvirt-qemu"],
        check=True,
    )


def start_libvirtd(root: Path, *, timeout: float = 30.0) -> LibvirtDaemon:
    """Start a private libvirtd whose files are under ``root``; wait for its socket."""
    _ensure_qemu_user()
    for sub in ("sock", "etc", "lib", "cache", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "libvirtd.conf").write_text(_LIBVIRTD_CONF.format(sock=root / "sock", log=root / "libvirtd.log"))
    (root / "etc" / "qemu.conf").write_text(_QEMU_CONF)
    (root / "etc" / "qemu").mkdir(exist_ok=True)
    (root / "small").mkdir(exist_ok=True)
    if not os.path.ismount(root / "small"):
        # mounted before unshare, so libvirtd's namespace shares this very tmpfs
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(root / "small")], check=True)
    binds = dict(zip(_MOUNTS, ("etc", "lib", "cache", "log", "run"), strict=True))
    script = "set -e\n" + "".join(
        f"mkdir -p {target}\nmount --bind {root / sub} {target}\n" for target, sub in binds.items()
    ) + 'exec "$@"\n'
    argv = [
        "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
        sys.executable, __file__, "reap", "--",
        LIBVIRTD, "-f", str(root / "etc" / "libvirtd.conf"), "-p", str(root / "libvirtd.pid"),
    ]
    out = open(root / "libvirtd.out", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    daemon = LibvirtDaemon(root=root, proc=proc)
    deadline = time.monotonic() + timeout
    while not _listening(daemon.socket):
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            text = (root / "libvirtd.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"libvirtd did not start (exit {proc.returncode}):\n{text}")
        time.sleep(0.05)
    return daemon


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtDaemon]:
    """A private libvirtd for the whole session; stopped by PID at the end."""
    why = _requirements()
    if why is not None:
        if os.environ.get("REACTOR_REQUIRE_LIBVIRT") == "1":
            pytest.fail(f"libvirt tests required but cannot run: {why}")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="reactor-libvirt-"))
    daemon = start_libvirtd(root)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the reaper: `python libvirt_fixtures.py reap -- CMD ARGS...` ---------------------------------

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_GRACE = 3  # seconds libvirtd gets to stop before SIGKILL


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _reap(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    child = subprocess.Popen(argv)
    restart = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal restart
        restart = signum == signal.SIGHUP
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM if restart else signum)
        signal.alarm(_GRACE)  # libvirtd sometimes takes 30 s to stop: no test waits that long

    def kill(_signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGALRM, kill)
    code = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid != child.pid:
            continue  # an orphaned QEMU: reaped at once
        code = os.waitstatus_to_exitcode(status)
        signal.alarm(0)
        if restart:  # SIGHUP: a new libvirtd; the QEMUs stay our children
            restart = False
            child = subprocess.Popen(argv)
            continue
        for orphan in _children(os.getpid()):  # QEMUs libvirtd left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
    return code


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "reap" and sys.argv[2] == "--":
        sys.exit(_reap(sys.argv[3:]))
    sys.exit("usage: libvirt_fixtures.py reap -- CMD [ARGS...]")
