"""The errors reactor raises, rooted in one class.

::

    ReactorError                    everything below; ``except ReactorError`` catches all of reactor's errors
     ├── SourceError                a position in a file, with a message
     │    ├── RuleError             a rule file (YAML, schema, templates)
     │    ├── ConfigError           the daemon's config file
     │    └── PluginProblem         one plugin problem (a plugin file, or the plugin's name)
     ├── LoadError                  several SourceErrors at once: nothing was loaded
     │    └── PluginLoadError       plugins could not be loaded (also a PluginError)
     ├── ArgumentErrors             an action's check found problems in a step's arguments (also a ValueError)
     ├── CatalogError               the event catalog itself is broken
     ├── EventError                 data that is not a QMP event (replay, MQTT, QMP)
     ├── ActionError                a step failed at run time
     │    ├── TemplateError         a template or ``when`` failed to render
     │    ├── VMCommandError        the VM answered a command with an error (QEMU's class and desc)
     │    ├── WebhookError          a webhook request failed (``status``: the last HTTP status)
     │    ├── MqttError             an MQTT publish could not be done
     │    └── RemoteError           a remote (fleet) request could not be sent
     ├── VMConnectionError          a VM could not be reached, or the connection was lost
     │    ├── VMProtocolError       the VM's monitor broke the protocol
     │    └── LibvirtConnectionError  libvirtd could not be reached, or the connection was lost
     ├── ReactorTimeoutError        something did not happen in time (also a builtin TimeoutError)
     │    ├── VMCommandTimeout      no reply to a VM command in time
     │    ├── EventTimeout          an awaited event did not come (``ctx.wait_for``)
     │    └── StepTimeout           a step's own work did not finish in time (``exec``)
     │         └── StepAbandoned    a step timed out and its action ignored cancellation
     ├── StateError                 a method called in the wrong state (not running yet, already running)
     ├── PluginError                a plugin failed to import or declares badly
     ├── JournalError               the journal could not be opened or written
     ├── HttpError                  the HTTP listener could not start
     ├── MqttLinkError              the connection to an MQTT broker failed or was lost
     │    ├── MqttRefused           the broker refused the connection (CONNACK code)
     │    └── MqttProtocolError     the broker broke the MQTT protocol
     └── ReplayRefused              replay cannot do what the rules ask (no broker, one unreachable)

Old names kept for one release (the same classes): ``QMPCommandError`` (VMCommandError),
``QMPConnectionError`` (VMConnectionError), ``QMPProtocolError`` (VMProtocolError).
``reactor.testing.qemu`` adds ``QemuError`` (a test QEMU failed to start) under ReactorError.

Every error keeps its cause (``raise ... from err``).  Source errors print as
``PATH:LINE:COL: message`` with 1-based line and column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ActionError",
    "ArgumentErrors",
    "CatalogError",
    "ConfigError",
    "EventError",
    "EventTimeout",
    "HttpError",
    "JournalError",
    "LibvirtConnectionError",
    "LoadError",
    "MqttError",
    "MqttLinkError",
    "MqttProtocolError",
    "MqttRefused",
    "PluginError",
    "PluginLoadError",
    "PluginProblem",
    "Position",
    "ProblemKey",
    "QMPCommandError",
    "QMPConnectionError",
    "QMPProtocolError",
    "ReactorError",
    "ReactorTimeoutError",
    "RemoteError",
    "ReplayRefused",
    "RuleError",
    "SourceError",
    "StateError",
    "StepAbandoned",
    "StepTimeout",
    "TemplateError",
    "VMCommandError",
    "VMCommandTimeout",
    "VMConnectionError",
    "VMProtocolError",
    "WebhookError",
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


#: What a problem of :class:`ArgumentErrors` is about: an argument (``"timeout"``), a path into one
#: (``"event[1]"``, ``"match.operation"``), several arguments (a tuple: the first one the step writes
#: locates the problem), or None (the step as a whole).
ProblemKey = str | tuple[str, ...] | None


class ArgumentErrors(ReactorError, ValueError):
    """Raised by an action's ``check`` to report several independent problems in one load.

    ``problems`` are ``(key, message)`` pairs (see :data:`ProblemKey`); each becomes its own load error
    at the position of the argument ``key`` names (when the step writes it), so a step with
    ``attempts: 0`` and ``max_concurrent: 0`` gets both errors, each at its value::

        def check(args: Args) -> None:
            problems: list[tuple[ProblemKey, str]] = []
            if args.attempts < 1:
                problems.append(("attempts", f"attempts: {args.attempts} must be at least 1"))
            if args.timeout <= 0:
                problems.append(("timeout", "timeout must be positive"))
            if problems:
                raise ArgumentErrors(problems)

    It is a :class:`ValueError` (its text is the messages joined by ``"; "``), so code that catches
    ValueError from a check keeps working; a plain ``ValueError`` from a check is one problem, located
    by a leading ``"name: "`` in its message.
    """

    def __init__(self, problems: Iterable[tuple[ProblemKey, str]]) -> None:
        self.problems: tuple[tuple[ProblemKey, str], ...] = tuple((key, str(msg)) for key, msg in problems)
        super().__init__("; ".join(msg for _, msg in self.problems) or "invalid arguments")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class CatalogError(ReactorError):
    """The event catalog shipped with reactor cannot be read."""


class EventError(ReactorError):
    """Input that should be a QMP event is not one."""


class ActionError(ReactorError):
    """A step failed while running."""


class TemplateError(ActionError):
    """A template or expression failed while rendering (undefined name, limit hit...)."""


class VMCommandError(ActionError):
    """The VM answered a command with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{command}: {error_class}: {desc}")


