"""Fuzzing: hostile input never crashes or hangs reactor; every rejection is a clear error.

Event data is untrusted (a guest controls device ids, VNC client addresses,
panic information ...), and so, to a lesser degree, are rule and config files
and recorded event files.  Each target below feeds generated and mutated input
through the real code and asserts the property of docs/reliability.md
("Fuzzing"):

* the QMP stream reader (``reactor.sources.qmp``'s ``_Relay``): random bytes,
  truncated and nested JSON, huge numbers, deep nesting, invalid UTF-8, lines
  over the size limit, events with wrong types.  It either delivers events or
  ends the session with ``VMProtocolError`` / ``EOFError``; nothing else
  escapes, and a real connection over a unix socket survives it (the
  supervisor records why and stays up);
* the rule loader and the config loader: generated and mutated files load or
  fail with :class:`LoadError` whose every error has a ``PATH:LINE:COL``
  inside the file;
* the replay reader: every non-blank line is an event or an error naming its
  line number;
* templates and ``if`` expressions rendered with hostile event data: a value
  or a :class:`TemplateError`, within a time bound.

Examples per target: ``REACTOR_FUZZ_EXAMPLES`` (default 200; set 2000
or more for a long run).  ``pytest tests/system/test_fuzz.py -s`` prints how many ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import yaml
from fakeqmp import FakeQMP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reactor.daemon.config import parse_config
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.engine.view import names_for
from reactor.errors import LoadError, Position, SourceError, TemplateError, VMProtocolError
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.rules.loader import load_rules_text
from reactor.rules.template import Expression, Template, compile_expression, compile_template
from reactor.sources.qmp import VMConnection, VMState
from reactor.testing import FakeVM

EXAMPLES = int(os.environ.get("REACTOR_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
#: No single case may take longer than this (a hang is a failure, not a slow test).
CASE_LIMIT = 5.0

#: Cases run per target in this session (printed at the end with -s).
RAN: Counter[str] = Counter()
CATALOG = default_catalog()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if RAN:
        print("\nfuzz cases run: " + ", ".join(f"{k}={v}" for k, v in sorted(RAN.items())))


# --------------------------------------------------------------------------- strategies

_names = st.sampled_from(["STOP", "RESUME", "BLOCK_IO_ERROR", "VNC_CONNECTED", "GUEST_PANICKED", "DEVICE_DELETED",
                          "SHUTDOWN", "RTC_CHANGE", "WATCHDOG", "NOT_AN_EVENT", "", "REACTOR_VM_CONNECTED"])
_hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "{{ 7 * 7 }}", "{% for x in range(10**9) %}x{% endfor %}", "'; rm -rf / #", "$(reboot)", "`id`",
        "\n\r\x00", "-rf", "\ud7ff\ufffd", "../../etc/passwd", "__class__", "a" * 5000, "%s%s%n",
        "{0.__class__}", "\u202e", "null", "\"", "\\",
    ]),
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), _hostile_text,
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(_hostile_text, st.sampled_from(
        ["device", "node-name", "action", "operation", "reason", "client", "host", "info", "id", "path"])),
        inner, max_size=5)), max_leaves=25)


def _event_obj(name: str, data: Any, ts: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"event": name, "data": data}
    if ts is not ...:
        obj["timestamp"] = ts
    return obj


_timestamps = st.one_of(
    st.just(...), st.none(), st.fixed_dictionaries({"seconds": st.integers(0, 2**40),
                                                   "microseconds": st.integers(0, 999_999)}),
    st.fixed_dictionaries({"seconds": _scalars, "microseconds": _scalars}), _scalars,
)
_events = st.builds(_event_obj, st.one_of(_names, _scalars), _json, _timestamps)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:   # integers over 64 bits, surrogates: write them as Python would
        import json
        return json.dumps(value, default=str).encode("utf-8", "surrogatepass")


def _deep(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    return b'{"event": "STOP", "data": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}"


_chunks = st.one_of(
    st.binary(max_size=200),
    _events.map(_dumps),
    _events.map(lambda e: _dumps(e)[: len(_dumps(e)) // 2]),                 # truncated
    st.integers(1, 5000).flatmap(lambda n: st.sampled_from([_deep(n, "list"), _deep(n, "obj")])),
    st.sampled_from([
        b'{"event": "STOP", "data": {}, "timestamp": {"seconds": 1e999, "microseconds": -1}}',
        b'{"event": "STOP", "timestamp": {"seconds": 99999999999999999999999999999, "microseconds": 0}}',
        b'{"event": ["STOP"]}', b'{"event": {"x": 1}}', b'{"event": null}', b'{"event": 12}',
        b'{"event": "BLOCK_IO_ERROR", "data": {"device": 5, "action": ["stop"], "nospace": "yes"}}',
        b'{"event": "STOP", "data": [1, 2]}', b'{"event": "STOP", "data": "x"}',
        b'{"return": {}, "id": [1]}', b'{"return": {}, "id": {"a": 1}}', b'{"error": 5}', b'{"id": null}',
        b'{"event": "\xff\xfe"}', b'\xed\xa0\x80', b"[]", b"5", b'"x"', b"null", b"\r", b"   ",
        b'{"QMP": {"version": {}}}',
    ]),
)
_streams = st.lists(st.tuples(_chunks, st.booleans()), max_size=12)


def _join(parts: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(c + (b"\r\n" if nl else b"") for c, nl in parts)


# --------------------------------------------------------------------------- QMP stream reader


class _Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        assert isinstance(event, Event)
        assert isinstance(event.name, str) and event.name
        self.events.append(event)


def _connection(sink: _Sink, address: str = "/nonexistent", max_line: int = 4096) -> VMConnection:
    return VMConnection(name="fuzz", address=address, make_event=CATALOG.make_event, on_event=sink,
                        reconnect=False, max_line=max_line, connect_timeout=2.0, backoff_initial=0.01)


async def _read_all(data: bytes, max_line: int = 4096) -> tuple[list[Event], BaseException]:
    """Feed ``data`` through the connection's real relay (as the socket delivers it, in chunks), then the end."""
    from reactor.sources.qmp import _Relay  # the reader under test

    sink = _Sink()
    conn = _connection(sink, max_line=max_line)
    relay = _Relay(conn, max_line)
    relay.established = True  # the session's reader, past the greeting
    for at in range(0, len(data), 4096):
        relay.feed(data[at:at + 4096])
        if relay.failure is not None:
            break
    else:
        relay.qemu_lost(None)
    return sink.events, relay.failure or EOFError()


