"""Security guarantees of docs/security.md, each shown against the real code.

* templates and ``if``: known server-side template injection payloads, in rule
  text and in event data, never reach Python internals, files or the network;
  rendering is bounded in time and size;
* ``exec``: no shell, one argv entry per argument whatever the event data,
  a minimal explicit environment, the whole process group killed on timeout;
* ``qmp``: destructive commands refused by default (at load for literal names,
  at run time for templated ones) unless a step opts in; the config's
  ``qmp.deny`` and per-rule ``qmp.allow`` lists;
* secrets (MQTT password, webhook secret, HTTP token, exec env tokens) appear
  in none of the outputs of a full daemon run: its log at debug level, the
  journal file, ``reactor history``, the ``/api`` answers, ``reactor explain``,
  ``reactor check`` and error messages;
* the HTTP listener is loopback by default and needs a token elsewhere; the
  state dir and journal are private.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from actions_fixtures import running, wait_runs, write_config
from aiohttp import web
from broker import Broker, mosquitto
from fakeqmp import FakeQMP
from ports import free_port

from reactor.daemon.config import parse_config
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.errors import LoadError
from reactor.rules.loader import load_rules_text

__all__ = ["mosquitto"]

REACTOR = [str(Path(sys.executable).with_name("reactor"))]


# --------------------------------------------------------------------------- helpers


async def replay_records(rules: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load ``rules`` and replay ``events`` through the real engine; the match/step records."""
    rs = load_rules_text([("rules/sec.yaml", rules)])
    clock = VirtualClock()
    records: list[dict[str, Any]] = []
    engine = Engine(rs, clock=clock, output=records.append)
    lines = [json.dumps({"timestamp": {"seconds": 1000 + i, "microseconds": 0}, **e}) for i, e in enumerate(events)]
    result = await replay(lines, engine, clock, source="sec.jsonl")
    assert not result.errors, result.errors
    return records


def steps(records: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "step" and r["rule"] == rule]


