"""Fleet: configured VMs, discovered sockets and VMs that dial in; fakes and real QEMU."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP, make_event  # tests/ is on sys.path (pytest's rootdir-relative import)

from reactor.model.event import Event
from reactor.sources.fleet import Fleet, glob_root
from reactor.sources.qmp import VMConnection, VMState
from reactor.testing.qemu import QemuVM


class Seen:
    """Events by VM, with waiting."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, vm: str, name: str) -> list[Event]:
        return [e for e in self.events if e.vm == vm and e.name == name]

    async def wait(self, vm: str, name: str, count: int = 1, timeout: float = 5.0) -> Event:
        async with asyncio.timeout(timeout):
            while len(self.of(vm, name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(vm, name)[count - 1]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll for what the fleet has no event for (membership)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def fleet(seen: Seen, **kwargs: Any) -> Fleet:
    kwargs.setdefault("connection", {"backoff_initial": 0.05, "backoff_max": 0.5})
    return Fleet(make_event=make_event, on_event=seen, **kwargs)


def test_glob_root() -> None:
    assert glob_root("/run/qemu/*.qmp") == os.path.realpath("/run/qemu")
    assert glob_root("/run/*/x/*.qmp") == os.path.realpath("/run")


async def test_static_vms_add_get_remove(tmp_path: Path) -> None:
    seen = Seen()
    async with (
        FakeQMP(tmp_path / "a.qmp") as a,
        FakeQMP(port=0) as b,
        fleet(seen, vms=[("a", a.address, {"env": "prod"}), ("b", b.address, {}),
                         ("c", tmp_path / "missing.qmp", {})]) as f,
    ):
        await seen.wait("a", "REACTOR_VM_CONNECTED")
        await seen.wait("b", "REACTOR_VM_CONNECTED")
        assert sorted(c.name for c in f) == ["a", "b", "c"]
        conn = f.get("a")
        assert conn is not None and conn.labels == {"env": "prod"} and conn.connected
        missing = f.get("c")
        assert missing is not None and not missing.connected
        with pytest.raises(ValueError):
            f.add("a", a.address)
        await f.remove("a")
        assert f.get("a") is None and conn.state is VMState.STOPPED
        assert seen.of("a", "REACTOR_VM_DISCONNECTED")[-1].data == {"reason": "stopped"}
        a.emit("RESET")
        b.emit("RESET")
        await seen.wait("b", "RESET")
        assert not seen.of("a", "RESET")
    assert len(f) == 0


async def test_discover_adds_new_and_drops_vanished_sockets(tmp_path: Path) -> None:
    seen = Seen()
    vms = tmp_path / "vms"
    vms.mkdir()
    (vms / "plain.qmp").write_text("not a socket")
    outside = tmp_path / "outside"
    outside.mkdir()
    async with FakeQMP(vms / "one.qmp") as one, FakeQMP(outside / "evil.qmp"):
        os.symlink(outside / "evil.qmp", vms / "evil.qmp")
        async with fleet(seen, discover=[(str(vms / "*.qmp"), {"env": "lab"})], discover_interval=0.1) as f:
            await seen.wait("one", "REACTOR_VM_CONNECTED")
            conn = f.get("one")
            assert conn is not None and conn.labels == {"env": "lab"}
            async with FakeQMP(vms / "two.qmp"):
                await seen.wait("two", "REACTOR_VM_CONNECTED", timeout=2)
                assert sorted(c.name for c in f) == ["one", "two"]  # not plain, not evil
            # two's server closed and its socket removed: dropped
            await seen.wait("two", "REACTOR_VM_DISCONNECTED")
            await until(lambda: f.get("two") is None, 2)
            assert f.get("one") is not None and one.sessions


async def test_listen_names_vms_by_query_name(tmp_path: Path) -> None:
    seen = Seen()
    sock = tmp_path / "reactor.sock"
    async with fleet(seen, listen=[sock]) as f:
        async with (
            FakeQMP(tmp_path / "unused1", name="alpha") as a,
            FakeQMP(tmp_path / "unused2", name=None) as n,
        ):
            a.dial(sock)
            n.dial(sock)
            await seen.wait("alpha", "REACTOR_VM_CONNECTED")
            anon = [c.name for c in f if c.name != "alpha"]
            assert len(anon) == 1 and anon[0].startswith("listen-")
            await seen.wait(anon[0], "REACTOR_VM_CONNECTED")
            conn = f.get("alpha")
            assert conn is not None and conn.connected
            assert (await conn.execute("query-name")) == {"name": "alpha"}
            # a second VM calling itself alpha gets a distinct name
            async with FakeQMP(tmp_path / "unused3", name="alpha") as twin:
                twin.dial(sock)
                await until(lambda: len(f) >= 3)
                assert len({c.name for c in f}) == 3
            a.drop_all()  # the VM hangs up; it is removed, then it dials again
            await seen.wait("alpha", "REACTOR_VM_DISCONNECTED")
            await seen.wait("alpha", "REACTOR_VM_CONNECTED", 2)
            assert f.get("alpha") is not None
        await until(lambda: len(f) == 0)
    assert not sock.exists()


async def test_listen_tcp() -> None:
    seen = Seen()
    async with fleet(seen, listen=["127.0.0.1:0"]) as f, FakeQMP(port=0, name="tcpvm") as fake:
        fake.dial(f.listening[0])
        await seen.wait("tcpvm", "REACTOR_VM_CONNECTED")


# -- real QEMU -----------------------------------------------------------------

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")


@pytest.mark.qemu
@needs_qemu
async def test_real_qemu_dials_in(tmp_path: Path) -> None:
    seen = Seen()
    sock = tmp_path / "reactor.sock"
    async with fleet(seen, listen=[sock]) as f:
        vm = QemuVM(name="dialer", workdir=tmp_path, qmp_path=sock, qmp_mode="connect")
        async with vm:
            ev = await seen.wait("dialer", "REACTOR_VM_CONNECTED", timeout=15)
            assert ev.data["status"] == "prelaunch"
            conn = f.get("dialer")
            assert conn is not None
            await conn.execute("cont")
            await seen.wait("dialer", "RESUME")
            assert conn.status == "running"
            await vm.kill()
            await seen.wait("dialer", "REACTOR_VM_DISCONNECTED")
            await until(lambda: f.get("dialer") is None, 2)


@pytest.mark.qemu
@needs_qemu
async def test_real_qemu_discovered(tmp_path: Path) -> None:
    seen = Seen()
    vms = tmp_path / "vms"
    vms.mkdir()
    async with fleet(seen, discover=[(str(vms / "*.qmp"), {})], discover_interval=0.2) as f:
        # the launcher probes its monitor once at start; QEMU's monitor takes one client at a time, so the
        # socket gets its discoverable name only after that (a rename, atomic as a real deployment would be)
        async with QemuVM(name="found", workdir=tmp_path, qmp_path=vms / "found.starting"):
            (vms / "found.starting").rename(vms / "found.qmp")
            ev = await seen.wait("found", "REACTOR_VM_CONNECTED", timeout=15)
            assert ev.data["status"] == "prelaunch"
        await seen.wait("found", "REACTOR_VM_DISCONNECTED")
        if (vms / "found.qmp").exists():  # killed QEMU leaves its socket behind
            (vms / "found.qmp").unlink()
        await until(lambda: f.get("found") is None, 3)


async def test_vmconnection_is_what_fleet_holds(tmp_path: Path) -> None:
    seen = Seen()
    async with FakeQMP(tmp_path / "a.qmp") as a, fleet(seen) as f:
        conn = f.add("a", a.address)
        assert isinstance(conn, VMConnection) and "a" in f
        await seen.wait("a", "REACTOR_VM_CONNECTED")
        f.check_rule_usage({"NOPE": set()})
        assert conn.schema_events is not None


async def test_a_cancelled_close_lets_its_cancellation_through(tmp_path: Path) -> None:
    """VMConnection.aclose waits for its supervisor; the caller's own cancellation must not be swallowed there.

    (It was: a discovery loop cancelled while it removed a vanished VM went on scanning,
    and the fleet's close waited for it forever.)
    """
    seen = Seen()
    async with FakeQMP(tmp_path / "a.qmp") as a, fleet(seen) as f:
        conn = f.add("a", a.address)
        await seen.wait("a", "REACTOR_VM_CONNECTED")
        closer = asyncio.create_task(conn.aclose())
        await asyncio.sleep(0)   # the closer now waits for the supervisor, which is being cancelled
        assert not closer.done()
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        await until(lambda: conn.state is VMState.STOPPED)

