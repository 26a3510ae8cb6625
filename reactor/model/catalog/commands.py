"""The QMP command catalog: every command of the supported QEMU versions, with its arguments.

Generated into ``commands.json`` from the same QAPI sources as the events
(``python -m reactor.model.catalog.generate``).  The rule loader checks the
``qmp`` and ``libvirt_qmp`` steps against it (command names, argument names
and literal argument types); a VM's own ``query-qmp-schema`` says at connect
whether its QEMU has the commands the rules use.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from reactor.errors import CatalogError
from reactor.model.catalog.schema import EMPTY_FIELDS, FieldSpec, event_from_json

__all__ = ["COMMANDS_JSON", "CommandCatalog", "CommandSchema", "default_commands"]

#: The generated command catalog.
COMMANDS_JSON = Path(__file__).resolve().parent / "commands.json"


@dataclass(frozen=True, slots=True)
class CommandSchema:
    """One QMP command: its arguments (keyed by QMP name), doc and the QEMU versions that have it.

    ``open`` commands (``device_add``) take arguments beyond the listed ones.
    """

    name: str
    arguments: Mapping[str, FieldSpec] = field(default_factory=lambda: EMPTY_FIELDS, hash=False)
    doc: str = ""
    versions: tuple[str, ...] = ()
    open: bool = False


class CommandCatalog:
    """Command schemas by name; each is built from its JSON form when first asked for."""

    def __init__(self, raw: Mapping[str, Mapping[str, Any]], *, qemu_versions: tuple[str, ...] = ()) -> None:
        self._raw = dict(raw)
        self._names = sorted(self._raw)
        self._built: dict[str, CommandSchema] = {}
        self.qemu_versions = qemu_versions

    def names(self) -> list[str]:
        """Every command name, sorted."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def get(self, name: str) -> CommandSchema | None:
        """The command's schema, or None when no supported QEMU has it."""
        built = self._built.get(name)
        if built is not None:
            return built
        obj = self._raw.get(name)
        if obj is None:
            return None
        fields = event_from_json(name, {"fields": obj.get("arguments")}).fields
        built = CommandSchema(name=name, arguments=fields, doc=str(obj.get("doc", "")),
                              versions=tuple(obj.get("versions", ())), open=bool(obj.get("open", False)))
        self._built[name] = built
        return built

    def suggest(self, name: str) -> str | None:
        """The known command closest to ``name`` (``contt`` → ``cont``), or None."""
        for candidate in (name, name.lower().replace("_", "-"), name.lower().replace("-", "_")):
            close = difflib.get_close_matches(candidate, self._names, n=1, cutoff=0.6)
            if close:
                return close[0]
        return None


@functools.cache
def default_commands() -> CommandCatalog:
    """The shipped command catalog (every supported QEMU version); loaded once."""
    try:
        raw = orjson.loads(COMMANDS_JSON.read_bytes())
        return CommandCatalog(raw["commands"], qemu_versions=tuple(raw["qemu_versions"]))
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError) as err:
        raise CatalogError(f"{COMMANDS_JSON}: cannot load the QMP command catalog: {err}") from err
