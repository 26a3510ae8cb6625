"""JSON Schemas: generated from the loaders' own definitions, shipped up to date, agreeing with the loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from reactor.actions.registry import builtin_registry
from reactor.cli import main
from reactor.daemon.config import TOP_KEYS, parse_config
from reactor.errors import LoadError, RuleError
from reactor.rules.loader import RULE_KEYS, STEP_KEYS, load_rules
from reactor.rules.matcher import OPERATORS
from reactor.rules.source import parse
from reactor.schemas.generate import SCHEMA_DIR, config_schema, rules_schema

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test extra: pip install jsonschema")

ROOT = Path(__file__).resolve().parents[2]


def plain(path: Path) -> Any:
    """The file as data, read by reactor's own YAML reader (YAML 1.2 keys: `on` is a string)."""
    return parse(path.read_text(), str(path), RuleError).plain()


@pytest.fixture(scope="module")
def rules_validator() -> Any:
    schema = json.loads((SCHEMA_DIR / "rules.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def config_validator() -> Any:
    schema = json.loads((SCHEMA_DIR / "config.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: Any, data: Any) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data))


def test_shipped_schemas_are_current() -> None:
    """Regenerate with `python -m reactor.schemas.generate` when this fails."""
    assert json.loads((SCHEMA_DIR / "rules.schema.json").read_text()) == json.loads(json.dumps(rules_schema()))
    assert json.loads((SCHEMA_DIR / "config.schema.json").read_text()) == json.loads(json.dumps(config_schema()))


def test_generated_from_the_loaders_definitions() -> None:
    s = rules_schema()
    d = s["definitions"]
    assert list(d["rule"]["properties"]) == list(RULE_KEYS)
    for step in d["step"]["oneOf"]:
        assert set(step["properties"]) - set(STEP_KEYS) == set(step["required"])
    assert {step["required"][0] for step in d["step"]["oneOf"]} == set(builtin_registry().names())
    ops = d["value.string"]["anyOf"][2]["properties"]
    assert list(ops) == list(OPERATORS)
    assert list(config_schema()["properties"]) == list(TOP_KEYS)


def is_rule_file(path: Path) -> bool:
    rules = (plain(path) or {}).get("rules")
    return isinstance(rules, list) and all(isinstance(r, dict) for r in rules)


def shipped_rule_files() -> list[Path]:
    files = sorted((ROOT / "rules").glob("*.y*ml")) + sorted((ROOT / "examples").rglob("*.y*ml"))
    return [f for f in files if is_rule_file(f)]


def shipped_config_files() -> list[Path]:
    # examples/prometheus holds Prometheus's own files (checked by promtool in test_monitoring.py)
    return [f for f in sorted((ROOT / "examples").rglob("*.y*ml"))
            if not is_rule_file(f) and "prometheus" not in f.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", shipped_rule_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_rule_files_validate(path: Path, rules_validator: Any) -> None:
    assert errors(rules_validator, plain(path)) == []


@pytest.mark.parametrize("path", shipped_config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_the_loader_accepts_validate(path: Path, config_validator: Any) -> None:
    class AnyEnv(dict[str, str]):
        def __contains__(self, key: object) -> bool:
            return True

        def __getitem__(self, key: str) -> str:
            return "/tmp"

    try:
        parse_config(path.read_text(), path, env=AnyEnv())
    except LoadError as err:
        pytest.skip(f"the config loader rejects it too: {err.errors[0]}")
    assert errors(config_validator, plain(path)) == []


def test_schema_catches_what_the_loader_catches(rules_validator: Any) -> None:
    def bad(rule: dict[str, Any]) -> list[str]:
        return errors(rules_validator, {"rules": [{"name": "r", "on": "BLOCK_IO_ERROR",
                                                   "actions": [{"log": "x"}], **rule}]})

    assert bad({}) == []
    assert bad({"match": {"action": "stop", "nospace": {"ne": True}, "any": [{"operation": "write"}]}}) == []
    assert bad({"match": {"action": "halt"}})            # not one of ignore, report, stop
    assert bad({"match": {"acton": "stop"}})             # no such field in BLOCK_IO_ERROR
    assert bad({"match": {"action": {"near": "stop"}}})  # no such operator
    assert bad({"mode": "sometimes"})
    assert bad({"throttle": {"max": 3}})                 # within missing
    assert bad({"actions": [{"sleep": "5s", "log": "x"}]})    # two actions in a step
    assert bad({"actions": [{"slep": "5s"}]})            # unknown action
    assert bad({"actions": [{"log": {"message": "x", "level": "loud"}}]})
    assert bad({"actions": [{"sleep": "soon"}]})
    assert bad({"actions": [{"sleep": "{{ vars.delay }}"}]}) == []   # a template may stand for a duration
    assert bad({"nmae": "r"})
    assert bad({"on": "MY_OWN_EVENT"}) == []             # names rules emit are allowed
    assert bad({"on": "*", "match": {"anything.at.all": 1}}) == []


def test_the_loader_agrees_on_the_valid_example(tmp_path: Path, rules_validator: Any) -> None:
    text = """\
rules:
  - name: r
    on: [BLOCK_IO_ERROR]
    vms: {names: ["web-*"], labels: {env: prod}}
    match: {operation: [read, write], not: {reason: {regex: "^No space"}}}
    if: "event.data.nospace == false"
    throttle: {max: 3, within: 1h, per: [vm, data.device]}
    mode: queued
    max_queued: 3
    actions:
      - qmp: {execute: cont}
        timeout: 5s
        retry: {attempts: 3, backoff: 1s}
        on_error: continue
        register: result
      - wait_for: {event: RESUME, timeout: 10s}
        when: "vars.result is none"
"""
    f = tmp_path / "r.yaml"
    f.write_text(text)
    load_rules([f])
    assert errors(rules_validator, plain(f)) == []


def test_reactor_schema_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "config"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "reactor configuration"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hello.py").write_text("""\
from dataclasses import dataclass
from reactor.actions.action import ActionContext, action

@dataclass(frozen=True)
class Args:
    who: str
    times: int = 1

@action("hello", shorthand="who", mutating=False)
async def hello(ctx: ActionContext, args: Args) -> None:
    '''Say hello.'''
""")
    cfg = tmp_path / "reactor.yaml"
    cfg.write_text("plugins: [plugins/]\n")
    out = tmp_path / "rules.schema.json"
    assert main(["schema", "rules", "-c", str(cfg), "-o", str(out)]) == 0
    hello = json.loads(out.read_text())["definitions"]["action.hello"]
    assert hello["description"] == "Say hello."
    assert hello["anyOf"][1]["required"] == ["who"]


# --- examples/reactor.yaml lists every config key ----------------------------------------

#: A commented-out config line of examples/reactor.yaml: "# " then YAML (a key or a list item).
_COMMENTED = re.compile(r"^# (?!yaml-language-server:)(?=\s*(?:[A-Za-z_][\w-]*:(?:\s|$)|- ))")


def _uncommented(text: str) -> str:
    return "\n".join(_COMMENTED.sub("", line) for line in text.splitlines()) + "\n"


def _schema_paths(node: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key path the schema describes (``mqtt.*.tls.ca_file``; list items add nothing)."""
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    out: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        out.add(prefix + key)
        out |= _schema_paths(sub, defs, f"{prefix}{key}.")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and ("properties" in extra or "anyOf" in extra):
        out |= _schema_paths(extra, defs, f"{prefix}*.")
    if isinstance(node.get("items"), dict):
        out |= _schema_paths(node["items"], defs, prefix)
    for alt in node.get("anyOf", []):
        out |= _schema_paths(alt, defs, prefix)
    return out


def _data_paths(value: Any, schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """The schema paths ``value`` uses (a key the schema does not know is reported as itself)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    alts = [schema, *schema.get("anyOf", [])]
    out: set[str] = set()
    if isinstance(value, list):
        for alt in alts:
            if isinstance(alt.get("items"), dict):
                for item in value:
                    out |= _data_paths(item, alt["items"], defs, prefix)
                break
        return out
    if not isinstance(value, dict):
        return out
    props: dict[str, Any] = {}
    extra: Any = None
    for alt in alts:
        props.update(alt.get("properties", {}))
        extra = extra or alt.get("additionalProperties")
    for key, sub in value.items():
        if key in props:
            out.add(prefix + key)
            out |= _data_paths(sub, props[key], defs, f"{prefix}{key}.")
        elif isinstance(extra, dict):
            if "properties" in extra or "anyOf" in extra:
                out |= _data_paths(sub, extra, defs, f"{prefix}*.")
        elif not props and extra is None:
            pass   # an open mapping (a source's own config)
        else:
            out.add(f"UNKNOWN {prefix}{key}")
    return out


def test_the_example_config_lists_every_config_key(config_validator: Any) -> None:
    schema = json.loads((SCHEMA_DIR / "config.schema.json").read_text())
    text = _uncommented((ROOT / "examples" / "reactor.yaml").read_text())
    data = parse(text, "examples/reactor.yaml (uncommented)", RuleError).plain()
    assert errors(config_validator, data) == []     # every section, uncommented, is valid
    used = _data_paths(data, schema, schema["definitions"])
    described = _schema_paths(schema, schema["definitions"])
    assert sorted(k for k in used if k.startswith("UNKNOWN")) == []
    assert sorted(described - used) == [], "keys the example does not list"
    assert {"mqtt.*.publish_events.qos", "qmp.allow", "libvirt.domains", "fleet.commands.read_only",
            "sources", "bus.total", "http.token"} <= used


def test_the_example_config_as_shipped_loads(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "reactor.yaml").read_text()
    config = parse_config(text, tmp_path / "reactor.yaml", env={})
    assert config.qmp.deny == ("human-monitor-command",) and config.state_dir == Path("/var/lib/reactor")


def test_the_config_schema_describes_every_key_the_section_parsers_know() -> None:
    from reactor.integrations import mqtt, remote
    from reactor.sources.libvirt import config as libvirt

    props = config_schema()["properties"]
    broker = props["mqtt"]["additionalProperties"]["properties"]
    assert set(broker) == set(mqtt._BROKER_KEYS)
    assert set(broker["tls"]["anyOf"][1]["properties"]) == set(mqtt._TLS_KEYS)
    assert set(broker["publish_events"]["anyOf"][1]["properties"]) == set(mqtt._MIRROR_KEYS)
    assert set(broker["outbox"]["properties"]) == set(mqtt._OUTBOX_KEYS)
    assert set(props["fleet"]["properties"]) == set(remote._KEYS)
    assert set(props["fleet"]["properties"]["commands"]["anyOf"][1]["properties"]) == set(remote._CMD_KEYS)
    assert set(props["libvirt"]["anyOf"][0]["properties"]) == set(libvirt._KEYS)
    assert set(props["qmp"]["properties"]) == {"command_timeout", "backoff_max", "deny", "allow"}
