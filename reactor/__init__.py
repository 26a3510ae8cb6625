"""reactor: react to QEMU QMP events with declarative YAML rules and pluggable actions.

The public API for embedding reactor; plugin authors use :mod:`reactor.plugin`
and tests use :mod:`reactor.testing`.
"""

from typing import TYPE_CHECKING, Any

from reactor.version import __version__

if TYPE_CHECKING:
    from reactor.daemon.config import Config, load_config, parse_config
    from reactor.engine.engine import Engine
    from reactor.errors import (
        ActionError,
        CatalogError,
        ConfigError,
        EventError,
        JournalError,
        LoadError,
        PluginError,
        Position,
        QMPCommandError,
        QMPConnectionError,
        ReactorError,
        ReactorTimeoutError,
        RuleError,
        SourceError,
        TemplateError,
        VMCommandError,
        VMConnectionError,
    )
    from reactor.model.catalog import Catalog, default_catalog
    from reactor.model.event import Event
    from reactor.rules.loader import load_rules, load_rules_text
    from reactor.rules.rule import Rule, RuleSet

#: where each public name lives: imported on first use (PEP 562), so that ``import reactor.cli``
#: (``reactor --help``, ``reactor check``) loads only what the command needs
_LAZY: dict[str, str] = {
    **dict.fromkeys(("Config", "load_config", "parse_config"), "reactor.daemon.config"),
    "Engine": "reactor.engine.engine",
    **dict.fromkeys(("ActionError", "CatalogError", "ConfigError", "EventError", "JournalError", "LoadError",
                     "PluginError", "Position", "QMPCommandError", "QMPConnectionError", "ReactorError",
                     "ReactorTimeoutError", "RuleError", "SourceError", "TemplateError", "VMCommandError",
                     "VMConnectionError"), "reactor.errors"),
    **dict.fromkeys(("Catalog", "default_catalog"), "reactor.model.catalog"),
    "Event": "reactor.model.event",
    **dict.fromkeys(("load_rules", "load_rules_text"), "reactor.rules.loader"),
    **dict.fromkeys(("Rule", "RuleSet"), "reactor.rules.rule"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reactor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value



__all__ = [
    "ActionError",
    "Catalog",
    "CatalogError",
    "Config",
    "ConfigError",
    "Engine",
    "Event",
    "EventError",
    "JournalError",
    "LoadError",
    "PluginError",
    "Position",
    "QMPCommandError",
    "QMPConnectionError",
    "ReactorError",
    "ReactorTimeoutError",
    "Rule",
    "RuleError",
    "RuleSet",
    "SourceError",
    "TemplateError",
    "VMCommandError",
    "VMConnectionError",
    "__version__",
    "default_catalog",
    "load_config",
    "load_rules",
    "load_rules_text",
    "parse_config",
]
