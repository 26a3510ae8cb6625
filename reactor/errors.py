"""The errors reactor raises, rooted in one class.

::

    ReactorError
     ├── SourceError            a position in a file, with a message
     │    ├── RuleError         a rule file (YAML, schema, templates)
     │    └── ConfigError       the daemon's config file
     ├── LoadError             several SourceErrors at once: nothing was loaded
     ├── CatalogError          the event catalog itself is broken
     ├── EventError            data that is not a QMP event (replay, MQTT, QMP)
     ├── ActionError           a step failed at run time
     │    ├── TemplateError     a template or `when` failed to render
     │    └── QMPCommandError   QEMU answered a command with an error
     ├── PluginError           a plugin failed to import or declares badly
     ├── ConnectionError_      a VM's QMP connection failed (name avoids the builtin)
     └── JournalError          the journal could not be opened or written

Every error keeps its cause (``raise ... from err``).  Source errors print as
``PATH:LINE:COL: message`` with 1-based line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ActionError",
    "CatalogError",
    "ConfigError",
    "EventError",
    "JournalError",
    "LoadError",
    "PluginError",
    "Position",
    "QMPCommandError",
    "QMPConnectionError",
    "ReactorError",
    "RuleError",
    "SourceError",
    "TemplateError",
]


class ReactorError(Exception):
    """The root of every error reactor raises on purpose."""


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a source file: 1-based line and column."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


class SourceError(ReactorError):
    """A problem at a position in a file the user wrote."""

    def __init__(self, position: Position | None, message: str) -> None:
        self.position = position
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.position}: {self.message}"


class RuleError(SourceError):
    """A rule file is invalid."""


class ConfigError(SourceError):
    """The config file is invalid."""


class LoadError(ReactorError):
    """Loading failed; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: list[SourceError]) -> None:
        self.errors = errors
        n = len(errors)
        super().__init__(f"{n} error{'s' if n != 1 else ''}:\n" + "\n".join(str(e) for e in errors))


class CatalogError(ReactorError):
    """The event catalog shipped with reactor cannot be read."""


class EventError(ReactorError):
    """Input that should be a QMP event is not one."""


class ActionError(ReactorError):
    """A step failed while running."""


class TemplateError(ActionError):
    """A template or expression failed while rendering (undefined name, limit hit...)."""


class QMPCommandError(ActionError):
    """QEMU answered a command with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{command}: {error_class}: {desc}")


class QMPConnectionError(ReactorError):
    """A VM's QMP connection could not be made or was lost."""


class PluginError(ReactorError):
    """A plugin failed to import or declares something invalid."""


class JournalError(ReactorError):
    """The journal could not be opened or written."""
