"""JSON Schemas for rule files and the config, generated from the definitions the loaders use.

The rule schema is built from :data:`reactor.rules.loader.RULE_KEYS`,
``STEP_KEYS`` and ``MODES``, :data:`reactor.rules.matcher.OPERATORS`, the event
catalog (event names for ``on``; per event, the field paths of ``match``
with their types and enum values) and the action registry (each action's
argument dataclass); the config schema from :data:`reactor.daemon.config.TOP_KEYS`
and the config dataclasses.  A key the loader knows but this module does not
describe is an error at generation (so a test catches the drift).

The generated files ship in the package (``reactor/schemas/*.schema.json``)
for editors running yaml-language-server::

    # yaml-language-server: $schema=/usr/lib/python3/dist-packages/reactor/schemas/rules.schema.json

``reactor schema rules -c CONFIG`` prints one that also knows the config's
plugins; ``python -m reactor.schemas.generate`` rewrites the shipped files.

The schema helps while typing; the loader stays the judge (it checks
templates, expressions, durations' ranges, rule-name uniqueness, paths in
emitted events, all with ``PATH:LINE:COL``).  Event names outside the
catalog are allowed by the schema (rules may ``emit`` their own), and so
are templates (``"{{ ... }}"``) wherever an argument takes a number or a
boolean.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from reactor.actions.action import ActionSpec, Duration, Steps
from reactor.actions.registry import Registry, builtin_registry
from reactor.daemon.config import TOP_KEYS
from reactor.model.catalog import Catalog, default_catalog
from reactor.model.catalog.schema import TypeSpec
from reactor.rules.loader import MODES, RULE_KEYS, STEP_KEYS
from reactor.rules.matcher import OPERATORS

__all__ = ["SCHEMA_DIR", "config_schema", "rules_schema", "write_schemas"]

#: Where the shipped schemas live (package data).
SCHEMA_DIR = Path(__file__).parent

_DRAFT = "http://json-schema.org/draft-07/schema#"
_DURATION = {
    "description": "A duration: 500ms, 5s, 10m, 1h, 1d, or a number of seconds.",
    "anyOf": [{"type": "number", "minimum": 0},
              {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$"}],
}
_TEMPLATE = {"type": "string", "pattern": r"\{\{", "description": "A template, rendered per run."}
_EXPRESSION = {"type": "string", "description": "A Jinja2 expression (names: event, vm, rule, now, vars)."}
_NAME = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]*$"}
_DEPTH = 3


# -- types of action arguments ------------------------------------------------------------

def type_schema(hint: Any, *, templates: bool = True) -> dict[str, Any]:
    """The JSON Schema of a value of type ``hint`` (an action argument)."""
    if hint is Steps:   # nested steps, as in a rule's `actions` (never a template)
        return {"type": "array", "items": {"$ref": "#/definitions/step"}}
    if hint is Duration:
        base: dict[str, Any] = {"$ref": "#/definitions/duration"}
    elif hint in (Any, object):
        return {}
    elif hint is type(None):
        return {"type": "null"}
    elif hint is str:
        return {"type": "string"}
    elif hint is bool:
        base = {"type": "boolean"}
    elif hint is int:
        base = {"type": "integer"}
    elif hint is float:
        base = {"type": "number"}
    else:
        origin = get_origin(hint)
        if origin is Literal:
            base = {"enum": list(get_args(hint))}
        elif origin in (Union, types.UnionType):
            return {"anyOf": [type_schema(a, templates=templates) for a in get_args(hint)]}
        elif origin in (list, tuple, typing.Sequence):
            args = get_args(hint)
            base = {"type": "array", "items": type_schema(args[0], templates=templates) if args else {}}
        elif origin in (dict, Mapping, typing.Mapping):
            args = get_args(hint)
            base = {"type": "object",
                    "additionalProperties": type_schema(args[1], templates=templates) if len(args) == 2 else {}}
        elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
            base = _dataclass_schema(hint, templates=templates)
        else:
            return {}
    if templates:
        return {"anyOf": [base, {"$ref": "#/definitions/template"}]}
    return base


def _dataclass_schema(cls: type, *, templates: bool) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        props[f.name] = type_schema(hints.get(f.name, Any), templates=templates)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def action_schema(spec: ActionSpec) -> dict[str, Any]:
    """The schema of the value under an action's key (its arguments, or the shorthand scalar)."""
    args = _dataclass_schema(spec.args, templates=True)
    doc = spec.doc.strip().splitlines()[0] if spec.doc.strip() else f"the {spec.name} action"
    if spec.shorthand is not None:
        short = type_schema(spec.hints[spec.shorthand], templates=True)
        return {"description": doc, "anyOf": [short, args]}
    return {"description": doc, **args}