class Listener:
    """A TCP listener that records whether anything connected (the payloads' network target)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    def accepted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.sock.close()


# --------------------------------------------------------------------------- templates: SSTI


def ssti_payloads(marker: Path, port: int) -> list[str]:
    """Known Jinja2 server-side template injection payloads (PayloadsAllTheThings, HackTricks, Jinja's own
    sandbox escapes), aimed at a marker file and a local TCP port."""
    cmd = f"touch {marker}"
    net = f"__import__('socket').create_connection(('127.0.0.1', {port}))"
    return [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__()[59].__init__.__globals__['sys'].modules['os'].popen('"
        + cmd + "').read() }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ [].__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('" + cmd + "').read() }}",
        "{{ joiner.__init__.__globals__.os.popen('" + cmd + "').read() }}",
        "{{ namespace.__init__.__globals__.os.popen('" + cmd + "').read() }}",
        "{{ lipsum.__globals__['os'].popen('" + cmd + "').read() }}",
        "{{ lipsum.__globals__.__builtins__.__import__('os').system('" + cmd + "') }}",
        "{{ range.__globals__ }}",
        "{{ self.__init__.__globals__.__builtins__ }}",
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
        "{{ config.__class__.__init__.__globals__['os'].popen('" + cmd + "') }}",
        "{{ request.application.__globals__.__builtins__.__import__('os').popen('" + cmd + "') }}",
        "{{ ''|attr('__class__')|attr('__mro__') }}",
        "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
        "{{ event|attr('__init__')|attr('__globals__') }}",
        "{{ event.__class__.__init__.__globals__ }}",
        "{{ event.data.__class__.__subclasses__() }}",
        "{{ vm.__class__.__init__.__globals__ }}",
        "{{ vm._vm }}",
        "{{ event._event }}",
        "{{ event.timestamp.__class__.__subclasses__() }}",
        "{{ event.timestamp.__reduce_ex__(2) }}",
        "{{ now.__class__.__mro__ }}",
        "{{ '{0.__class__.__mro__}'.format(event) }}",
        "{{ '{0.__init__.__globals__}'.format(event) }}",
        "{{ '%s'|format(event.__init__) }}",
        "{{ dict.__base__.__subclasses__() }}",
        "{{ (event.data|from_json).__class__ }}",
        "{{ (\"__import__('os').system('" + cmd + "')\")|from_json }}",
        "{{ " + net + " }}",
        "{{ lipsum.__globals__.__builtins__.eval(\"" + net + "\") }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
        "{{ c.__init__.__globals__['__builtins__'].open('/etc/passwd').read() }}{% endif %}{% endfor %}",
        "{% import 'os' as os %}{{ os }}",
        "{% include '/etc/passwd' %}",
        "{% extends '/etc/passwd' %}",
        "{% from '/etc/hostname' import x %}",
        "{{ vars.update({'x': 1}) }}",
        "{{ event.data.update({'x': 1}) }}",
        "{{ vm.labels.clear() }}",
        "{% set x = event.data.pop('device') %}{{ x }}",
    ]


LEAKS = ("<class", "<function", "<module", "<built-in", "__builtins__", "root:x:0", "<bound method", "<frame")


async def test_ssti_payloads_in_rule_text_reach_no_internals_files_or_network(
        tmp_path: Path, listener: Listener) -> None:
    marker = tmp_path / "pwned"
    payloads = ssti_payloads(marker, listener.port)
    ok = failed = rejected_at_load = 0
    for payload in payloads:
        rules = ("rules:\n  - name: ssti\n    on: DEVICE_DELETED\n    actions:\n"
                 f"      - log: {json.dumps(payload)}\n")
        try:
            records = await replay_records(rules, [{"event": "DEVICE_DELETED", "data": {"device": "d0", "path": "/x"}}])
        except LoadError as err:  # e.g. {% import %}: a syntax the sandbox refuses at load
            assert all(e.position is not None for e in err.errors)
            rejected_at_load += 1
            continue
        (step,) = steps(records, "ssti")
        if step["status"] == "ok":
            ok += 1
            assert not any(leak in str(step["result"]) for leak in LEAKS), (payload, step["result"])
        else:
            failed += 1
            error = step["error"].replace(repr(payload), "TEMPLATE")   # the message quotes the template
            assert not any(leak in error for leak in LEAKS), (payload, error)
            assert error.startswith("template TEMPLATE: "), error   # a TemplateError of that step
    assert not marker.exists(), "a payload ran a command"
    assert not listener.accepted(), "a payload opened a network connection"
    assert ok + failed + rejected_at_load == len(payloads)
    assert failed + rejected_at_load >= len(payloads) - 3   # nearly all are refused outright


async def test_ssti_payloads_in_event_data_render_as_plain_text(tmp_path: Path, listener: Listener) -> None:
    marker = tmp_path / "pwned"
    payloads = ssti_payloads(marker, listener.port)
    rules = """
rules:
  - name: echo
    on: DEVICE_DELETED
    if: "event.data.device | length > 0"
    actions:
      - log: "device={{ event.data.device }} path={{ event.data.path }}"
      - log: "{{ event.data.device }}"
