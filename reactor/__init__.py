"""reactor: react to QEMU QMP events with declarative YAML rules and pluggable actions.

The public API for embedding reactor; plugin authors use :mod:`reactor.plugin`
and tests use :mod:`reactor.testing`.
"""

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
from reactor.version import __version__

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
