"""Run a rule set against a list of events on a virtual clock and see which actions ran with what.

::

    out = await run_rules('''
        - name: guarded-resume
          on: BLOCK_IO_ERROR
          actions:
            - storage_guard: {min_free: 1G}
            - qmp: cont
    ''', [make_event("BLOCK_IO_ERROR", {...}, vm="web-1")], actions=[GUARD], vms=[FakeVM("web-1")])
    assert out.called("qmp") == [{"execute": "cont", "arguments": {}, "vm": None, "timeout": 10.0}]

Time comes from the events' timestamps, as in ``reactor replay``: a
``sleep: 10m`` in a rule takes no real time.  The rules are loaded exactly as
``reactor check`` loads them (a wrong argument raises
:class:`~reactor.errors.LoadError` with ``PATH:LINE:COL``).  Actions are the
built-ins plus ``actions``; VMs not given are known by name only (QMP
commands to them fail as in replay).  Resources that the rules' actions
declare are started with a :class:`~reactor.testing.FakeDaemon` and closed at
the end.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from reactor.actions.action import ActionSpec, Resource, VMHandle
from reactor.actions.registry import Registry, builtin_registry
from reactor.engine.clock import VirtualClock
from reactor.engine.engine import Engine
from reactor.engine.replay import replay
from reactor.model.event import Event
from reactor.rules.loader import load_rules_text
from reactor.rules.rule import RuleSet
from reactor.rules.template import to_jsonable
from reactor.testing.events import make_event
from reactor.testing.harness import FakeDaemon
from reactor.testing.vm import FakeVM

__all__ = ["ActionCall", "Outcome", "load_test_rules", "run_rules"]


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One step as it ran (or was skipped, failed, timed out)."""

    rule: str
    vm: str
    event: str
    run: int
    step: int
    action: str
    #: The arguments after templates were rendered (secrets shown as ``***``).
    args: Any
    status: str
    result: Any
    error: str | None
    time: float


@dataclass(slots=True)
class Outcome:
    """What :func:`run_rules` saw."""

    #: Every output record (``match``, ``step``, ``throttled``, ``dropped``, ``queued``), as ``reactor replay --json``.
    records: list[dict[str, Any]] = field(default_factory=list)
    #: Every event dispatched, in order, including those the rules emitted.
    events: list[Event] = field(default_factory=list)
    engine: Engine | None = None

    @property
    def calls(self) -> list[ActionCall]:
        """Every step record, in order."""
        return [ActionCall(rule=r["rule"], vm=r["vm"], event=r["event"], run=r["run"], step=r["step"],
                           action=r["action"], args=r["args"], status=r["status"], result=r["result"],
                           error=r["error"], time=r["time"]) for r in self.records if r["type"] == "step"]

    def called(self, action: str, *, status: str | None = "ok") -> list[Any]:
        """The arguments of every run of ``action`` (that ended with ``status``; None for any)."""
        return [c.args for c in self.calls if c.action == action and (status is None or c.status == status)]

    def matched(self, rule: str | None = None) -> list[dict[str, Any]]:
        """The ``match`` records (of ``rule``)."""
        return [r for r in self.records if r["type"] == "match" and (rule is None or r["rule"] == rule)]

    def runs(self, rule: str) -> dict[str, int]:
        """How the runs of ``rule`` ended: ``{"ok": 2, "failed": 1, "throttled": 3}``."""
        assert self.engine is not None
        return {status: n for (name, status), n in self.engine.run_outcomes.items() if name == rule}

    def emitted(self, name: str | None = None) -> list[Event]:
        """Events put on the bus by the rules (``emit``, ``REACTOR_ACTION_FAILED`` ...)."""
        return [e for e in self.events if e.name.startswith("REACTOR_") or e.name == name
                if name is None or e.name == name]


def _registry(actions: Iterable[ActionSpec], registry: Registry | None) -> Registry:
    reg = (registry or builtin_registry()).copy()
    for spec in actions:
        if spec.name not in reg:
            reg.add(spec)
    return reg


def load_test_rules(rules: str | Mapping[str, str] | RuleSet, *, actions: Iterable[ActionSpec] = (),
                    registry: Registry | None = None) -> RuleSet:
    """Load rules from YAML text (dedented; path ``rules.yaml``) or ``{path: text}``, with extra ``actions``."""
    if isinstance(rules, RuleSet):
        return rules
    files = [("rules.yaml", rules)] if isinstance(rules, str) else list(rules.items())
    return load_rules_text([(p, textwrap.dedent(t)) for p, t in files], registry=_registry(actions, registry))


def _line(ev: Event | Mapping[str, Any]) -> bytes:
    obj = ev.to_qmp() if isinstance(ev, Event) else dict(ev)
    return orjson.dumps(obj, default=to_jsonable)


async def run_rules(rules: str | Mapping[str, str] | RuleSet, events: Iterable[Event | Mapping[str, Any]], *,
                    actions: Iterable[ActionSpec] = (), registry: Registry | None = None,
                    vms: Iterable[VMHandle] = (), dry_run: bool = False,
                    sections: Mapping[str, Any] | None = None) -> Outcome:
    """Load ``rules``, feed ``events`` (typed events or QMP objects with ``vm``) through them on a
    virtual clock, wait until every run ended, and return what happened."""
    rs = load_test_rules(rules, actions=actions, registry=registry)
    clock = VirtualClock()
    out = Outcome()
    known: dict[str, VMHandle] = {v.name: v for v in vms}
    async with FakeDaemon(sections=sections, dry_run=dry_run, clock=clock) as daemon:
        resources: dict[type[Resource], Resource] = {}
        try:
            for rule in rs.rules:
                for step in (s for top in rule.steps for s in top.walk()):
                    for cls in step.action.resources:
                        if cls not in resources:
                            res = cls(daemon)
                            resources[cls] = res
                            await res.start()
            engine = Engine(rs, clock=clock, output=out.records.append, dry_run=dry_run, vms=known.get,
                            resources=resources)
            out.engine = engine
            engine.subscribe(out.events.append)
            daemon.subscribe(engine.bus.put)
            for vm in known.values():
                if isinstance(vm, FakeVM):
                    vm.attach(_submitter(engine, clock, vm.name))
            lines = [_line(e) for e in events]
            result = await replay(lines, engine, clock, source="<run_rules>")
            if result.errors:
                raise ValueError("; ".join(result.errors))
        finally:
            for vm in known.values():
                if isinstance(vm, FakeVM):
                    vm.attach(None)
            for res in reversed(list(resources.values())):
                await res.aclose()
    return out


def _submitter(engine: Engine, clock: VirtualClock, vm: str) -> Any:
    def put(name: str, data: dict[str, Any]) -> None:
        engine.submit(make_event(name, data, vm=vm, at=clock.now()))
    return put
