"""Hot reload: what changed on disk, a candidate built and checked off to the side, what a config change needs.

A reload (SIGHUP, or files changing under the rules and plugins directories)
goes in three steps, driven by :meth:`reactor.daemon.daemon.Daemon.reload`:

1. :func:`prepare` — in a worker thread, re-read the config file (if any),
   re-import the plugin directories into a fresh registry and load every rule
   file.  Nothing the daemon uses is touched; any error (``LoadError`` with
   every ``PATH:LINE:COL``, a plugin that fails to import) ends the reload
   here and the old rules stay in force.
2. :func:`config_changes` — which config changes apply live (``rules``,
   ``plugins``, ``vms``, ``log.level``, ``journal``) and which need a
   restart (said so in the log and in the result, never silently ignored).
3. The daemon swaps the rule set atomically (``Engine.set_rules``): runs in
   flight finish under the rules they started with, throttle state carries
   over for rule names that survive, correlation state (counts, pending
   ``unless`` matches) for rules whose ``after``/``count``/``unless`` did not
   change (the rest is dropped, journaled: :mod:`reactor.engine.correlation`),
   and VM connections are not touched.

:class:`FileWatcher` polls modification times (every ``interval`` seconds;
a change must then hold still for ``debounce`` seconds, so an editor's
save-rename or a ``git checkout`` produces one reload).  Polling costs one
``stat`` per file per second, works on every file system (NFS, bind mounts,
ConfigMaps whose symlinks are swapped) and needs no dependency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reactor.actions.registry import Registry
from reactor.daemon.config import Config, load_config
from reactor.daemon.plugins import load_registry
from reactor.errors import ConfigError, LoadError, PluginError, RuleError
from reactor.integrations.mqtt import broker_errors
from reactor.model.catalog import Catalog
from reactor.rules.loader import load_rules
from reactor.rules.rule import RuleSet

__all__ = ["Candidate", "ConfigChanges", "FileWatcher", "ReloadResult", "config_broker_errors", "config_changes",
           "fingerprint", "load_config_rules", "prepare", "watched_paths"]

log = logging.getLogger(__name__)

Fingerprint = dict[str, tuple[int, int]]

#: Config fields a reload applies; every other changed field needs a restart.
LIVE_FIELDS = frozenset(["rules", "plugins", "vms", "log.level", "journal"])


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did (also the data of ``REACTOR_RULES_RELOADED``)."""

    ok: bool
    reason: str
    rules: int
    errors: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A config, registry and rule set, fully loaded and checked, not yet in force."""

    config: Config
    registry: Registry
    rules: RuleSet


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    live: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()


def watched_paths(config: Config) -> list[Path]:
    """The rules and plugins directories (or files), and the config file."""
    out = list(config.rules) + list(config.plugins)
    if config.path is not None:
        out.append(config.path)
    return out


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """``path -> (mtime_ns, size)`` of every rule file, plugin module and config file under ``paths``."""
    out: Fingerprint = {}

    def add(f: str) -> None:
        try:
            st = os.stat(f)
        except OSError:
            return
        out[f] = (st.st_mtime_ns, st.st_size)

    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if name.endswith((".yaml", ".yml", ".py")) and not name.startswith("."):
                        add(os.path.join(root, name))
        else:
            add(str(p))
    return out


def prepare(config: Config, catalog: Catalog, *, reread_config: bool = True) -> Candidate:
    """Load config, plugins and rules afresh (blocking: run it in a thread).

    Raises :class:`LoadError` listing every problem; a plugin that fails to
    load becomes one error of the list.
    """
    if reread_config and config.path is not None:
        config = load_config(config.path)
    try:
        registry, rules = load_config_rules(config, catalog)
    except PluginError as err:
        raise LoadError([ConfigError(None, str(err))]) from err
    return Candidate(config=config, registry=registry, rules=rules)


def load_config_rules(config: Config, catalog: Catalog | None = None) -> tuple[Registry, RuleSet]:
    """The plugins (``config.plugins``) into a registry, then the rules (``config.rules``) with it.

    A ``rules:`` or ``plugins:`` path the config names that is not there is an error at its
    ``PATH:LINE:COL`` in the config file (with the errors of the rule files that are there).
    Raises :class:`LoadError` (:class:`~reactor.errors.PluginLoadError` when a plugin fails).
    """
    missing = config.missing("plugins")
    if missing:   # the rules would only add "unknown action" for that plugin's actions
        raise LoadError(missing)
    registry = load_registry(config.plugins)
    missing = config.missing("rules")
    # the loader reports the rest (the default rules/ next to the config, if that is not there)
    present = [p for p in config.rules if p.exists() or ("rules", p) not in config.origins]
    try:
        rules = load_rules(present, catalog=catalog, registry=registry)
    except LoadError as err:
        raise LoadError(missing + list(err.errors)) from err
    brokers = config_broker_errors(config, rules)
    if missing or brokers:
        raise LoadError(missing + list(brokers))
    return registry, rules


def config_broker_errors(config: Config, rules: RuleSet) -> list[RuleError]:
    """The mqtt steps of ``rules`` that name a broker ``config`` does not configure (or any, when it has none)."""
    which = f"the config {config.path}" if config.path is not None else "the config"
    errors, _ = broker_errors(rules.rules, list(config.mqtt), none=f"{which} has no mqtt: section")
    return errors


def _flat(config: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        if not f.compare:   # origins: where things were written, not a setting
            continue
        value = getattr(config, f.name)
        if f.name in ("log", "journal", "qmp", "bus", "http") and dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                out[f"{f.name}.{sub.name}"] = getattr(value, sub.name)
        elif f.name == "sections":
            for name, section in dict(value).items():
                out[name] = section
        elif f.name != "path":
            out[f.name] = value
    return out


def config_changes(old: Config, new: Config) -> ConfigChanges:
    """Which settings differ, split into those a reload applies and those that need a restart."""
    a, b = _flat(old), _flat(new)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    live = [k for k in changed if k in LIVE_FIELDS or k.split(".")[0] in LIVE_FIELDS]
    return ConfigChanges(live=tuple(live), restart=tuple(k for k in changed if k not in live))


class FileWatcher:
    """Calls ``on_change`` when files under ``paths()`` change (polled, debounced).

    ``baseline`` is the fingerprint of what was loaded, taken before loading; without it
    the first scan is the baseline (a change made before that scan goes unseen).
    """

    def __init__(self, paths: Callable[[], Iterable[Path]], on_change: Callable[[], Awaitable[object]], *,
                 interval: float = 1.0, debounce: float = 0.5, baseline: Fingerprint | None = None) -> None:
        self._paths = paths
        self._baseline = baseline
        self._on_change = on_change
        self.interval = interval
        self.debounce = debounce
        self.changes = 0

    async def _scan(self) -> Fingerprint:
        return await asyncio.to_thread(fingerprint, list(self._paths()))

    async def run(self) -> None:
        """Watch until cancelled."""
        seen = self._baseline if self._baseline is not None else await self._scan()
        while True:
            await asyncio.sleep(self.interval)
            now = await self._scan()
            if now == seen:
                continue
            while True:  # wait until the files hold still
                await asyncio.sleep(self.debounce)
                later = await self._scan()
                if later == now:
                    break
                now = later
            changed = sorted(set(now.items()) ^ set(seen.items()))
            log.info("rule files changed (%s%s): reloading", changed[0][0],
                     f" and {len({p for p, _ in changed}) - 1} more" if len({p for p, _ in changed}) > 1 else "")
            seen = now
            self.changes += 1
            # `seen` stays what this reload read: a file deleted or written while it ran is
            # a change on the next poll, and reloads again
            await self._on_change()