@FUZZ
@given(_streams, st.sampled_from([64, 4096, 1 << 16]))
async def test_qmp_reader_never_crashes(parts: list[tuple[bytes, bool]], max_line: int) -> None:
    RAN["qmp-reader"] += 1
    data = _join(parts)
    events, ended = await _read_all(data, max_line)
    if isinstance(ended, VMProtocolError):
        assert str(ended) and len(str(ended)) < 200, "a protocol error is one short line"
    complete = [c for c, nl in parts if nl]
    assert len(events) <= len(complete) + 1


@FUZZ
@given(st.lists(_events, min_size=1, max_size=20))
async def test_qmp_reader_delivers_every_well_formed_line(objs: list[dict[str, Any]]) -> None:
    """Events with wrong types inside are still delivered (with problems) or counted as bad, never fatal."""
    RAN["qmp-reader-events"] += 1
    lines = [orjson.dumps(o, option=orjson.OPT_PASSTHROUGH_DATACLASS) if _fits_orjson(o) else None for o in objs]
    data = b"".join(line + b"\r\n" for line in lines if line is not None)
    events, ended = await _read_all(data, 1 << 20)
    assert isinstance(ended, EOFError), ended
    good = sum(1 for o, line in zip(objs, lines, strict=True) if line is not None and _is_event(o))
    assert len(events) == good


def _fits_orjson(obj: Any) -> bool:
    try:
        orjson.dumps(obj)
    except TypeError:
        return False
    return True


