"""The daemon: ``reactor run -c CONFIG``.

One root TaskGroup owns everything: the journal's flusher, the resources
actions share (MQTT, HTTP sessions), the fleet of VM connections and the
engine.  SIGTERM/SIGINT stop it gracefully: no new events are taken, running
steps get ``grace`` seconds, the rest are cancelled (recorded), the journal
is flushed and closed.  A second signal stops at once.

SIGHUP, and files changing under the rules and plugins directories, reload
the rules (see :mod:`reactor.daemon.reload`): a candidate is loaded and checked off
to the side, then swapped in atomically, or rejected with every error logged
while the old rules stay in force; either way ``REACTOR_RULES_RELOADED``
(from the VM named ``reactor``) says what happened.  Under systemd
(``Type=notify``) the daemon reports READY, RELOADING, STOPPING and sends
watchdog keep-alives from its event loop (:mod:`reactor.ops.notify`); the
journal is pruned per ``journal.max_age``/``max_size`` in the background
(:mod:`reactor.ops.retention`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from reactor.actions.action import Resource, VMHandle
from reactor.daemon.config import Config
from reactor.daemon.reload import (
    Candidate,
    FileWatcher,
    ReloadResult,
    config_changes,
    fingerprint,
    load_config_rules,
    prepare,
    watched_paths,
)
from reactor.engine.bus import Bus
from reactor.engine.engine import Engine, tune_gc
from reactor.errors import JournalError, LoadError, ReactorError, StateError
from reactor.model.catalog import default_catalog
from reactor.model.event import Event
from reactor.ops.journal import Journal
from reactor.ops.looplag import LoopLag
from reactor.ops.notify import Notifier
from reactor.ops.retention import Retention
from reactor.rules.rule import RuleSet, Step
from reactor.sources.fleet import Fleet
from reactor.sources.libvirt.hub import LibvirtHub  # libvirt-python itself is imported only when it connects
from reactor.sources.qmp import VMConnection, VMState

__all__ = ["DAEMON_VM", "Daemon", "rule_commands", "rule_usage", "run_daemon", "serve", "startup_error"]

log = logging.getLogger("reactor.daemon.daemon")

#: The VM name of events about reactor itself (``REACTOR_RULES_RELOADED``).
DAEMON_VM = "reactor"


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
        for name in r.on or ():
            if name.startswith("REACTOR_") or name in rules.emitted:
                continue
            fields = used.setdefault(name, set())
            paths(r.match_source, fields)
        for step in r.steps:  # wait_for's event and match
            if step.action.events is None:
                continue
            names = _literal_arg(step, step.action.events[0])
            match = _literal_arg(step, step.action.events[1]) if step.action.events[1] else None
            for name in [names] if isinstance(names, str) else names if isinstance(names, list) else []:
                if isinstance(name, str) and not name.startswith("REACTOR_") and name not in rules.emitted:
                    paths(match, used.setdefault(name, set()))
    return used


def rule_commands(rules: RuleSet) -> set[str]:
    """The literal QMP commands the rules' steps send (for per-VM schema warnings)."""
    out: set[str] = set()
    for r in rules.rules:
        for step in r.steps:
            if step.action.command is not None:
                command = _literal_arg(step, step.action.command[0])
                if isinstance(command, str):
                    out.add(command)
    return out


def _literal_arg(step: Step, name: str | None) -> Any:
    """A step's argument when it is a literal (None when templated or absent)."""
    if name is None:
        return None
    if step.args.static is not None:
        return getattr(step.args.static, name, None)
    value = step.args.fields.get(name)
    return value if isinstance(value, (str, list, dict)) else None