"""
    records = await replay_records(rules, [{"event": "DEVICE_DELETED", "data": {"device": p, "path": p[::-1]}}
                                           for p in payloads])
    results = steps(records, "echo")
    assert len(results) == 2 * len(payloads)
    for payload, (first, second) in zip(payloads, zip(results[::2], results[1::2], strict=True), strict=True):
        assert first["result"] == f"device={payload} path={payload[::-1]}"
        assert second["result"] == payload       # never rendered again as a template
    assert not marker.exists() and not listener.accepted()


BOMBS = [
    "{{ 'x' * 1000000000 }}",
    "{{ [0] * 1000000000 }}",
    "{{ range(1000000000) | list | length }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 10 ** 100000000 }}",
    "{{ (10 ** 9999) * (10 ** 9999) * (10 ** 9999) * (10 ** 9999) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=999999999) }}",
    "{{ 'x'.center(999999999) }}",
    "{{ 'x'.zfill(999999999) }}",
    "{{ '\t'.expandtabs(999999999) }}",
    "{{ 'x' | center(999999999) }}",
    "{{ 'x' | indent(999999999, true) }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ ('x' * 1000) | replace('x', 'x' * 1000) | replace('x', 'x' * 1000) }}",
    "{{ ('x' * 1000).replace('x', 'x' * 1000).replace('x', 'x' * 1000) }}",
    "{% set a = 'x' | center(1000000) %}{{ a ~ a ~ a ~ a }}",
    "{% set a = 'x' | center(1000000) %}{% for i in range(1000) %}{{ a }}{% endfor %}",
    "{% set a = ['x' | center(100000)] * 100 %}{{ a | join }}",
    "{% set a = ['x' | center(100000)] * 100 %}{{ ''.join(a) }}",
    "{{ [1] | batch(999999999, 'x') | list }}",
    "{{ [1] | slice(999999999) | list }}",
    "{{ lipsum(999999999) }}",
]


@pytest.mark.parametrize("bomb", BOMBS)
async def test_a_template_cannot_hang_the_engine_or_build_a_huge_string(bomb: str) -> None:
    rules = f"rules:\n  - name: bomb\n    on: STOP\n    actions:\n      - log: {json.dumps(bomb)}\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    records = await replay_records(rules, [{"event": "STOP"}])
    elapsed = time.monotonic() - started
    (step,) = steps(records, "bomb")
    assert step["status"] == "failed"
    assert "limit" in step["error"] or "budget" in step["error"], step["error"]
    assert elapsed < 1.0, elapsed
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"{grown_mb:.0f} MB"


async def test_an_if_expression_is_bounded_and_counts_as_no_match() -> None:
    rules = """
rules:
  - name: guarded
    on: '*'
    if: "('%0999999999d' % 1) | length > 0"
    actions: [{log: never}]
  - name: plain
    on: '*'
    actions: [{log: ran}]
"""
    records = await replay_records(rules, [{"event": "STOP"}])
    assert [r["rule"] for r in records if r["type"] == "match"] == ["plain"]


# --------------------------------------------------------------------------- exec

ARGV_PROBE = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ), "
              "'pgid': os.getpgid(0) == os.getpid()}, sys.stdout)")
HOSTILE_ARGS = ["a; touch {m}", "$(touch {m})", "`touch {m}`", "x\ntouch {m}", "-rf", "--output={m}", "| touch {m}",
                "&& touch {m}", "' \" \\", "*", "~", "$HOME", "{m} > /dev/null", ""]


async def test_exec_argv_entries_stay_single_arguments_and_the_env_is_minimal(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = [a.format(m=marker) for a in HOSTILE_ARGS]
    rules = f"""
rules:
  - name: probe
    on: DEVICE_DELETED
    actions:
      - exec:
          argv: [{json.dumps(sys.executable)}, -c, {json.dumps(ARGV_PROBE)}, "{{{{ event.data.device }}}}",
                 "--path={{{{ event.data.path }}}}"]
          env: {{GIVEN: "{{{{ event.data.path }}}}"}}
          stdin: ""
      - exec: {{argv: [/usr/bin/env], env: {{GIVEN: "{{{{ event.data.path }}}}"}}}}
"""
    os.environ["REACTOR_TEST_LEAK"] = "should-not-pass"
    try:
        records = await replay_records(rules, [{"event": "DEVICE_DELETED", "data": {"device": h, "path": h}}
                                               for h in hostile])
    finally:
        del os.environ["REACTOR_TEST_LEAK"]
    results = steps(records, "probe")
    assert [r["status"] for r in results] == ["ok"] * 2 * len(hostile), results
    for h, r, env in zip(hostile, results[::2], results[1::2], strict=True):
        out = json.loads(r["result"]["stdout"])
        assert out["argv"] == [h, f"--path={h}"]
        assert out["env"]["GIVEN"] == h
        assert out["pgid"], "the program leads its own process group"
        names = {line.split("=", 1)[0] for line in env["result"]["stdout"].splitlines() if "=" in line}
        assert names <= {"PATH", "REACTOR_VM", "REACTOR_RULE", "REACTOR_EVENT", "GIVEN"}, names
        assert {"PATH", "GIVEN"} <= names
    assert not marker.exists()


async def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; sleep 300"
    rules = f"""
