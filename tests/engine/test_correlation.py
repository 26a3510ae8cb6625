"""Correlation over time: `after`, `count`, `unless` replayed on the virtual clock, checked at load.

Edges: an event exactly at the window's end is outside it (windows are
half-open, as for throttle and threshold); VMs interleave without mixing their
keys; a second trigger while one is pending is dropped (journaled); a match
still pending at the end of the input runs then, in deadline order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from reactor.cli import main
from reactor.engine.clock import RealClock, VirtualClock
from reactor.engine.correlation import MAX_KEYS
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.errors import LoadError
from reactor.ops.journal import SCHEMA_VERSION, Journal
from reactor.rules.loader import load_rules_text

SHIPPED = Path(__file__).resolve().parents[2] / "rules"

AFTER = """
rules:
  - name: io-after-resume
    on: BLOCK_IO_ERROR
    after: {event: RESUME, within: 1m}
    actions:
      - log: "io error {{ vars.after.timestamp.seconds }}"
"""

COUNT = """
rules:
  - name: repeated-io
    on: BLOCK_IO_ERROR
    count: {min: 3, within: 1m}
    actions:
      - log: >-
          n={{ vars.count.n }} first={{ vars.count.first }}
          {{ vars.count.events | map(attribute='timestamp.seconds') | join(',') }}
"""

UNLESS = """
rules:
  - name: paused-too-long
    on: STOP
    unless: {event: [RESUME, SHUTDOWN], within: 30s}
    actions:
      - log: "paused since {{ vars.pending_since }}"
