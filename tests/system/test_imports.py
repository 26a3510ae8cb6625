"""The import graph of ``reactor`` has no cycles, and every module imports alone.

The graph is read with :mod:`ast` from the source, so it counts every import:
module level, inside functions, and under ``if TYPE_CHECKING:``.  A cycle that
only a function-level import keeps from failing today fails as soon as someone
moves that import to the top, so it is a defect here too.  The message names
the modules of each cycle and the lines that close it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reactor

ROOT = Path(reactor.__file__).resolve().parent

#: third-party packages reactor's modules import; loaded once in the parent so each forked child
#: pays only for reactor's own modules (they cannot hide an import cycle inside reactor)
THIRD_PARTY = ("aiohttp", "aiomqtt", "paho.mqtt.client", "yaml", "jinja2.sandbox", "orjson", "qemu.qmp",
               "prometheus_client")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        out[".".join(parts)] = (path, package)
    return out


def _graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """module -> {imported reactor module: first line}; ``from P import name`` is P.name when that is a module."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, package) in modules.items():
        edges: dict[str, int] = {}
        here = name if package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]
                                    + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base) for a in node.names]
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, list(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, list(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, tuple[Path, bool]]) -> str:
    lines = [" <-> ".join(component)]
    for v in component:
        for w, line in sorted(graph[v].items()):
            if w in component:
                lines.append(f"    {modules[v][0].relative_to(ROOT.parent)}:{line}: {v} imports {w}")
    return "\n".join(lines)


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by a TYPE_CHECKING import or a function-level import is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    modules = {f"pkg.{p.stem}" if p.stem != "__init__" else "pkg": (p, p.stem == "__init__")
               for p in pkg.glob("*.py")}
    graph = _graph(modules)
    assert graph["pkg.b"] == {"pkg.c": 2}
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = _graph(modules)
    cycles = _cycles(graph)
    assert not cycles, "import cycles in reactor:\n" + "\n".join(_describe(c, graph, modules) for c in cycles)


def test_arrows_point_down_from_the_daemon_and_the_cli() -> None:
    """Only the command line and the top-level package may import the daemon; nothing imports the CLI."""
    graph = _graph(_modules())
    top = ("reactor.cli", "reactor.daemon")
    upward = [f"{v} imports {w} (line {line})" for v, edges in graph.items() for w, line in edges.items()
              if (w == "reactor.daemon.daemon" and not v.startswith(top) and v != "reactor")
              or (w.startswith("reactor.cli") and not v.startswith("reactor.cli"))]
    assert not upward, "\n".join(upward)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_every_module_imports_alone() -> None:
    """Each module imported first, in a fresh interpreter (forked before any reactor module is loaded)."""
    names = [n for n in _modules() if not n.endswith(".__main__")]
    script = (
        "import importlib, os, sys\n"
        f"for m in {THIRD_PARTY!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not [m for m in sys.modules if m == 'reactor' or m.startswith('reactor.')]\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(r)\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException as err:\n"
        "            os.write(w, f'{name}: {type(err).__name__}: {err}'.encode())\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    os.close(w)\n"
        "    with os.fdopen(r, 'rb') as f:\n"
        "        msg = f.read().decode()\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    if status:\n"
        "        bad.append(msg or f'{name}: exit status {status}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=200,
                          check=False)
    assert done.returncode == 0, f"modules that fail to import alone:\n{done.stdout}{done.stderr[-2000:]}"