rules:
  - name: slow
    on: STOP
    actions:
      - exec: {{argv: [/bin/sh, -c, {json.dumps(script)}], timeout: 500ms}}
"""
    started = time.monotonic()
    records = await replay_records(rules, [{"event": "STOP"}])
    (step,) = steps(records, "slow")
    assert step["status"] in ("failed", "timeout") and "killed" in step["error"]
    assert time.monotonic() - started < 5
    grandchild = int(pids.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        if (await asyncio.to_thread(Path(f"/proc/{grandchild}/stat").read_text)).split()[2] == "Z":
            break
        await asyncio.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the background grandchild survived the timeout")


# --------------------------------------------------------------------------- qmp command policy


def test_a_literal_destructive_command_is_a_load_error_with_position_and_the_opt_in() -> None:
    text = ("rules:\n  - name: bye\n    on: WATCHDOG\n    actions:\n      - qmp: quit\n"
            "      - qmp: {execute: human-monitor-command, arguments: {command-line: info}}\n")
    with pytest.raises(LoadError) as info:
        load_rules_text([("rules/bye.yaml", text)])
    errors = [str(e) for e in info.value.errors]
    assert errors[0].startswith("rules/bye.yaml:5:14: qmp: quit is destructive")
    assert "allow_destructive: true" in errors[0]
    assert errors[1].startswith("rules/bye.yaml:6:24: qmp: human-monitor-command is destructive")
    opted = text.replace("qmp: quit", "qmp: {execute: quit, allow_destructive: true}").replace(
        "command-line: info}", "command-line: info}, allow_destructive: true")
    assert [r.name for r in load_rules_text([("rules/bye.yaml", opted)]).rules] == ["bye"]


async def test_qmp_policy_at_run_time_against_a_fake_vm(tmp_path: Path) -> None:
    """A templated name rendering to a destructive command is refused unless opted in; qmp.deny refuses even
    then; qmp.allow restricts the rules it names; nothing refused reaches the VM."""
    rules = """
rules:
  - name: templated
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: "{{ 'qu' ~ 'it' }}"
        on_error: continue
      - qmp: "{{ 'system_' ~ 'powerdown' }}"
        on_error: continue
  - name: denied-even-opted-in
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: {execute: "{{ 'migrate' }}", arguments: {uri: "exec:true"}, allow_destructive: true}
  - name: limited-resume
    on: REACTOR_VM_CONNECTED
    actions:
      - qmp: query-status
      - qmp: cont
      - qmp: stop
