"""The rule loader against RULES.md: every invalid file is an error at its exact ``PATH:LINE:COL``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reactor.errors import LoadError, RuleError
from reactor.rules.loader import load_rules, load_rules_text
from reactor.rules.rule import RuleSet

#: (case id, rule file text, every expected error as (line, col, text the message contains))
INVALID: list[tuple[str, str, list[tuple[int, int, str]]]] = [
    ("broken-yaml", """
        rules:
          - name: a
            on: STOP
           actions: [{log: x}]
        """, [(4, 4, "YAML syntax error")]),
    ("unclosed-flow", """
        rules:
          - name: a
            on: [STOP, RESUME
            actions: [{log: x}]
        """, [(4, 12, "YAML syntax error")]),
    ("duplicate-key", """
        rules:
          - name: a
            on: STOP
            on: RESUME
            actions: [{log: x}]
        """, [(4, 5, "duplicate key 'on' (first at line 3)")]),
    ("top-level-not-a-mapping", """
        - name: a
        """, [(1, 1, "expected a mapping with one key 'rules:', got list")]),
    ("rules-not-a-list", """
        rules: {name: a}
        """, [(1, 8, "'rules' must be a list of rules, got mapping")]),
    ("unknown-top-level-key", """
        rules: []
        rulez: []
        """, [(2, 1, "unknown top-level key 'rulez' (did you mean 'rules'?)")]),
    ("rule-not-a-mapping", """
        rules:
          - just a string
        """, [(2, 5, "a rule must be a mapping, got string")]),
    ("on-wrong-type", """
        rules:
          - name: a
            on: {x: 1}
            actions: [{log: x}]
        """, [(3, 9, "an event name must be a string, got mapping")]),
    ("on-empty-list", """
        rules:
          - name: a
            on: []
            actions: [{log: x}]
        """, [(3, 9, "'on' must name at least one event")]),
    ("unknown-event", """
        rules:
          - name: a
            on: BLOCK_IO_EROR
            actions: [{log: x}]
        """, [(3, 9, "unknown event 'BLOCK_IO_EROR' (did you mean 'BLOCK_IO_ERROR'?)")]),
    ("unknown-event-in-list", """
        rules:
          - name: a
            on: [STOP, RESUMED]
            actions: [{log: x}]
        """, [(3, 16, "unknown event 'RESUMED' (did you mean 'RESUME'?)")]),
    ("star-with-other-names", """
        rules:
          - name: a
            on: ["*", STOP]
            actions: [{log: x}]
        """, [(3, 10, "\"*\" matches every event; do not list it with other names")]),
    ("unknown-field", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match: {operaton: write}
            actions: [{log: x}]
        """, [(4, 13, "BLOCK_IO_ERROR has no field 'operaton' (did you mean 'operation'?)")]),
    ("field-missing-in-one-event-of-the-list", """
        rules:
          - name: a
            on: [BLOCK_IO_ERROR, BLOCK_JOB_COMPLETED]
            match:
              operation: write
            actions: [{log: x}]
        """, [(5, 7, "BLOCK_JOB_COMPLETED has no field 'operation'")]),
    ("unknown-nested-field", """
        rules:
          - name: a
            on: VNC_CONNECTED
            match:
              client.hots: 127.0.0.1
            actions: [{log: x}]
        """, [(5, 7, "VNC_CONNECTED has no field 'client.hots' (did you mean 'client.host'?)")]),
    ("unknown-field-inside-any", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              any:
                - {operation: write}
                - {reson: x}
            actions: [{log: x}]
        """, [(7, 12, "BLOCK_IO_ERROR has no field 'reson' (did you mean 'reason'?)")]),
    ("enum-out-of-range", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              action: halt
            actions: [{log: x}]
        """, [(5, 15, "action: 'halt' is not one of ignore, report, stop")]),
    ("enum-out-of-range-in-list", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              action: [stop, halt]
            actions: [{log: x}]
        """, [(5, 22, "action: 'halt' is not one of ignore, report, stop")]),
    ("wrong-literal-type", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              nospace: "yes"
            actions: [{log: x}]
        """, [(5, 16, "nospace: expected a boolean (true/false), got string 'yes'")]),
    ("wrong-literal-type-under-ne", """
        rules:
          - name: a
            on: BLOCK_JOB_COMPLETED
            match:
              len: {ne: lots}
            actions: [{log: x}]
        """, [(5, 17, "len: expected an integer, got string 'lots'")]),
    ("bad-operator", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              reason: {regx: foo}
            actions: [{log: x}]
        """, [(5, 16, "reason: unknown operator 'regx' (did you mean 'regex'?)")]),
    ("two-operators", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              reason: {regex: foo, glob: "*"}
            actions: [{log: x}]
        """, [(5, 15, "reason: a test mapping takes exactly one operator")]),
    ("bad-regex", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              reason: {regex: "foo("}
            actions: [{log: x}]
        """, [(5, 23, "reason: invalid regex 'foo(': missing ), unterminated subpattern")]),
    ("in-takes-a-list", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              operation: {in: write}
            actions: [{log: x}]
        """, [(5, 23, "operation: in takes a list, got string")]),
    ("exists-takes-a-boolean", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              nospace: {exists: 1}
            actions: [{log: x}]
        """, [(5, 25, "nospace: exists takes true or false, got integer 1")]),
    ("compare-int-with-string", """
        rules:
          - name: a
            on: BLOCK_JOB_COMPLETED
            match:
              len: {gt: big}
            actions: [{log: x}]
        """, [(5, 17, "len: gt cannot compare int with string 'big'")]),
    ("glob-on-an-integer-field", """
        rules:
          - name: a
            on: BLOCK_JOB_COMPLETED
            match:
              len: {glob: "1*"}
            actions: [{log: x}]
        """, [(5, 19, "len: glob needs a string field, but it is int in BLOCK_JOB_COMPLETED")]),
    ("any-takes-a-list", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            match:
              any: {operation: write}
            actions: [{log: x}]
        """, [(5, 12, "any: expected a list of match mappings, got mapping")]),
    ("template-syntax-error", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: "hello {{ vm.name }"
        """, [(5, 14, "template syntax error: unexpected '}'")]),
    ("template-unknown-filter", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: {message: "{{ vm.name | shout }}"}
        """, [(5, 24, "template syntax error: No filter named 'shout'")]),
    ("if-syntax-error", """
        rules:
          - name: a
            on: STOP
            if: "event.data.x =="
            actions: [{log: x}]
        """, [(4, 9, "'if' syntax error")]),
    ("if-not-a-string", """
        rules:
          - name: a
            on: STOP
            if: [1]
            actions: [{log: x}]
        """, [(4, 9, "'if' must be an expression string, got list")]),
    ("when-syntax-error", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: x
                when: "vars.x ))"
        """, [(6, 15, "'when' syntax error: unexpected ')'")]),
    ("unknown-action", """
        rules:
          - name: a
            on: STOP
            actions:
              - lgo: hi
        """, [(5, 9, "unknown action 'lgo' (did you mean 'log'?)")]),
    ("bare-action-name", """
        rules:
          - name: a
            on: STOP
            actions:
              - log
        """, [(5, 9, "a step is a mapping: write 'log: ARGUMENTS', not a bare name")]),
    ("step-without-action", """
        rules:
          - name: a
            on: STOP
            actions:
              - timeout: 5s
        """, [(5, 9, "step has no action")]),
    ("unknown-argument", """
        rules:
          - name: a
            on: STOP
            actions:
              - exec: {argv: [/bin/true], tmeout: 5s}
        """, [(5, 35, "exec: unknown argument 'tmeout' (did you mean 'timeout'?)")]),
    ("missing-argument", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: {level: info}
        """, [(5, 9, "log: missing required argument 'message'")]),
    ("argument-of-wrong-type", """
        rules:
          - name: a
            on: STOP
            actions:
              - exec: {argv: [/bin/true], check: sometimes}
        """, [(5, 42, "exec: argument 'check': expected a boolean, got string 'sometimes'")]),
    ("argument-list-item-of-wrong-type", """
        rules:
          - name: a
            on: STOP
            actions:
              - exec:
                  argv: [/bin/echo, {a: 1}]
        """, [(6, 29, "exec: argument 'argv': [1]: expected a string, got mapping")]),
    ("argument-outside-literal", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: {message: hi, level: loud}
        """, [(5, 35, "log: argument 'level': 'loud' is not one of debug, info, warning, error, critical")]),
    ("emit-reserved-name", """
        rules:
          - name: a
            on: STOP
            actions:
              - emit: REACTOR_FOO
        """, [(5, 15, "emit: event name 'REACTOR_FOO': the REACTOR_ prefix is reserved")]),
    ("two-actions-in-one-step", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: hi
                sleep: 1s
        """, [(6, 9, "a step has exactly one action; found 'log' and 'sleep' (use two steps)")]),
    ("bad-duration", """
        rules:
          - name: a
            on: STOP
            actions:
              - sleep: 5 minutes
        """, [(5, 16, "sleep: argument 'duration': expected a duration like 5s, 500ms, 10m, 1h, 1d, not '5 minutes'")]),
    ("negative-timeout", """
        rules:
          - name: a
            on: STOP
            actions:
              - sleep: 1s
                timeout: -1
        """, [(6, 18, "timeout: a duration must be a non-negative number of seconds, not -1")]),
    ("zero-timeout", """
        rules:
          - name: a
            on: STOP
            actions:
              - sleep: 1s
                timeout: 0s
        """, [(6, 18, "timeout: must be greater than zero")]),
    ("bad-retry", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: x
                retry: {attempts: 0, backof: 1s}
        """, [(6, 27, "retry.attempts: expected a positive integer, got 0"),
              (6, 30, "retry: unknown key 'backof' (did you mean 'backoff'?)")]),
    ("bad-on-error", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: x
                on_error: ignore
        """, [(6, 19, "on_error: 'ignore' is not one of stop, continue")]),
    ("bad-register-name", """
        rules:
          - name: a
            on: STOP
            actions:
              - log: x
                register: 1abc
        """, [(6, 19, "register: expected a variable name (letters, digits, _), got '1abc'")]),
    ("throttle-max-zero", """
        rules:
          - name: a
            on: STOP
            throttle: {max: 0, within: 1h}
            actions: [{log: x}]
        """, [(4, 21, "throttle.max: expected a positive integer, got 0")]),
    ("throttle-missing-within", """
        rules:
          - name: a
            on: STOP
            throttle: {max: 3}
            actions: [{log: x}]
        """, [(4, 15, "throttle: missing 'within'")]),
    ("throttle-bad-window", """
        rules:
          - name: a
            on: STOP
            throttle: {max: 3, within: soon}
            actions: [{log: x}]
        """, [(4, 32, "throttle.within: expected a duration")]),
    ("throttle-per-unknown-field", """
        rules:
          - name: a
            on: BLOCK_IO_ERROR
            throttle: {max: 1, within: 1h, per: [vm, data.devize]}
            actions: [{log: x}]
        """, [(4, 46, "throttle.per: BLOCK_IO_ERROR has no field 'devize' (did you mean 'data.device'?)")]),
    ("throttle-per-bad-key", """
        rules:
          - name: a
            on: STOP
            throttle: {max: 1, within: 1h, per: node}
            actions: [{log: x}]
        """, [(4, 41, "throttle.per: expected 'vm', 'host' or 'data.<field path>', got 'node'")]),
    ("bad-mode", """
        rules:
          - name: a
            on: STOP
            mode: singel
            actions: [{log: x}]
        """, [(4, 11, "mode: 'singel' is not one of single, queued, parallel, restart (did you mean 'single'?)")]),
    ("bad-max-queued", """
        rules:
          - name: a
            on: STOP
            mode: queued
            max_queued: 0
            actions: [{log: x}]
        """, [(5, 17, "max_queued: expected a positive integer, got 0")]),
    ("bad-enabled", """
        rules:
          - name: a
            on: STOP
            enabled: maybe
            actions: [{log: x}]
        """, [(4, 14, "enabled: expected true or false, got 'maybe'")]),
    ("bad-vms-key", """
        rules:
          - name: a
            on: STOP
            vms: {nmes: [web-*]}
            actions: [{log: x}]
        """, [(4, 11, "vms: unknown key 'nmes' (did you mean 'names'?)")]),
    ("vms-empty-list", """
        rules:
          - name: a
            on: STOP
            vms: []
            actions: [{log: x}]
        """, [(4, 10, "vms: an empty list matches no VM")]),
    ("vms-empty-mapping", """
        rules:
          - name: a
            on: STOP
            vms: {}
            actions: [{log: x}]
        """, [(4, 10, "vms: an empty mapping selects nothing; give names and/or labels, or leave vms out for "
                     "every VM")]),
    ("vms-names-empty-list", """
        rules:
          - name: a
            on: STOP
            vms: {names: [], labels: {env: prod}}
            actions: [{log: x}]
        """, [(4, 18, "vms: an empty list matches no VM")]),
    ("invalid-rule-name", """
        rules:
          - name: Resume VM
            on: STOP
            actions: [{log: x}]
        """, [(2, 11, "invalid rule name 'Resume VM'")]),
    ("unknown-rule-key", """
        rules:
          - name: a
            on: STOP
            mach: {}
            actions: [{log: x}]
        """, [(4, 5, "unknown rule key 'mach' (did you mean 'match'?)")]),
    ("missing-on", """
        rules:
          - name: a
            actions: [{log: x}]
        """, [(2, 5, "rule has no 'on'")]),
    ("missing-actions", """
        rules:
          - name: a
            on: STOP
        """, [(2, 5, "rule has no 'actions'")]),
    ("empty-actions", """
        rules:
          - name: a
            on: STOP
            actions: []
        """, [(4, 14, "'actions' must be a non-empty list of steps")]),
    ("missing-name", """
        rules:
          - on: STOP
            actions: [{log: x}]
        """, [(2, 5, "rule has no 'name'")]),
    ("duplicate-name-in-one-file", """
        rules:
          - name: a
            on: STOP
            actions: [{log: x}]
          - name: a
            on: RESUME
            actions: [{log: x}]
        """, [(5, 11, "duplicate rule name 'a' (first defined at r.yaml:2:11)")]),
]


