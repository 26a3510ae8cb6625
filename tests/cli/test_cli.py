"""The command line: history filters and --json, retention in a running daemon, check, exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakeqmp import FakeQMP
from reload_fixtures import RULE_A, ok_runs, running, until, write_config

from reactor.cli import main
from reactor.cli.commands import build_parser
from reactor.daemon.config import JournalConfig
from reactor.ops.journal import Journal
from reactor.ops.retention import Retention, live_size


async def make_journal(path: Path, now: float) -> None:
    async with Journal(path, record_events="all") as j:
        for i, (rule, vm, status, age) in enumerate([
            ("resume", "web-1", "ok", 7200), ("resume", "web-2", "failed", 600), ("notify", "web-1", "ok", 60),
            ("notify", "db-1", "throttled", 30),
        ]):
            eid = j.record_event("STOP", vm, None, now - age, {"i": i})
            rid = j.start_run(rule=rule, vm=vm, event_id=eid, event_name="STOP", started=now - age)
            if status != "throttled":
                j.record_step(rid, index=0, action="log", args={"message": f"m{i}"}, status=status, result=None,
                              error="boom" if status == "failed" else None, started=now - age, duration=0.01)
            j.end_run(rid, status=status, ended=now - age + 0.5, error="boom" if status == "failed" else None)


async def test_history_filters_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.db"
    await make_journal(path, time.time())

    def history(*args: str) -> list[dict[str, object]]:
        assert main(["history", "--journal", str(path), "--json", *args]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    everything = history()
    assert [r["rule"] for r in everything] == ["notify", "notify", "resume", "resume"]   # newest first
    assert everything[2]["steps"][0]["error"] == "boom"
    assert everything[2]["event"]["data"] == {"i": 1}
    assert [r["vm"] for r in history("--rule", "resume")] == ["web-2", "web-1"]
    assert [r["rule"] for r in history("--vm", "web-1")] == ["notify", "resume"]
    assert [r["vm"] for r in history("--since", "15m")] == ["db-1", "web-1", "web-2"]
    assert [r["vm"] for r in history("--status", "throttled")] == ["db-1"]
    assert [r["vm"] for r in history("--event", "STOP", "--limit", "1")] == ["db-1"]
    assert history("--event", "RESUME") == []

    assert main(["history", "--journal", str(path), "--vm", "web-2"]) == 0
    text = capsys.readouterr().out
    assert "resume vm=web-2 event=STOP failed 0.500s error: boom" in text
    assert 'step 0 log {"message":"m1"} failed 10.0ms !! boom' in text
    assert main(["history", "--journal", str(path), "--vm", "nobody"]) == 0
    assert capsys.readouterr().out == "no runs recorded for that filter\n"


def test_history_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--journal", str(tmp_path / "none.db")]) == 1
    assert "no journal at" in capsys.readouterr().err
    (tmp_path / "j.db").write_text("not a database")
    assert main(["history", "--journal", str(tmp_path / "j.db")]) == 1
    assert "reactor:" in capsys.readouterr().err


async def test_history_reads_while_the_daemon_writes(tmp_path: Path) -> None:
    """`reactor history -c CONFIG` (a separate process, read-only) sees the running daemon's runs."""
    async with FakeQMP(tmp_path / "web-1.qmp", name="web-1", status="running") as fake:
        cfg = write_config(tmp_path, fake)
        (tmp_path / "rules" / "main.yaml").write_text(RULE_A)
        async with running(cfg) as daemon:
            await fake.wait_sessions(1)
            fake.emit("STOP")
            await until(lambda: ok_runs(daemon, "on-stop-a"))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "reactor.cli", "history", "-c", str(cfg), "--rule", "on-stop-a", "--json",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            runs = [json.loads(line) for line in out.decode().splitlines()]
            assert [(r["rule"], r["vm"], r["status"]) for r in runs] == [("on-stop-a", "web-1", "ok")]