# -- match --------------------------------------------------------------------------------

def _literal(t: TypeSpec | None) -> dict[str, Any]:
    if t is None:
        return {}
    if t.kind == "enum":
        return {"enum": list(t.values)}
    simple = {"str": "string", "int": "integer", "number": "number", "bool": "boolean", "null": "null"}
    if t.kind in simple:
        return {"type": simple[t.kind]}
    if t.kind == "alternate":
        return {"anyOf": [_literal(c) for c in t.choices]}
    return {}


_ORDERED = {"anyOf": [{"type": "number"}, {"type": "string"}]}


def _operators(lit: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {
        "eq": lit, "ne": lit, "in": {"type": "array", "items": lit}, "not_in": {"type": "array", "items": lit},
        "lt": _ORDERED, "le": _ORDERED, "gt": _ORDERED, "ge": _ORDERED,
        "regex": {"type": "string"}, "glob": {"type": "string"}, "contains": {}, "exists": {"type": "boolean"},
    }
    missing = set(OPERATORS) - set(table)
    if missing:
        raise KeyError(f"match operators without a schema: {sorted(missing)}")
    return {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
            "properties": {op: table[op] for op in OPERATORS}}


def match_value(t: TypeSpec | None) -> dict[str, Any]:
    """What a ``match`` entry for a field of type ``t`` may be: a literal, a list of them, one operator."""
    lit = _literal(t)
    return {"anyOf": [lit, {"type": "array", "items": lit}, _operators(lit)] if lit else [{}]}


def _value_ref(t: TypeSpec, defs: dict[str, Any]) -> dict[str, Any]:
    """A reference to a shared definition of :func:`match_value` for ``t`` (one per literal kind / enum)."""
    lit = _literal(t)
    if not lit:
        return {}
    if t.kind == "enum":
        key = f"value.enum.{t.name or '-'.join(t.values)}"
    elif t.kind == "alternate":
        key = "value.alternate." + "-".join(sorted(str(c) for c in t.choices))
    else:
        key = f"value.{lit['type']}"
    if key not in defs:
        defs[key] = match_value(t)
    return {"$ref": f"#/definitions/{key}"}


def _paths(fields: Mapping[str, Any], prefix: str, depth: int, out: dict[str, TypeSpec]) -> None:
    for name, f in fields.items():
        path = prefix + name
        out[path] = f.type
        if depth > 1 and f.type.kind == "object" and f.type.fields:
            _paths(f.type.fields, path + ".", depth - 1, out)


def _match_schema(ref: str, props: dict[str, Any], *, closed: bool) -> dict[str, Any]:
    combine = {"$ref": f"#/definitions/{ref}"}
    props = dict(props)
    props["any"] = {"type": "array", "items": combine, "description": "at least one holds"}
    props["all"] = {"type": "array", "items": combine, "description": "every one holds"}
    props["not"] = {"anyOf": [combine, {"type": "array", "items": combine}], "description": "none holds"}
    out: dict[str, Any] = {"type": "object", "properties": props}
    out["additionalProperties"] = False if closed else match_value(None)
    return out


# -- rule files ---------------------------------------------------------------------------

def _rule_keys(events: dict[str, Any]) -> dict[str, Any]:
    one_or_more = {"anyOf": [{"$ref": "#/definitions/eventName"},
                             {"type": "array", "items": {"$ref": "#/definitions/eventName"}, "minItems": 1}]}
    globs = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    key = {"type": "string", "pattern": r"^(vm|host|data\..+)$"}
    event_keys = {"anyOf": [key, {"type": "array", "items": key}]}
    return {
        "name": {**_NAME, "description": "Unique across all files: lower case letters, digits, _ . -"},
        "description": {"type": "string"},
        "on": {"description": "One event name, a list of names, or \"*\" (every event).",
               "anyOf": [{"const": "*"}, one_or_more]},
        "vms": {"description": "VM name globs, or {names, labels} (all must hold).",
                "anyOf": [globs, {"type": "object", "additionalProperties": False,
                                  "properties": {"names": globs,
                                                 "labels": {"type": "object",
                                                            "additionalProperties": {"type": ["string", "number",
                                                                                              "boolean"]}}}}]},
        "match": {"description": "Tests on the event's data fields (all must hold).",
                  "anyOf": [{"$ref": "#/definitions/match"}, {"type": "null"}]},
        "if": {**_EXPRESSION, "description": "A boolean expression; the rule matches only when it is true."},
        "throttle": {"type": "object", "additionalProperties": False, "required": ["max", "within"],
                     "description": "At most `max` runs per key within a sliding window.",
                     "properties": {"max": {"type": "integer", "minimum": 1},
                                    "within": {"$ref": "#/definitions/duration"},
                                    "per": event_keys}},
        "threshold": {"type": "object", "additionalProperties": False, "required": ["count", "within"],
                      "description": "Run once `count` distinct matches (by `distinct`, default host and VM) fell "
                                     "within a sliding window (an extension of the rule language).",
                      "properties": {"count": {"type": "integer", "minimum": 1},
                                     "within": {"$ref": "#/definitions/duration"},
                                     "distinct": event_keys, "per": event_keys}},
        "after": {"type": "object", "additionalProperties": False, "required": ["event", "within"],
                  "description": "Sequence: match only if an `event` (satisfying `match`) of the same key came "
                                 "within `within` before the trigger; the run sees it as vars.after.",
                  "properties": {"event": one_or_more, "match": {"$ref": "#/definitions/match"},
                                 "within": {"$ref": "#/definitions/duration"}, "per": event_keys}},
        "count": {"type": "object", "additionalProperties": False, "required": ["min", "within"],
                  "description": "Run on the `min`-th match of the same key within a sliding `within` (repeats "
                                 "count), then count from zero; the run sees vars.count {n, first, events}.",
                  "properties": {"min": {"type": "integer", "minimum": 1},
                                 "within": {"$ref": "#/definitions/duration"}, "per": event_keys}},
        "unless": {"type": "object", "additionalProperties": False, "required": ["event", "within"],
                   "description": "Absence: hold the match pending; an `event` (satisfying `match`) of the same "
                                  "key within `within` cancels it, else the run starts when `within` has passed.",
                   "properties": {"event": one_or_more, "match": {"$ref": "#/definitions/match"},
                                  "within": {"$ref": "#/definitions/duration"}, "per": event_keys}},
        "mode": {"enum": list(MODES), "default": "single",
                 "description": "What a new match does while a run for the same VM is in progress."},
        "max_queued": {"type": "integer", "minimum": 1, "default": 10},
        "max_parallel": {"type": "integer", "minimum": 1, "default": 10},
        "enabled": {"type": "boolean", "default": True},
        "actions": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/step"},
                    "description": "The steps, in order."},
    }