"""
    async with FakeQMP(tmp_path / "f.qmp", name="f") as fake:
        cfg = write_config(tmp_path, {"f": fake.address}, rules)
        cfg.write_text(cfg.read_text() + "qmp:\n  deny: [migrat*]\n  allow: {'limited-*': [cont, 'query-*']}\n")
        async with running(cfg):
            (templated,) = await wait_runs(tmp_path / "state", "templated")
            (denied,) = await wait_runs(tmp_path / "state", "denied-even-opted-in")
            (limited,) = await wait_runs(tmp_path / "state", "limited-resume")
        sent = [c for c, _ in fake.commands]
    assert templated.steps[0].status == "failed"
    assert "quit is destructive" in (templated.steps[0].error or "")
    assert templated.steps[1].status == "failed"   # the fake has no system_powerdown: QEMU-like error
    assert "CommandNotFound" in (templated.steps[1].error or "")
    assert denied.status == "failed" and "denied by the config (qmp.deny)" in (denied.steps[0].error or "")
    assert [s.status for s in limited.steps] == ["ok", "ok", "failed"]
    assert "not in rule limited-resume's allow-list" in (limited.steps[2].error or "")
    assert "quit" not in sent and "migrate" not in sent and "stop" not in sent
    assert "system_powerdown" in sent and "cont" in sent


def test_qmp_policy_config_errors_have_positions() -> None:
    text = "qmp:\n  deny: [quit, 'Bad Name']\n  allow: {'x-*': [cont, 5.5, {a: b}]}\n  allw: {}\n"
    with pytest.raises(LoadError) as info:
        parse_config(text, "/etc/reactor/r.yaml", env={})
    msgs = [str(e) for e in info.value.errors]
    assert any(m.startswith("/etc/reactor/r.yaml:2:16: qmp.deny: 'Bad Name' is not a QMP command") for m in msgs)
    assert any(m.startswith("/etc/reactor/r.yaml:3:25: qmp.allow.x-*: expected a string") for m in msgs), msgs
    assert any("unknown key 'allw' (did you mean 'allow'?)" in m for m in msgs)


# --------------------------------------------------------------------------- secrets in every output

MQTT_ID = "reactor-sec"


@contextlib.asynccontextmanager
async def hook_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*REACTOR, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                env=env)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_secrets_appear_in_no_output_of_a_full_run(tmp_path: Path, mosquitto: Broker) -> None:
    hook_secret = "hook-s3cret-VALUE-41"
    http_token = "http-T0KEN-value-42"
    exec_token = "exec-t0ken-value-43"
    mqtt_env_password = mosquitto.password
    secrets = [hook_secret, http_token, exec_token, mqtt_env_password]
    (tmp_path / "hook.secret").write_text(hook_secret + "\n")
    port = free_port()
    async with hook_server() as (hook_url, seen), FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "r.yaml").write_text(f"""
rules:
  - name: notify
    on: [BLOCK_IO_ERROR, STOP]
    actions:
      - mqtt: {{topic: "sec/{{{{ vm.name }}}}"}}
      - webhook: {{url: "{hook_url}", secret_file: {tmp_path / 'hook.secret'}}}
      - webhook: {{url: "http://127.0.0.1:1/closed", secret: "{hook_secret}", timeout: 1s}}
        on_error: continue
      - exec: {{argv: [/bin/sh, -c, 'echo "$API_TOKEN" >&2; exit 3'], env: {{API_TOKEN: "{exec_token}"}}}}
        on_error: continue
      - webhook: {{url: "{hook_url}", headers: {{Authorization: "Bearer {exec_token}"}}}}
""")
        (tmp_path / "reactor.yaml").write_text(f"""
rules: rules/
state_dir: state
journal: {{events: all}}
log: {{level: debug, format: text}}
vms: [{{name: vm1, qmp: {fake.address}}}]
http: {{listen: "127.0.0.1:{port}", token: "${{HTTP_TOKEN}}"}}
mqtt:
  main: {{host: 127.0.0.1, port: {mosquitto.auth_port}, username: {mosquitto.username},
          password: "${{MQTT_PASSWORD}}", client_id: {MQTT_ID}}}
