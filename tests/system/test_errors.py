"""One error tree: everything reactor raises is a ReactorError, defined in reactor.errors, drawn in its docstring.

Old names stay importable (the same classes) for one release; the plugin API gives the journal
through a small Protocol; no ``assert`` decides behaviour.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakeqmp import FakeQMP, make_event
from polling import eventually

import reactor
import reactor.errors as errors
import reactor.plugin
from reactor.actions.action import DaemonContext
from reactor.daemon.config import parse_config
from reactor.daemon.daemon import Daemon
from reactor.engine.engine import StaticVM
from reactor.ops.journal import Journal
from reactor.sources.qmp import VMConnection
from reactor.testing import FakeVM, run_action

#: Modules importing optional libraries (libvirt-python) import lazily; all others are walked.
SKIP_MODULES = {"reactor.cli.__main__"}


@dataclass(frozen=True)
class NoArgs:
    pass


@reactor.plugin.action("t-wait", mutating=False)
async def WAIT(ctx: reactor.plugin.ActionContext, args: NoArgs) -> None:
    await ctx.wait_for("RESUME", timeout=0.05)


def _modules() -> list[str]:
    names = ["reactor"]
    for info in pkgutil.walk_packages(reactor.__path__, "reactor."):
        if info.name not in SKIP_MODULES:
            names.append(info.name)
    return names


def _error_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in reactor, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("reactor")
                    and not attr.startswith("_") and not obj.__name__.startswith("_")):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_error_reactor_defines_is_a_reactor_error_in_errors_py() -> None:
    classes = _error_classes()
    assert "reactor.errors.StepAbandoned" in classes
    for qualname, cls in classes.items():
        assert issubclass(cls, errors.ReactorError), qualname
        # one module holds the tree; the test QEMU launcher's own errors aside
        assert cls.__module__ in ("reactor.errors", "reactor.testing.qemu"), qualname


def _tree() -> dict[str, str | None]:
    """``{class: parent}`` as drawn in reactor.errors' docstring (depth: the column of the name)."""
    doc = errors.__doc__ or ""
    tree: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        if "── " not in line and line.strip().split(" ")[0] != "ReactorError":
            continue
        m = re.search(r"[A-Za-z]\w*", line)
        assert m is not None
        col, name = m.start(), m.group()
        while stack and stack[-1][0] >= col:
            stack.pop()
        tree[name] = stack[-1][1] if stack else None
        stack.append((col, name))
    return tree


def test_the_docstring_tree_is_the_real_tree() -> None:
    tree = _tree()
    assert tree["ReactorError"] is None
    classes = {name: getattr(errors, name) for name in errors.__all__
               if inspect.isclass(getattr(errors, name)) and issubclass(getattr(errors, name), Exception)}
    current = {name for name, cls in classes.items() if cls.__name__ == name}  # not an old name
    assert set(tree) == current
    for name, parent in tree.items():
        if parent is not None:
            assert parent in [b.__name__ for b in classes[name].__bases__], (name, parent)


def test_old_names_are_the_new_classes() -> None:
    from reactor.engine.engine import StepAbandoned
    from reactor.integrations.mqtt import MqttError
    from reactor.integrations.remote import RemoteError
    from reactor.integrations.webhook import WebhookError
    from reactor.ops.http import HttpError
    from reactor.sources.libvirt.source import LibvirtConnectionError
    from reactor.sources.qmp import QMPProtocolError

    assert reactor.QMPCommandError is reactor.plugin.QMPCommandError is errors.VMCommandError
    assert reactor.QMPConnectionError is reactor.plugin.QMPConnectionError is errors.VMConnectionError
    assert QMPProtocolError is errors.VMProtocolError
    assert issubclass(LibvirtConnectionError, errors.VMConnectionError)
    assert StepAbandoned is errors.StepAbandoned and issubclass(StepAbandoned, TimeoutError)
    for cls in (MqttError, RemoteError, WebhookError, HttpError):
        assert cls is getattr(errors, cls.__name__)
    for name in ("VMCommandError", "VMConnectionError", "VMCommandTimeout", "EventTimeout", "ReactorError"):
        assert getattr(reactor.plugin, name) is getattr(errors, name)


