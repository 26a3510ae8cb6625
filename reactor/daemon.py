"""The daemon: ``reactor run -c CONFIG``.

One root TaskGroup owns everything: the journal's flusher, the resources
actions share (MQTT, HTTP sessions), the fleet of VM connections and the
engine.  SIGTERM/SIGINT stop it gracefully: no new events are taken, running
steps get ``grace`` seconds, the rest are cancelled (recorded), the journal
is flushed and closed.  A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .action import Resource
from .catalog import default_catalog
from .config import Config
from .engine import Engine
from .event import Event
from .fleet import Fleet
from .journal import Journal
from .loader import load_rules
from .plugins import load_registry
from .qmp import VMConnection, VMState
from .rule import RuleSet

__all__ = ["Daemon", "rule_usage", "run_daemon"]

log = logging.getLogger("reactor.daemon")


def rule_usage(rules: RuleSet) -> dict[str, set[str]]:
    """Event name -> field paths the rules' ``match`` uses (for per-VM schema warnings)."""
    used: dict[str, set[str]] = {}

    def paths(m: Any, out: set[str]) -> None:
        if isinstance(m, Mapping):
            for k, v in m.items():
                if k in ("any", "all", "not"):
                    for sub in v if isinstance(v, list) else [v]:
                        paths(sub, out)
                else:
                    out.add(str(k))

    for r in rules.rules:
        if r.on is None:
            continue
        for name in r.on:
            if name.startswith("REACTOR_") or name in rules.emitted:
                continue
            fields = used.setdefault(name, set())
            paths(r.match_source, fields)
    return used


class Daemon:
    """The running daemon; also the :class:`~reactor.action.DaemonContext` resources get."""

    def __init__(self, config: Config, *, dry_run: bool = False, grace: float = 30.0) -> None:
        self._config = config
        self._dry_run = dry_run
        self.grace = grace
        self.catalog = default_catalog()
        self.registry = load_registry(config.plugins)
        self.rules = load_rules(config.rules or [Path("rules")], catalog=self.catalog, registry=self.registry)
        self._journal: Journal | None = None
        self.engine: Engine | None = None
        self.fleet: Fleet | None = None
        self.resources: dict[type[Resource], Resource] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._pending_subscribers: list[Callable[[Event], None]] = []
        self.ready = asyncio.Event()

    # -- DaemonContext ----------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self._config

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    def section(self, name: str) -> Any:
        return self._config.section(name)

    def emit(self, event: Event) -> None:
        if self.engine is not None:
            self.engine.submit(event)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        if self.engine is not None:
            self.engine.subscribe(callback)
        else:
            self._pending_subscribers.append(callback)

    def start_task(self, coro: Awaitable[None], name: str) -> None:
        if self._tg is None:
            raise RuntimeError("the daemon is not running")
        self._tg.create_task(coro, name=name)  # type: ignore[arg-type]

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _resource_classes(self) -> list[type[Resource]]:
        classes: list[type[Resource]] = []
        for r in self.rules.rules:
            for step in r.steps:
                for cls in step.action.resources:
                    if cls not in classes:
                        classes.append(cls)
        if self._config.mqtt:
            from .mqtt import MqttHub

            if MqttHub not in classes:
                classes.append(MqttHub)
        return classes

    def _services(self) -> list[Resource]:
        """Daemon-level services configured by sections: event sources, the HTTP listener."""
        out: list[Resource] = []
        if self._config.section("sources"):
            from .sources import SourceRunner

            out.append(SourceRunner(self))
        if self._config.http is not None:
            from .http import HttpServer

            out.append(HttpServer(self))
        return out

    async def run(self) -> None:
        cfg = self._config
        state = cfg.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal = Journal(state / "journal.db", record_events=cfg.journal.events)
        async with journal, asyncio.TaskGroup() as tg:
            self._journal = journal
            self._tg = tg
            engine = Engine(self.rules, catalog=self.catalog, journal=journal, dry_run=self._dry_run,
                            vms=self._vm, labels=self._labels,
                            bus=None)
            engine.bus.per_vm = cfg.bus.per_vm
            engine.bus.total = cfg.bus.total
            self.engine = engine
            for cb in self._pending_subscribers:
                engine.subscribe(cb)
            windows = [r.throttle.within for r in self.rules.rules if r.throttle]
            if windows:
                engine.throttles.load(journal.load_throttle(time.time() - max(windows)))
            started: list[Resource] = []
            try:
                for cls in self._resource_classes():
                    res = cls(self)
                    started.append(res)
                    await res.start()
                    self.resources[cls] = res
                engine._resources.update(self.resources)
                for service in self._services():
                    started.append(service)
                    await service.start()
                fleet = Fleet(
                    make_event=self.catalog.make_event, on_event=engine.submit, on_state=self._on_state,
                    on_problem=self._on_problem,
                    vms=[(v.name, v.qmp, v.labels) for v in cfg.vms],
                    discover=[(d.glob, d.labels) for d in cfg.discover],
                    listen=cfg.listen, host=cfg.host,
                    connection={"command_timeout": cfg.qmp.command_timeout, "backoff_max": cfg.qmp.backoff_max},
                )
                self.fleet = fleet
                engine_task = tg.create_task(engine.run(grace=self.grace), name="reactor.engine")
                async with fleet:
                    fleet.check_rule_usage(rule_usage(self.rules))
                    log.info("reactor running: %d rules, %d VMs configured, %d discover globs, %d listen sockets%s",
                             len(self.rules), len(cfg.vms), len(cfg.discover), len(cfg.listen),
                             " (dry run)" if self._dry_run else "")
                    self.ready.set()
                    await self._stop.wait()
                    log.info("stopping: no new events; runs in flight get %gs", self.grace)
                    engine.stop()
                    await engine_task
            finally:
                for res in reversed(started):
                    try:
                        await res.aclose()
                    except Exception:
                        log.exception("closing %s failed", type(res).__name__)
                self._tg = None
        log.info("reactor stopped")

    def _vm(self, name: str) -> VMConnection | None:
        return self.fleet.get(name) if self.fleet is not None else None

    def _labels(self, name: str) -> Mapping[str, str]:
        vm = self._vm(name)
        return vm.labels if vm is not None else {}

    def _on_state(self, conn: VMConnection, state: VMState) -> None:
        log.debug("%s: %s", conn.name, state.name.lower())

    def _on_problem(self, conn: VMConnection, message: str) -> None:
        if self._journal is not None:
            self._journal.record_event("REACTOR_VM_PROBLEM", conn.name, self.host, time.time(),
                                       {"problem": message})


async def serve(daemon: Daemon, *, install_signals: bool = True) -> None:
    """Run ``daemon`` with SIGTERM/SIGINT handling (second signal: stop now)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: stopping gracefully (send it again to stop now)", sig.name)
            daemon.stop()
        elif main is not None:
            log.warning("received %s again: stopping now", sig.name)
            main.cancel()

    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await daemon.run()
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def run_daemon(config: Config, *, dry_run: bool = False) -> int:
    """The body of ``reactor run``: 0 after a clean stop."""
    async def main() -> None:
        daemon = Daemon(config, dry_run=dry_run)
        await serve(daemon)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        return 130
    _ = os
    return 0
