"""A reload keeps the correlation state of rules whose correlation did not change, and drops the rest (journaled).

An in-process daemon against a fake QMP server, as in tests/daemon/test_reload.py.
"""

from __future__ import annotations

from pathlib import Path

from fakeqmp import FakeQMP
from reload_fixtures import fake, running, runs, until, write_config

__all__ = ["fake"]

RULES = """\
rules:
  - name: kept
    on: STOP
    unless: {event: RESUME, within: 1h}
    actions:
      - log: "kept {{ vm.name }}"
  - name: changed
    on: STOP
    unless: {event: RESUME, within: 1h}
    actions:
      - log: changed
  - name: counted
    on: STOP
    count: {min: 2, within: 1h}
    actions:
      - log: "second stop"
  - name: gone
    on: STOP
    unless: {event: RESUME, within: 1h}
    actions:
      - log: gone
"""

EDITED = (RULES.replace('"kept {{ vm.name }}"', '"kept (edited) {{ vm.name }}"')   # actions only: kept
          .replace("    unless: {event: RESUME, within: 1h}\n    actions:\n      - log: changed",
                   "    unless: {event: RESUME, within: 2h}\n    actions:\n      - log: changed")
          .split("  - name: gone")[0])


async def test_reload_keeps_unchanged_correlations_and_drops_changed_ones(tmp_path: Path, fake: FakeQMP) -> None:
    cfg = write_config(tmp_path, fake)
    rules = tmp_path / "rules" / "main.yaml"
    rules.write_text(RULES)
    async with running(cfg) as daemon:
        await fake.wait_sessions(1)
        fake.emit("STOP")
        await until(lambda: len([r for name in ("kept", "changed", "gone") for r in runs(daemon, name)
                                 if r.status == "pending"]) == 3, what="three pending matches")
        engine = daemon.engine
        assert engine is not None
        await until(lambda: engine.correlation.snapshot("counted").get("counts") == {"web-1": 1}, what="count 1")
        rules.write_text(EDITED)
        assert (await daemon.reload("test")).ok
        assert [p["vm"] for p in engine.correlation.snapshot("kept")["pending"]] == ["web-1"]
        assert engine.correlation.snapshot("changed")["pending"] == []
        assert engine.correlation.snapshot("counted")["counts"] == {"web-1": 1}
        for name in ("changed", "gone"):
            (row,) = runs(daemon, name)
            assert row.status == "dropped" and row.error is not None and "reload" in row.error, row
        fake.emit("STOP")         # counted's 2nd (its count was kept): runs
        await until(lambda: [r for r in runs(daemon, "counted") if r.status == "ok"], what="the 2nd STOP's run")
        fake.emit("RESUME")
        await until(lambda: [r for r in runs(daemon, "kept") if r.status == "cancelled"], what="kept cancelled")
        assert daemon.journal is not None
        # the RESUME also cancelled the pending match `changed` took for the 2nd STOP: nothing is left
        await until(lambda: [r for r in runs(daemon, "changed") if r.status == "cancelled"], what="changed's")
        assert daemon.journal.load_correlation() == []
