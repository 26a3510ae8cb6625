"""The action registry: built-in actions and those found in entry points.

One registry holds everything a rule can name.  Built-ins register first;
actions from the entry-point group ``reactor.actions`` (installed packages)
and from ``plugins:`` directories are added by :mod:`reactor.daemon.plugins` and
validated as they are registered, not when they are called.
"""

from __future__ import annotations

from collections.abc import Iterator

from reactor.actions.action import ActionSpec
from reactor.errors import PluginError

__all__ = ["Registry", "builtin_registry"]


class Registry:
    """Action name -> :class:`ActionSpec`."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}

    def add(self, spec: ActionSpec, *, origin: str | None = None) -> None:
        if not isinstance(spec, ActionSpec):
            raise PluginError(f"{origin or '?'}: {spec!r} is not an action (use @reactor.plugin.action)")
        if spec.name in self._actions:
            first = self._actions[spec.name].origin
            raise PluginError(f"action {spec.name!r} from {origin or spec.origin} is already defined by {first}")
        if origin is not None and origin != spec.origin:
            spec = _with_origin(spec, origin)
        self._actions[spec.name] = spec

    def get(self, name: str) -> ActionSpec | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self._actions.values(), key=lambda s: s.name))

    def copy(self) -> Registry:
        new = Registry()
        new._actions = dict(self._actions)
        return new


def _with_origin(spec: ActionSpec, origin: str) -> ActionSpec:
    import dataclasses

    return dataclasses.replace(spec, origin=origin)


def builtin_registry() -> Registry:
    """A new registry holding every built-in action."""
    from reactor.actions.builtins import BUILTINS
    from reactor.actions.libvirt_qmp import LIBVIRT_ACTIONS

    reg = Registry()
    for spec in (*BUILTINS, *LIBVIRT_ACTIONS):
        reg.add(spec)
    return reg