def _is_event(obj: dict[str, Any]) -> bool:
    try:
        CATALOG.make_event(obj)
    except Exception:
        return False
    return True


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 10))
@given(_streams)
async def test_qmp_connection_survives_hostile_peer(tmp_path_factory: pytest.TempPathFactory,
                                                    parts: list[tuple[bytes, bool]]) -> None:
    """End to end over a real unix socket (the fake QMP server writes the bytes after negotiation):
    the session either carries on (a sentinel event still arrives) or ends with a one-line reason;
    the supervisor never raises and stops cleanly."""
    RAN["qmp-connection"] += 1
    path = tmp_path_factory.mktemp("fq") / "vm.qmp"
    sink = _Sink()
    async with FakeQMP(path, name="fuzz") as fake:
        conn = _connection(sink, str(path), max_line=4096)
        task = asyncio.create_task(conn.run(), name="reactor[fuzz].supervisor")
        try:
            async with asyncio.timeout(CASE_LIMIT):
                await fake.wait_sessions(1)
                while not conn.connected:  # noqa: ASYNC110 -- polling the object under test
                    await asyncio.sleep(0.001)
                fake.send_raw(_join(parts))
                fake.emit("RESET", {"guest": True, "reason": "sentinel"})
                while not task.done() and not any(e.data.get("reason") == "sentinel" for e in sink.events):  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
        finally:
            await conn.aclose()   # cancels run() if the session is still up
    assert task.done() and (task.cancelled() or task.exception() is None)  # never raises on a bad peer
    assert conn.state is VMState.STOPPED
    assert [e.name for e in sink.events][:1] == ["REACTOR_VM_CONNECTED"]
    assert sink.events[-1].name == "REACTOR_VM_DISCONNECTED"
    if conn.last_error:
        assert "\n" not in conn.last_error


# --------------------------------------------------------------------------- rule loader

_VALID_RULE = """\
rules:
  - name: resume-after-write-error
    description: Resume a VM paused by a transient write error.
    on: BLOCK_IO_ERROR
    vms: ["web-*", "db-1"]
    match:
      action: stop
      operation: write
      nospace: {ne: true}
      any: [{device: {glob: "virtio*"}}, {node-name: {regex: "^drive"}}]
    if: "event.data.reason != 'No space left on device'"
    throttle: {max: 3, within: 1h, per: [vm, data.device]}
    mode: queued
    actions:
      - sleep: 2s
      - qmp: cont
        retry: {attempts: 3, backoff: 1s}
      - wait_for: {event: RESUME, timeout: 10s}
        register: resumed
      - log: "resumed {{ vm.name }} after {{ event.data.device }}"
        when: "vars.resumed is defined"
      - emit: {event: DERIVED_THING, data: {why: "{{ event.data.reason }}"}}
  - name: notify
    on: ["*"]
    actions:
      - exec: {argv: [/bin/true, "{{ event.name }}"], timeout: 1s}
"""

_keys = st.sampled_from(["name", "on", "vms", "match", "if", "throttle", "mode", "enabled", "actions", "description",
                         "max_queued", "namee", "rules", "qmp", "sleep", "exec", "timeout", "retry", "when"])
_yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
              st.sampled_from(["BLOCK_IO_ERROR", "*", "5s", "{{ event.data }}", "{{", "{% if %}", "stop", "1h"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=15,
)
_generated_rules = st.lists(st.dictionaries(_keys, _yaml_values, max_size=8), max_size=4).map(
    lambda rules: yaml.safe_dump({"rules": rules}, allow_unicode=True))


@st.composite
def _mutated(draw: st.DrawFn, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "dup-line", "cut"]))
        piece = draw(st.one_of(st.sampled_from([*":-[]{}\"'\n\t #&*!|>%@`,?", "  ", "\x00", "\ufeff",
                                                "{{", "}}", "- ", "\\"]),
                               st.text(max_size=5)))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "replace":
            text = text[:i] + piece + text[i + 1:]
        elif op == "dup-line":
            lines = text.splitlines(keepends=True) or [""]
            j = i % len(lines)
            text = "".join(lines[: j + 1] + lines[j:])
        else:
            text = text[:i]
    return text


def _check_load_error(err: LoadError, text: str, path: str) -> None:
    assert err.errors, "a LoadError lists at least one problem"
    n_lines = text.count("\n") + 2
    for e in err.errors:
        assert isinstance(e, SourceError)
        assert e.position is not None, f"no position: {e}"
        assert e.position.path == path
        assert 1 <= e.position.line <= n_lines, (str(e), n_lines)
        assert e.position.col >= 1
        assert str(e).startswith(f"{path}:{e.position.line}:{e.position.col}: ")
        assert e.message.strip()