def _load(text: str, path: str = "r.yaml") -> RuleSet:
    return load_rules_text([(path, textwrap.dedent(text).lstrip("\n"))])


def test_there_are_at_least_30_invalid_cases() -> None:
    assert len(INVALID) >= 30
    assert len({case for case, _, _ in INVALID}) == len(INVALID)


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in INVALID], ids=[c for c, _, _ in INVALID])
def test_invalid_rule_file(text: str, expected: list[tuple[int, int, str]]) -> None:
    with pytest.raises(LoadError) as info:
        _load(text)
    errors = info.value.errors
    got = [(e.position.line, e.position.col) if e.position else None for e in errors]
    # every expected error at its exact position, and no other error
    for line, col, message in expected:
        hits = [e for e in errors if e.position is not None and (e.position.line, e.position.col) == (line, col)]
        assert hits, f"no error at {line}:{col} (got {[str(e) for e in errors]})"
        assert any(message in e.message for e in hits), [str(e) for e in hits]
        assert all(isinstance(e, RuleError) and e.position and e.position.path == "r.yaml" for e in hits)
    assert len(errors) == len(expected), got
    # the printed form is PATH:LINE:COL: message
    line, col, message = expected[0]
    assert f"r.yaml:{line}:{col}: " in str(info.value)


