"""libvirt-managed VMs against a real, private libvirtd (tests/libvirt_fixtures.py).

The source, the VM handles and rules run in an Engine here; the scenarios:
a guest-less domain (define/start/suspend/resume/reset/USB unplug/destroy/
undefine), libvirtd restarting under a running domain, and the tiny guest as
a libvirt domain (direct kernel boot) whose watchdog fires (the shipped rules
resume it through libvirt) and whose disk fills up (a rule notifies and
resumes once space is freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from libvirt_fixtures import LibvirtDaemon, libvirtd, start_libvirtd  # noqa: F401

from reactor.actions.action import ActionContext, action
from reactor.actions.libvirt_qmp import LIBVIRT_ACTIONS
from reactor.actions.registry import Registry, builtin_registry
from reactor.engine.engine import Engine
from reactor.errors import ConfigError, LoadError, VMCommandError
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.rules.loader import load_rules_text
from reactor.rules.source import parse
from reactor.sources.libvirt import (
    LibvirtConfig,
    LibvirtSource,
    LibvirtVM,
    LinkState,
    parse_libvirt,
    with_libvirt_events,
)
from reactor.testing.qemu import GuestImage

ROOT = Path(__file__).resolve().parents[2]
CATALOG = with_libvirt_events(default_catalog())


# -- config and catalog (no libvirt needed) ----------------------------------------------------------


def _section(text: str) -> Any:
    node = parse(text, "reactor.yaml", ConfigError)
    assert node is not None
    section = node.get("libvirt")  # type: ignore[attr-defined]
    return parse_libvirt(section)


def test_parse_libvirt() -> None:
    cfgs = _section("libvirt:\n  - uri: qemu:///system\n    domains: ['web-*', db]\n    labels: {env: prod}\n"
                    "  - uri: qemu+ssh://h/system\n")
    assert cfgs == (LibvirtConfig("qemu:///system", ("web-*", "db"), {"env": "prod"}),
                    LibvirtConfig("qemu+ssh://h/system", ("*",), {}))
    with pytest.raises(ConfigError) as err:
        _section("libvirt:\n  - uri: qemu:///system\n    domain: ['x']\n")
    assert str(err.value) == "reactor.yaml:3:5: libvirt: unknown key 'domain' (did you mean 'domains'?)"
    with pytest.raises(ConfigError, match=r"reactor.yaml:2:10: .*not a libvirt URI"):
        _section("libvirt:\n  - uri: system\n")


def test_catalog_types_libvirt_events() -> None:
    rules = load_rules_text([("r.yaml", "rules:\n  - name: r\n    on: LIBVIRT_IO_ERROR_REASON\n"
                                        "    match: {reason: enospc, action: pause, alias: virtio-disk0}\n"
                                        "    actions: [{log: hi}]\n")], catalog=CATALOG)
    assert [r.name for r in rules.rules] == ["r"]
    with pytest.raises(LoadError, match=r"r\.yaml:4:.*not one of none, pause, reset, poweroff"):
        load_rules_text([("r.yaml", "rules:\n  - name: r\n    on: LIBVIRT_WATCHDOG\n"
                                    "    match: {action: halt}\n    actions: [{log: hi}]\n")], catalog=CATALOG)
    ok = CATALOG.make_event({"event": "REACTOR_VM_CONNECTED", "data": {
        "status": "io-error", "qemu_version": "7.2.0", "state": "paused", "reason": "ioerror", "source": "libvirt"}})
    assert ok.problems == ()


# -- the harness: a source feeding an engine running real rule files -----------------------------------


@dataclass(frozen=True)
class _QmpArgs:
    execute: str
    arguments: dict[str, Any] | None = None
    vm: str | None = None


async def _qmp(ctx: ActionContext, args: _QmpArgs) -> Any:
    """Stand-in with the spec's `qmp` contract (used only while reactor has no built-in one)."""
    vm = ctx.vm if args.vm is None else ctx.vm_named(args.vm)
    return await vm.execute(args.execute, args.arguments)