class Daemon:
    """The running daemon; also the :class:`~reactor.actions.action.DaemonContext` resources get."""

    def __init__(self, config: Config, *, dry_run: bool = False, grace: float = 30.0,
                 notifier: Notifier | None = None, watch: bool = True, watch_interval: float = 1.0,
                 watch_debounce: float = 0.5, retention_interval: float = 60.0, tune_gc: bool = False) -> None:
        self._config = config
        self._dry_run = dry_run
        self.grace = grace
        self.notifier = notifier if notifier is not None else Notifier()
        #: event-loop lag (a plugin blocking the loop, a storm): exported as reactor_loop_* metrics
        self.looplag = LoopLag()
        self.watch = watch
        self.watch_interval = watch_interval
        self.watch_debounce = watch_debounce
        self.retention_interval = retention_interval
        self.tune_gc = tune_gc
        self.reloads = 0
        self.last_reload: ReloadResult | None = None
        self._reload_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        self.catalog = default_catalog()
        # taken before anything is read: a file edited between this load and the watcher's
        # start is a change the watcher sees
        self._loaded_files = fingerprint(watched_paths(config)) if watch else None
        self.registry, self.rules = load_config_rules(config, self.catalog)
        self._journal: Journal | None = None
        self.engine: Engine | None = None
        self.fleet: Fleet | None = None
        self.resources: dict[type[Resource], Resource] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._pending_subscribers: list[Callable[[Event], None]] = []
        self._started_resources: list[Resource] = []
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
        if self._journal is None:
            raise JournalError("the daemon has no journal (it is not running)")
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
            raise StateError("the daemon is not running")
        self._tg.create_task(coro, name=name)  # type: ignore[arg-type]

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _resource_classes(self, rules: RuleSet | None = None, config: Config | None = None) -> list[type[Resource]]:
        classes: list[type[Resource]] = []
        for r in (rules or self.rules).rules:
            for step in (s for top in r.steps for s in top.walk()):   # with nested steps (resume's probe)
                for cls in step.action.resources:
                    if cls not in classes:
                        classes.append(cls)
        if (config or self._config).mqtt:
            from reactor.integrations.mqtt import MqttHub

            if MqttHub not in classes:
                classes.append(MqttHub)
        if (config or self._config).section("fleet") is not None:
            from reactor.integrations.remote import FleetLink

            if FleetLink not in classes:
                classes.append(FleetLink)
        if (config or self._config).section("libvirt") and LibvirtHub not in classes:
            classes.append(LibvirtHub)
        return classes

    def _services(self) -> list[Resource]:
        """Daemon-level services configured by sections: event sources, the HTTP listener."""
        out: list[Resource] = []
        if self._config.section("sources"):
            from reactor.sources import SourceRunner

            out.append(SourceRunner(self))
        if self._config.http is not None:
            from reactor.ops.http import HttpServer

            out.append(HttpServer(self))
        return out

    async def run(self) -> None:
        cfg = self._config
        state = cfg.state_dir
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            raise JournalError(f"state_dir {state}: {reason}") from err
        journal = Journal(state / "journal.db", record_events=cfg.journal.events, max_pending=cfg.journal.max_pending)
        async with journal, asyncio.TaskGroup() as tg:
            self._journal = journal
            self._tg = tg
            engine = Engine(self.rules, catalog=self.catalog, journal=journal, dry_run=self._dry_run,
                            vms=self._vm, labels=self._labels,
                            bus=Bus(per_vm=cfg.bus.per_vm, total=cfg.bus.total))
            self.engine = engine
            for cb in self._pending_subscribers:
                engine.subscribe(cb)
            windows = [r.throttle.within for r in self.rules.rules if r.throttle]
            if windows:
                engine.throttles.load(journal.load_throttle(time.time() - max(windows)))
            engine.correlation.restore(journal.load_correlation(), time.time(),   # counts, pending matches
                                       [r.id for r in journal.runs(status="pending", limit=100_000, with_steps=False)])
            started: list[Resource] = []
            self._started_resources = started
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
                    make_event=self.catalog.make_event, on_event=cast(Callable[[Event], None], engine.submit),
                    on_state=self._on_state, on_problem=self._on_problem,
                    vms=[(v.name, v.qmp, v.labels) for v in cfg.vms],
                    discover=[(d.glob, d.labels) for d in cfg.discover],
                    listen=cfg.listen, host=cfg.host,
                    connection={"command_timeout": cfg.qmp.command_timeout, "backoff_max": cfg.qmp.backoff_max,
                                "shed": engine.bus.shed, "backpressure": engine.bus},
                )
                self.fleet = fleet
                engine_task = tg.create_task(engine.run(grace=self.grace), name="reactor.engine.engine")
                async with fleet:
                    fleet.check_rule_usage(rule_usage(self.rules), rule_commands(self.rules))
                    log.info("reactor running: %d rules, %d VMs configured, %d discover globs, %d listen sockets%s",
                             len(self.rules), len(cfg.vms), len(cfg.discover), len(cfg.listen),
                             " (dry run)" if self._dry_run else "")
                    self._start_background(tg, journal)
                    self._reloaded(ReloadResult(ok=True, reason="start", rules=len(self.rules)))
                    if self.tune_gc:
                        tune_gc()
                    self.ready.set()
                    self.notifier.ready(self._status())
                    await self._stop.wait()
                    log.info("stopping: no new events; runs in flight get %gs", self.grace)
                    self.notifier.stopping("stopping: finishing runs in flight")
                    self._stop_background(keep_watchdog=True)
                    engine.stop()
                    await engine_task
            finally:
                self._stop_background(keep_watchdog=False)
                for res in reversed(started):
                    try:
                        await res.aclose()
                    except Exception:
                        log.exception("closing %s failed", type(res).__name__)
                self._tg = None
                self.notifier.close()
        log.info("reactor stopped")

    def _status(self) -> str:
        vms = len(self.fleet) if self.fleet is not None else 0
        return f"{len(self.rules)} rules, {vms} VMs" + (" (dry run)" if self._dry_run else "")

    # -- background tasks -------------------------------------------------------------------
    def _start_background(self, tg: asyncio.TaskGroup, journal: Journal) -> None:
        self._background.append(tg.create_task(self.looplag.run(), name="reactor.ops.looplag"))
        if self.notifier.watchdog_interval is not None:
            self._background.append(tg.create_task(self.notifier.watchdog(), name="reactor.watchdog"))
        if self.watch:
            watcher = FileWatcher(lambda: watched_paths(self._config), lambda: self.reload("files changed"),
                                  interval=self.watch_interval, debounce=self.watch_debounce,
                                  baseline=self._loaded_files)
            self._background.append(tg.create_task(watcher.run(), name="reactor.watch"))
        retention = Retention(journal, lambda: self._config.journal, interval=self.retention_interval,
                              first=min(5.0, self.retention_interval))
        self._background.append(tg.create_task(retention.run(), name="reactor.ops.retention"))

    def _stop_background(self, *, keep_watchdog: bool) -> None:
        for task in list(self._background):
            if keep_watchdog and task.get_name() == "reactor.watchdog":
                continue
            task.cancel()
            self._background.remove(task)

    # -- reload -----------------------------------------------------------------------------
    def request_reload(self, reason: str = "SIGHUP") -> None:
        """Start a reload in the background (the SIGHUP handler); one at a time."""
        if self._tg is None or self._stop.is_set():
            return
        task = self._tg.create_task(self._reload_task(reason), name="reactor.daemon.reload")
        self._background.append(task)
        task.add_done_callback(self._forget)

    async def _reload_task(self, reason: str) -> None:
        await self.reload(reason)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if task in self._background:
            self._background.remove(task)

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Reload config, plugins and rules; the old rules stay when anything is wrong.

        Runs in flight finish under their rules; throttle state carries over for
        rule names that survive; VM connections stay up (except VMs whose own
        ``vms:`` entry changed).  Emits ``REACTOR_RULES_RELOADED``.
        """
        async with self._reload_lock:
            t0 = time.monotonic()
            self.notifier.reloading()
            try:
                result = await self._reload(reason)
            finally:
                self.notifier.ready(self._status())
            result = dataclasses.replace(result, seconds=time.monotonic() - t0)
            self._reloaded(result)
            return result

    async def _reload(self, reason: str) -> ReloadResult:
        log.info("reloading (%s)", reason)
        try:
            cand = await asyncio.to_thread(prepare, self._config, self.catalog)
        except LoadError as err:
            errors = tuple(str(e) for e in err.errors)
            for e in errors:
                log.error("reload: %s", e)
            log.error("reload failed with %d error%s: the %d rules loaded before stay in force",
                      len(errors), "s" if len(errors) != 1 else "", len(self.rules))
            return ReloadResult(ok=False, reason=reason, rules=len(self.rules), errors=errors)
        changes = config_changes(self._config, cand.config)
        for key in changes.restart:
            log.warning("reload: config %r changed: that needs a restart (`systemctl restart reactor`); "
                        "the running daemon keeps the old value", key)
        error = await self._start_resources(cand)
        if error is not None:
            log.error("reload: %s: the old rules stay in force", error)
            return ReloadResult(ok=False, reason=reason, rules=len(self.rules), errors=(error,),
                                restart_needed=changes.restart)
        await self._apply(cand, changes.live)
        log.info("reloaded: %d rules in force%s", len(cand.rules),
                 f"; applied config: {', '.join(changes.live)}" if changes.live else "")
        return ReloadResult(ok=True, reason=reason, rules=len(cand.rules), applied=changes.live,
                            restart_needed=changes.restart)

    async def _start_resources(self, cand: Candidate) -> str | None:
        started: list[Resource] = []
        for cls in self._resource_classes(cand.rules, cand.config):
            if cls in self.resources:
                continue
            res = cls(self)
            started.append(res)
            try:
                await res.start()
            except Exception as err:
                for r in reversed(started):
                    try:
                        await r.aclose()
                    except Exception:
                        log.exception("closing %s failed", type(r).__name__)
                return f"cannot start {cls.__name__}: {type(err).__name__}: {err}"
        for res in started:
            self.resources[type(res)] = res
            self._started_resources.append(res)
        if self.engine is not None:
            self.engine._resources.update(self.resources)
        return None

    async def _apply(self, cand: Candidate, live: tuple[str, ...]) -> None:
        old, new = self._config, cand.config
        # the swap itself: synchronous, so no event sees half of it
        self.registry = cand.registry
        self.rules = cand.rules
        if self.engine is not None:
            self.engine.set_rules(cand.rules)
        self._config = dataclasses.replace(
            old, rules=new.rules, plugins=new.plugins, origins=new.origins, vms=new.vms, journal=new.journal,
            log=dataclasses.replace(old.log, level=new.log.level))
        if self._journal is not None:
            self._journal.record_events = new.journal.events
        if "log.level" in live:
            logging.getLogger().setLevel(new.log.level.upper())
        if self.fleet is not None:
            self.fleet.check_rule_usage(rule_usage(cand.rules), rule_commands(cand.rules))
            if "vms" in live:
                await self._apply_vms(old, new)
        if self.tune_gc:
            gc.freeze()

    async def _apply_vms(self, old: Config, new: Config) -> None:
        assert self.fleet is not None
        before = {v.name: v for v in old.vms}
        after = {v.name: v for v in new.vms}
        for name, vm in before.items():
            if after.get(name) != vm:
                log.info("reload: %s %s", name, "changed: reconnecting" if name in after else "removed")
                await self.fleet.remove(name)
        for name, vm in after.items():
            if before.get(name) != vm and name not in self.fleet:
                self.fleet.add(name, vm.qmp, vm.labels)

    def _reloaded(self, result: ReloadResult) -> None:
        self.last_reload = result
        if result.reason != "start":
            self.reloads += 1
        if self.engine is not None:
            data: dict[str, Any] = {"ok": result.ok, "errors": list(result.errors), "rules": result.rules}
            self.engine.emit("REACTOR_RULES_RELOADED", data, vm=DAEMON_VM, host=self.host)

    def _vm(self, name: str) -> VMHandle | None:
        """A VM by name: a QMP connection, else a libvirt domain (a QMP VM wins a name clash)."""
        vm: VMHandle | None = self.fleet.get(name) if self.fleet is not None else None
        if vm is None:
            hub = self.resources.get(LibvirtHub)
            if isinstance(hub, LibvirtHub):
                vm = hub.get(name)
        if vm is None and "/" in name:  # HOST/VM: a VM on another host (fleet mode)
            from reactor.integrations.remote import FleetLink

            link = self.resources.get(FleetLink)
            if isinstance(link, FleetLink):
                vm = link.vm(name)
        return vm

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
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload, "SIGHUP")
    try:
        await daemon.run()
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)


def _raise_nofile() -> None:
    """Three descriptors per VM (its monitor socket and the relay's socketpair, reactor.sources.qmp): raise the
    soft open-file limit to the hard one (1,024 is common; 1,000 VMs need ~3,000)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d: %s", soft, err)


def run_daemon(config: Config, *, dry_run: bool = False, watch: bool = True) -> int:
    """The body of ``reactor run``: 0 after a clean stop."""
    from reactor.engine.engine import abandoned_actions

    _raise_nofile()

    async def main() -> None:
        daemon = Daemon(config, dry_run=dry_run, watch=watch, tune_gc=True)
        await serve(daemon)
        stuck = abandoned_actions()
        if stuck:
            # the journal is closed and everything else stopped; waiting for actions that ignore
            # cancellation would hang the exit forever
            log.error("exiting with %d abandoned action(s) still running: %s", len(stuck),
                      ", ".join(t.get_name() for t in stuck))
            logging.shutdown()
            os._exit(0)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        return 130
    except BaseExceptionGroup as group:
        err = startup_error(group)
        if err is None:
            raise   # a bug: keep its traceback
        raise err from group
    return 0


def startup_error(group: BaseExceptionGroup[BaseException]) -> ReactorError | None:
    """The error to report in one line when the daemon's task group failed, or None for a bug.

    A port in use, an unreadable journal, a socket path that cannot be bound: the
    daemon stops and ``reactor run`` prints ``reactor: http.listen 127.0.0.1:9187:
    address already in use``, not a traceback.  Only when every failure is a
    :class:`ReactorError` or an :class:`OSError` (the first one is reported).
    """
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            elif not isinstance(e, asyncio.CancelledError):
                leaves.append(e)

    walk(group)
    if not leaves or not all(isinstance(e, (ReactorError, OSError)) for e in leaves):
        return None
    first = leaves[0]
    return first if isinstance(first, ReactorError) else ReactorError(str(first))
