"""systemd notify: a real datagram socket receives READY, RELOADING, WATCHDOG and STOPPING."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeqmp import FakeQMP
from reload_fixtures import RULE_A, running, write_config

from reactor.ops.notify import Notifier, watchdog_interval


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket (a path, or abstract with '@')."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def lines(self) -> list[str]:
        return [line for m in self.drain() for line in m.split("\n")]

    def wait_for(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line!r} among {self.messages}")

    async def await_line(self, line: str, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_for, line, timeout)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(str(tmp_path / "notify.sock"))
    yield s
    s.sock.close()


def test_notifier_sends_datagrams_to_a_path_and_to_the_abstract_namespace(notify_socket: NotifySocket) -> None:
    n = Notifier(notify_socket.address)
    assert n.enabled
    assert n.ready("3 rules")
    assert n.stopping()
    assert notify_socket.drain() == ["READY=1\nSTATUS=3 rules", "STOPPING=1"]
    abstract = NotifySocket(f"@reactor-test-{uuid.uuid4().hex}")
    try:
        assert Notifier(abstract.address).status("hello")
        assert abstract.drain() == ["STATUS=hello"]
    finally:
        abstract.sock.close()
    n.close()


def test_notifier_without_socket_does_nothing_and_a_dead_socket_never_raises(tmp_path: Path) -> None:
    assert not Notifier(env={}).enabled
    assert Notifier(env={}).ready() is False
    dead = Notifier(str(tmp_path / "nobody-listens"))
    assert dead.ready() is False and dead.ready() is False


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert Notifier("/x", env={"WATCHDOG_USEC": "1000000"}).watchdog_interval == 0.5
    assert Notifier(env={"WATCHDOG_USEC": "1000000"}).watchdog_interval is None  # no socket, no watchdog


async def test_daemon_notifies_ready_reloading_watchdog_stopping(tmp_path: Path,
                                                                 notify_socket: NotifySocket) -> None:
    async with FakeQMP(tmp_path / "web-1.qmp", name="web-1", status="running") as fake:
        cfg = write_config(tmp_path, fake)
        (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
        notifier = Notifier(notify_socket.address, watchdog=0.05)
        async with running(cfg, notifier=notifier) as daemon:
            first = notify_socket.drain()[0]
            assert first.startswith("READY=1\nSTATUS=2 rules, 1 VMs")
            await notify_socket.await_line("WATCHDOG=1")
            await daemon.reload("test")
            lines = notify_socket.lines()
            assert any(line == "RELOADING=1" for line in lines)
            assert lines.count("READY=1") == 2
            assert "STOPPING=1" not in lines
        await notify_socket.await_line("STOPPING=1")
        assert notifier.max_lag < 1.0


async def test_blocked_loop_stops_the_keepalives(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address, watchdog=0.05)
    task = asyncio.create_task(notifier.watchdog())
    await notify_socket.await_line("WATCHDOG=1")
    # keep-alives sent while await_line's thread returned are still queued on the socket: read them first (the
    # loop runs nothing between this drain and the blocking sleep, so nothing is sent in between)
    notify_socket.drain()
    notify_socket.messages.clear()
    time.sleep(0.5)  # noqa: ASYNC251 -- the point: the loop is blocked, nothing is sent meanwhile
    assert notify_socket.drain() == []
    await asyncio.sleep(0.1)
    assert notifier.max_lag >= 0.4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_reactor_run_under_a_systemd_style_notify_socket(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """`reactor run` as systemd starts it: NOTIFY_SOCKET and WATCHDOG_USEC in the environment."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
    cfg = tmp_path / "reactor.yaml"
    cfg.write_text("rules: rules/\nstate_dir: state/\n")
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="200000")
    proc = subprocess.Popen([sys.executable, "-m", "reactor.cli", "run", "-c", str(cfg)], env=env,
                            stderr=subprocess.PIPE)
    try:
        notify_socket.wait_for("READY=1", timeout=20)
        notify_socket.wait_for("WATCHDOG=1")
        proc.terminate()
        notify_socket.wait_for("STOPPING=1")
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_example_unit_file_verifies(tmp_path: Path) -> None:
    """examples/reactor.service: Type=notify, a watchdog, and systemd-analyze has nothing to say."""
    import shutil

    unit = (Path(__file__).resolve().parents[2] / "examples" / "reactor.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "AF_UNIX" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    test_unit = tmp_path / "reactor.service"
    test_unit.write_text(unit.replace("/usr/bin/reactor", "/bin/true"))
    done = subprocess.run([analyze, "verify", str(test_unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
