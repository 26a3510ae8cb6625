"""Assumptions about third-party packages, checked so that an upgrade fails here, loudly, first.

* Every dependency in pyproject.toml has an upper bound below the next major version, and the
  installed version is inside its range (the suite runs with what the pins allow).
* reactor.sources.qmp extends qemu.qmp's ``QMPClient``: the methods it overrides or calls and the
  attributes it reads exist with the shapes it expects.  Some are not documented for subclasses
  (see the module's docstring and docs/architecture.md): this is the list a qemu.qmp upgrade must
  be checked against.
* No reactor module imports paho-mqtt or aiomqtt (MQTT is reactor.integrations.mqttclient's own).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from fakeqmp import FakeQMP  # tests/ is on sys.path (pytest's rootdir-relative import)
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


@pytest.mark.parametrize("req", _requirements(), ids=lambda r: r.name)
def test_each_dependency_is_pinned_below_its_next_major_and_installed_inside_the_range(req: Requirement) -> None:
    uppers = [s for s in req.specifier if s.operator == "<"]
    assert uppers, f"{req}: no upper bound (pin it below the next major version)"
    assert any(s.operator == ">=" for s in req.specifier), f"{req}: no lower bound"
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        if req.name == "libvirt-python":
            pytest.skip("libvirt-python is optional (the libvirt extra)")
        raise
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} is outside {req.specifier}"
    upper = Version(uppers[0].version)
    tested = Version(installed)
    # below the next major (for 0.x: at most the next major too, so a 1.0 is always checked by hand)
    assert upper <= Version(f"{tested.major + 1}"), f"{req}: allows more than the tested major ({installed})"


def test_qemu_qmp_is_what_reactor_sources_qmp_extends() -> None:
    from qemu.qmp import QMPClient, Runstate
    from qemu.qmp.qmp_client import ExecInterruptedError

    version = Version(importlib.metadata.version("qemu.qmp"))
    assert version < Version("0.1"), "qemu.qmp 0.1: check reactor/sources/qmp.py against its changes"
    # the methods reactor's _Protocol overrides or calls, with the parameters it passes
    expected = {
        "_bh_recv_message": ["self"],            # replaced: the chunked reader
        "_do_recv": ["self"],                    # the handshake's reads
        "_establish_session": ["self"],          # extended (state reset), then super()
        "_cb_outbound": ["self", "msg"],         # logging hooks
        "_cb_inbound": ["self", "msg"],
        "_event_dispatch": ["self", "msg"],      # replaced (never reached)
        "_readline": ["self"],
        "_get_exec_id": ["self"],
        "_reply": ["self", "msg_id"],            # awaits the reply slot reactor puts in _pending
        "connect": ["self", "address", "ssl"],
        "disconnect": ["self"],
        "runstate_changed": ["self"],
    }
    for name, params in expected.items():
        fn = getattr(QMPClient, name, None)
        assert callable(fn), f"qemu.qmp {version}: QMPClient.{name} is gone"
        got = list(inspect.signature(fn).parameters)
        assert got[: len(params)] == params, f"qemu.qmp {version}: QMPClient.{name}{got} changed"
    assert inspect.iscoroutinefunction(QMPClient._bh_recv_message)
    assert {"IDLE", "RUNNING", "DISCONNECTING"} <= set(Runstate.__members__)
    assert issubclass(ExecInterruptedError, Exception)
    assert list(inspect.signature(QMPClient.__init__).parameters)[:3] == ["self", "name", "readbuflen"]


async def test_qemu_qmp_instance_attributes_reactor_reads(tmp_path: Path) -> None:
    """The attributes reactor's _Protocol reads on a client (before and after a session starts)."""
    from qemu.qmp import QMPClient

    client = QMPClient("probe")
    for attr in ("_reader", "_writer", "_reader_task", "_writer_task", "_listeners", "logger"):
        assert hasattr(client, attr), f"qemu.qmp: QMPClient().{attr} is gone (reactor/sources/qmp.py reads it)"
    assert isinstance(client._listeners, list)
    # a session's routing table: what _route and _in_flight read
    async with FakeQMP(tmp_path / "q.qmp") as fake:
        await client.connect(fake.address)
        try:
            assert isinstance(client._pending, dict)
            reader, writer = client._reader, client._writer
            assert isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)
            assert isinstance(client._reader_task, asyncio.Task) and isinstance(client._writer_task, asyncio.Task)
            assert re.fullmatch(r".+", client._get_exec_id())
        finally:
            await client.disconnect()


def test_no_reactor_module_imports_a_third_party_mqtt_client() -> None:
    found = []
    for path in (ROOT / "reactor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("aiomqtt", "paho")]
    assert not found, found