def _step_keys() -> dict[str, Any]:
    return {
        "timeout": {"$ref": "#/definitions/duration"},
        "retry": {"type": "object", "additionalProperties": False,
                  "properties": {"attempts": {"type": "integer", "minimum": 1},
                                 "backoff": {"$ref": "#/definitions/duration"},
                                 "max_backoff": {"$ref": "#/definitions/duration"}}},
        "on_error": {"enum": ["stop", "continue"], "default": "stop"},
        "register": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
        "when": {**_EXPRESSION, "description": "Skip the step unless this expression is true."},
    }


def _described(keys: dict[str, Any], wanted: tuple[str, ...], what: str) -> dict[str, Any]:
    missing = [k for k in wanted if k not in keys]
    extra = [k for k in keys if k not in wanted]
    if missing or extra:
        raise KeyError(f"{what}: schema and loader disagree: missing {missing}, unknown {extra}")
    return {k: keys[k] for k in wanted}


def rules_schema(*, catalog: Catalog | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a rule file."""
    catalog = catalog if catalog is not None else default_catalog()
    registry = registry or builtin_registry()
    defs: dict[str, Any] = {"duration": _DURATION, "template": _TEMPLATE}
    names = catalog.names()
    defs["eventName"] = {"anyOf": [{"enum": names}, {"type": "string", "pattern": r"^[A-Z][A-Z0-9_]*$"}],
                         "description": "An event of the catalog (`reactor events`), or one a rule emits."}
    defs["match"] = _match_schema("match", {}, closed=False)
    conditional = []
    for name in names:
        schema = catalog.get(name)
        assert schema is not None
        paths: dict[str, TypeSpec] = {}
        _paths(schema.fields, "", _DEPTH, paths)
        props = {p: {"allOf": [_value_ref(t, defs)], "description": str(t)} for p, t in paths.items()}
        ref = f"match.{name}"
        defs[ref] = _match_schema(ref, props, closed=True)
        conditional.append({"if": {"required": ["on"], "properties": {"on": {"const": name}}},
                            "then": {"properties": {"match": {"anyOf": [{"$ref": f"#/definitions/{ref}"},
                                                                        {"type": "null"}]}}}})
    steps = []
    step_keys = _described(_step_keys(), STEP_KEYS, "step keys")
    for spec in registry:
        if spec.name in step_keys:
            raise KeyError(f"action {spec.name!r} has the name of a step key")
        defs[f"action.{spec.name}"] = action_schema(spec)
        steps.append({"type": "object", "required": [spec.name], "additionalProperties": False,
                      "properties": {spec.name: {"$ref": f"#/definitions/action.{spec.name}"}, **step_keys}})
    defs["step"] = {"oneOf": steps, "description": "One action key plus optional common keys."}
    defs["rule"] = {"type": "object", "additionalProperties": False, "required": ["name", "on", "actions"],
                    "properties": _described(_rule_keys({}), RULE_KEYS, "rule keys"), "allOf": conditional}
    return {
        "$schema": _DRAFT,
        "$id": "https://reactor.invalid/schemas/rules.schema.json",
        "title": "reactor rule file",
        "description": "A mapping with one key, rules: a list of rules. See RULES.md.",
        "type": "object",
        "additionalProperties": False,
        "required": ["rules"],
        "properties": {"rules": {"anyOf": [{"type": "array", "items": {"$ref": "#/definitions/rule"}},
                                           {"type": "null"}]}},
        "definitions": defs,
    }


# -- the config ---------------------------------------------------------------------------

def _config_keys() -> dict[str, Any]:
    paths = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    labels = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    address = {"type": "string", "description": "A unix socket path, or HOST:PORT."}
    choice = {"level": {"enum": ["debug", "info", "warning", "error"], "default": "info"},
              "format": {"enum": ["text", "json"], "default": "text",
                         "description": "json: one JSON object per line, with rule/VM/run ids."}}
    size = {"anyOf": [{"type": "integer", "minimum": 1},
                      {"type": "string", "pattern": r"^\s*\d+\s*([KMGkmg]i?[Bb]?|[Bb])?\s*$"}]}
    strings = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    qos = {"type": "integer", "minimum": 0, "maximum": 2}
    topic = {"type": "object", "additionalProperties": False, "required": ["topic"],
             "properties": {"topic": {"type": "string"}, "qos": qos}}
    broker = {"type": "object", "additionalProperties": False, "properties": {
        "host": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "client_id": {"type": "string"}, "username": {"type": "string"},
        "password": {"type": "string"}, "password_file": {"type": "string"},
        "tls": {"anyOf": [{"type": "boolean"}, {"type": "object", "additionalProperties": False, "properties": {
            "ca_file": {"type": "string"}, "cert_file": {"type": "string"}, "key_file": {"type": "string"},
            "verify": {"type": "boolean"}}}]},
        "keepalive": {"type": "integer", "minimum": 5, "maximum": 65535},
        "protocol": {"enum": ["3.1.1", "5", "5.0", 5]},
        "publish_events": {"anyOf": [{"type": "boolean"}, {
            "type": "object", "additionalProperties": False, "properties": {
                "prefix": {"type": "string"}, "events": strings, "vms": strings, "qos": qos,
                "homeassistant": {"anyOf": [{"type": "boolean"}, {
                    "type": "object", "additionalProperties": False, "description": "Home Assistant MQTT discovery",
                    "properties": {"prefix": {"type": "string", "default": "homeassistant"},
                                   "buttons": strings}}]}}}]},
        "subscribe": {"anyOf": [{"type": "string"}, topic,
                                {"type": "array", "items": {"anyOf": [{"type": "string"}, topic]}}]},
        "prefix": {"type": "string"},
        "outbox": {"type": "object", "additionalProperties": False, "properties": {
            "max": {"type": "integer", "minimum": 1}, "policy": {"enum": ["drop-oldest", "drop-new"]}}}}}
    libvirt = {"type": "object", "additionalProperties": False, "properties": {
        "uri": {"type": "string", "default": "qemu:///system"}, "domains": strings, "labels": labels}}
    return {
        "rules": {**paths, "description": "Rules directories (relative to this file)."},
        "plugins": {**paths, "description": "Directories of plugin modules."},
        "state_dir": {"type": "string", "description": "Journal and state; default ./state next to this file."},
        "host": {"type": "string"},
        "vms": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                           "required": ["name", "qmp"],
                                           "properties": {"name": {"type": "string"}, "qmp": address,
                                                          "labels": labels}}},
        "discover": {"type": "array", "items": {"anyOf": [
            {"type": "string"},
            {"type": "object", "additionalProperties": False, "required": ["glob"],
             "properties": {"glob": {"type": "string"}, "labels": labels}}]}},
        "listen": {"anyOf": [address, {"type": "array", "items": address}]},
        "mqtt": {"type": "object", "additionalProperties": broker, "minProperties": 1,
                 "description": "Named brokers; the first is the default."},
        "http": {"type": "object", "additionalProperties": False,
                 "properties": {"listen": {"type": "string", "default": "127.0.0.1:9187"},
                                "token": {"type": "string"}}},
        "log": {"type": "object", "additionalProperties": False, "properties": choice},
        "journal": {"type": "object", "additionalProperties": False, "properties": {
            "events": {"enum": ["all", "matched", "none"], "default": "matched"},
            "max_age": {"$ref": "#/definitions/duration"},
            "max_size": {**size, "description": "e.g. 500MB, 2GiB"},
            "max_pending": {"type": "integer", "minimum": 1, "default": 200000,
                            "description": "Rows kept in memory while the journal cannot write; past that "
                                           "new rows are dropped and counted."}}},
        "sources": {"type": "array", "items": {"type": "object", "minProperties": 1, "maxProperties": 1},
                    "description": "Event sources other than QMP, each `- SOURCE: {config}` (docs/plugins.md)."},
        "qmp": {"type": "object", "additionalProperties": False, "properties": {
            "command_timeout": {"$ref": "#/definitions/duration"},
            "backoff_max": {"$ref": "#/definitions/duration"},
            "deny": {**strings, "description": "Command globs no rule may send."},
            "allow": {"type": "object", "additionalProperties": strings,
                      "description": "RULE-GLOB: [COMMAND-GLOB...]: what the matching rules may send."}}},
        "fleet": {"type": "object", "additionalProperties": False, "properties": {
            "broker": {"type": "string"}, "prefix": {"type": "string"}, "events": {"type": "boolean"},
            "commands": {"anyOf": [{"type": "boolean"}, {"type": "object", "additionalProperties": False,
                                                         "properties": {"allow": strings,
                                                                        "read_only": {"type": "boolean"}}}]},
            "dedupe": {"type": "integer", "minimum": 1}, "client_id": {"type": "string"}},
            "description": "Fleet mode over MQTT (docs/fleet.md)."},
        "libvirt": {"anyOf": [libvirt, {"type": "array", "items": libvirt}],
                    "description": "libvirt connections and the domains watched through them (docs/libvirt.md)."},
        "bus": {"type": "object", "additionalProperties": False, "properties": {
            "per_vm": {"type": "integer", "minimum": 1}, "total": {"type": "integer", "minimum": 1}}},
    }


def _config_properties() -> dict[str, Any]:
    """Every key of ``TOP_KEYS``, in its order; a section added there before it is described here is open."""
    described = _config_keys()
    return {k: described.get(k, {"description": f"the {k!r} section"}) for k in TOP_KEYS}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the daemon's config file."""
    return {
        "$schema": _DRAFT,
        "$id": "https://reactor.invalid/schemas/config.schema.json",
        "title": "reactor configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": _config_properties(),
        "definitions": {"duration": _DURATION},
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write the shipped schemas (built-in actions, the shipped catalog); the files written."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, schema in (("rules", rules_schema()), ("config", config_schema())):
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
