"""The typed QMP event catalog: counts, typed round trips, validation, generator, real QEMU."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import timeit
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import reactor.model.catalog.events
from reactor.errors import EventError
from reactor.model.catalog import BUILTIN_EVENTS, Catalog, EventSchema, FieldSpec, TypeSpec, default_catalog
from reactor.model.catalog.catalog import EVENTS_JSON
from reactor.model.catalog.events import EVENT_CLASSES, BlockIoError, Reset
from reactor.model.catalog.generate import build_catalog, class_name, main, python_name, render_events_py
from reactor.model.event import Event

QEMU = shutil.which("qemu-system-x86_64")


def sample(t: TypeSpec, *, full: bool = True) -> Any:
    """A value of type ``t`` (every optional member too when ``full``)."""
    k = t.kind
    if k == "str":
        return "x"
    if k == "int":
        return 7
    if k == "number":
        return 1.5
    if k == "bool":
        return True
    if k == "null":
        return None
    if k == "any":
        return {"anything": [1]}
    if k == "enum":
        return t.values[-1]
    if k == "array":
        assert t.items is not None
        return [sample(t.items, full=full)]
    if k == "alternate":
        return sample(t.choices[0], full=full)
    return sample_fields(t.fields, full=full)


def sample_fields(fields: Mapping[str, FieldSpec], *, full: bool = True) -> dict[str, Any]:
    return {n: sample(f.type, full=full) for n, f in fields.items() if full or not f.optional}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def fresh() -> Catalog:
    """A catalog of its own (its own counters)."""
    return default_catalog.__wrapped__()


# ------------------------------------------------------------------ counts


def test_event_counts_per_qemu_version(catalog: Catalog) -> None:
    assert catalog.qemu_versions == ("7.2", "10.2")
    qemu = [n for n in catalog.names() if not catalog.get(n).builtin]  # type: ignore[union-attr]
    schemas = [catalog.get(n) for n in qemu]
    per = {v: sum(v in s.versions for s in schemas if s) for v in catalog.qemu_versions}
    assert per == {"7.2": 52, "10.2": 57}
    assert len(qemu) == 59
    only_old = {n for n in qemu if catalog.get(n).versions == ("7.2",)}  # type: ignore[union-attr]
    assert only_old == {"MEM_UNPLUG_ERROR", "RDMA_GID_STATUS_CHANGED"}
    assert set(BUILTIN_EVENTS) <= set(catalog.names())
    from reactor.model.catalog.libvirt import LIBVIRT_EVENTS  # libvirt's typed events are in every catalog

    assert set(LIBVIRT_EVENTS) <= set(catalog.names())
    assert len(catalog) == 59 + len(BUILTIN_EVENTS) + len(LIBVIRT_EVENTS)


def test_every_event_has_a_typed_class(catalog: Catalog) -> None:
    assert set(EVENT_CLASSES) == set(catalog.names())
    for name, cls in EVENT_CLASSES.items():
        assert name == cls.NAME
        assert cls.__name__ == class_name(name)
        assert issubclass(cls, Event)
        assert cls.__dict__["__slots__"] == ()
        assert cls.__doc__
    assert sorted(reactor.model.catalog.events.__all__) == sorted(set(reactor.model.catalog.events.__all__))
    assert class_name("BLOCK_IO_ERROR") == "BlockIoError"


def test_builtin_events_are_marked(catalog: Catalog) -> None:
    s = catalog.get("REACTOR_VM_CONNECTED")
    assert s is not None and s.builtin
    assert "running" in s.fields["status"].type.values
    rr = catalog.get("REACTOR_RULES_RELOADED")
    assert rr is not None and rr.fields["rules"].optional and rr.fields["errors"].type.kind == "array"
    stop = catalog.get("STOP")
    assert stop is not None and not stop.builtin


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", default_catalog().names())
def test_every_event_round_trips_through_its_class(catalog: Catalog, name: str) -> None:
    schema = catalog.get(name)
    assert schema is not None
    for full in (True, False):
        data = sample_fields(schema.fields, full=full)
        obj = {"event": name, "data": data, "timestamp": {"seconds": 1700000000, "microseconds": 123456}}
        ev = catalog.make_event(obj, vm="guest1", host="h1", seq=5)
        assert type(ev) is EVENT_CLASSES[name]
        assert ev.problems == (), ev.problems
        assert ev.valid
        assert (ev.vm, ev.host, ev.seq) == ("guest1", "h1", 5)
        out = ev.to_qmp()
        assert (out.pop("vm"), out.pop("host"), out.pop("seq")) == ("guest1", "h1", 5)
        assert out == obj
        for fname, f in schema.fields.items():
            value = getattr(ev, python_name(fname))
            if fname in data:
                assert value == data[fname]
            else:
                assert f.optional and value is None
        with pytest.raises(AttributeError):
            ev.vm = "other"


def test_properties_are_typed_and_named(catalog: Catalog) -> None:
    ev = catalog.make_event(
        {
            "event": "BLOCK_IO_ERROR",
            "data": {"device": "ide0-hd1", "node-name": "#block212", "operation": "write",
                     "action": "stop", "reason": "No space left on device"},
            "timestamp": {"seconds": 1265044230, "microseconds": 450486},
        }
    )
    assert isinstance(ev, BlockIoError)
    assert ev.node_name == "#block212" and ev.action == "stop" and ev.nospace is None
    assert ev.data["node-name"] == "#block212"
    assert ev.timestamp == pytest.approx(1265044230.450486)
    assert python_name("node-name") == "node_name"
    assert python_name("id") == "id_" and python_name("if") == "if_"
    assert hasattr(reactor.model.catalog.events.JobStatusChange, "id_")


# ------------------------------------------------------------------ validation


def test_validation_flags_and_still_delivers() -> None:
    cat = fresh()
    ok = {"guest": False, "reason": "host-qmp-system-reset"}
    assert cat.validate("RESET", ok) == ()
    probs = cat.validate("RESET", {"guest": "no", "reason": "bogus", "extra": 1})
    assert probs == (
        "field 'guest': expected bool, got str 'no'",
        "field 'reason': 'bogus' is not one of " + ", ".join(cat.get("RESET").fields["reason"].type.values),  # type: ignore[union-attr]
        "unknown field 'extra'",
    )
    assert cat.validate("BLOCK_IO_ERROR", {"device": "d", "operation": "read", "action": "halt"}) == (
        "field 'action': 'halt' is not one of ignore, report, stop",
        "missing required field 'reason'",
    )
    assert cat.validate("RESET", {"guest": 1, "reason": "none"}) == (
        "field 'guest': expected bool, got int 1",
    )
    assert cat.validate("BALLOON_CHANGE", {"actual": True}) == (
        "field 'actual': expected int, got bool True",
    )
    nested = cat.validate(
        "VNC_CONNECTED",
        {"server": {"host": "h", "service": "s", "family": "ipv9", "websocket": False},
         "client": {"host": "h", "service": "s", "family": "ipv4"}},
    )
    assert "field 'server.family': 'ipv9' is not one of ipv4, ipv6, unix, vsock, unknown" in nested
    assert "missing required field 'client.websocket'" in nested
    assert cat.validate("NO_SUCH_EVENT", {"anything": 1}) == ()

    ts = {"seconds": 1, "microseconds": 0}
    ev = cat.make_event({"event": "RESET", "data": {"guest": "no"}, "timestamp": ts})
    assert isinstance(ev, Reset) and not ev.valid
    assert "missing required field 'reason'" in ev.problems
    assert ev.data["guest"] == "no"  # delivered as received
    assert cat.invalid_count == 1 and cat.stats.invalid_by_event["RESET"] == 1
    cat.make_event({"event": "RESET", "data": ok})
    assert cat.invalid_count == 1


def test_unknown_event_is_a_plain_event() -> None:
    cat = fresh()
    ts = {"seconds": 5, "microseconds": 0}
    ev = cat.make_event({"event": "FROM_QEMU_12", "data": {"x": 1}, "timestamp": ts})
    assert type(ev) is Event and ev.name == "FROM_QEMU_12" and ev.problems == () and ev.data == {"x": 1}
    assert cat.stats.unknown == 1 and cat.invalid_count == 0


@pytest.mark.parametrize(
    "obj",
    [
        ["STOP"],
        "STOP",
        {},
        {"event": 3},
        {"event": ""},
        {"event": "STOP", "data": [1]},
        {"event": "STOP", "data": None},
        {"event": "STOP", "timestamp": "now"},
        {"event": "STOP", "timestamp": None},
        {"event": "STOP", "timestamp": {"seconds": "1", "microseconds": 0}},
        {"event": "STOP", "timestamp": {"seconds": True, "microseconds": 0}},
        {"event": "STOP", "timestamp": {"microseconds": 0}},
    ],
)
def test_non_qmp_input_raises_event_error(catalog: Catalog, obj: Any) -> None:
    with pytest.raises(EventError):
        catalog.make_event(obj)


def test_missing_timestamp_means_now(catalog: Catalog) -> None:
    before = time.time()
    ev = catalog.make_event({"event": "STOP"})
    assert before <= ev.timestamp <= time.time()
    assert ev.data == {}


# ------------------------------------------------------------------ lookups


def test_resolve_and_suggest(catalog: Catalog) -> None:
    t = catalog.resolve("VNC_CONNECTED", "client.host")
    assert t is not None and t.kind == "str"
    action = catalog.resolve("BLOCK_IO_ERROR", "action")
    assert action is not None and action.kind == "enum" and action.values == ("ignore", "report", "stop")
    assert catalog.resolve("BLOCK_IO_ERROR", "node-name") is not None
    assert catalog.resolve("BLOCK_IO_ERROR", "node_name") is None
    assert catalog.resolve("BLOCK_IO_ERROR", "device.x") is None
    assert catalog.resolve("NOPE", "x") is None
    errors = catalog.resolve("REACTOR_RULES_RELOADED", "errors.0")
    assert errors is not None and errors.kind == "str"
    assert catalog.suggest("BLOCK_IO_ERR") == "BLOCK_IO_ERROR"
    assert catalog.suggest("shutdown") == "SHUTDOWN"
    assert catalog.suggest("ZZZZZZZZZZ") is None
    assert catalog.suggest_field("BLOCK_IO_ERROR", "node_name") == "node-name"
    assert catalog.suggest_field("VNC_CONNECTED", "client.hots") == "client.host"
    assert catalog.suggest_field("BLOCK_IO_ERROR", "device") is None


def test_with_event_adds_a_schema(catalog: Catalog) -> None:
    extra = EventSchema("MY_ALERT", {"level": FieldSpec("level", TypeSpec("int", "int"))}, "mine", (), True)
    cat = catalog.with_event(extra)
    assert "MY_ALERT" in cat and "MY_ALERT" not in catalog
    assert cat.stats is catalog.stats
    assert cat.validate("MY_ALERT", {"level": "high"}) == ("field 'level': expected int, got str 'high'",)
    ev = cat.make_event({"event": "MY_ALERT", "data": {"level": 3}})
    assert type(ev) is Event and ev.problems == ()


def test_describe_and_json(catalog: Catalog) -> None:
    text = catalog.describe("BLOCK_IO_ERROR")
    assert "node-name?: str" in text and "values: ignore, report, stop" in text
    assert "qom-path?: str  [QEMU 10.2]" in text
    assert "did you mean BLOCK_IO_ERROR" in catalog.describe("BLOCK_IO_ERR")
    one = catalog.to_json("RESET")
    assert one["name"] == "RESET" and one["fields"]["reason"]["type"]["kind"] == "enum"
    everything = catalog.to_json()
    assert everything["qemu_versions"] == ["7.2", "10.2"]
    json.dumps(everything)
    raw = json.loads(EVENTS_JSON.read_text())
    for name, e in raw["events"].items():
        mine = everything["events"][name]
        mine.pop("builtin")
        assert mine == e


# ------------------------------------------------------------------ speed


def test_load_and_validate_are_fast() -> None:
    start = time.perf_counter()
    default_catalog.__wrapped__()
    assert time.perf_counter() - start < 0.05
    cat = fresh()
    data = {"guest": False, "reason": "host-qmp-system-reset"}
    cat.validate("RESET", data)
    per = min(timeit.repeat(lambda: cat.validate("RESET", data), number=20000, repeat=5)) / 20000
    assert per < 3e-6  # typically 0.2-0.4 µs; loose for busy CI machines


# ------------------------------------------------------------------ generator


def test_generator_output_is_committed_and_reproducible() -> None:
    assert main(["--check"]) == 0
    one = build_catalog()
    assert one == build_catalog()
    assert render_events_py(one) == Path(reactor.model.catalog.events.__file__).read_text(encoding="utf-8")


QAPI_V1 = """
##
# @Tree:
#
# A recursive tree
#
# @name: the name
#
# @kids: the children
##
{ 'struct': 'Tree', 'data': { 'name': 'str', '*kids': ['Tree'] } }
{ 'enum': 'Color', 'data': [ 'red', 'green' ] }
{ 'struct': 'Base', 'data': { 'kind': 'Color' } }
{ 'struct': 'Red', 'data': { 'shade': 'int' } }
{ 'struct': 'Green', 'data': { 'leaf': 'bool' } }
{ 'union': 'Paint', 'base': 'Base', 'discriminator': 'kind',
  'data': { 'red': 'Red', 'green': 'Green' } }
{ 'alternate': 'StrOrNull', 'data': { 's': 'str', 'n': 'null' } }
##
# @GROWN:
#
# A tree grew
#
# @tree: the tree
#
# @paint: its paint
#
# @label: a label
#
# Since: 1.0
##
{ 'event': 'GROWN', 'data': { 'tree': 'Tree', 'paint': 'Paint', '*label': 'StrOrNull' } }
{ 'event': 'OLD_ONLY' }
"""


def test_generator_handles_recursion_unions_and_versions(tmp_path: Path) -> None:
    v1 = tmp_path / "1.0"
    v2 = tmp_path / "2.0"
    v1.mkdir()
    v2.mkdir()
    (v1 / "a.json").write_text(QAPI_V1)
    v2_text = QAPI_V1.replace("[ 'red', 'green' ]", "[ 'red', 'green', 'blue' ]")
    v2_text = v2_text.replace("'*label': 'StrOrNull'", "'*label': 'StrOrNull', 'size': 'uint8'")
    v2_text = v2_text.replace("{ 'event': 'OLD_ONLY' }", "{ 'event': 'NEW_ONLY', 'data': { 'n': 'number' } }")
    (v2 / "a.json").write_text(v2_text)
    cat = build_catalog(tmp_path, ("1.0", "2.0"))
    ev = cat["events"]
    assert set(ev) == {"GROWN", "OLD_ONLY", "NEW_ONLY"}
    assert ev["OLD_ONLY"]["versions"] == ["1.0"] and ev["NEW_ONLY"]["versions"] == ["2.0"]
    grown = ev["GROWN"]
    assert grown["doc"] == "A tree grew\n\nSince: 1.0"
    tree = grown["fields"]["tree"]["type"]
    assert tree["fields"]["kids"]["type"]["items"] == {"kind": "object", "name": "Tree", "fields": {}}
    assert tree["fields"]["kids"]["doc"] == "the children"
    paint = grown["fields"]["paint"]["type"]["fields"]
    assert paint["kind"]["type"]["values"] == ["red", "green", "blue"]
    assert paint["shade"]["optional"] and paint["shade"]["doc"] == "(only when kind is red)"
    assert grown["fields"]["label"]["type"]["kind"] == "alternate"
    size = grown["fields"]["size"]
    assert size["optional"] and size["versions"] == ["2.0"]
    assert size["type"] == {"kind": "int", "name": "uint8"}

    # the recursive reference resolves and validates by name
    from reactor.model.catalog.schema import event_from_json

    c = Catalog({n: event_from_json(n, e) for n, e in ev.items()})
    assert c.resolve("GROWN", "tree.kids.0.kids.0.name") is not None
    good = {"tree": {"name": "a", "kids": [{"name": "b", "kids": []}]}, "paint": {"kind": "red", "shade": 1}}
    assert c.validate("GROWN", good) == ()
    bad = {"tree": {"name": "a", "kids": [{"kids": [{"name": 3}]}]}, "paint": {"kind": "red"}, "label": None}
    assert c.validate("GROWN", bad) == (
        "missing required field 'tree.kids[0].name'",
        "field 'tree.kids[0].kids[0].name': expected str, got int 3",
    )
    py = render_events_py(cat)
    assert "class Grown(Event):" in py and 'Color = Literal["red", "green", "blue"]' in py
    compile(py, "events.py", "exec")


# ------------------------------------------------------------------ real QEMU


@pytest.fixture
async def qemu_qmp(tmp_path: Path) -> AsyncIterator[tuple[Any, asyncio.subprocess.Process]]:
    from qemu.qmp import QMPClient

    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed")
    sock = tmp_path / "qmp.sock"
    proc = await asyncio.create_subprocess_exec(
        QEMU, "-machine", "none", "-accel", "tcg", "-display", "none", "-nodefaults", "-S",
        "-qmp", f"unix:{sock},server=on,wait=off",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while not sock.exists():  # noqa: ASYNC110 - another process creates the socket
                await asyncio.sleep(0.02)
        qmp = QMPClient("catalog-test")
        await qmp.connect(str(sock))
        yield qmp, proc
        with contextlib.suppress(EOFError):  # QEMU closed the socket after `quit`
            await qmp.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.qemu
async def test_real_qemu_events_parse_without_problems(
    qemu_qmp: tuple[Any, asyncio.subprocess.Process],
) -> None:
    qmp, proc = qemu_qmp
    cat = fresh()
    # the live schema of the installed QEMU (7.2) agrees with the catalog
    schema = await qmp.execute("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    live = [e for e in schema if e["meta-type"] == "event"]
    assert live
    for e in live:
        s = cat.get(e["name"])
        assert s is not None, e["name"]
        assert "7.2" in s.versions
        members = {m["name"] for m in by_name[e["arg-type"]].get("members", [])}
        assert members <= set(s.fields), (e["name"], members - set(s.fields))

    received: list[Event] = []
    with qmp.listener() as listener:
        for cmd in ("stop", "cont", "stop", "cont", "system_reset"):
            await qmp.execute(cmd)
        await qmp.execute("quit")
        async with asyncio.timeout(10):
            async for msg in listener:
                received.append(cat.make_event(dict(msg), vm="q"))
                if msg["event"] == "SHUTDOWN":
                    break
    names = [e.name for e in received]
    for expected in ("STOP", "RESUME", "RESET", "SHUTDOWN"):
        assert expected in names, names
    for ev in received:
        assert ev.problems == (), (ev.name, ev.data, ev.problems)
        assert type(ev) is EVENT_CLASSES[ev.name]
    shutdown = next(e for e in received if e.name == "SHUTDOWN")
    assert isinstance(shutdown, reactor.model.catalog.events.Shutdown) and shutdown.reason == "host-qmp-quit"
    assert cat.invalid_count == 0
    async with asyncio.timeout(10):
        await proc.wait()


def test_generated_module_says_so_in_its_first_line() -> None:
    first = Path(reactor.model.catalog.events.__file__).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# @generated by reactor/model/catalog/generate.py") and "DO NOT EDIT" in first