"""


def line(name: str, vm: str, t: float, **data: Any) -> str:
    secs = int(t)
    return json.dumps({"event": name, "vm": vm, "data": data,
                       "timestamp": {"seconds": secs, "microseconds": round((t - secs) * 1e6)}})


def io(vm: str, t: float, device: str = "d0") -> str:
    return line("BLOCK_IO_ERROR", vm, t, device=device, operation="write", action="stop", reason="EIO")


async def play(rules: str, lines: list[str], journal: Journal | None = None
               ) -> tuple[Engine, list[dict[str, Any]]]:
    rs = load_rules_text([("r.yaml", textwrap.dedent(rules))])
    clock = VirtualClock()
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=records.append, journal=journal)
    result = await replay(lines, engine, clock)
    assert result.errors == []
    return engine, records


def matches(records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(r["vm"], r["time"]) for r in records if r["type"] == "match"]


def messages(records: list[dict[str, Any]]) -> list[str]:
    return [r["args"]["message"] for r in records if r["type"] == "step"]


def outcomes(engine: Engine, rule: str) -> dict[str, int]:
    return {k[1]: n for k, n in engine.run_outcomes.items() if k[0] == rule}


# -- after ----------------------------------------------------------------------------------

async def test_after_needs_the_other_event_first_within_the_window_and_per_vm() -> None:
    lines = [io("vm1", 990),                        # no RESUME yet: no match
             line("RESUME", "vm1", 1000),
             io("vm2", 1010),                       # vm2 had no RESUME: no match
             io("vm1", 1030),                       # 30 s after vm1's RESUME: runs
             io("vm1", 1059.999),                   # just inside
             io("vm1", 1060)]                       # exactly 1m after: outside (half-open window)
    engine, records = await play(AFTER, lines)
    assert matches(records) == [("vm1", 1030.0), ("vm1", 1059.999)]
    assert messages(records) == ["io error 1000", "io error 1000"]
    assert outcomes(engine, "io-after-resume")["no_after"] == 3


async def test_after_takes_the_latest_event_and_match_filters_it() -> None:
    rules = """
    rules:
      - name: r
        on: STOP
        after: {event: BLOCK_IO_ERROR, match: {operation: write}, within: 10s, per: [vm, host]}
        actions:
          - log: "{{ vars.after.data.device }}"
    """
    lines = [line("BLOCK_IO_ERROR", "vm1", 100, device="a", operation="write", action="stop"),
             line("BLOCK_IO_ERROR", "vm1", 101, device="b", operation="read", action="stop"),  # not matched
             line("BLOCK_IO_ERROR", "vm1", 102, device="c", operation="write", action="stop"),
             line("STOP", "vm1", 105)]
    _, records = await play(rules, lines)
    assert messages(records) == ["c"]


async def test_the_trigger_is_never_its_own_after_event() -> None:
    rules = """
    rules:
      - name: second-stop
        on: STOP
        after: {event: STOP, within: 10s}
        actions: [{log: second}]
    """
    _, records = await play(rules, [line("STOP", "vm1", 100), line("STOP", "vm1", 105), line("STOP", "vm1", 120)])
    assert matches(records) == [("vm1", 105.0)]


# -- count ----------------------------------------------------------------------------------

async def test_count_fires_on_the_third_of_the_same_vm_then_counts_from_zero() -> None:
    lines = [io("vm1", 1000), io("vm2", 1001), io("vm1", 1002), io("vm2", 1003),
             io("vm1", 1004),                           # vm1's 3rd: run
             io("vm1", 1005), io("vm2", 1005.5),         # vm2's 3rd: run
             io("vm1", 1006),                            # vm1 counting anew: 2 so far
             io("vm1", 1007)]                            # vm1's 3rd again: run
    engine, records = await play(COUNT, lines)
    assert matches(records) == [("vm1", 1004.0), ("vm2", 1005.5), ("vm1", 1007.0)]
    assert messages(records)[0] == "n=3 first=1000.0 1000,1002,1004"
    assert outcomes(engine, "repeated-io")["counted"] == 6


async def test_count_window_is_sliding_and_an_entry_exactly_within_old_has_expired() -> None:
    lines = [io("vm1", 1000), io("vm1", 1030),
             io("vm1", 1060),            # 1000 is exactly 1m old: expired; 2 in the window
             io("vm1", 1089)]            # 1030, 1060, 1089: run
    _, records = await play(COUNT, lines)
    assert matches(records) == [("vm1", 1089.0)]
    assert messages(records) == ["n=3 first=1030.0 1030,1060,1089"]


async def test_count_repeats_count_and_per_data_keys_apart() -> None:
    rules = """
    rules:
      - name: r
        on: BLOCK_IO_ERROR
        count: {min: 2, within: 1m, per: [vm, data.device]}
        actions: [{log: "{{ vars.count.n }}"}]
    """
    lines = [io("vm1", 1, "a"), io("vm1", 2, "b"), io("vm1", 3, "a")]
    _, records = await play(rules, lines)
    assert matches(records) == [("vm1", 3.0)]


async def test_count_min_1_runs_on_every_match() -> None:
    rules = """
    rules:
      - name: r
        on: STOP
        count: {min: 1, within: 1m}
        actions: [{log: "{{ vars.count.n }}"}]
    """
    _, records = await play(rules, [line("STOP", "vm1", 1), line("STOP", "vm1", 2)])
    assert messages(records) == ["1", "1"]


# -- unless ---------------------------------------------------------------------------------

async def test_unless_runs_at_the_deadline_when_nothing_cancels() -> None:
    lines = [line("STOP", "vm1", 1000), line("POWERDOWN", "vm1", 1010), line("STOP", "vm2", 1035)]
    engine, records = await play(UNLESS, lines)
    # vm1's run starts at its deadline (1030), before vm2's STOP at 1035; vm2's at the end of input (1065)
    assert matches(records) == [("vm1", 1030.0), ("vm2", 1065.0)]
    assert messages(records) == ["paused since 1000.0", "paused since 1035.0"]
    kinds = [(r["type"], r["vm"]) for r in records if r["type"] in ("pending", "match")]
    assert kinds == [("pending", "vm1"), ("match", "vm1"), ("pending", "vm2"), ("match", "vm2")]
    assert outcomes(engine, "paused-too-long")["elapsed"] == 2


async def test_unless_cancelled_by_a_resume_of_the_same_vm_only() -> None:
    lines = [line("STOP", "vm1", 1000), line("STOP", "vm2", 1001),
             line("RESUME", "vm2", 1005),                          # cancels vm2's, not vm1's
             line("RESUME", "vm1", 1029.999)]                      # cancels vm1's just in time
    engine, records = await play(UNLESS, lines)
    assert matches(records) == []
    cancelled = [r for r in records if r["type"] == "cancelled"]
    assert [(r["vm"], r["by"], r["time"]) for r in cancelled] == [("vm2", "RESUME", 1005.0),
                                                                   ("vm1", "RESUME", 1029.999)]
    assert "cancelled by RESUME from vm1" in cancelled[1]["reason"]
    assert outcomes(engine, "paused-too-long")["cancelled"] == 2


async def test_unless_cancel_exactly_at_the_deadline_is_too_late() -> None:
    lines = [line("STOP", "vm1", 1000), line("RESUME", "vm1", 1030)]
    _, records = await play(UNLESS, lines)
    assert matches(records) == [("vm1", 1030.0)]
    assert not [r for r in records if r["type"] == "cancelled"]


async def test_unless_second_trigger_while_pending_is_dropped_then_a_new_one_may_start() -> None:
    lines = [line("STOP", "vm1", 1000), line("STOP", "vm1", 1010),   # dropped: one is pending
             line("RESUME", "vm1", 1020),                             # cancels the first
             line("STOP", "vm1", 1025)]                               # a new pending: runs at the end (1055)
    _, records = await play(UNLESS, lines)
    dropped = [r for r in records if r["type"] == "dropped"]
    assert [(r["vm"], r["time"]) for r in dropped] == [("vm1", 1010.0)]
    assert "pending" in dropped[0]["reason"]
    assert matches(records) == [("vm1", 1055.0)]
    assert messages(records) == ["paused since 1025.0"]


async def test_an_unless_event_that_is_also_the_trigger_cancels_the_one_before_and_is_held_itself() -> None:
    rules = """
