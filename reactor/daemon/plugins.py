"""Plugin discovery: installed packages (entry points) and ``plugins:`` directories.

Two entry-point groups: ``reactor.actions`` and ``reactor.sources``.  An entry
point names a module (every :class:`~reactor.actions.action.ActionSpec` /
:class:`~reactor.sources.SourceSpec` it holds, or its ``ACTIONS`` /
``SOURCES`` lists), a list, or one spec.  A ``plugins:`` directory holds plain
modules (``*.py`` not starting with ``_``), read for both actions and sources.

Plugins are validated when registered, not when called.  Every problem is
collected and reported together, naming the plugin and, when the problem is in
its code, the ``PATH:LINE:COL`` of the line that failed:

* a module that fails to import (syntax error, missing dependency, a bad
  ``@action`` declaration, which raises while the module is imported);
* an ``ACTIONS``/``SOURCES`` entry that is not a spec;
* a name declared twice (by two plugins, or a plugin and a built-in).

:func:`load_plugins` raises :class:`PluginLoadError`, which is both a
:class:`~reactor.errors.LoadError` (``reactor check`` prints it like rule
errors) and a :class:`~reactor.errors.PluginError`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from reactor.actions.action import ActionSpec
from reactor.actions.registry import Registry, builtin_registry
from reactor.errors import PluginError, PluginLoadError, PluginProblem, Position, SourceError
from reactor.sources import SourceRegistry, SourceSpec, builtin_sources

__all__ = [
    "ENTRY_POINT_GROUP",
    "SOURCE_ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadError",
    "PluginProblem",
    "Plugins",
    "load_plugins",
    "load_registry",
    "module_actions",
    "module_sources",
]

ENTRY_POINT_GROUP = "reactor.actions"
SOURCE_ENTRY_POINT_GROUP = "reactor.sources"


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin: where it came from and what it added."""

    name: str
    origin: str
    kind: str  # "entry point" or "directory"
    actions: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass(slots=True)
class Plugins:
    """Everything rules and the config can name: actions, sources, and which plugin added what."""

    actions: Registry
    sources: SourceRegistry
    loaded: list[PluginInfo] = field(default_factory=list)


def _specs(declared: Any, kind: type, what: str) -> list[Any]:
    items = list(declared) if isinstance(declared, (list, tuple)) else [declared]
    for s in items:
        if not isinstance(s, kind):
            deco = "@reactor.plugin.action" if kind is ActionSpec else "@reactor.plugin.source"
            raise PluginError(f"{what} holds {s!r}, which is not declared with {deco}")
    return items


def module_actions(module: ModuleType) -> list[ActionSpec]:
    """The actions a module declares (``ACTIONS`` if present, else every ActionSpec attribute)."""
    declared = getattr(module, "ACTIONS", None)
    if declared is not None:
        return _specs(declared, ActionSpec, "ACTIONS")
    return [v for v in vars(module).values() if isinstance(v, ActionSpec)]


def module_sources(module: ModuleType) -> list[SourceSpec]:
    """The sources a module declares (``SOURCES`` if present, else every SourceSpec attribute)."""
    declared = getattr(module, "SOURCES", None)
    if declared is not None:
        return _specs(declared, SourceSpec, "SOURCES")
    return [v for v in vars(module).values() if isinstance(v, SourceSpec)]


def _where(err: BaseException, files: tuple[Path, ...]) -> Position | None:
    """The position in the plugin's own code where ``err`` happened (innermost frame in ``files``)."""
    if isinstance(err, SyntaxError) and err.filename:
        return Position(err.filename, err.lineno or 1, err.offset or 1)
    roots = [f.resolve() for f in files]
    best: Position | None = None
    for frame in traceback.extract_tb(err.__traceback__):
        p = Path(frame.filename).resolve()
        if any(p == r or r in p.parents for r in roots):
            best = Position(frame.filename, frame.lineno or 1, (frame.colno or 0) + 1)
    return best


def _import_failed(owner: str, err: BaseException, files: tuple[Path, ...]) -> PluginProblem:
    if isinstance(err, PluginError):
        msg = f"plugin {owner}: invalid declaration: {err}"
    else:
        msg = f"plugin {owner}: import failed: {type(err).__name__}: {err}"
    return PluginProblem(_where(err, files), msg)


_cache: dict[tuple[Path, int, int], ModuleType] = {}


def _import_file(path: Path) -> ModuleType:
    """Import a plugin file once (per content version); raises what the import raised."""
    st = path.stat()
    key = (path.resolve(), st.st_mtime_ns, st.st_size)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha1(str(key[0].parent).encode()).hexdigest()[:8]
    name = f"reactor_plugin_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _cache[key] = module
    return module