@FUZZ
@given(st.one_of(_mutated(_VALID_RULE), _generated_rules, st.text(max_size=300)))
def test_rule_loader_rejects_clearly(text: str) -> None:
    RAN["rule-loader"] += 1
    path = "rules/fuzz.yaml"
    started = time.monotonic()
    try:
        rules = load_rules_text([(path, text)])
    except LoadError as err:
        _check_load_error(err, text, path)
    else:
        assert all(r.name for r in rules.rules)
    assert time.monotonic() - started < CASE_LIMIT


def test_valid_rule_file_loads() -> None:
    """The seed of the mutations is itself valid (else the fuzzer would only test error paths)."""
    assert [r.name for r in load_rules_text([("rules/fuzz.yaml", _VALID_RULE)]).rules] == [
        "resume-after-write-error", "notify"]


# --------------------------------------------------------------------------- config loader

_VALID_CONFIG = """\
rules: rules/
plugins: [plugins/]
state_dir: /var/lib/reactor
vms:
  - name: web-1
    qmp: /run/qemu/web-1.qmp
    labels: {env: prod, tier: web}
  - {name: db-1, qmp: "127.0.0.1:4444"}
discover:
  - glob: /run/qemu/*.qmp
    labels: {env: lab}
listen: [/run/reactor/qmp.sock]
http: {listen: 127.0.0.1:9187}
qmp: {command_timeout: 5s, deny: [migrate-*], allow: {"resume-*": [cont, "query-*"]}}
journal: {events: matched, max_age: 7d}
bus: {per_vm: 100, total: 1000}
log: {level: info, format: json}
"""


