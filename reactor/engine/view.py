"""What templates and expressions see: read-only views of the event, the VM and the rule."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from reactor.actions.action import VMHandle
from reactor.model.event import Event

__all__ = ["EventView", "RuleView", "VMView", "names_for"]


class EventView:
    """``event`` in templates: ``.name``, ``.data``, ``.timestamp`` (UTC datetime), ``.vm``, ``.host``."""

    __slots__ = ("_e",)

    def __init__(self, event: Event) -> None:
        self._e = event

    @property
    def name(self) -> str:
        return self._e.name

    @property
    def data(self) -> Mapping[str, Any]:
        return self._e.data

    @property
    def timestamp(self) -> _dt.datetime:
        return self._e.time

    @property
    def vm(self) -> str:
        return self._e.vm

    @property
    def host(self) -> str | None:
        return self._e.host

    @property
    def id(self) -> str:
        return self._e.id

    def to_qmp(self) -> dict[str, Any]:
        return self._e.to_qmp()

    def __str__(self) -> str:
        return self._e.name


class VMView:
    """``vm`` in templates: ``.name``, ``.labels``, ``.status``, ``.connected``."""

    __slots__ = ("_vm",)

    def __init__(self, vm: VMHandle) -> None:
        self._vm = vm

    @property
    def name(self) -> str:
        return self._vm.name

    @property
    def labels(self) -> Mapping[str, str]:
        return self._vm.labels

    @property
    def status(self) -> str:
        return self._vm.status

    @property
    def connected(self) -> bool:
        return self._vm.connected

    def to_qmp(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(self.labels), "status": self.status}

    def __str__(self) -> str:
        return self._vm.name


class RuleView:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def names_for(event: Event, vm: VMHandle, rule: str, now: float, variables: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": EventView(event),
        "vm": VMView(vm),
        "rule": RuleView(rule),
        "now": _dt.datetime.fromtimestamp(now, _dt.UTC),
        "vars": variables,
    }