async def test_timeouts_and_lost_vms_are_reactor_errors(tmp_path: Path) -> None:
    """What a plugin gets from ``ctx.vm.execute`` and ``ctx.wait_for``: ``except ReactorError`` catches it."""
    conn = VMConnection(name="vm1", address=tmp_path / "none.qmp", make_event=make_event, on_event=print)
    with pytest.raises(errors.VMConnectionError):
        await conn.execute("query-status")
    with pytest.raises(errors.VMConnectionError):
        await StaticVM("vm1").execute("cont")
    async with FakeQMP(tmp_path / "vm.qmp", hang_on={"query-block"}) as fake, asyncio.TaskGroup() as tg:
        conn = VMConnection(name="vm1", address=fake.address, make_event=make_event, on_event=lambda e: None,
                            reconnect=False)
        tg.create_task(conn.run())
        await eventually(lambda: conn.connected, 5.0, 0.01)
        with pytest.raises(errors.VMCommandTimeout) as info:
            await conn.execute("query-block", timeout=0.1)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, errors.ReactorError)
        assert conn.connected
        await conn.aclose()

    with pytest.raises(errors.EventTimeout):
        await run_action(WAIT, {}, vm=FakeVM("vm1"))


def test_the_plugin_api_gives_the_journal_as_a_protocol(tmp_path: Path) -> None:
    hints = typing.get_type_hints(DaemonContext.journal.fget)  # type: ignore[attr-defined]
    assert hints["return"] is reactor.plugin.JournalHandle
    journal = Journal(tmp_path / "j.db")
    assert isinstance(journal, reactor.plugin.JournalHandle)
    assert "Journal" not in reactor.plugin.__all__


def test_a_daemon_without_a_journal_raises_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()   # the rules of a config without rules: (none here)
    daemon = Daemon(parse_config("vms: []\n", tmp_path / "reactor.yaml"), watch=False)
    with pytest.raises(errors.JournalError):
        daemon.journal  # noqa: B018


#: Builtin exceptions reactor may raise: argument validation (``ValueError``/``TypeError``: an action's
#: ``check`` and a config's parsing raise it and the loader reports it as a RuleError/ConfigError at its
#: position; constructors reject bad arguments), abstract methods, Python's attribute protocol.
BUILTIN_OK = {"ValueError", "TypeError", "NotImplementedError", "AttributeError"}
#: ... and these, where they stay inside the module (path, exception): why.
BUILTIN_INSIDE = {
    ("reactor/daemon/plugins.py", "ImportError"): "reported as a PluginProblem with the plugin's position",
    ("reactor/schemas/generate.py", "KeyError"): "the schema generator (a developer tool) refusing stale tables",
    ("reactor/engine/engine.py", "AssertionError"): "an unreachable branch, not a decision",
    ("reactor/rules/matcher.py", "AssertionError"): "an unreachable branch, not a decision",
    ("reactor/sources/qmp.py", "EOFError"): "qemu.qmp's own end-of-stream signal inside the protocol layer",
}


def test_reactor_raises_only_reactor_errors() -> None:
    """Every ``raise`` of a builtin exception in reactor is argument validation or stays inside its module."""
    import ast
    import builtins

    root = Path(reactor.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = f"reactor/{path.relative_to(root)}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            cls = getattr(builtins, name, None) if name else None
            builtin = isinstance(cls, type) and issubclass(cls, BaseException)
            if builtin and name not in BUILTIN_OK and (rel, name) not in BUILTIN_INSIDE:
                bad.append(f"{rel}:{node.lineno}: raise {name}")
    assert bad == []


async def test_wrong_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()   # the rules of a config without rules: (none here)
    daemon = Daemon(parse_config("vms: []\n", tmp_path / "reactor.yaml"), watch=False)

    async def nothing() -> None:
        pass

    coro = nothing()
    with pytest.raises(errors.StateError) as info:
        daemon.start_task(coro, "x")
    coro.close()
    assert isinstance(info.value, RuntimeError)
