"""Assumptions about third-party packages, checked so that an upgrade fails here, loudly, first.

* Every dependency in pyproject.toml has an upper bound below the next major version, and the
  installed version is inside its range (the suite runs with what the pins allow).
* reactor.sources.qmp uses qemu.qmp's ``QMPClient`` through its public API (``connect`` with a
  socket, ``execute``, ``disconnect``, ``runstate_changed``) and overrides only the two message
  hooks qemu.qmp documents for subclasses: those exist with the shapes it expects, and no class
  of reactor's that extends qemu.qmp touches anything else of it.
* No reactor module imports paho-mqtt or aiomqtt (MQTT is reactor.integrations.mqttclient's own).
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest
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


def test_qemu_qmp_is_what_reactor_sources_qmp_uses() -> None:
    """The public API reactor's session uses, and the two hooks it overrides, with the shapes it expects."""
    from qemu.qmp import ExecuteError, QMPClient, Runstate
    from qemu.qmp.protocol import AsyncProtocol
    from qemu.qmp.qmp_client import BadReplyError, ExecInterruptedError

    version = Version(importlib.metadata.version("qemu.qmp"))
    assert version < Version("0.1"), "qemu.qmp 0.1: check reactor/sources/qmp.py against its changes"
    public = {
        "connect": ["self", "address", "ssl"],   # with a socket.socket (the socketpair's end)
        "execute": ["self", "cmd", "arguments"],
        "disconnect": ["self"],
        "runstate_changed": ["self"],
    }
    for name, params in public.items():
        fn = getattr(QMPClient, name, None)
        assert callable(fn), f"qemu.qmp {version}: QMPClient.{name} is gone"
        got = list(inspect.signature(fn).parameters)
        assert got[: len(params)] == params, f"qemu.qmp {version}: QMPClient.{name}{got} changed"
    assert "socket" in str(inspect.signature(QMPClient.connect).parameters["address"].annotation)
    # the message callbacks: documented as "intended for subclasses" (the outbound one sees each message)
    for hook in ("_cb_outbound", "_cb_inbound"):
        assert "intended for subclasses" in (getattr(AsyncProtocol, hook).__doc__ or ""), hook
        assert list(inspect.signature(getattr(QMPClient, hook)).parameters) == ["self", "msg"]
    assert {"IDLE", "RUNNING", "DISCONNECTING"} <= set(Runstate.__members__)
    assert issubclass(ExecInterruptedError, Exception) and issubclass(BadReplyError, Exception)
    assert isinstance(ExecuteError.error_class, property)
    assert list(inspect.signature(QMPClient.__init__).parameters)[:3] == ["self", "name", "readbuflen"]


def test_qemu_qmp_is_touched_through_its_public_api_and_two_documented_hooks_only() -> None:
    """A reactor class extending qemu.qmp overrides only the two message hooks and reads nothing private of it;
    no module using qemu.qmp reads a private attribute of its client (``client._x``)."""
    found = []
    for path in (ROOT / "reactor").rglob("*.py"):
        text = path.read_text()
        if "qemu.qmp" not in text:
            continue
        tree = ast.parse(text)
        found += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                  if re.search(r"\bclient\._[a-z]", line)]
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
            if bases & {"QMPClient", "AsyncProtocol"}:
                overridden = {f.name for f in cls.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
                assert overridden <= {"__init__", "_cb_outbound", "_cb_inbound"}, (path, cls.name, overridden)
                for node in ast.walk(cls):
                    own = ("_log", "_relay", "_cb_outbound", "_cb_inbound")   # its own two, and the two hooks
                    if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                            not node.attr.startswith("__") and node.attr not in own:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {cls.name} uses {node.attr}")
    assert not found, found


def test_no_private_attribute_is_read_by_name() -> None:
    """``getattr(obj, "_x")`` is how a library's private state gets read without showing in ``obj._x``:
    reactor/ never does it (Jinja2's undefined values are asked through their public behaviour)."""
    found = []
    for path in (ROOT / "reactor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2 and \
                    isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) and \
                    re.fullmatch(r"_[a-z]\w*", node.args[1].value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert not found, found


def test_no_reactor_module_imports_a_third_party_mqtt_client() -> None:
    found = []
    for path in (ROOT / "reactor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("aiomqtt", "paho")]
    assert not found, found
