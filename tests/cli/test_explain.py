"""`reactor explain`: every rule listening to an event, the condition that failed (with values), throttle and mode."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reactor.cli import main
from reactor.ops.journal import Journal

RULES = """\
rules:
  - name: resume
    on: BLOCK_IO_ERROR
    match: {action: stop, operation: write}
    throttle: {max: 2, within: 1h}
    actions:
      - log: resume
  - name: reads-only
    on: BLOCK_IO_ERROR
    match: {operation: read, nospace: {ne: true}}
    actions:
      - log: reads
  - name: not-enospc
    on: [BLOCK_IO_ERROR, STOP]
    if: "event.data.reason != 'No space left on device'"
    actions:
      - log: x
  - name: prod-only
    on: BLOCK_IO_ERROR
    vms: {labels: {env: prod}}
    actions:
      - log: x
  - name: switched-off
    on: BLOCK_IO_ERROR
    enabled: false
    actions:
      - log: x
  - name: everything
    on: "*"
    mode: single
    actions:
      - log: x
  - name: unrelated
    on: RESUME
    actions:
      - log: x
"""

EVENT = {"event": "BLOCK_IO_ERROR", "vm": "web-1",
         "data": {"device": "", "node-name": "disk0", "operation": "write", "action": "stop",
                  "nospace": True, "reason": "No space left on device"},
         "timestamp": {"seconds": 1700000000, "microseconds": 0}}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps(EVENT))
    return rules, ev


def test_explain_names_every_listening_rule_and_the_failing_condition(
        setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rules, ev = setup
    assert main(["explain", str(ev), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "BLOCK_IO_ERROR from web-1: 6 rules listen"
    assert "unrelated" not in out
    assert f"resume ({rules}/r.yaml:2:5): MATCH: would run" in out
    assert "reads-only" in out and "operation: expected 'read' (value 'write')" in out
    assert "nospace: ne True failed (value True)" in out
    assert "if \"event.data.reason != 'No space left on device'\" is False" in out
    assert "prod-only" in out and "VM 'web-1' (labels {}) is not one of labels {'env': 'prod'}" in out
    assert "switched-off (" in out and "disabled" in out
    assert "everything" in out and "no journal given" in out


def test_explain_json_and_vm_override_and_labels_from_config(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, ev = setup
    cfg = tmp_path / "reactor.yaml"
    cfg.write_text("rules: rules/\nvms:\n  - {name: db-1, qmp: /nonexistent.qmp, labels: {env: prod}}\n")
    assert main(["explain", str(ev), "-c", str(cfg), "--vm", "db-1", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["vm"] == "db-1"
    by = {r["rule"]: r for r in obj["rules"]}
    assert by["prod-only"]["outcome"] == "run" and by["prod-only"]["matched"]
    assert by["reads-only"]["failed"] == "match"
    assert by["reads-only"]["reasons"] == ["operation: expected 'read' (value 'write')",
                                           "nospace: ne True failed (value True)"]
    assert by["not-enospc"]["failed"] == "if"
    assert by["switched-off"]["outcome"] == "disabled"


async def test_explain_uses_the_journal_for_throttle_and_mode(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, ev = setup
    path = tmp_path / "state" / "journal.db"
    now = time.time()
    async with Journal(path) as j:
        j.record_throttle("resume", "web-1", now - 600)
        j.record_throttle("resume", "web-1", now - 60)
        j.record_throttle("resume", "web-1", now - 7200)        # outside the window
        j.start_run(rule="everything", vm="web-1", event_id=None, event_name="STOP", started=now - 1)
    assert main(["explain", str(ev), "--rules", str(rules), "--journal", str(path)]) == 0
    out = capsys.readouterr().out
    assert "resume (" in out and "MATCH: throttled" in out
    assert "2 per 1h per vm (key 'web-1'): all 2 used; would be throttled (a slot frees in 50m)" in out
    assert "everything (" in out and "MATCH: dropped (mode)" in out
    assert "single: run 1 in progress; the new match would be dropped" in out


def test_explain_bad_input(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, _ = setup
    bad = tmp_path / "bad.json"
    bad.write_text('{"event": "STOP"}\nnot json\n')
    assert main(["explain", str(bad), "--rules", str(rules)]) == 1
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.json"), "--rules", str(rules)]) == 1
    (rules / "broken.yaml").write_text("rules:\n  - name: x\n    on: STPO\n    actions: [{log: x}]\n")
    assert main(["explain", str(bad), "--rules", str(rules)]) == 1
    assert f"{rules}/broken.yaml:3:9: unknown event 'STPO'" in capsys.readouterr().err


def test_explain_at_the_events_time_reads_a_journal_a_replay_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - name: third-io\n    on: BLOCK_IO_ERROR\n"
                                  "    count: {min: 3, within: 1m}\n    actions: [{log: x}]\n")

    def io(t: int) -> str:
        return json.dumps({"event": "BLOCK_IO_ERROR", "vm": "web-1", "timestamp": {"seconds": t, "microseconds": 0},
                           "data": {"device": "d", "operation": "write", "action": "stop", "reason": "x"}})

    (tmp_path / "incident.jsonl").write_text(io(1_700_000_000) + "\n" + io(1_700_000_010) + "\n")
    journal = tmp_path / "j.db"
    assert main(["replay", str(tmp_path / "incident.jsonl"), "--rules", str(rules), "--journal", str(journal)]) == 0
    (tmp_path / "next.json").write_text(io(1_700_000_015))
    capsys.readouterr()
    args = ["explain", str(tmp_path / "next.json"), "--rules", str(rules), "--journal", str(journal)]
    assert main([*args, "--at", "event"]) == 0
    assert "this would be match 3 of 3 for 'web-1'" in capsys.readouterr().out
    assert main(args) == 0   # now, years later: both counted matches are out of the window
    assert "this would be match 1 of 3 for 'web-1'" in capsys.readouterr().out