rules:
  - name: last-stop-of-a-burst
    on: STOP
    unless: {event: STOP, within: 10s}
    actions:
      - log: "since {{ vars.pending_since }}"
  - name: io-then-quiet
    on: BLOCK_IO_ERROR
    count: {min: 2, within: 1m}
    unless: {event: BLOCK_IO_ERROR, within: 10s}
    actions: [{log: quiet}]
"""
    lines = [line("STOP", "vm1", 1000), line("STOP", "vm1", 1005),   # the second cancels the first, is held
             line("STOP", "vm1", 1030),                               # alone: runs 10 s later
             io("vm1", 1050), io("vm1", 1051),                        # the 2nd of a count is held: runs at 1061
             io("vm1", 1070), io("vm1", 1071)]                        # again; runs at the end (1081)
    engine, records = await play(rules, lines)
    assert [(r["rule"], r["time"]) for r in records if r["type"] == "match"] == [
        ("last-stop-of-a-burst", 1015.0), ("last-stop-of-a-burst", 1040.0),
        ("io-then-quiet", 1061.0), ("io-then-quiet", 1081.0)]
    assert messages(records) == ["since 1005.0", "since 1030.0", "quiet", "quiet"]
    cancelled = [(r["rule"], r["time"]) for r in records if r["type"] == "cancelled"]
    assert cancelled == [("last-stop-of-a-burst", 1005.0)], "a trigger never cancels its own pending match"
    assert outcomes(engine, "io-then-quiet").get("cancelled", 0) == 0


async def test_pending_at_end_of_input_run_in_deadline_order() -> None:
    rules = UNLESS + """
  - name: short-hold
    on: STOP
    unless: {event: RESUME, within: 5s}
    actions: [{log: short}]
