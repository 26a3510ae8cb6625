"""Hot reload: a real daemon in-process against a fake QMP server, asserted through the journal.

Good reload → the new rules fire, the VM connection is the same one; bad
reload → the old rules still fire, every error is reported with its position
and ``REACTOR_RULES_RELOADED`` says ``ok: false``; files changing on disk
reload by themselves; a rule file deleted mid-reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP
from reload_fixtures import RULE_A, fake, ok_runs, running, runs, until, write_config

from reactor.daemon.daemon import DAEMON_VM
from reactor.daemon.reload import FileWatcher, config_changes, fingerprint

__all__ = ["fake"]


RULE_B = RULE_A.replace("on-stop-a", "on-stop-b")

BROKEN = """\
rules:
  - name: broken
    on: STPO
    actions:
      - sleep: forever
"""


async def test_good_reload_swaps_rules_without_reconnecting(tmp_path: Path, fake: FakeQMP) -> None:
    cfg = write_config(tmp_path, fake)
    rules = tmp_path / "rules" / "main.yaml"
    rules.write_text(RULE_A)
    async with running(cfg) as daemon:
        await fake.wait_sessions(1)
        fake.emit("STOP")
        await until(lambda: ok_runs(daemon, "on-stop-a"), what="rule a")
        rules.write_text(RULE_B)
        result = await daemon.reload("test")
        assert result.ok and result.rules == 2 and result.errors == ()
        fake.emit("STOP")
        await until(lambda: ok_runs(daemon, "on-stop-b"), what="rule b")
        await asyncio.sleep(0.2)
        assert len(runs(daemon, "on-stop-a")) == 1       # the old rule is gone
        assert fake.connections == 1                     # the VM was never reconnected
        assert daemon.fleet is not None and daemon.fleet.get("web-1") is not None
        reports = await until(lambda: [r for r in ok_runs(daemon, "report-reload") if r.event is not None
                                       and r.event.data["ok"] is True and r.event.vm == DAEMON_VM]
                              if len(ok_runs(daemon, "report-reload")) >= 2 else None)
        assert len(reports) == 2                         # at start, and after the reload


async def test_bad_reload_keeps_old_rules_and_reports_every_error(tmp_path: Path, fake: FakeQMP,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path, fake)
    (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
    async with running(cfg) as daemon:
        await fake.wait_sessions(1)
        bad = tmp_path / "rules" / "zz-broken.yaml"
        bad.write_text(BROKEN)
        result = await daemon.reload("test")
        assert not result.ok
        assert result.rules == 2
        assert any(e.startswith(f"{bad}:3:9: unknown event 'STPO'") for e in result.errors), result.errors
        assert any(e.startswith(f"{bad}:5:16: sleep") for e in result.errors), result.errors
        assert any("reload failed with 2 errors" in r.getMessage() for r in caplog.records)
        fake.emit("STOP")
        await until(lambda: ok_runs(daemon, "on-stop-a"), what="old rule still firing")
        failed = await until(lambda: [r for r in runs(daemon, "report-reload")
                                      if r.event is not None and r.event.data["ok"] is False])
        assert failed[0].event.data["errors"] == list(result.errors)
        # fixed: the next reload takes over
        bad.unlink()
        (tmp_path / "rules" / "main.yaml").write_text(RULE_B)
        assert (await daemon.reload("test")).ok
        assert daemon.engine is not None and daemon.engine.rules.get("on-stop-b") is not None


async def test_throttle_state_survives_for_rules_that_keep_their_name(tmp_path: Path, fake: FakeQMP) -> None:
    cfg = write_config(tmp_path, fake)
    rules = tmp_path / "rules" / "main.yaml"
    throttled = RULE_A.replace("    on: STOP\n", "    on: STOP\n    throttle: {max: 1, within: 1h}\n", 1)
    rules.write_text(throttled)
    async with running(cfg) as daemon:
        await fake.wait_sessions(1)
        fake.emit("STOP")
        await until(lambda: ok_runs(daemon, "on-stop-a"))
        rules.write_text(throttled.replace('"a saw', '"a (edited) saw'))
        assert (await daemon.reload("test")).ok
        fake.emit("STOP")
        await until(lambda: [r for r in runs(daemon, "on-stop-a") if r.status == "throttled"], what="throttled")


async def test_runs_in_flight_finish_under_their_rules(tmp_path: Path, fake: FakeQMP) -> None:
    cfg = write_config(tmp_path, fake)
    rules = tmp_path / "rules" / "main.yaml"
    rules.write_text(RULE_A.replace('      - log: "a saw {{ event.name }}"',
                                    '      - sleep: 500ms\n      - log: "a saw {{ event.name }}"'))
    async with running(cfg) as daemon:
        await fake.wait_sessions(1)
        fake.emit("STOP")
        await until(lambda: [r for r in runs(daemon, "on-stop-a") if r.status == "running"], what="run started")
        rules.write_text(RULE_B)
        assert (await daemon.reload("test")).ok
        done = await until(lambda: ok_runs(daemon, "on-stop-a"), what="old run finished")
        assert [s.action for s in done[0].steps] == ["sleep", "log"]


async def test_file_changes_reload_by_themselves(tmp_path: Path, fake: FakeQMP) -> None:
    cfg = write_config(tmp_path, fake)
    rules = tmp_path / "rules" / "main.yaml"
    rules.write_text(RULE_A)
    async with running(cfg, watch=True, watch_interval=0.1, watch_debounce=0.1) as daemon:
        await fake.wait_sessions(1)
        rules.write_text(RULE_B)
        await until(lambda: daemon.reloads >= 1, timeout=20, what="a reload")
        assert daemon.last_reload is not None and daemon.last_reload.ok
        assert daemon.last_reload.reason == "files changed"
        (tmp_path / "rules" / "new.yml").write_text(BROKEN)
        await until(lambda: daemon.reloads >= 2, timeout=20, what="a second reload")
        assert daemon.last_reload is not None and not daemon.last_reload.ok
        assert daemon.engine is not None and daemon.engine.rules.get("on-stop-b") is not None


async def test_an_edit_before_the_watcher_starts_is_not_missed(tmp_path: Path) -> None:
    """The watcher compares with what was loaded, not with its own first scan (CI lost that race)."""
    rules = tmp_path / "main.yaml"
    rules.write_text(RULE_A)
    loaded = fingerprint([tmp_path])
    rules.write_text(RULE_B)   # after the load, before the watcher's first scan
    changed = asyncio.Event()

    async def on_change() -> None:
        changed.set()

    watcher = FileWatcher(lambda: [tmp_path], on_change, interval=0.01, debounce=0.01, baseline=loaded)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(changed.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watcher.changes == 1


async def test_rule_file_deleted_mid_reload(tmp_path: Path, fake: FakeQMP) -> None:
    """Found by the scan, gone when read: that reload fails cleanly; the next one (the watcher's) succeeds."""
    cfg = write_config(tmp_path, fake)
    (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
    doomed = tmp_path / "rules" / "doomed.yaml"
    doomed.write_text(RULE_B.replace("on-stop-b", "doomed").replace("report-reload", "report-2"))
    async with running(cfg, watch=True, watch_interval=0.1, watch_debounce=0.1) as daemon:
        await fake.wait_sessions(1)
        original = Path.read_text

        def vanishing(self: Path, *args: Any, **kwargs: Any) -> str:
            if self == doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self)
            return original(self, *args, **kwargs)

        Path.read_text = vanishing  # type: ignore[method-assign]
        try:
            result = await daemon.reload("test")
        finally:
            Path.read_text = original  # type: ignore[method-assign]
        assert not result.ok
        assert any(e.startswith(f"{doomed}:1:1: cannot read") for e in result.errors), result.errors
        assert daemon.engine is not None and daemon.engine.rules.get("doomed") is not None  # old set intact
        await until(lambda: daemon.last_reload is not None and daemon.last_reload.ok, timeout=20,
                    what="watcher reload")
        assert daemon.engine.rules.get("doomed") is None


async def test_config_changes_applied_or_said_to_need_a_restart(tmp_path: Path, fake: FakeQMP,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path, fake)
    (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
    async with FakeQMP(tmp_path / "web-2.qmp", name="web-2", status="running") as fake2, running(cfg) as daemon:
        await fake.wait_sessions(1)
        cfg.write_text(cfg.read_text() + f"""\
  - name: web-2
    qmp: {fake2.address}
bus: {{per_vm: 5}}
journal: {{max_age: 7d}}
""")
        result = await daemon.reload("test")
        assert result.ok
        assert result.applied == ("journal.max_age", "vms")
        assert result.restart_needed == ("bus.per_vm",)
        assert any("'bus.per_vm' changed: that needs a restart" in r.getMessage() for r in caplog.records)
        await fake2.wait_sessions(1)
        assert fake.connections == 1
        assert daemon.config.journal.max_age == 7 * 86400
        assert daemon.config.bus.per_vm == 10_000          # unchanged until a restart
        cfg.write_text("rules: [rules/\n")
        bad = await daemon.reload("test")
        assert not bad.ok and bad.errors[0].startswith(f"{cfg}:")


def test_config_changes_lists_fields() -> None:
    from reactor.daemon.config import parse_config

    a = parse_config("rules: r/\nlog: {level: info}\n", "/x/c.yaml")
    b = parse_config("rules: r2/\nlog: {level: debug, format: json}\nhttp: {listen: 127.0.0.1:1}\n", "/x/c.yaml")
    ch = config_changes(a, b)
    assert ch.live == ("log.level", "rules")
    assert ch.restart == ("http.listen", "log.format")
    assert config_changes(a, a).live == () and config_changes(a, a).restart == ()


def test_fingerprint_sees_rule_and_plugin_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.yaml").write_text("rules: []\n")
    (tmp_path / "a" / ".hidden.yaml").write_text("")
    (tmp_path / "a" / "notes.txt").write_text("")
    (tmp_path / "p.py").write_text("")
    fp = fingerprint([tmp_path / "a", tmp_path / "p.py", tmp_path / "missing"])
    assert sorted(fp) == [str(tmp_path / "a" / "x.yaml"), str(tmp_path / "p.py")]


def test_sighup_reloads_a_real_reactor_process(tmp_path: Path) -> None:
    """`reactor run` as a subprocess: SIGHUP reloads (no VM needed); SIGTERM stops with 0."""
    (tmp_path / "rules").mkdir()
    rules = tmp_path / "rules" / "main.yaml"
    rules.write_text(RULE_A)
    cfg = tmp_path / "reactor.yaml"
    cfg.write_text("rules: rules/\nstate_dir: state/\nlog: {level: info, format: json}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = subprocess.Popen([sys.executable, "-m", "reactor.cli", "run", "-c", str(cfg), "--no-watch"],
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        def wait_line(text: str) -> None:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    break
                lines.append(line)
                if text in line:
                    return
            raise AssertionError(f"no {text!r} in:\n{''.join(lines)}")

        wait_line("reactor running")
        rules.write_text(RULE_B)
        proc.send_signal(signal.SIGHUP)
        wait_line("reloaded: 2 rules in force")
        rules.write_text(BROKEN)
        proc.send_signal(signal.SIGHUP)
        wait_line("reload failed with 2 errors")
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=15)
        lines.extend(rest.splitlines(keepends=True))
        assert proc.returncode == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    objs = [json.loads(line) for line in lines if line.startswith("{")]
    errors = [o for o in objs if o["message"].startswith("reload: ")]
    assert errors and errors[0]["level"] == "error" and "unknown event 'STPO'" in errors[0]["message"]