""")
        env = {**os.environ, "HTTP_TOKEN": http_token, "MQTT_PASSWORD": mqtt_env_password}
        proc = await asyncio.create_subprocess_exec(
            *REACTOR, "run", "-c", str(tmp_path / "reactor.yaml"), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env)
        api: list[str] = []
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {http_token}"},
                                             timeout=aiohttp.ClientTimeout(total=5)) as client:
                base = f"http://127.0.0.1:{port}"
                async with asyncio.timeout(20):
                    while True:
                        with contextlib.suppress(aiohttp.ClientError):
                            async with client.get(f"{base}/api/vms") as r:
                                body = await r.text()
                                if r.status == 200 and '"connected":true' in body.replace(" ", ""):
                                    break
                        await asyncio.sleep(0.1)
                fake.emit("BLOCK_IO_ERROR", {"device": "disk0", "node-name": "n0", "operation": "write",
                                             "action": "stop", "nospace": False, "reason": "I/O error"})
                (run,) = await wait_runs(tmp_path / "state", "notify")
                assert [st.status for st in run.steps] == ["ok", "ok", "failed", "failed", "ok"], run
                for path in ("/api/status", "/api/vms", "/api/rules", "/api/runs", "/api/runs/1", "/metrics",
                             "/api/runs?limit=100"):   # (/api/events is the live stream)
                    async with client.get(base + path) as r:
                        api.append(f"{path} {r.status} {await r.text()}")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            log, _ = await asyncio.wait_for(proc.communicate(), 30)
            if sys.exc_info()[0] is not None:
                print(log.decode()[-3000:])
    daemon_log = log.decode()
    assert proc.returncode == 0, daemon_log[-2000:]
    assert len(seen) == 2 and seen[1].headers["Authorization"] == f"Bearer {exec_token}"
    # the failed steps and their errors are there, so the grep below looks at real error messages
    assert "exited with 3" in daemon_log and "closed" in daemon_log

    cfg = str(tmp_path / "reactor.yaml")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"event": "BLOCK_IO_ERROR", "vm": "vm1", "data": {
        "device": "disk0", "node-name": "n0", "operation": "write", "action": "stop", "nospace": False}}))
    outputs = {
        "daemon log (debug)": daemon_log,
        "journal file": (tmp_path / "state" / "journal.db").read_bytes().decode("latin-1"),
        "api": "\n".join(api),
        "history": (await run_cli("history", "--json", "-c", cfg, env=env))[1],
        "history text": (await run_cli("history", "-c", cfg, env=env))[1],
        "explain": (await run_cli("explain", str(event), "--rules", str(tmp_path / "rules"), env=env))[1],
        "check": (await run_cli("check", "-c", cfg, "-v", env=env))[1],
        "plugins": (await run_cli("plugins", env=env))[1],
    }
    for f in (tmp_path / "state").iterdir():   # WAL, lock, anything else the daemon left
        outputs[f"state/{f.name}"] = f.read_bytes().decode("latin-1")
    assert "exec" in outputs["history"] and "webhook" in outputs["history"]
    for name, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {name}"


# --------------------------------------------------------------------------- HTTP and files


def test_http_listener_is_loopback_by_default_and_needs_a_token_elsewhere() -> None:
    cfg = parse_config("http: {}\n", "/etc/reactor/r.yaml", env={})
    assert cfg.http is not None and cfg.http.listen == "127.0.0.1:9187" and cfg.http.token is None
    for listen in ("0.0.0.0:9187", "[::]:9187", "192.0.2.1:80", "example.org:80"):
        with pytest.raises(LoadError, match=r"not a loopback address: set http\.token"):
            parse_config(f"http: {{listen: '{listen}'}}\n", "/etc/reactor/r.yaml", env={})
    assert parse_config("http: {listen: '0.0.0.0:9187', token: t}\n", "/r.yaml", env={}).http is not None
    assert "zzz" not in repr(parse_config("http: {listen: '0.0.0.0:1', token: zzz}\n", "/r.yaml", env={}).http)


def test_the_token_is_compared_in_constant_time() -> None:
    """The guard compares with hmac.compare_digest (timing is not measurable reliably in a test; the code is)."""
    import inspect

    from reactor.ops import http

    guard = inspect.getsource(http.HttpServer._guard)
    assert "hmac.compare_digest(" in guard and "==" not in guard.split("compare_digest")[0].split("token")[-1]


async def test_state_dir_and_journal_are_owner_only(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "f.qmp", name="f") as fake:
        cfg = write_config(tmp_path, {"f": fake.address}, "rules:\n  - {name: r, on: STOP, actions: [{log: x}]}\n")
        old = os.umask(0o022)
        try:
            async with running(cfg):
                pass
        finally:
            os.umask(old)
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = list(state.iterdir())
    assert any(f.name == "journal.db" for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))