@FUZZ
@given(st.one_of(_mutated(_VALID_CONFIG), st.text(max_size=300),
                 st.dictionaries(st.sampled_from(["rules", "vms", "discover", "listen", "http", "qmp", "log",
                                                  "journal", "bus", "state_dir", "mqtt", "host", "sourcez"]),
                                 _yaml_values, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_config_loader_rejects_clearly(text: str) -> None:
    RAN["config-loader"] += 1
    path = "/etc/reactor/fuzz.yaml"
    try:
        parse_config(text, path, env={"HOME": "/root"})
    except LoadError as err:
        _check_load_error(err, text, path)


def test_valid_config_loads() -> None:
    cfg = parse_config(_VALID_CONFIG, "/etc/reactor/fuzz.yaml", env={})
    assert cfg.qmp.allow == {"resume-*": ("cont", "query-*")} and cfg.qmp.deny == ("migrate-*",)


# --------------------------------------------------------------------------- replay reader and templates

_CATCH_ALL = """\
rules:
  - name: everything
    on: "*"
    if: "event.data.get('reason', '') != 'skip' and (event.data | length) >= 0"
    actions:
      - log: "{{ event.name }} {{ event.data | tojson }} {{ event.timestamp }} {{ vm.name }}"
      - log: "{% for k, v in event.data.items() %}{{ k }}={{ v }};{% endfor %}"
        on_error: continue
      - log: "{{ event.data.device | default('none') | upper }} {{ (event.data.offset | default(0)) * 2 }}"
        on_error: continue
"""
_RULES = load_rules_text([("rules/catch-all.yaml", _CATCH_ALL)])


@contextlib.asynccontextmanager
async def _engine() -> AsyncIterator[tuple[Engine, VirtualClock]]:
    clock = VirtualClock()
    records: list[Any] = []
    engine = Engine(_RULES, clock=clock, output=records.append)
    yield engine, clock


_lines = st.lists(st.one_of(
    _events.map(_dumps), _chunks,
    _events.map(lambda e: {**e, "vm": "web-1"}).map(_dumps),
    st.builds(lambda e, vm: _dumps({**e, "vm": vm}), _events, _scalars),
), max_size=15)


@FUZZ
@given(_lines)
async def test_replay_reports_every_bad_line(lines: list[bytes]) -> None:
    RAN["replay-reader"] += 1
    lines = [b for raw in lines for b in raw.split(b"\n")]
    async with _engine() as (engine, clock), asyncio.timeout(CASE_LIMIT * 2):
        result = await replay(lines, engine, clock, source="fuzz.jsonl")
    numbered = [i for i, line in enumerate(lines, 1) if line.strip()]
    assert result.events + len(result.errors) == len(numbered)
    for error in result.errors:
        prefix, _, message = error.partition(": ")
        assert prefix.startswith("fuzz.jsonl:") and int(prefix.split(":")[1]) in numbered, error
        assert message


_TEMPLATES = [
    "{{ event.data.device }}", "{{ event.data | tojson }}", "{{ event.data.reason | upper }}",
    "{{ event.data.offset + 1 }}", "{{ event.data.offset * event.data.offset }}", "{{ event.data.offset ** 99 }}",
    "{{ event.data.reason * 100000 }}", "{{ event.data.reason.format(event) }}", "{{ event.data.reason | from_json }}",
    "{% for k, v in event.data.items() %}{{ k }}={{ v }}{% endfor %}", "{{ event.data.items() | list }}",
    "{{ event.data.client.host ~ ':' ~ event.data.client.service }}", "{{ event.data['node-name'] }}",
    "{{ event.data.reason | replace('a', event.data.reason) }}", "{{ range(event.data.offset) | list | length }}",
    "{{ event.data.reason | wordwrap(1) }}", "{{ event.data.reason % event.data.offset }}",
    "{{ event.data.reason | int }}", "{{ event.data.info | dictsort }}", "{{ event | tojson }}",
    "{{ event.data.reason | indent(event.data.offset) }}", "{{ event.data.reason | center(event.data.offset) }}",
    "{{ event.data.reason | truncate(event.data.offset) }}", "{{ event.data.reason.__class__ }}",
]
_EXPRESSIONS = [
    "event.data.reason != 'No space left on device'", "event.data.offset > 100", "'x' in event.data.reason",
    "event.data.reason is string and event.data.reason | length > 3", "event.data.device.startswith('virtio')",
    "event.data.reason | regex_search('a+')" if False else "event.data.reason | lower == 'x'",
    "event.data.action in ['stop', 'report']", "(event.data.offset | int) * 2 > 7", "event.data.x.y.z",
]
_COMPILED_T = [compile_template(t, Position("fuzz.yaml", 1, 1)) for t in _TEMPLATES]
_COMPILED_E = [compile_expression(t, Position("fuzz.yaml", 1, 1)) for t in _EXPRESSIONS]

_hostile_data = st.fixed_dictionaries({}, optional={
    "device": _hostile_text, "reason": _hostile_text, "offset": st.one_of(st.integers(), _scalars),
    "action": _scalars, "info": _json, "client": _json, "node-name": _scalars,
}).flatmap(lambda d: st.one_of(st.just(d), _json.map(lambda extra: {**d, "extra": extra})))


@FUZZ
@given(_names.filter(bool), _hostile_data)
def test_templates_and_expressions_on_hostile_data(name: str, data: dict[str, Any]) -> None:
    RAN["templates"] += 1
    event = CATALOG.make_event({"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 0}})
    names = names_for(event, FakeVM("web-1"), "fuzz", 1.0, {})
    for compiled in [*_COMPILED_T, *_COMPILED_E]:
        started = time.monotonic()
        try:
            if isinstance(compiled, Template):
                out = compiled.render(names)
                if isinstance(out, str):
                    assert len(out) <= 1 << 20
            else:
                assert isinstance(compiled, Expression)
                compiled.test(names)
        except TemplateError as err:
            assert str(err)
        assert time.monotonic() - started < CASE_LIMIT, compiled


# --------------------------------------------------------------------------- sanity of the generators


def test_generators_reach_the_interesting_cases() -> None:
    """The stream strategy produces events, garbage, over-long lines and deep nesting (not just one kind)."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(_chunks)
    def probe(chunk: bytes) -> None:
        if chunk.startswith(b'{"event"'):
            seen.add("event")
        if chunk.startswith(b"[[[") or chunk.count(b'{"a": ') > 100:
            seen.add("deep")
        if len(chunk) > 4096:
            seen.add("long")
        if any(c not in string.printable.encode() for c in chunk):
            seen.add("binary")

    probe()
    assert seen == {"event", "deep", "long", "binary"}
