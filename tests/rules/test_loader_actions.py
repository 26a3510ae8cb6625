"""The loader's checks inside action steps: ``wait_for`` against the event catalog, ``qmp`` and
``libvirt_qmp`` against the QMP command catalog; every problem at its exact ``PATH:LINE:COL``."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import pytest

from reactor.actions.action import ActionContext, action
from reactor.actions.registry import Registry, builtin_registry
from reactor.daemon.daemon import rule_commands, rule_usage
from reactor.errors import LoadError, PluginError, Position, RuleError
from reactor.model.catalog.commands import default_commands
from reactor.rules.loader import load_rules_text
from reactor.rules.matcher import compile_event_match
from reactor.rules.rule import RuleSet
from reactor.rules.source import MapNode, parse


def _registry() -> Registry:
    return builtin_registry()


def _load(steps: str, *, on: str = "STOP", registry: Registry | None = None) -> RuleSet:
    body = textwrap.indent(textwrap.dedent(steps).lstrip("\n"), "      ")
    text = f"rules:\n  - name: a\n    on: {on}\n    actions:\n" + body
    return load_rules_text([("r.yaml", text)], registry=registry or _registry())


#: (case id, steps (each line is at rule-file line 5 onwards, column 7 = the "-"), expected errors)
INVALID: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    ("wait_for-unknown-event-short", """
        - wait_for: RESUMED
        """, [(5, 19, "wait_for: unknown event 'RESUMED' (did you mean 'RESUME'?)")]),
    ("wait_for-unknown-event-long", """
        - wait_for: {event: RESUMED, timeout: 5s}
        """, [(5, 27, "wait_for: unknown event 'RESUMED' (did you mean 'RESUME'?)")]),
    ("wait_for-unknown-event-in-list", """
        - wait_for: {event: [RESUME, SHUTDOWM]}
        """, [(5, 36, "wait_for: unknown event 'SHUTDOWM' (did you mean 'SHUTDOWN'?)")]),
    ("wait_for-no-close-event", """
        - wait_for: XYZZY_PLUGH
        """, [(5, 19, "wait_for: unknown event 'XYZZY_PLUGH'; see `reactor events` for the catalog")]),
    ("wait_for-match-unknown-field", """
        - wait_for: {event: RESUME, match: {foo: 1}}
        """, [(5, 43, "wait_for.match: RESUME has no field 'foo'; its fields: none")]),
    ("wait_for-match-field-hint", """
        - wait_for: {event: BLOCK_IO_ERROR, match: {nodename: x}}
        """, [(5, 51, "wait_for.match: BLOCK_IO_ERROR has no field 'nodename' (did you mean 'node-name'?)")]),
    ("wait_for-match-bad-enum", """
        - wait_for:
            event: BLOCK_IO_ERROR
            match: {action: bogus}
        """, [(7, 27, "wait_for.match: action: 'bogus' is not one of ignore, report, stop")]),
    ("wait_for-match-enum-hint", """
        - wait_for: {event: BLOCK_IO_ERROR, match: {action: stopp}}
        """, [(5, 59, "wait_for.match: action: 'stopp' is not one of ignore, report, stop (did you mean 'stop'?)")]),
    ("wait_for-match-bad-operator", """
        - wait_for: {event: BLOCK_IO_ERROR, match: {reason: {regexp: x}}}
        """, [(5, 60, "wait_for.match: reason: unknown operator 'regexp' (did you mean 'regex'?)")]),
    ("wait_for-match-nested-field-in-any", """
        - wait_for:
            event: SHUTDOWN
            match: {any: [{guest: true}, {reson: host-qmp-quit}]}
        """, [(7, 41, "wait_for.match: SHUTDOWN has no field 'reson' (did you mean 'reason'?)")]),
    ("wait_for-match-field-missing-in-one-event", """
        - wait_for: {event: [SHUTDOWN, STOP], match: {reason: host-qmp-quit}}
        """, [(5, 53, "wait_for.match: STOP has no field 'reason'")]),
    ("qmp-unknown-command-short", """
        - qmp: contt
        """, [(5, 14, "qmp: unknown QMP command 'contt' (did you mean 'cont'?)")]),
    ("qmp-unknown-command-long", """
        - qmp: {execute: contt}
        """, [(5, 24, "qmp: unknown QMP command 'contt' (did you mean 'cont'?)")]),
    ("qmp-unknown-command-no-hint", """
        - qmp: zzzzzzzz
        """, [(5, 14, "qmp: unknown QMP command 'zzzzzzzz'; not in QEMU 7.2, 10.2")]),
    ("qmp-unknown-argument", """
        - qmp: {execute: block-set-write-threshold, arguments: {node-name: n, write-treshold: 5}}
        """, [(5, 77, "qmp.arguments: block-set-write-threshold has no argument 'write-treshold' "
                      "(did you mean 'write-threshold'?)")]),
    ("qmp-argument-to-a-command-without-any", """
        - qmp: {execute: cont, arguments: {force: true}}
        """, [(5, 42, "qmp.arguments: cont has no argument 'force'; it takes no arguments")]),
    ("qmp-argument-type", """
        - qmp: {execute: block-set-write-threshold, arguments: {node-name: 1, write-threshold: 5}}
        """, [(5, 74, "qmp.arguments.node-name: expected a string, got integer 1")]),
    ("qmp-argument-enum", """
        - qmp: {execute: inject-nmi}
        - qmp: {execute: set_password, arguments: {protocol: rdp, password: x}}
        """, [(6, 60, "qmp.arguments.protocol: 'rdp' is not one of vnc, spice")]),
    ("qmp-missing-required-argument", """
        - qmp:
            execute: block-set-write-threshold
            arguments: {node-name: n}
        """, [(7, 22, "qmp.arguments: block-set-write-threshold needs argument 'write-threshold'")]),
    ("qmp-missing-all-arguments", """
        - qmp: query-cpu-model-expansion
        """, [(5, 14, "qmp: query-cpu-model-expansion needs arguments 'type', 'model'")]),
    ("qmp-nested-list-of-objects", """
        - qmp:
            execute: query-stats
            arguments: {target: vm, providers: [{provider: kvm, names: [1]}]}
        """, [(7, 71, "qmp.arguments.providers[0].names[0]: expected a string, got integer 1")]),
    ("qmp-nested-object-member", """
        - qmp:
            execute: migrate-set-capabilities
            arguments:
              capabilities:
                - {capability: events, stat: true}
                - {capability: x-bogus, state: true}
        """, [(9, 38, "qmp.arguments.capabilities[0]: MigrationCapabilityStatus has no member 'stat' "
                      "(did you mean 'state'?)"),
              (10, 30, "qmp.arguments.capabilities[1].capability: 'x-bogus' is not one of ")]),
    ("qmp-argument-enum-hint", """
        - qmp: {execute: set_password, arguments: {protocol: vnx, password: x}}
        """, [(5, 60, "qmp.arguments.protocol: 'vnx' is not one of vnc, spice (did you mean 'vnc'?)")]),
    ("libvirt_qmp-unknown-command", """
        - libvirt_qmp: query-blok
        """, [(5, 22, "libvirt_qmp: unknown QMP command 'query-blok' (did you mean 'query-block'?)")]),
    ("libvirt_qmp-argument-type", """
        - libvirt_qmp: {execute: block-set-write-threshold, arguments: {node-name: n, write-threshold: lots}}
        """, [(5, 102, "libvirt_qmp.arguments.write-threshold: expected an integer, got string 'lots'")]),
]


@pytest.mark.parametrize(("steps", "expected"), [(t, e) for _, t, e in INVALID], ids=[c for c, _, _ in INVALID])
def test_invalid_step(steps: str, expected: list[tuple[int, int, str]]) -> None:
    with pytest.raises(LoadError) as info:
        _load(steps)
    errors = info.value.errors
    got = [str(e) for e in errors]
    for line, col, message in expected:
        hits = [e for e in errors if e.position is not None and (e.position.line, e.position.col) == (line, col)]
        assert hits, f"no error at {line}:{col} (got {got})"
        assert any(message in e.message for e in hits), got
        assert all(isinstance(e, RuleError) and e.position and e.position.path == "r.yaml" for e in hits)
    assert len(errors) == len(expected), got


def test_valid_steps_load() -> None:
    rs = _load("""
        - wait_for: RESUME
        - wait_for: {event: [SHUTDOWN, POWERDOWN], timeout: 5s}
        - wait_for: {event: BLOCK_IO_ERROR, match: {action: stop, node-name: {glob: "drive*"}}}
        - wait_for: {event: "{{ vars.name }}", match: {anything: 1}}
        - wait_for: {event: DERIVED, match: {why: x}}
        - emit: {event: DERIVED, data: {why: x}}
        - qmp: cont
        - qmp: {execute: query-block, arguments: {}}
        - qmp: {execute: block-set-write-threshold, arguments: {node-name: n, write-threshold: 0}}
        - qmp: {execute: block-set-write-threshold, arguments: {node-name: "{{ event.data['node-name'] }}",
                                                               write-threshold: "{{ 1024 * 1024 }}"}}
        - qmp: {execute: block_set_io_throttle, arguments: "{{ vars.throttle }}"}
        - qmp: {execute: "{{ vars.command }}", arguments: {whatever: 1}}
        - qmp: {execute: device_add, allow_destructive: true, arguments: {driver: virtio-net, mac: "52:54:00:00:00:01"}}
        - qmp: {execute: query-audiodevs}
        - qmp: {execute: human-monitor-command, allow_destructive: true, arguments: {command-line: info status}}
        - libvirt_qmp: {execute: query-block}
        """)
    assert len(rs.rules) == 1 and len(rs.rules[0].steps) == 16
    # what the per-VM schema warnings at connect check
    assert rule_commands(rs) == {"cont", "query-block", "block-set-write-threshold", "block_set_io_throttle",
                                 "device_add", "query-audiodevs", "human-monitor-command"}
    used = rule_usage(rs)
    assert used["BLOCK_IO_ERROR"] == {"action", "node-name"} and used["RESUME"] == set()
    assert "DERIVED" not in used


def test_command_catalog_has_arguments_and_versions() -> None:
    commands = default_commands()
    assert commands.qemu_versions == ("7.2", "10.2") and len(commands) >= 247
    cont = commands.get("cont")
    assert cont is not None and not cont.arguments and cont.versions == ("7.2", "10.2")
    bswt = commands.get("block-set-write-threshold")
    assert bswt is not None and str(bswt.arguments["write-threshold"].type) == "int (uint64)"
    assert not bswt.arguments["node-name"].optional
    audiodevs = commands.get("query-audiodevs")
    assert audiodevs is not None and audiodevs.versions == ("10.2",)
    device_add = commands.get("device_add")
    assert device_add is not None and device_add.open
    assert commands.get("contt") is None and commands.suggest("contt") == "cont"


def test_generated_command_file_says_so() -> None:
    from reactor.model.catalog.commands import COMMANDS_JSON

    head = COMMANDS_JSON.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith('{"generated": "GENERATED by python -m reactor.model.catalog.generate')


# --- the helper other event-naming keys use ----------------------------------------------


def test_compile_event_match_is_the_helper_for_event_lists_with_a_match() -> None:
    from reactor.model.catalog import default_catalog

    root = parse("after: {event: [STOP, RESUMD], match: {x: 1}}\n", "k.yaml", RuleError)
    assert isinstance(root, MapNode)
    after = root.get("after")
    assert isinstance(after, MapNode)
    errors: list[RuleError] = []
    got = compile_event_match(after.get("event"), after.get("match"), default_catalog(), errors,
                              what="after", at=root.key_pos("after"))
    assert got is None
    assert [str(e) for e in errors] == ["k.yaml:1:23: after: unknown event 'RESUMD' (did you mean 'RESUME'?)"]

    root = parse("after: {event: [BLOCK_IO_ERROR], match: {action: stop, nodename: x}}\n", "k.yaml", RuleError)
    assert isinstance(root, MapNode)
    after = root.get("after")
    assert isinstance(after, MapNode)
    errors = []
    assert compile_event_match(after.get("event"), after.get("match"), default_catalog(), errors,
                               what="after", at=root.key_pos("after")) is None
    assert [str(e) for e in errors] == [
        "k.yaml:1:56: after.match: BLOCK_IO_ERROR has no field 'nodename' (did you mean 'node-name'?)"]

    root = parse("after: {event: BLOCK_IO_ERROR, match: {action: stop}}\n", "k.yaml", RuleError)
    assert isinstance(root, MapNode)
    after = root.get("after")
    assert isinstance(after, MapNode)
    errors = []
    ok = compile_event_match(after.get("event"), after.get("match"), default_catalog(), errors,
                             what="after", at=Position("k.yaml", 1, 1))
    assert not errors and ok is not None and ok.names == frozenset({"BLOCK_IO_ERROR"})
    assert ok.match is not None and ok.match({"action": "stop"}) and not ok.match({"action": "report"})
    assert ok.literals == {"action": ("stop",)}


# --- plugin actions declare the same checks -----------------------------------------------


@dataclass(frozen=True)
class _ProbeArgs:
    until: str
    where: dict[str, Any] = field(default_factory=dict)
    command: str = "query-status"


async def _probe(ctx: ActionContext, args: _ProbeArgs) -> None:
    """A plugin action naming an event and a command."""


def test_a_plugin_action_declares_event_and_command_arguments() -> None:
    probe = action("probe", shorthand="until", events=("until", "where"), command=("command", None))(_probe)
    reg = _registry()
    reg.add(probe)
    with pytest.raises(LoadError) as info:
        _load("""
            - probe: {until: RESUMED, command: query-statuss}
            """, registry=reg)
    assert [str(e) for e in info.value.errors] == [
        "r.yaml:5:24: probe: unknown event 'RESUMED' (did you mean 'RESUME'?)",
        "r.yaml:5:42: probe: unknown QMP command 'query-statuss' (did you mean 'query-status'?)",
    ]
    with pytest.raises(PluginError, match="events names 'nope', which is not an argument"):
        action("bad", events=("nope", None))(_probe)