async def test_retention_prunes_by_age_and_size(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    now = time.time()
    await make_journal(path, now)
    async with Journal(path, record_events="all") as j:
        policy = JournalConfig(max_age=3600)
        r = Retention(j, lambda: policy, interval=3600)
        assert await r.prune_once() > 0
        assert {run.rule for run in j.runs()} == {"resume", "notify"}
        assert all(run.started > now - 3600 for run in j.runs())
        for i in range(3000):
            eid = j.record_event("STOP", "web-1", None, now, {"pad": "x" * 200, "i": i})
            rid = j.start_run(rule="bulk", vm="web-1", event_id=eid, event_name="STOP", started=now)
            j.end_run(rid, status="ok", ended=now)
        policy = JournalConfig(max_size=200_000)
        await r.prune_once()
        await r.prune_once()
        used, rows = live_size(path)
        assert used <= 200_000 * 1.2 and 0 < rows < 3000
        assert j.runs(limit=1)[0].rule == "bulk"                  # the newest stay
        nothing = Retention(j, lambda: JournalConfig(), interval=3600)
        assert await nothing.prune_once() == 0


def test_check_and_usage_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(RULE_A)
    assert main(["check", str(rules)]) == 0
    assert capsys.readouterr().out == "ok: 2 rules in 1 file\n"
    (rules / "b.yaml").write_text("rules:\n  - name: b\n    on: STPO\n    actions: [{log: x}]\n")
    assert main(["check", str(rules)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{rules}/b.yaml:3:9: unknown event 'STPO' (did you mean 'STOP'?)",
                                                    "1 error"]
    with pytest.raises(SystemExit) as exc:
        main(["history", "--limit", "many"])
    assert exc.value.code == 2
    assert main(["history", "--journal", str(tmp_path / "x"), "--since", "soon"]) in (1, 2)


def _check_json(*args: str, cwd: Path) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run([sys.executable, "-m", "reactor.cli", "check", "--json", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_check_json_prints_errors_and_success_on_stdout(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(RULE_A)
    code, out, err = _check_json(str(rules), cwd=tmp_path)
    assert code == 0 and err == ""
    assert out == {"ok": True, "errors": [], "rules": ["on-stop-a", "report-reload"],
                   "files": [str(rules / "a.yaml")]}
    (rules / "b.yaml").write_text(
        "rules:\n  - name: b\n    on: STPO\n    actions:\n      - wait_for: {event: RESUME, match: {foo: 1}}\n"
        "      - qmp: contt\n")
    code, out, err = _check_json(str(rules), cwd=tmp_path)
    assert code == 1 and err == ""
    b = str(rules / "b.yaml")
    assert out == {"ok": False, "errors": [
        {"file": b, "line": 3, "column": 9, "message": "unknown event 'STPO'", "hint": "did you mean 'STOP'?"},
        {"file": b, "line": 5, "column": 43, "message": "wait_for.match: RESUME has no field 'foo'; its fields: none",
         "hint": None},
        {"file": b, "line": 6, "column": 14, "message": "qmp: unknown QMP command 'contt'",
         "hint": "did you mean 'cont'?"},
    ]}
    # a broken config is reported the same way
    (tmp_path / "reactor.yaml").write_text("vms: [{name: a, qmp: /x}]\nrulez: [rules]\n")
    code, out, _ = _check_json("-c", "reactor.yaml", cwd=tmp_path)
    assert code == 1
    assert out == {"ok": False, "errors": [
        {"file": "reactor.yaml", "line": 2, "column": 1, "message": "unknown key 'rulez'",
         "hint": "did you mean 'rules'?"}]}


def test_history_without_config_names_the_journal_it_looked_for(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "reactor.cli", "history", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""   # nothing recorded yet: not an error (DAEMON.md: 0)
    assert proc.stderr.startswith("no journal at state/journal.db (without -c, reactor history reads "
                                  "./state/journal.db; give the daemon's config with -c CONFIG")
    assert "--journal PATH" in proc.stderr and "Traceback" not in proc.stderr


def _reactor() -> list[str]:
    script = Path(sys.executable).parent / "reactor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reactor.cli"]


@pytest.mark.parametrize("key", ["http", "listen", "state_dir"])
def test_start_up_errors_are_one_line(tmp_path: Path, key: str) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(RULE_A)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = {
            "http": f"http: {{listen: '127.0.0.1:{port}'}}\nstate_dir: state\n",
            "listen": f"listen: ['127.0.0.1:{port}']\nstate_dir: state\n",
            "state_dir": "state_dir: rules/a.yaml/state\n",
        }[key]
        (tmp_path / "reactor.yaml").write_text("vms: []\nrules: [rules]\n" + config)
        proc = subprocess.run([*_reactor(), "run", "-c", "reactor.yaml"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode == 1
    expected = {
        "http": f"reactor: http.listen 127.0.0.1:{port}: address already in use",
        "listen": f"reactor: listen 127.0.0.1:{port}: address already in use",
        "state_dir": f"reactor: state_dir {tmp_path}/rules/a.yaml/state: not a directory",
    }[key]
    assert proc.stderr.splitlines() == [expected], proc.stderr


@pytest.mark.parametrize(("argv", "verbose", "quiet"), [
    (["-v", "run", "-c", "r.yaml"], 1, False),     # before the command: not reset by the command's own -v
    (["run", "-vv", "-c", "r.yaml"], 2, False),
    (["-q", "check"], 0, True),
    (["check", "-q", "rules"], 0, True),
    (["events", "STOP", "-v"], 1, False),          # every command takes -v and -q
    (["history", "-q"], 0, True),
])
def test_v_and_q_go_before_or_after_any_command(argv: list[str], verbose: int, quiet: bool) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_check_with_a_config_refuses_mqtt_steps_naming_a_broker_it_does_not_configure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        "rules:\n  - name: tell\n    on: STOP\n    actions:\n      - mqtt: {topic: x, broker: mian}\n")
    (tmp_path / "reactor.yaml").write_text("rules: rules/\nmqtt:\n  main: {host: 127.0.0.1, port: 1883}\n")
    assert main(["check", "-c", str(tmp_path / "reactor.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'rules' / 'a.yaml'}:5:9: rule 'tell' step 0 (mqtt): unknown broker 'mian'" \
           " (did you mean 'main'?)" in err, err
    (tmp_path / "reactor.yaml").write_text("rules: rules/\n")
    assert main(["check", "-c", str(tmp_path / "reactor.yaml")]) == 1
    assert "publishes to an MQTT broker, but the config" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "rules")]) == 0   # without a config there are no brokers to compare with