class WebhookError(ActionError):
    """A webhook request failed: ``status`` is the final HTTP status (None: no response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MqttError(ActionError):
    """A publish could not be done (unknown broker, outbox full, broker refused)."""


class RemoteError(ActionError):
    """A remote request could not be sent (no fleet link, not connected)."""


class VMConnectionError(ReactorError):
    """A VM could not be reached (not connected, connect failed) or its connection was lost."""


class VMProtocolError(VMConnectionError):
    """The peer broke the protocol: not JSON, not an object, a message too long, cut off."""


class LibvirtConnectionError(VMConnectionError):
    """libvirtd could not be reached, or the connection was lost."""


class ReactorTimeoutError(ReactorError, TimeoutError):
    """Something reactor waited for did not happen in time; ``except TimeoutError`` catches it too."""


class VMCommandTimeout(ReactorTimeoutError):
    """A VM command got no reply within its timeout (the connection stays up)."""


class EventTimeout(ReactorTimeoutError):
    """An awaited event did not come within the timeout."""


class StepTimeout(ReactorTimeoutError):
    """A step's own work did not finish within its timeout (``exec``'s process ...)."""


class StepAbandoned(StepTimeout):
    """A step timed out and its action ignored cancellation: it was left running, the run went on."""


class StateError(ReactorError, RuntimeError):
    """A method was called in the wrong state (the daemon or engine not running, ``run()`` twice)."""


class PluginError(ReactorError):
    """A plugin failed to import or declares something invalid."""


class PluginProblem(SourceError):
    """One plugin problem: where it is (when known) and a message naming the plugin."""


class PluginLoadError(LoadError, PluginError):
    """Plugins could not be loaded; ``errors`` lists every problem."""

    errors: list[SourceError]


class JournalError(ReactorError):
    """The journal could not be opened or written."""


class HttpError(ReactorError):
    """The HTTP listener could not start (bad ``http.listen``, address in use)."""


class MqttLinkError(ReactorError):
    """The connection to a broker failed or was lost (refused, closed, timed out, broken packets)."""


class MqttRefused(MqttLinkError):
    """The broker refused the connection (``CONNACK`` with an error code): credentials, identifier ..."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (code {code:#x})")
        self.code = code
        self.reason = reason


class MqttProtocolError(MqttLinkError):
    """The broker sent something MQTT does not allow here; the connection is closed."""


class ReplayRefused(ReactorError):
    """Replay cannot do what the rules ask (no broker configured, one unreachable): said before it starts."""


# The old names, for one release.
QMPCommandError = VMCommandError
QMPConnectionError = VMConnectionError
QMPProtocolError = VMProtocolError