class _Collector:
    def __init__(self) -> None:
        self.plugins = Plugins(actions=builtin_registry(), sources=builtin_sources())
        self.problems: list[SourceError] = []

    def add(self, name: str, origin: str, kind: str, actions: list[ActionSpec], sources: list[SourceSpec],
            files: tuple[Path, ...]) -> None:
        added_a: list[str] = []
        added_s: list[str] = []
        for a in actions:
            try:
                self.plugins.actions.add(a, origin=origin)
                added_a.append(a.name)
            except PluginError as err:
                self.problems.append(PluginProblem(_declared_at(a, files), f"plugin {name}: {err}"))
        for s in sources:
            try:
                self.plugins.sources.add(s, origin=origin)
                added_s.append(s.name)
            except PluginError as err:
                self.problems.append(PluginProblem(_declared_at(s, files), f"plugin {name}: {err}"))
        self.plugins.loaded.append(PluginInfo(name=name, origin=origin, kind=kind, actions=tuple(added_a),
                                              sources=tuple(added_s)))


def _declared_at(spec: ActionSpec | SourceSpec, files: tuple[Path, ...]) -> Position | None:
    code = getattr(spec.run, "__code__", None)
    if code is None:
        return None
    p = Path(code.co_filename)
    if files and not any(p.resolve() == f.resolve() or f.resolve() in p.resolve().parents for f in files):
        return None
    return Position(code.co_filename, code.co_firstlineno, 1)


def _entry_point_files(ep: importlib.metadata.EntryPoint) -> tuple[Path, ...]:
    """The directory of the entry point's top-level package (for error positions), without importing it."""
    top = ep.value.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if found is None:
        return ()
    if found.submodule_search_locations:
        return tuple(Path(p) for p in found.submodule_search_locations)
    return (Path(found.origin),) if found.origin else ()


def _from_entry_points(c: _Collector) -> None:
    seen: dict[str, tuple[list[ActionSpec], list[SourceSpec], str, tuple[Path, ...]]] = {}
    for group in (ENTRY_POINT_GROUP, SOURCE_ENTRY_POINT_GROUP):
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: (e.value, e.name)):
            dist = ep.dist.name if ep.dist else "?"
            owner = f"{dist} ({ep.value})"
            files = _entry_point_files(ep)
            try:
                obj = ep.load()
                kind: type = ActionSpec if group == ENTRY_POINT_GROUP else SourceSpec
                if isinstance(obj, ModuleType):
                    specs: list[Any] = module_actions(obj) if kind is ActionSpec else module_sources(obj)
                else:
                    specs = _specs(obj, kind, f"entry point {ep.name!r}")
            except Exception as err:
                c.problems.append(_import_failed(owner, err, files))
                continue
            actions, sources, _, _ = seen.setdefault(owner, ([], [], dist, files))
            (actions if group == ENTRY_POINT_GROUP else sources).extend(specs)
    for owner, (actions, sources, _dist, files) in seen.items():
        c.add(owner, owner, "entry point", actions, sources, files)


def _from_directory(c: _Collector, d: Path) -> None:
    if not d.is_dir():
        c.problems.append(PluginProblem(None, f"plugins directory {d} does not exist"))
        return
    for f in sorted(d.glob("*.py")):
        if f.name.startswith("_"):
            continue
        try:
            module = _import_file(f)
            actions = module_actions(module)
            sources = module_sources(module)
        except (Exception, SystemExit) as err:
            c.problems.append(_import_failed(str(f), err, (f,)))
            continue
        c.add(f.stem, str(f), "directory", actions, sources, (f,))


def load_plugins(plugin_dirs: Iterable[Path] = (), *, entry_points: bool = True) -> Plugins:
    """Built-ins, then installed entry points, then modules in ``plugin_dirs`` (each sorted by name).

    Raises :class:`PluginLoadError` listing every problem found.
    """
    c = _Collector()
    if entry_points:
        _from_entry_points(c)
    for d in plugin_dirs:
        _from_directory(c, Path(d))
    if c.problems:
        raise PluginLoadError(c.problems)
    return c.plugins


def load_registry(plugin_dirs: Iterable[Path] = (), *, entry_points: bool = True) -> Registry:
    """The actions of :func:`load_plugins` (raises :class:`PluginLoadError` the same way)."""
    return load_plugins(plugin_dirs, entry_points=entry_points).actions
