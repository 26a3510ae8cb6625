"""The public API is deliberate: sorted ``__all__`` lists whose names all exist."""

from __future__ import annotations

import importlib

import pytest

import reactor

PUBLIC_MODULES = ["reactor", "reactor.errors", "reactor.model.event", "reactor.actions.action", "reactor.model.catalog"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is exported but missing"


def test_top_level_api() -> None:
    assert set(reactor.__all__) == {
        "ActionError", "Catalog", "CatalogError", "Config", "ConfigError", "Engine", "Event", "EventError",
        "JournalError", "LoadError", "PluginError", "Position", "QMPCommandError", "QMPConnectionError",
        "ReactorError", "ReactorTimeoutError", "Rule", "RuleError", "RuleSet", "SourceError", "TemplateError",
        "__version__", "VMCommandError", "VMConnectionError", "default_catalog", "load_config", "load_rules",
        "load_rules_text", "parse_config",
    }


def test_every_error_is_a_reactor_error() -> None:
    import reactor.errors as errors

    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.ReactorError), name