"""
    lines = [line("STOP", "vm1", 1000), line("STOP", "vm2", 1001)]
    _, records = await play(rules, lines)
    got = [(r["rule"], r["vm"], r["time"]) for r in records if r["type"] == "match"]
    assert got == [("short-hold", "vm1", 1005.0), ("short-hold", "vm2", 1006.0),
                   ("paused-too-long", "vm1", 1030.0), ("paused-too-long", "vm2", 1031.0)]


async def test_unless_match_on_the_cancelling_event_and_forms_combined() -> None:
    rules = """
    rules:
      - name: r
        on: BLOCK_IO_ERROR
        count: {min: 2, within: 1m}
        unless: {event: RESUME, within: 10s}
        actions: [{log: "{{ vars.count.n }} since {{ vars.pending_since }}"}]
      - name: s
        on: STOP
        unless: {event: SHUTDOWN, match: {guest: true}, within: 10s}
        actions: [{log: s}]
    """
    lines = [io("vm1", 100), io("vm1", 101),                  # 2nd: pending until 111
             line("STOP", "vm1", 102),
             line("SHUTDOWN", "vm1", 103, guest=False, reason="host-qmp-quit"),   # match fails: no cancel
             line("RESUME", "vm1", 120)]                      # after r's deadline
    _, records = await play(rules, lines)
    assert [(r["rule"], r["time"]) for r in records if r["type"] == "match"] == [("r", 111.0), ("s", 112.0)]
    assert messages(records)[0] == "2 since 101.0"


async def test_a_storm_of_pending_matches_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reactor.engine.correlation.MAX_KEYS", 50)
    lines = [line("STOP", f"vm{i}", 1000 + i * 0.001) for i in range(80)]
    engine, records = await play(UNLESS, lines)
    assert engine.correlation.overflow["paused-too-long"] == 30
    assert outcomes(engine, "paused-too-long")["overflow"] == 30
    assert len(matches(records)) == 50
    assert MAX_KEYS == 10_000   # the documented bound


async def test_a_storm_of_stops_over_1000_vms_then_their_resumes_leaves_no_state() -> None:
    stops = [line("STOP", f"vm{i:04d}", 1000 + i * 0.001) for i in range(1000)]
    resumes = [line("RESUME", f"vm{i:04d}", 1002 + i * 0.001) for i in range(1000)]
    t0 = time.process_time()
    engine, records = await play(UNLESS, stops + stops[:10] + resumes)   # 10 repeats: dropped
    took = time.process_time() - t0
    out = outcomes(engine, "paused-too-long")
    assert out["pending"] == 1000 and out["cancelled"] == 1000 and out["dropped"] == 10 and "elapsed" not in out
    assert engine.correlation.sizes() == {("paused-too-long", "unless"): 0} and not matches(records)
    assert took < 5.0   # about 0.1 s here: per-key dict lookups, one timer each


async def test_expired_counts_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reactor.engine.correlation.SWEEP_EVERY", 10)
    lines = [io(f"vm{i}", 1000 + i * 10) for i in range(100)]     # every VM once, 10 s apart
    engine, _ = await play(COUNT, lines)
    assert len(engine.correlation._counts["repeated-io"]) <= 16   # ~6 within the minute + < 10 since a sweep


# -- the journal ----------------------------------------------------------------------------

async def test_pending_cancelled_and_elapsed_are_journaled(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    async with Journal(tmp_path / "j.db", record_events="matched") as journal:
        lines = [line("STOP", "vm1", 1000), line("RESUME", "vm1", 1010), line("STOP", "vm2", 1020)]
        await play(UNLESS, lines, journal)
        runs = sorted(journal.runs(limit=10), key=lambda r: r.id)
        rows = [(r.vm, r.outcome, r.status) for r in runs]
        assert rows == [("vm1", "pending", "cancelled"), ("vm2", "pending", "elapsed"), ("vm2", "started", "ok")]
        assert runs[0].error is not None and "cancelled by RESUME from vm1" in runs[0].error
        assert runs[0].event is not None and runs[0].event.name == "STOP"
        cancelling = journal.events(name="RESUME")
        assert len(cancelling) == 1 and f"event #{cancelling[0].id}" in runs[0].error
        assert journal.load_correlation() == []   # nothing left pending
    assert main(["history", "--journal", str(tmp_path / "j.db")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "paused-too-long vm=vm1 event=STOP [pending] cancelled" in out[0] and "(cancelled by RESUME" in out[0]
    assert "paused-too-long vm=vm2 event=STOP [pending] elapsed" in out[1] and "the run started" in out[1]
    assert "paused-too-long vm=vm2 event=STOP ok" in out[2]


async def test_disabling_a_rule_drops_its_pending_matches_journaled(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        rs = load_rules_text([("r.yaml", textwrap.dedent(UNLESS))])
        clock = VirtualClock(1000)
        engine = Engine(rs, clock=clock, journal=journal)
        make = engine.catalog.make_event
        async with engine.session():
            engine.dispatch(make(json.loads(line("STOP", "vm1", 1000)), vm="vm1"))
            assert engine.correlation.snapshot("paused-too-long")["pending"]
            off = UNLESS.replace("    on: STOP", "    on: STOP\n    enabled: false")
            engine.set_rules(load_rules_text([("r.yaml", textwrap.dedent(off))]))
            clock.wake_due(2000)                 # its deadline passes: nothing runs
        (run,) = journal.runs()
        assert (run.outcome, run.status) == ("pending", "dropped") and "disabled" in (run.error or "")
        assert journal.load_correlation() == []


async def test_a_restored_deadline_due_before_the_engine_runs_fires_once_it_does() -> None:
    rs = load_rules_text([("r.yaml", textwrap.dedent(UNLESS))])
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=RealClock(), output=records.append)
    now = time.time()
    stop = {"event": "STOP", "vm": "vm1", "data": {}, "timestamp": {"seconds": int(now) - 29, "microseconds": 0}}
    engine.correlation.restore([("paused-too-long", "unless", "vm1", now - 29.95, rs.rules[0].correlation_signature,
                                 {"event": stop, "deadline": now + 0.05})], now)
    await asyncio.sleep(0.2)              # due while the engine does not run yet
    assert engine.correlation.snapshot("paused-too-long")["pending"]
    async with engine.session():
        await asyncio.sleep(0.5)
    assert [(r["type"], r["vm"]) for r in records if r["type"] == "match"] == [("match", "vm1")]
    assert messages(records) == [f"paused since {now - 29.95}"]


async def test_damaged_state_rows_are_dropped_and_the_good_ones_restored() -> None:
    rs = load_rules_text([("r.yaml", textwrap.dedent(UNLESS))])
    engine = Engine(rs, clock=VirtualClock(1000))
    sig = rs.rules[0].correlation_signature
    stop = {"event": "STOP", "vm": "vm1", "data": {}, "timestamp": {"seconds": 990, "microseconds": 0}}
    engine.correlation.restore([
        ("paused-too-long", "unless", "vm2", 990.0, sig, {"event": stop}),            # no deadline
        ("paused-too-long", "unless", "vm3", 990.0, sig, "not a mapping"),            # type: ignore[list-item]
        ("paused-too-long", "unless", "vm4", 990.0, sig, {"event": 42, "deadline": 1020.0}),
        ("paused-too-long", "unless", "vm1", 990.0, sig, {"event": stop, "deadline": 1020.0}),
    ], 1000.0)
    assert [p["key"] for p in engine.correlation.snapshot("paused-too-long")["pending"]] == ["vm1"]


async def test_a_bug_in_a_correlation_fails_that_match_not_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("reactor.engine.correlation.Correlator._count", broken)
    monkeypatch.setattr("reactor.engine.correlation.Correlator._cancel", broken)
    rules = COUNT + """
  - name: held
    on: STOP
    unless: {event: RESUME, within: 1m}
    actions: [{log: held}]
  - name: plain
    on: BLOCK_IO_ERROR
    actions: [{log: plain}]
