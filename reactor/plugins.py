"""Plugin discovery: entry points (``reactor.actions``) and ``plugins:`` directories.

A plugin module exposes :class:`~reactor.action.ActionSpec` objects (made
with ``@reactor.plugin.action``) as module attributes, or an ``ACTIONS``
list.  Plugins are validated when registered: a module that fails to import,
an object that is not an action, or a name defined twice is a
:class:`~reactor.errors.PluginError` naming the plugin.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from .action import ActionSpec
from .errors import PluginError
from .registry import Registry, builtin_registry

__all__ = ["ENTRY_POINT_GROUP", "load_registry", "module_actions"]

ENTRY_POINT_GROUP = "reactor.actions"


def module_actions(module: ModuleType) -> list[ActionSpec]:
    """The actions a plugin module declares (``ACTIONS`` if present, else every ActionSpec attribute)."""
    declared = getattr(module, "ACTIONS", None)
    if declared is not None:
        specs = list(declared)
        for s in specs:
            if not isinstance(s, ActionSpec):
                raise PluginError(f"plugin {module.__name__}: ACTIONS holds {s!r}, not an action")
        return specs
    return [v for v in vars(module).values() if isinstance(v, ActionSpec)]


def _import_file(path: Path) -> ModuleType:
    name = f"reactor_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {path}: import failed: {type(err).__name__}: {err}") from err
    return module


def load_registry(plugin_dirs: Iterable[Path] = (), *, entry_points: bool = True) -> Registry:
    """Built-ins, then installed entry points, then modules in ``plugin_dirs`` (sorted)."""
    reg = builtin_registry()
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            origin = f"{ep.dist.name if ep.dist else '?'} ({ep.value})"
            try:
                obj = ep.load()
            except Exception as err:
                raise PluginError(f"plugin {origin}: import failed: {type(err).__name__}: {err}") from err
            specs = module_actions(obj) if isinstance(obj, ModuleType) else list(obj if isinstance(obj, list)
                                                                                  else [obj])
            for s in specs:
                reg.add(s, origin=origin)
    for d in plugin_dirs:
        d = Path(d)
        if not d.is_dir():
            raise PluginError(f"plugins directory {d} does not exist")
        for f in sorted(d.glob("*.py")):
            if f.name.startswith("_"):
                continue
            module = _import_file(f)
            for s in module_actions(module):
                reg.add(s, origin=str(f))
    return reg