def test_unknown_argument_does_not_also_report_it_missing() -> None:
    """A misspelt required argument is one problem: the unknown key, with a hint."""
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: a
                on: STOP
                actions:
                  - log: {mesage: hi}
            """)
    assert [str(e) for e in info.value.errors] == [
        "r.yaml:5:15: log: unknown argument 'mesage' (did you mean 'message'?)"
    ]


def test_template_error_in_block_scalar_points_at_its_line() -> None:
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: a
                on: STOP
                actions:
                  - log: |
                      line one
                      {{ vm.name
            """)
    (err,) = info.value.errors
    assert err.position is not None and err.position.line == 7


def test_error_message_format() -> None:
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: a
                on: BLOCK_IO_ERROR
                match: {action: halt}
                actions: [{log: x}]
            """, path="rules/vm.yaml")
    (err,) = info.value.errors
    assert str(err) == "rules/vm.yaml:4:21: action: 'halt' is not one of ignore, report, stop"
    assert err.position is not None and (err.position.path, err.position.line, err.position.col) == (
        "rules/vm.yaml", 4, 21)
    assert err.message == "action: 'halt' is not one of ignore, report, stop"
    assert str(info.value) == "1 error:\n" + str(err)


def test_all_errors_at_once_in_file_order_across_files() -> None:
    a = textwrap.dedent("""\
        rules:
          - name: one
            on: STOPP
            actions: [{log: x}]
          - name: two
            on: STOP
            mode: sometimes
            actions: [{lgo: x}]
        """)
    b = textwrap.dedent("""\
        rules:
          - name: three
            on: STOP
            actions: [{sleep: forever}]
        """)
    with pytest.raises(LoadError) as info:
        load_rules_text([("a.yaml", a), ("b.yaml", b)])
    assert [str(e.position) for e in info.value.errors] == ["a.yaml:3:9", "a.yaml:7:11", "a.yaml:8:16",
                                                             "b.yaml:4:23"]
    assert str(info.value).startswith("4 errors:\n")


def test_errors_in_several_files_on_disk_in_sorted_path_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("rules:\n  - name: z\n    on: NOPE\n    actions: [{log: x}]\n")
    (tmp_path / "a.yaml").write_text("rules:\n  - name: a\n    on: STOP\n    actions: [{log: x}]\n    x: 1\n")
    (tmp_path / "c.yaml").write_text("rules:\n  - name: c\n    on: STOP\n    actions: [{sleep: 1y}]\n")
    (tmp_path / "notes.txt").write_text("not a rules file: {{{")
    with pytest.raises(LoadError) as info:
        load_rules([tmp_path])
    assert [(Path(e.position.path).relative_to(tmp_path).as_posix(), e.position.line)  # type: ignore[union-attr]
            for e in info.value.errors] == [("a.yaml", 5), ("b/z.yml", 3), ("c.yaml", 4)]


def test_duplicate_rule_name_across_files_points_at_the_second() -> None:
    a = "rules:\n  - name: resume\n    on: STOP\n    actions: [{log: x}]\n"
    b = "rules:\n  - name: other\n    on: STOP\n    actions: [{log: x}]\n  - name: resume\n    on: RESUME\n" \
        "    actions: [{log: x}]\n"
    with pytest.raises(LoadError) as info:
        load_rules_text([("a.yaml", a), ("b.yaml", b)])
    (err,) = info.value.errors
    assert str(err) == "b.yaml:5:11: duplicate rule name 'resume' (first defined at a.yaml:2:11)"


def test_nothing_is_half_loaded(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("rules:\n  - name: good\n    on: STOP\n    actions: [{log: x}]\n")
    (tmp_path / "bad.yaml").write_text("rules:\n  - name: bad\n    on: STOP\n    actions: [{log: x}]\n    zzz: 1\n")
    with pytest.raises(LoadError) as info:
        load_rules([tmp_path])
    assert len(info.value.errors) == 1
    (tmp_path / "bad.yaml").unlink()
    assert [r.name for r in load_rules([tmp_path]).rules] == ["good"]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as info:
        load_rules([tmp_path / "nope"])
    assert "no such rules file or directory" in str(info.value)


def test_a_valid_rule_as_in_the_spec() -> None:
    rs = _load("""
        rules:
          - name: resume-after-write-error
            description: Resume a VM paused by a transient write error.
            on: BLOCK_IO_ERROR
            vms: ["web-*", "db-1"]
            match:
              action: stop
              operation: write
              nospace: {ne: true}
            if: "event.data.reason != 'No space left on device'"
            throttle: {max: 3, within: 1h}
            mode: queued
            max_queued: 4
            enabled: true
            actions:
              - sleep: 2s
              - log: "resuming {{ vm.name }}"
                when: "vm.status == 'paused'"
                timeout: 500ms
                retry: {attempts: 2, backoff: 1s, max_backoff: 1m}
                on_error: continue
                register: said
              - emit: {event: RESUMED_BY_REACTOR, data: {why: "{{ event.name }}"}}
        """)
    (rule,) = rs.rules
    assert rule.name == "resume-after-write-error"
    assert rule.on == frozenset({"BLOCK_IO_ERROR"})
    assert rule.vms is not None and rule.vms.names == ("web-*", "db-1")
    assert rule.throttle is not None
    assert (rule.throttle.max, rule.throttle.within, rule.throttle.per) == (3, 3600.0, ("vm",))
    assert (rule.mode, rule.max_queued, rule.max_parallel, rule.enabled) == ("queued", 4, 10, True)
    assert [s.name for s in rule.steps] == ["sleep", "log", "emit"]
    step = rule.steps[1]
    assert (step.timeout, step.on_error, step.register) == (0.5, "continue", "said")
    assert step.retry is not None and (step.retry.attempts, step.retry.backoff, step.retry.max_backoff) == (
        2, 1.0, 60.0)
    assert rs.emitted == frozenset({"RESUMED_BY_REACTOR"})
    assert str(rule.pos) == "r.yaml:2:5"


def test_defaults() -> None:
    (rule,) = _load("""
        rules:
          - name: a
            on: STOP
            actions: [{log: x}]
        """).rules
    assert (rule.mode, rule.max_queued, rule.max_parallel, rule.enabled) == ("single", 10, 10, True)
    assert rule.vms is None and rule.match is None and rule.condition is None and rule.throttle is None
    (step,) = rule.steps
    assert (step.timeout, step.retry, step.on_error, step.register, step.when) == (None, None, "stop", None, None)


@pytest.mark.parametrize(("written", "seconds"), [
    ("500ms", 0.5), ("5s", 5.0), ("10m", 600.0), ("1h", 3600.0), ("1d", 86400.0), ("2", 2.0), ("0.25", 0.25),
])
def test_durations(written: str, seconds: float) -> None:
    (rule,) = _load(f"""
        rules:
          - name: a
            on: STOP
            actions:
              - sleep: {written}
                timeout: {written}
        """).rules
    (step,) = rule.steps
    assert step.timeout == seconds
    assert step.args.static.duration == seconds


def test_on_key_is_not_yaml_boolean_and_list_and_star() -> None:
    rs = _load("""
        rules:
          - name: a
            on: [STOP, RESUME, STOP]
            actions: [{log: x}]
          - name: b
            on: "*"
            match: {anything.at.all: 1}
            actions: [{log: x}]
        """)
    a, b = rs.rules
    assert a.on == frozenset({"STOP", "RESUME"})
    assert b.on is None  # "*": paths are not checked


def test_yaml_merge_keys_anchors_and_scalar_types_load_as_written() -> None:
    rs = _load("""
        rules:
          - &base
            name: base
            on: BLOCK_IO_ERROR
            mode: queued
            match: {action: stop, nospace: false}
            actions:
              - log: !!str 42
              - log: "yes"
          - <<: *base
            name: derived
            mode: parallel
        """)
    base, derived = rs.rules
    assert (base.name, base.mode) == ("base", "queued")
    assert (derived.name, derived.mode) == ("derived", "parallel")   # written keys win over merged ones
    for rule in rs.rules:   # the rest is merged
        assert rule.on == frozenset({"BLOCK_IO_ERROR"})
        assert rule.match is not None and rule.match({"action": "stop", "nospace": False})
        assert not rule.match({"action": "stop", "nospace": True})
        assert [s.args.static.message for s in rule.steps] == ["42", "yes"]   # strings, not 42 and True


@pytest.mark.parametrize("brk", ["\x85", "\u2028", "\u2029"])
def test_positions_are_an_editors_where_yaml_alone_breaks_lines(brk: str) -> None:
    # YAML 1.1 ends a line at NEL, LS and PS too; an editor (and the file's line count) does not
    text = (f"rules:\n  - name: disk-full\n    on: BLOCK_IO_ERROR\n"
            f"    actions:\n      - log: {{message: \"a{brk}b{brk}c\"}}\n      - nosuchaction: {{}}\n")
    with pytest.raises(LoadError) as info:
        load_rules_text([("r.yaml", text)])
    (err,) = info.value.errors
    assert err.position is not None and (err.position.line, err.position.col) == (6, 9), str(err)
    with pytest.raises(LoadError) as info:   # a YAML syntax error after them, at the end of the text
        load_rules_text([("r.yaml", f"a: 1{brk}{brk}\nb: [")])
    (err,) = info.value.errors
    assert err.position is not None and err.position.line == 2, str(err)


def test_a_duplicate_key_is_reported_with_every_other_error_of_the_file() -> None:
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: a
                on: STOPP
                actions: [{log: x}]
              - name: b
                on: STOP
                on: RESUME
                match: {action: stop, action: report}
                actions: [{log: x}]
            """)
    got = [(e.position.line, e.position.col, e.message) for e in info.value.errors if e.position]
    assert got == [(3, 9, "unknown event 'STOPP' (did you mean 'STOP'?)"),
                   (7, 5, "duplicate key 'on' (first at line 6)"),
                   (8, 13, "STOP has no field 'action'; its fields: none"),   # the first 'on' is the one kept
                   (8, 27, "duplicate key 'action' (first at line 8)")], got