@dataclass(frozen=True)
class _SnapshotArgs:
    name: str
    mode: str = "internal"
    vmstate: bool = True
    devices: list[str] | None = None
    keep: int | None = None


async def _snapshot(ctx: ActionContext, args: _SnapshotArgs) -> Any:
    """Stand-in with the spec's `snapshot` contract, the libvirt way (used only without a built-in one)."""
    vm = ctx.vm
    assert isinstance(vm, LibvirtVM)
    tag = f"reactor-{args.name}-{int(time.time() * 1000)}"
    await vm.create_snapshot(tag, vmstate=args.vmstate)
    return {"tag": tag}


def _registry() -> Registry:
    reg = builtin_registry()
    for spec in LIBVIRT_ACTIONS:
        assert spec.name in reg, f"{spec.name} is a built-in action"
    if "qmp" not in reg:
        reg.add(action("qmp", shorthand="execute")(_qmp))
    if "snapshot" not in reg:
        reg.add(action("snapshot", shorthand="name")(_snapshot))
    return reg


def _rule_files(*paths: Path, text: str | None = None) -> list[tuple[str, str]]:
    files = [(str(p), p.read_text()) for p in paths]
    if text is not None:
        files.append(("inline.yaml", text))
    return files


class Harness:
    """Events seen (in order), waitable; the engine's run/step records."""

    def __init__(self, source: LibvirtSource, engine: Engine) -> None:
        self.source = source
        self.engine = engine
        self.events: list[Event] = []
        self.records: list[dict[str, Any]] = []
        self.arrival: dict[int, float] = {}
        self._changed = asyncio.Event()

    def seen(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def arrived(self, event: Event) -> None:
        self.arrival[id(event)] = time.time()
        self.engine.submit(event)

    async def wait(self, name: str, vm: str, pred: Callable[[Event], bool] | None = None, *,
                   timeout: float = 30.0, since: int = 0) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events[since:]:
                    if e.name == name and e.vm == vm and (pred is None or pred(e)):
                        return e
                self._changed.clear()
                await self._changed.wait()

    async def steps(self, rule: str, count: int, timeout: float = 30.0) -> list[tuple[str, str]]:
        """The first ``count`` steps of ``rule``'s runs, as (action, status), once recorded."""
        async with asyncio.timeout(timeout):
            while True:
                got = [(r["action"], r["status"]) for r in self.records if r["type"] == "step" and r["rule"] == rule]
                if len(got) >= count:
                    return got[:count]
                await asyncio.sleep(0.02)

    def names(self, vm: str) -> list[str]:
        return [e.name for e in self.events if e.vm == vm]


@contextlib.asynccontextmanager
async def harness(uri: str, files: list[tuple[str, str]] | None = None, **kw: Any) -> AsyncIterator[Harness]:
    rules = load_rules_text(files or [], catalog=CATALOG, registry=_registry())
    up = asyncio.Event()
    on_state = kw.pop("on_state", None)

    def state(src: LibvirtSource, st: LinkState) -> None:
        if st is LinkState.CONNECTED:
            up.set()
        if on_state is not None:
            on_state(src, st)

    source = LibvirtSource(LibvirtConfig(uri=uri), make_event=CATALOG.make_event, on_state=state, **kw)
    h: Harness | None = None
    engine = Engine(rules, catalog=CATALOG, vms=source.get, output=lambda r: h.records.append(r) if h else None)
    h = Harness(source, engine)
    engine.subscribe(h.seen)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(engine.run(grace=5), name="test.engine")
        tg.create_task(source.run(h.arrived), name="test.libvirt")
        try:
            async with asyncio.timeout(15):
                await up.wait()
            yield h
        finally:
            await source.aclose()
            engine.stop()


def _conn(daemon: LibvirtDaemon) -> Any:
    import libvirt  # type: ignore[import-untyped,unused-ignore]

    return libvirt.open(daemon.uri)


GUESTLESS = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='q35'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<controller type='usb' model='qemu-xhci'/>
<input type='tablet' bus='usb'><alias name='ua-tablet'/></input>
</devices></domain>"""

RESUME_ON_USER_PAUSE = """rules:
  - name: resume-user-pause
    on: LIBVIRT_LIFECYCLE
    match: {event: suspended, detail: paused}
    actions:
      - qmp: cont
      - wait_for: {event: RESUME, timeout: 10s}
"""


@pytest.mark.qemu
async def test_guestless_domain_lifecycle(libvirtd: LibvirtDaemon) -> None:  # noqa: F811
    conn = _conn(libvirtd)
    async with harness(libvirtd.uri, [("inline.yaml", RESUME_ON_USER_PAUSE)]) as h:
        dom = conn.defineXML(GUESTLESS.format(name="gl1"))
        await h.wait("LIBVIRT_LIFECYCLE", "gl1", lambda e: e.data["event"] == "defined")
        vm = h.source.get("gl1")
        assert isinstance(vm, LibvirtVM) and not vm.connected and vm.status == "shutdown"  # no QEMU process

        dom.create()
        up = await h.wait("REACTOR_VM_CONNECTED", "gl1")
        assert up.data == {"status": "running", "qemu_version": up.data["qemu_version"], "state": "running",
                           "reason": "booted", "source": "libvirt"}
        assert vm.connected and vm.status == "running"

        # suspended behind reactor's back: the rule resumes it through libvirt (virDomainResume)
        n = len(h.events)
        dom.suspend()
        await h.wait("STOP", "gl1", since=n)  # QEMU's own event, passed through
        await h.wait("LIBVIRT_LIFECYCLE", "gl1", lambda e: e.data == {"event": "resumed", "detail": "unpaused"},
                     since=n)
        await h.wait("RESUME", "gl1", since=n)
        assert dom.state()[0] == 1 and vm.status == "running"
        assert await h.steps("resume-user-pause", 2) == [("qmp", "ok"), ("wait_for", "ok")]

        n = len(h.events)
        await vm.execute("system_reset")
        await h.wait("RESET", "gl1", since=n)
        await h.wait("LIBVIRT_REBOOT", "gl1", since=n)

        # USB hot-unplug
        import libvirt

        n = len(h.events)
        dom.detachDeviceFlags("<input type='tablet' bus='usb'><alias name='ua-tablet'/></input>",
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
        removed = await h.wait("LIBVIRT_DEVICE_REMOVED", "gl1", since=n)
        assert removed.data == {"alias": "ua-tablet"} and removed.problems == ()
        await h.wait("DEVICE_DELETED", "gl1", lambda e: e.data["device"] == "ua-tablet", since=n)

        # unmapped QMP commands need the explicit opt-in
        with pytest.raises(VMCommandError) as err:
            await vm.execute("query-block")
        assert err.value.error_class == "NotThroughLibvirt"
        assert await vm.monitor_command("query-name") == {"name": "gl1"}
        assert (await vm.execute("query-status"))["status"] == "running"

        n = len(h.events)
        dom.destroy()
        down = await h.wait("REACTOR_VM_DISCONNECTED", "gl1", since=n)
        assert down.data == {"reason": "domain stopped (destroyed)"}
        assert not vm.connected and h.source.get("gl1") is vm  # still defined

        dom.undefine()
        await h.wait("LIBVIRT_LIFECYCLE", "gl1", lambda e: e.data["event"] == "undefined")
        assert h.source.get("gl1") is None
        assert all(e.problems == () for e in h.events), [(e.name, e.problems) for e in h.events if e.problems]


@pytest.mark.qemu
async def test_reconnects_when_libvirtd_restarts(tmp_path: Path, libvirtd: LibvirtDaemon) -> None:  # noqa: F811
    own = start_libvirtd(tmp_path / "lv")
    try:
        conn = _conn(own)
        dom = conn.createXML(GUESTLESS.format(name="rc1"), 0)
        dom.suspend()
        states: list[LinkState] = []
        async with harness(own.uri, on_state=lambda s, st: states.append(st), backoff_initial=0.05,
                           backoff_max=0.5) as h:
            first = await h.wait("REACTOR_VM_CONNECTED", "rc1")
            assert (first.data["status"], first.data["state"], first.data["reason"]) == ("paused", "paused", "user")
            n = len(h.events)
            t0 = time.monotonic()
            await asyncio.to_thread(own.restart)
            lost = await h.wait("REACTOR_VM_DISCONNECTED", "rc1", since=n)
            assert lost.data["reason"].startswith("libvirt connection lost")
            again = await h.wait("REACTOR_VM_CONNECTED", "rc1", since=n)
            took = time.monotonic() - t0
            assert (again.data["status"], again.data["state"], again.data["reason"]) == ("paused", "paused", "user")
            assert h.source.reconnects == 1 and took < 15
            assert states[:3] == [LinkState.CONNECTING, LinkState.CONNECTED, LinkState.DISCONNECTED]
            # the new connection delivers events and takes commands
            vm = h.source.get("rc1")
            assert vm is not None
            await vm.execute("cont")
            await h.wait("RESUME", "rc1", since=n)
        assert states[-1] is LinkState.STOPPED
        _conn(own).lookupByName("rc1").destroy()
    finally:
        own.stop()


# -- the tiny guest as a libvirt domain -------------------------------------------------------------


def _guest_xml(name: str, guest: GuestImage, scenario: str, serial: Path, devices: str) -> str:
    return f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type><kernel>{guest.vmlinux}</kernel><initrd>{guest.initramfs}</initrd>
<cmdline>console=ttyS0 quiet reactor.scenario={scenario}</cmdline></os>
<on_crash>preserve</on_crash>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<serial type='file'><source path='{serial}'/><target port='0'/></serial>
{devices}
<memballoon model='none'/>
</devices></domain>"""


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def _fill(small: Path) -> tuple[Path, Path]:
    """A sparse 16 MiB raw image on the small tmpfs, and a ballast file that fills the rest."""
    image, ballast = small / "nospace.raw", small / "ballast"
    with open(image, "wb") as f:
        f.truncate(16 << 20)  # sparse: every first write to a block needs a free page
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=4k"], capture_output=True, check=False)
    assert os.statvfs(small).f_bavail == 0
    return image, ballast


async def _serial(path: Path, marker: str, timeout: float = 90.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            text = await asyncio.to_thread(_read, path)
            if marker in text:
                return text
            await asyncio.sleep(0.1)


@pytest.mark.qemu
@pytest.mark.guest
async def test_guest_watchdog_resumed_by_shipped_rules(
    tmp_path: Path, libvirtd: LibvirtDaemon, guest_kernel: GuestImage  # noqa: F811
) -> None:
    disk = _qcow2(tmp_path / "wd.qcow2")
    serial = tmp_path / "serial.log"
    devices = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
               "<target dev='vda' bus='virtio'/></disk><watchdog model='i6300esb' action='pause'/>")
    files = _rule_files(ROOT / "rules" / "20-watchdog-snapshot.yaml", ROOT / "rules" / "90-notify.yaml")
    conn = _conn(libvirtd)
    async with harness(libvirtd.uri, files) as h:
        dom = conn.createXML(_guest_xml("wd1", guest_kernel, "watchdog", serial, devices), 0)
        try:
            await _serial(serial, "REACTOR-WATCHDOG-ARMED")
            fired = await h.wait("WATCHDOG", "wd1", timeout=60)
            assert fired.data["action"] == "pause"
            typed = await h.wait("LIBVIRT_WATCHDOG", "wd1")
            assert typed.data == {"action": "pause"}
            attention = await h.wait("VM_ATTENTION", "wd1")
            assert attention.data == {"what": "watchdog", "detail": "pause"}
            await h.wait("RESUME", "wd1", timeout=60)
            await h.wait("LIBVIRT_LIFECYCLE", "wd1", lambda e: e.data["event"] == "resumed", timeout=30)
            latency = h.arrival[id(fired)] - fired.timestamp
            print(f"WATCHDOG passthrough latency: {latency * 1000:.1f} ms")
            assert latency < 1.0
            steps = await h.steps("watchdog-snapshot-then-resume", 4)
            # the built-in snapshot action speaks QMP's block commands, which libvirt VMs refuse unless it
            # uses LibvirtVM.create_snapshot; the rule says on_error: continue, so the VM is resumed either way
            assert steps[0][0] == "snapshot"
            assert steps[1:] == [("log", "ok"), ("qmp", "ok"), ("wait_for", "ok")]
        finally:
            dom.destroy()


@pytest.mark.qemu
@pytest.mark.guest
async def test_guest_disk_full_notified_then_resumed(
    tmp_path: Path, libvirtd: LibvirtDaemon, guest_kernel: GuestImage  # noqa: F811
) -> None:
    image, ballast = _fill(libvirtd.small)
    serial = tmp_path / "serial.log"
    devices = (f"<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>"
               f"<source file='{image}'/><target dev='vda' bus='virtio'/><alias name='ua-data'/></disk>")
    files = _rule_files(ROOT / "examples" / "libvirt" / "rules" / "50-libvirt-disk-full.yaml",
                        ROOT / "rules" / "10-resume-write-error.yaml")
    conn = _conn(libvirtd)
    async with harness(libvirtd.uri, files) as h:
        dom = conn.createXML(_guest_xml("df1", guest_kernel, "ioerror", serial, devices), 0)
        try:
            raw = await h.wait("BLOCK_IO_ERROR", "df1", timeout=90)
            assert raw.data["nospace"] is True and raw.data["device"] == "" and raw.data["action"] == "stop"
            typed = await h.wait("LIBVIRT_IO_ERROR_REASON", "df1")
            assert typed.data == {"path": str(image), "alias": "ua-data", "action": "pause", "reason": "enospc"}
            await h.wait("VM_ATTENTION", "df1", lambda e: e.data["what"] == "disk-full")
            await asyncio.sleep(0.5)
            vm = h.source.get("df1")
            assert vm is not None and vm.status == "io-error" and (vm.state, vm.reason) == ("paused", "ioerror")
            n = len(h.events)
            after = h.events[h.events.index(raw):]
            assert "RESUME" not in [e.name for e in after if e.vm == "df1"]  # resume-after-write-error skips nospace
            ballast.unlink()
            await h.wait("RESUME", "df1", since=n, timeout=30)
            await _serial(serial, "REACTOR-WRITE-OK", timeout=30)
            assert vm.status == "running"
        finally:
            dom.destroy()


@pytest.mark.qemu
async def test_daemon_with_libvirt_section_resumes_through_libvirt(tmp_path: Path,
                                                                     libvirtd: LibvirtDaemon) -> None:  # noqa: F811
    """The real daemon: `libvirt:` in the config starts the source; `qmp: cont` on a libvirt VM is virDomainResume."""
    from reactor.daemon.config import parse_config
    from reactor.daemon.daemon import Daemon, serve
    from reactor.ops.journal import Journal

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "resume.yaml").write_text(RESUME_ON_USER_PAUSE)
    cfg_path = tmp_path / "reactor.yaml"
    cfg_path.write_text(f"rules: rules/\nstate_dir: state\nlibvirt:\n  - uri: {libvirtd.uri}\n    domains: ['dm*']\n")
    daemon = Daemon(parse_config(cfg_path.read_text(), cfg_path), watch=False)
    task = asyncio.create_task(serve(daemon, install_signals=False))
    conn = _conn(libvirtd)
    dom = None
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        dom = conn.defineXML(GUESTLESS.format(name="dm1"))
        dom.create()
        deadline = time.monotonic() + 30
        while daemon._vm("dm1") is None or not daemon._vm("dm1").connected:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the libvirt domain never showed up in the daemon"
            await asyncio.sleep(0.1)
        dom.suspend()
        while dom.state()[0] != 1:  # VIR_DOMAIN_RUNNING again: resumed by the rule
            assert time.monotonic() < deadline, "the rule did not resume the domain"
            await asyncio.sleep(0.1)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)
        if dom is not None:
            with contextlib.suppress(Exception):
                dom.destroy()
            with contextlib.suppress(Exception):
                dom.undefine()
    j = Journal(tmp_path / "state" / "journal.db")
    j.open_sync(readonly=True)
    try:
        runs = j.runs(rule="resume-user-pause")
    finally:
        j.close_sync()
    assert runs and runs[0].status == "ok" and runs[0].vm == "dm1"
    assert [(s.action, s.status) for s in runs[0].steps] == [("qmp", "ok"), ("wait_for", "ok")]


