"""`reactor replay` as a CI gate: real brokers and webhooks, refusals up front, exit codes 0/1/3."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.broker import Broker, free_port, mosquitto
except ImportError:  # tests/ itself on sys.path
    from broker import Broker, free_port, mosquitto  # type: ignore[import-not-found,no-redef,unused-ignore]

__all__ = ["mosquitto"]

REACTOR = str(Path(sys.executable).with_name("reactor"))
MOSQUITTO_SUB = "mosquitto_sub"

STOP = {"event": "STOP", "data": {}, "timestamp": {"seconds": 1_700_000_000, "microseconds": 0}, "vm": "web1"}
RESUME = {"event": "RESUME", "data": {}, "timestamp": {"seconds": 1_700_000_005, "microseconds": 0}, "vm": "web1"}


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REACTOR, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)


def setup(tmp: Path, rules: str, config: str | None = None, events: list[dict[str, Any]] | None = None) -> None:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "r.yaml").write_text(textwrap.dedent(rules))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (events or [STOP, RESUME])))
    if config is not None:
        (tmp / "reactor.yaml").write_text(textwrap.dedent(config))


MQTT_RULES = """\
    rules:
      - name: tell-the-broker
        on: [STOP, RESUME]
        actions:
          - mqtt: {topic: "incident/{{ vm.name }}/{{ event.name }}", payload: "{{ event.name }}", qos: 1}
    """


def test_mqtt_step_without_a_broker_is_refused_up_front(tmp_path: Path) -> None:
    setup(tmp_path, MQTT_RULES)
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 1, p
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr           # one clear line, not one failure per step
    assert lines[0].startswith("rules/r.yaml:5:") and "'tell-the-broker' step 0 (mqtt)" in lines[0]
    assert "-c CONFIG" in lines[0] and "--dry-run" in lines[0]
    assert "MATCH" not in p.stdout              # nothing ran

    # a config without an mqtt: section says so
    setup(tmp_path, MQTT_RULES, "rules: [rules]\n")
    p = run("replay", "events.jsonl", "-c", "reactor.yaml", cwd=tmp_path)
    assert p.returncode == 1 and "has no mqtt: section" in p.stderr, p

    # --dry-run does not publish, so it needs no broker
    p = run("replay", "events.jsonl", "--rules", "rules", "--dry-run", cwd=tmp_path)
    assert p.returncode == 0, p
    assert "[would run]" in p.stdout


def test_unknown_broker_name_and_unreachable_broker_are_refused(tmp_path: Path) -> None:
    port = free_port()   # nobody listens there
    setup(tmp_path, """\
        rules:
          - name: r
            on: STOP
            actions:
              - mqtt: {topic: "t/{{ vm.name }}", broker: mian}
        """, f"rules: [rules]\nmqtt:\n  main: {{host: 127.0.0.1, port: {port}}}\n")
    p = run("replay", "events.jsonl", "-c", "reactor.yaml", cwd=tmp_path)
    assert p.returncode == 1, p
    assert "unknown broker 'mian'" in p.stderr and "did you mean 'main'" in p.stderr

    setup(tmp_path, MQTT_RULES)
    p = run("replay", "events.jsonl", "-c", "reactor.yaml", cwd=tmp_path)
    assert p.returncode == 1, p
    assert f"MQTT broker 'main' at 127.0.0.1:{port} did not accept a connection" in p.stderr, p.stderr
    assert "MATCH" not in p.stdout


@pytest.mark.mqtt
def test_replay_republishes_a_recorded_incident_to_a_broker(tmp_path: Path, mosquitto: Broker) -> None:
    setup(tmp_path, MQTT_RULES, f"""\
        rules: [rules]
        mqtt:
          test: {{host: 127.0.0.1, port: {mosquitto.port}, publish_events: {{prefix: mirror}}}}
        """)
    sub = subprocess.Popen([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "#", "-v",
                            "-C", "2", "-W", "30", "-q", "1"], stdout=subprocess.PIPE, text=True)
    try:
        import time

        time.sleep(0.5)   # the subscription is in place
        p = run("replay", "events.jsonl", "-c", "reactor.yaml", "--json", cwd=tmp_path)
        out, _ = sub.communicate(timeout=30)
    finally:
        sub.kill()
    assert p.returncode == 0, p
    steps = [json.loads(ln) for ln in p.stdout.splitlines() if '"step"' in ln]
    assert [s["status"] for s in steps] == ["ok", "ok"]
    received = out.splitlines()
    # exactly the steps' messages, in order: the event mirror (and its presence topic) stay off in replay
    assert received == ["incident/web1/STOP STOP", "incident/web1/RESUME RESUME"], out


class _Hook(BaseHTTPRequestHandler):
    got: list[tuple[str, Any]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).got.append((self.path, json.loads(body)))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"got": [], "status": 200})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_webhook_steps_post_for_real_and_exit_codes(tmp_path: Path, webhook_server: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook_server
    rules = f"""\
        rules:
          - name: page
            on: STOP
            actions:
              - webhook: {{url: "{url}/incident", body: {{vm: "{{{{ vm.name }}}}", event: "{{{{ event.name }}}}"}},
                          retries: 0}}
    """
    setup(tmp_path, rules)
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 0, p
    assert hook.got == [("/incident", {"vm": "web1", "event": "STOP"})]
    assert "1 runs, 0 failed" in p.stderr

    # the webhook answers 500: the run failed -> exit 0 (it ran, DAEMON.md), 3 with --strict
    hook.status = 500
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 0, p
    assert "1 runs, 1 failed" in p.stderr
    p = run("replay", "events.jsonl", "--rules", "rules", "--strict", cwd=tmp_path)
    assert p.returncode == 3, p

    # the same failure under on_error: continue leaves the run ok -> exit 0
    setup(tmp_path, rules.replace("retries: 0}", "retries: 0}\n                on_error: continue"))
    p = run("replay", "events.jsonl", "--rules", "rules", "--json", cwd=tmp_path)
    assert p.returncode == 0, p
    recs = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["status"] for r in recs if r["type"] == "step" and r["rule"] == "page"] == ["failed"]


def test_bad_lines_exit_1_even_when_runs_fail(tmp_path: Path) -> None:
    setup(tmp_path, """\
        rules:
          - name: cont
            on: STOP
            actions:
              - qmp: cont
        """)
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 0, p                 # no VM in replay: the qmp step fails, the run failed: it ran
    p = run("replay", "events.jsonl", "--rules", "rules", "--strict", cwd=tmp_path)
    assert p.returncode == 3, p
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write("not json\n")
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 1, p
    assert "events.jsonl:3: not JSON" in p.stderr
    with (tmp_path / "events.jsonl").open("a") as f:   # no time: it would move the virtual clock to now
        f.write('{"event": "STOP", "data": {}, "vm": "web1"}\n')
    p = run("replay", "events.jsonl", "--rules", "rules", "--json", cwd=tmp_path)
    assert p.returncode == 1, p
    assert "events.jsonl:4: a replayed event needs its 'timestamp'" in p.stderr
    assert [json.loads(ln)["time"] for ln in p.stdout.splitlines() if '"match"' in ln] == [1_700_000_000.0], p.stdout
    p = run("replay", "missing.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 1 and "missing.jsonl" in p.stderr


def test_an_unless_match_that_a_later_event_cancels_is_not_a_failed_run(tmp_path: Path) -> None:
    setup(tmp_path, """\
        rules:
          - name: paused-too-long
            on: STOP
            unless: {event: RESUME, within: 30s}
            actions:
              - log: "{{ vm.name }} paused too long"
        """)
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)   # STOP, then RESUME 5 s later
    assert p.returncode == 0, p
    assert "0 runs, 0 failed" in p.stderr, p.stderr   # a cancelled pending match is not a run


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    p = run("replay", "--help", cwd=tmp_path)
    assert p.returncode == 0
    for code in ("0  every event", "1  bad input", "2  usage", "3  with --strict: the input was good but a run",
                 "4  journal rows dropped"):
        assert code in p.stdout, p.stdout


def test_the_printed_times_are_utc_to_the_millisecond(tmp_path: Path) -> None:
    """Times as ``datetime`` gives them (cut to milliseconds), also where a second, a day and a year end."""
    stamps = [(1_700_000_000, 0), (1_700_000_000, 999), (1_700_000_000, 999_999), (1_700_006_399, 123_456),
              (1_704_067_199, 999_500), (1_704_067_200, 1)]
    events = [{"event": "STOP", "data": {}, "timestamp": {"seconds": s, "microseconds": us}, "vm": "web1"}
              for s, us in stamps]
    setup(tmp_path, """\
        rules:
          - name: paused
            on: STOP
            mode: parallel
            actions:
              - log: "{{ vm.name }} paused"
        """, events=events)
    p = run("replay", "events.jsonl", "--rules", "rules", cwd=tmp_path)
    assert p.returncode == 0, p
    printed = [line.split(" MATCH ")[0] for line in p.stdout.splitlines() if " MATCH " in line]
    assert printed == ["2023-11-14 22:13:20.000", "2023-11-14 22:13:20.000", "2023-11-14 22:13:20.999",
                       "2023-11-14 23:59:59.123", "2023-12-31 23:59:59.999", "2024-01-01 00:00:00.000"]