def test_on_may_name_an_event_a_rule_emits_and_match_its_data() -> None:
    rs = _load("""
        rules:
          - name: listener
            on: RESUMED_BY_REACTOR
            match: {why: BLOCK_IO_ERROR}
            actions: [{log: x}]
          - name: emitter
            on: STOP
            actions:
              - emit: {event: RESUMED_BY_REACTOR, data: {why: x}}
        """)
    assert [r.name for r in rs.rules] == ["listener", "emitter"]
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: listener
                on: RESUMED_BY_REACTOR
                match: {who: x}
                actions: [{log: x}]
              - name: emitter
                on: STOP
                actions:
                  - emit: {event: RESUMED_BY_REACTOR, data: {why: x}}
            """)
    assert [str(e) for e in info.value.errors] == [
        "r.yaml:4:13: RESUMED_BY_REACTOR has no field 'who' (did you mean 'why'?)"
    ]


def test_reactor_events_are_in_the_catalog() -> None:
    rs = _load("""
        rules:
          - name: a
            on: [REACTOR_ACTION_FAILED, REACTOR_VM_CONNECTED, REACTOR_VM_DISCONNECTED, REACTOR_RULES_RELOADED]
            match: {}
            actions: [{log: x}]
          - name: b
            on: REACTOR_ACTION_FAILED
            match: {rule: a, step: {ge: 1}, action: exec}
            actions: [{log: x}]
        """)
    assert len(rs) == 2


def test_empty_file_and_empty_rules_load_nothing() -> None:
    assert len(load_rules_text([("a.yaml", ""), ("b.yaml", "rules:\n"), ("c.yaml", "rules: []\n")])) == 0


def test_vms_forms() -> None:
    rs = _load("""
        rules:
          - name: a
            on: STOP
            vms: "web-*"
            actions: [{log: x}]
          - name: b
            on: STOP
            vms: {names: [db-1, "db-?"], labels: {env: prod, tier: "1", ha: true}}
            actions: [{log: x}]
        """)
    a, b = rs.rules
    assert a.vms is not None and a.vms.names == ("web-*",) and not a.vms.labels
    assert b.vms is not None and b.vms.names == ("db-1", "db-?")
    assert dict(b.vms.labels) == {"env": "prod", "tier": "1", "ha": "true"}


def test_a_directory_given_twice_is_read_once_and_a_problem_found_twice_is_reported_once(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - name: a\n    on: STOP\n    actions: [{log: x}]\n")
    assert [r.name for r in load_rules([tmp_path, tmp_path, tmp_path / "r.yaml"]).rules] == ["a"]
    (tmp_path / "r.yaml").write_text(   # the per path is checked for `on`'s event and for `after`'s: the same one
        "rules:\n  - name: b\n    on: BLOCK_IO_ERROR\n"
        "    after: {event: BLOCK_IO_ERROR, within: 1m, per: [data.nope]}\n    actions: [{log: x}]\n")
    with pytest.raises(LoadError) as info:
        load_rules([tmp_path])
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'r.yaml'}:4:54: after.per: BLOCK_IO_ERROR has no field 'nope' (did you mean 'data.nospace'?)"]


def test_a_misspelt_name_in_an_if_a_when_or_a_template_is_a_load_error_with_a_hint() -> None:
    with pytest.raises(LoadError) as info:
        _load("""
            rules:
              - name: a
                on: STOP
                if: "evnt.name == 'STOP'"
                actions:
                  - log: "{{ vm.name }} {{ vnm.labels }}"
                  - log: {message: "{{ event.name }}"}
                    when: "var.x"
            """)
    got = [(e.position.line, e.position.col, e.message) for e in info.value.errors if e.position]
    assert got == [
        (4, 9, "'if': unknown name 'evnt' (did you mean 'event'?); the names are event, now, rule, vars, vm"),
        (6, 14, "template: unknown name 'vnm' (did you mean 'vm'?); the names are event, now, rule, vars, vm"),
        (8, 15, "'when': unknown name 'var' (did you mean 'vars'?); the names are event, now, rule, vars, vm")], got
    # names a template sets itself, loop variables and Jinja's own globals are fine
    rs = _load("""
        rules:
          - name: b
            on: STOP
            actions:
              - log: "{% set n = 3 %}{% for i in range(n) %}{{ i }}{{ loop.index }}{% endfor %} {{ now }}"
              - log: "{{ vars.x | default(rule.name) }}"
        """)
    assert [r.name for r in rs.rules] == ["b"]