@pytest.mark.qemu
@pytest.mark.guest
async def test_resume_action_resumes_a_libvirt_domain_through_libvirt(
    tmp_path: Path, libvirtd: LibvirtDaemon, guest_kernel: GuestImage  # noqa: F811
) -> None:
    """The rule of tests/actions/test_resume_qemu.py (a probe waits for free space) against a libvirt domain:
    query-status is virDomainGetState, cont is virDomainResume (reactor has no QMP connection to it at all)."""
    from resume_fixtures import journal, poll, space_probe_rules

    from reactor.daemon.config import parse_config
    from reactor.daemon.daemon import Daemon, serve
    from reactor.sources.libvirt.domain import LibvirtVM

    image, ballast = _fill(libvirtd.small)
    serial = tmp_path / "serial.log"
    devices = (f"<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>"
               f"<source file='{image}'/><target dev='vda' bus='virtio'/><alias name='ua-data'/></disk>")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "resume.yaml").write_text(space_probe_rules(libvirtd.small))
    cfg_path = tmp_path / "reactor.yaml"
    cfg_path.write_text(f"rules: rules/\nstate_dir: state\njournal: {{events: all}}\n"
                        f"libvirt:\n  - uri: {libvirtd.uri}\n    domains: ['rs*']\n")
    daemon = Daemon(parse_config(cfg_path.read_text(), cfg_path), watch=False)
    task = asyncio.create_task(serve(daemon, install_signals=False))
    conn = _conn(libvirtd)
    dom = None
    state = tmp_path / "state"
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        dom = conn.createXML(_guest_xml("rs1", guest_kernel, "ioerror", serial, devices), 0)
        await poll(lambda: [r for r in journal(state)[1] if r.outcome == "probe-failed"][1:], 120,
                   "two failed probes")
        assert dom.state()[:2] == [3, 5]   # VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR: no cont yet
        assert isinstance(daemon._vm("rs1"), LibvirtVM)
        ballast.unlink()
        runs = await poll(lambda: [r for r in journal(state)[0] if r.ended and r.rule == "resume-when-space"], 60,
                          "the resume run")
        await _serial(serial, "REACTOR-WRITE-OK", timeout=30)
        assert dom.state()[0] == 1   # VIR_DOMAIN_RUNNING
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)
        if dom is not None:
            with contextlib.suppress(Exception):
                dom.destroy()
    (run,) = runs
    result = run.steps[-1].result
    assert result["resumed"] is True, result
    assert [h["outcome"] for h in result["history"]][-1] == "resumed"
    rows = journal(state)[1]
    assert [r.vm for r in rows if r.phase == "cont"] == ["rs1"]
