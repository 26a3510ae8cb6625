"""Reactor's own events, defined here in Python (not generated from QAPI).

They travel on the bus like QMP events and rules can match on them.  The
``status`` of ``REACTOR_VM_CONNECTED`` takes QEMU's ``RunState`` values.
"""

from __future__ import annotations

from types import MappingProxyType

from reactor.model.catalog.schema import EventSchema, FieldSpec, TypeSpec
from reactor.model.runstate import RUN_STATES

__all__ = ["BUILTIN_EVENTS", "RUN_STATES"]


_STR = TypeSpec("str", "str")
_INT = TypeSpec("int", "int")
_BOOL = TypeSpec("bool", "bool")


def _f(name: str, t: TypeSpec, doc: str, *, optional: bool = False) -> FieldSpec:
    return FieldSpec(name=name, type=t, optional=optional, doc=doc)


def _event(name: str, doc: str, *fields: FieldSpec) -> EventSchema:
    return EventSchema(
        name=name, fields=MappingProxyType({f.name: f for f in fields}), doc=doc, builtin=True
    )


#: reactor's own events, by name.
BUILTIN_EVENTS: MappingProxyType[str, EventSchema] = MappingProxyType(
    {
        e.name: e
        for e in (
            _event(
                "REACTOR_ACTION_FAILED",
                "Emitted by reactor when a step of a rule's action failed.",
                _f("rule", _STR, "name of the rule"),
                _f("step", _INT, "index of the failed step (0-based)"),
                _f("action", _STR, "name of the action that failed"),
                _f("error", _STR, "what went wrong"),
            ),
            _event(
                "REACTOR_RESUME_GAVE_UP",
                "Emitted by the resume action when a VM kept failing after being resumed: it stays paused.",
                _f("attempts", _INT, "failed resume attempts within the window (the `attempts` limit)"),
                _f("last_error", _STR, "what ended the last attempt (a flap, a failed probe, an error to cont)"),
                _f("since", TypeSpec("number", "float"),
                   "when the first of those attempts began (seconds since the epoch)"),
                _f("rule", _STR, "the rule whose resume gave up", optional=True),
            ),
            _event(
                "REACTOR_RULES_RELOADED",
                "Emitted by reactor after it (re)loaded its rules.",
                _f("ok", _BOOL, "true when the rules loaded; false when the old rules stay in force"),
                _f("errors", TypeSpec("array", None, items=_STR), "the load errors (empty when ok)"),
                _f("rules", _INT, "number of rules now in force", optional=True),
            ),
            _event(
                "REACTOR_TIMER",
                "Emitted by reactor when a timer started by a rule fires.",
                _f("name", _STR, "name of the timer"),
                _f("count", _INT, "how many times this timer has fired", optional=True),
            ),
            _event(
                "REACTOR_VM_CONNECTED",
                "Emitted by reactor when its QMP connection to a VM is up.",
                _f("status", TypeSpec("enum", "RunState", values=RUN_STATES), "the VM's run state"),
                _f("qemu_version", _STR, "QEMU's version (major.minor.micro)"),
            ),
            _event(
                "REACTOR_VM_DISCONNECTED",
                "Emitted by reactor when its QMP connection to a VM is lost or closed.",
                _f("reason", _STR, "why the connection ended"),
            ),
        )
    }
)