"""
    engine, records = await play(rules, [io("vm1", 1), line("STOP", "vm1", 2), line("RESUME", "vm1", 3)])
    assert outcomes(engine, "repeated-io")["correlation_error"] == 1
    assert [r["rule"] for r in records if r["type"] == "match"] == ["plain", "held"]   # held ran at its deadline


async def test_a_pending_row_without_state_is_ended_interrupted_at_restore(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        rid = journal.start_run(rule="paused-too-long", vm="vm1", event_id=None, event_name="STOP", started=1.0,
                                outcome="pending")
        engine = Engine(load_rules_text([("r.yaml", textwrap.dedent(UNLESS))]), journal=journal)
        engine.correlation.restore(journal.load_correlation(), 10.0,
                                   [r.id for r in journal.runs(status="pending", with_steps=False)])
        run = journal.run(rid)
        assert run is not None and run.status == "interrupted" and "no state" in (run.error or "")


async def test_a_version_1_journal_gets_the_correlation_table(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    con = sqlite3.connect(db)
    con.executescript((Path(__file__).parent.parent / "data" / "journal-v1.sql").read_text())
    con.close()
    async with Journal(db) as j:
        assert [r.rule for r in j.runs()] == ["r1"]           # the old rows are kept
        j.record_correlation("add", "r", "count", "vm1", 5.0, "sig", {"event": {"event": "STOP"}})
        j.record_correlation("add", "r", "count", "vm1", 6.0, "sig", {"event": {"event": "STOP"}})
        j.record_correlation("add", "r", "unless", "vm1", 7.0, "sig", {"deadline": 9.0})
        j.record_correlation("del", "r", "count", "vm1", 5.0, "sig", None)     # rows at or before 5.0
        await j.flush()
        assert [(r[1], r[3]) for r in j.load_correlation()] == [("count", 6.0), ("unless", 7.0)]
        j.record_correlation("del", "r", None, None, None, "sig", None)
        assert j.load_correlation() == []
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


# -- load errors ----------------------------------------------------------------------------

def errors(text: str) -> list[str]:
    with pytest.raises(LoadError) as exc:
        load_rules_text([("r.yaml", textwrap.dedent(text))])
    return [str(e) for e in exc.value.errors]


def rule(extra: str, on: str = "STOP") -> str:
    return f"""
    rules:
      - name: r
        on: {on}
    {textwrap.indent(textwrap.dedent(extra).strip(), '    ')}
        actions: [{{log: x}}]
    """


@pytest.mark.parametrize(("extra", "expected"), [
    ("unless: {event: RESUMED, within: 30s}",
     "r.yaml:5:21: unless.event: unknown event 'RESUMED' (did you mean 'RESUME'?)"),
    ("unless: {event: [RESUME, SHUTDOWNN], within: 30s}",
     "r.yaml:5:30: unless.event: unknown event 'SHUTDOWNN' (did you mean 'SHUTDOWN'?)"),
    ("unless: {event: RESUME}", "r.yaml:5:13: unless: missing 'within'"),
    ("unless: {event: RESUME, within: -5s}", "r.yaml:5:37: unless.within: "),
    ("unless: {event: RESUME, within: 0}", "r.yaml:5:37: unless.within: must be greater than zero"),
    ("unless: {within: 30s}", "r.yaml:5:13: unless: missing 'event'"),
    ("unless: {event: '*', within: 30s}", "r.yaml:5:21: unless.event: name the events"),
    ("unless: {event: RESUME, within: 30s, pre: [vm]}", "r.yaml:5:42: unless: unknown key 'pre' (did you mean 'per'?)"),
    ("unless: {event: SHUTDOWN, match: {guets: true}, within: 30s}", "r.yaml:5:39: SHUTDOWN has no field 'guets'"),
    ("unless: {event: SHUTDOWN, match: {reason: halt}, within: 30s}", "not one of"),
    ("unless: {event: RESUME, within: 30s, per: [data.device]}", "r.yaml:5:48: unless.per: STOP has no field 'device'"),
    ("unless: [RESUME]", "r.yaml:5:13: unless must be a mapping {event, match, within, per}"),
    ("after: {event: RESUM, within: 1m}", "r.yaml:5:20: after.event: unknown event 'RESUM' (did you mean 'RESUME'?)"),
    ("after: {event: RESUME, within: 1m, matc: {}}", "r.yaml:5:40: after: unknown key 'matc' (did you mean 'match'?)"),
    ("after: {event: RESUME}", "r.yaml:5:12: after: missing 'within'"),
    ("after: {event: 12, within: 1m}", "r.yaml:5:20: after.event: an event name must be a string"),
    ("count: {min: 0, within: 1m}", "r.yaml:5:18: count.min: expected a positive integer, got 0"),
    ("count: {min: 3}", "r.yaml:5:12: count: missing 'within'"),
    ("count: {within: 1m}", "r.yaml:5:12: count: missing 'min'"),
    ("count: {min: 2, within: 1m, per: [data.nope]}", "r.yaml:5:39: count.per: STOP has no field 'nope'"),
    ("count: {min: 2, within: 1m, event: STOP}", "r.yaml:5:33: count: unknown key 'event'"),
    ("cuont: {min: 2, within: 1m}", "r.yaml:5:5: unknown rule key 'cuont' (did you mean 'count'?)"),
])
def test_bad_correlation_is_a_load_error_with_position(extra: str, expected: str) -> None:
    got = errors(rule(extra))
    assert any(e.startswith(expected) or expected in e for e in got), got


def test_good_correlations_load() -> None:
    rs = load_rules_text([("r.yaml", textwrap.dedent(AFTER))])
    c = rs.rules[0].after
    assert c is not None and c.events == frozenset(["RESUME"]) and c.within == 60 and c.per == ("vm",)
    rs = load_rules_text([("r.yaml", textwrap.dedent(COUNT))])
    assert rs.rules[0].count is not None and rs.rules[0].count.min == 3


# -- the shipped rules ----------------------------------------------------------------------

async def test_shipped_rules_paused_too_long_and_repeated_io_errors() -> None:
    from reactor.rules.loader import load_rules

    rs = load_rules([SHIPPED])
    clock = VirtualClock()
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=records.append)
    lines = [line("STOP", "web-1", 1000), io("db-1", 1001), io("db-1", 1100),
             line("STOP", "web-2", 1150), line("RESUME", "web-2", 1160), io("db-1", 1200),
             line("STOP", "web-3", 1300), line("RESUME", "web-3", 1600)]       # resumed 5 min later: too late
    assert (await replay(lines, engine, clock)).errors == []
    got = [(r["rule"], r["vm"], r["time"]) for r in records if r["type"] == "match"
           and r["rule"] in ("notify-paused-too-long", "repeated-io-errors")]
    assert got == [("repeated-io-errors", "db-1", 1200.0), ("notify-paused-too-long", "web-1", 1300.0),
                   ("notify-paused-too-long", "web-3", 1600.0)]
    assert [(r["vm"], r["by"]) for r in records if r["type"] == "cancelled"] == [("web-2", "RESUME")]
    said = [r["args"]["message"] for r in records if r["type"] == "step" and r["action"] == "log"
            and r["rule"] == "repeated-io-errors"]
    assert said == ["db-1: 3 I/O errors since 1001 (d0: EIO); snapshot failed"]


async def test_the_examples_in_docs_correlation_md_load_and_replay() -> None:
    doc = (SHIPPED.parent / "docs" / "correlation.md").read_text()
    (block,) = [b.split("```", 1)[0] for b in doc.split("```yaml\n")[1:]]
    lines = [line("RESUME", "vm1", 1000), io("vm1", 1010), io("vm1", 1020), io("vm1", 1030),
             line("STOP", "vm2", 1040), line("STOP", "vm3", 1050), line("RESUME", "vm3", 1060)]
    _, records = await play(block, lines)
    assert messages(records) == ["vm1: I/O error after the resume at 1000"] * 3 + [
        "vm1: 3 I/O errors since 1010", "vm2: paused since 1040 (paused)"]


# -- explain --------------------------------------------------------------------------------

EXPLAINED = """
rules:
  - name: paused-too-long
    on: STOP
    unless: {event: RESUME, within: 30s}
    actions: [{log: x}]
  - name: io-after-resume
    on: BLOCK_IO_ERROR
    after: {event: RESUME, within: 1m}
    count: {min: 3, within: 10m}
    actions: [{log: x}]
"""


async def test_explain_reads_correlation_state_from_the_journal(tmp_path: Path) -> None:
    from reactor.engine.explain import explain, format_verdicts
    from reactor.model.catalog import default_catalog

    rs = load_rules_text([("r.yaml", textwrap.dedent(EXPLAINED))])
    make = default_catalog().make_event

    def event(text: str) -> Any:
        obj = json.loads(text)
        return make(obj, vm=obj["vm"])

    path = tmp_path / "j.db"
    async with Journal(path, record_events="matched") as journal:
        await play(EXPLAINED, [line("STOP", "vm1", 1000), line("RESUME", "vm2", 1001), io("vm2", 1002),
                               line("STOP", "vm3", 1003), line("RESUME", "vm3", 1004)], journal)
        # the replay ran vm1's pending at its deadline (end of input); hold one for vm9 by hand
        journal.record_correlation("add", "paused-too-long", "unless", "vm9", 2000.0,
                                   rs.rules[0].correlation_signature,
                                   {"event": {"event": "STOP", "vm": "vm9", "data": {}}, "deadline": 2030.0})
        await journal.flush()
        text = format_verdicts(stop9 := event(line("STOP", "vm9", 2010)),
                               explain(stop9, rs, journal=journal, now=2010))
        assert "paused-too-long (r.yaml:3:5): MATCH: dropped (a match is already pending)" in text
        assert "pending since 1970-01-01 00:33:20 UTC until 1970-01-01 00:33:50 UTC" in text
        (v,) = explain(event(line("RESUME", "vm9", 2011)), rs, journal=journal, now=2011)[:1]
        assert v.outcome == "correlates" and "would cancel the match pending for 'vm9'" in v.correlation[0]
        (v,) = explain(event(line("STOP", "vm3", 2012)), rs, journal=journal, now=2012)
        assert v.outcome == "pending" and "cancelled by a RESUME of 'vm3'" in v.correlation[0]
        assert "the last pending match of vm3 (run" in v.correlation[1] and "cancelled by RESUME" in v.correlation[1]
        (v,) = explain(event(io("vm2", 1030)), rs, journal=journal, now=1030)
        assert v.outcome == "below-count" and v.correlation[0].startswith("after: held by RESUME of 'vm2'")
        assert "match 2 of 3" in v.correlation[1]
        (v,) = explain(event(io("vm2", 1070)), rs, journal=journal, now=1070)
        assert v.outcome == "no-match" and v.failed == "after"
