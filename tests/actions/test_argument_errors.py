"""Every independent check of one step's arguments is reported in one load, each at its own position.

RULES.md: "Loading is all-or-nothing: every error in every file is reported".  An action's ``check``
reports several problems with :class:`reactor.plugin.ArgumentErrors`; a plain ``ValueError``
(what plugins raise) keeps working as one problem.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from reactor.actions.action import ActionContext, action
from reactor.errors import LoadError, RuleError
from reactor.plugin import ArgumentErrors, ProblemKey
from reactor.rules.loader import load_rules_text
from reactor.testing import load_test_rules, make_event, run_action, run_rules


def rule(step: str) -> str:
    return f"rules:\n  - name: r\n    on: STOP\n    actions:\n      - {step}\n"


def errors_of(step: str) -> list[tuple[int, int, str]]:
    with pytest.raises(LoadError) as info:
        load_rules_text([("r.yaml", rule(step))])
    return sorted((e.position.line, e.position.col, e.message) for e in info.value.errors
                  if e.position is not None)


def at(step: str, token: str, nth: int = 0) -> tuple[int, int]:
    """The (line, col) of the ``nth`` ``token`` in ``step`` as written on line 5 of :func:`rule`."""
    col = -1
    for _ in range(nth + 1):
        col = step.index(token, col + 1)
    return 5, len("      - ") + col + 1


def expect(step: str, *problems: tuple[str, str]) -> list[tuple[int, int, str]]:
    """The errors of ``step``: each (token whose position it has, message)."""
    return sorted((*at(step, token), message) for token, message in problems)


# --- the user's reports -------------------------------------------------------------------------------


def test_resume_reports_max_concurrent_and_attempts() -> None:
    step = "resume: {max_concurrent: 0, attempts: 0}"
    assert errors_of(step) == expect(step, ("0,", "resume: max_concurrent: 0 must be at least 1"),
                                     ("0}", "resume: attempts: 0 must be at least 1"))


def test_resume_reports_max_concurrent_and_within() -> None:
    step = "resume: {max_concurrent: -3, within: 0}"
    assert errors_of(step) == expect(step, ("-3", "resume: max_concurrent: -3 must be at least 1"),
                                     ("0}", "resume: within: must be greater than zero"))


def test_mqtt_reports_topic_and_qos() -> None:
    step = 'mqtt: {topic: "a/+", qos: 5}'
    assert errors_of(step) == expect(step, ('"a/+"', "mqtt: topic: 'a/+' is not a valid topic to publish to"),
                                     ("5", "mqtt: qos: 5 is not one of 0, 1, 2"))


def test_wait_for_reports_each_bad_event_name_and_the_timeout_at_their_own_places() -> None:
    step = "wait_for: {event: [RESUME, resume, stop], timeout: 0}"
    assert errors_of(step) == expect(
        step,
        ("resume", "wait_for: event name 'resume' must be upper case letters, digits and _"),
        ("stop", "wait_for: event name 'stop' must be upper case letters, digits and _"),
        ("0}", "wait_for: timeout must be positive"))


def test_a_type_error_and_check_errors_of_one_step_are_all_reported() -> None:
    step = "resume: {attempts: 0, max_concurrent: 0, settle: soon}"
    errors = errors_of(step)
    assert [(line, col) for line, col, _ in errors] == [at(step, "0,"), at(step, "0, s"), at(step, "soon")]
    assert "attempts: 0 must be at least 1" in errors[0][2]
    assert "max_concurrent: 0 must be at least 1" in errors[1][2]
    assert "argument 'settle'" in errors[2][2]


# --- the other built-in actions ------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "problems"), [
    ("snapshot: {name: 'a b', keep: 0, timeout: 0}", [
        ("'a b'", "snapshot: name 'a b': letters, digits, '.', '_' and '-' only"),
        ("0,", "snapshot: keep must be at least 1"),
        ("0}", "snapshot: timeout must be positive")]),
    ("snapshot: {mode: external, keep: 2}", [
        ("external", "snapshot: mode external needs dir: the directory for the overlay images"),
        ("2", "snapshot: keep applies to internal snapshots only (external overlays are part of the disk's "
              "backing chain; reactor never removes them)")]),
    ("webhook: {url: 'ftp://x', retries: 50, secret: a, secret_file: b}", [
        ("'ftp://x'", "webhook: url: 'ftp://x' is not an http:// or https:// URL"),
        ("50", "webhook: retries: 50 is not between 0 and 20"),
        (" b}", "webhook: give either secret or secret_file, not both")]),
    ("qmp: {execute: Cont, timeout: 0s}", [
        ("Cont", "qmp: 'Cont' is not a QMP command name (lower case, digits, - and _)"),
        ("0s", "qmp: timeout must be positive")]),
    ("qmp: {execute: quit, timeout: 0}", [
        ("quit,", "qmp: quit is destructive and refused by default; if this rule really means it, opt in with "
                  "`qmp: {execute: quit, allow_destructive: true}`"),
        ("0}", "qmp: timeout must be positive")]),
    ("resume: {backoff: 1m, max_backoff: 10s, attempts: 0}", [
        ("10s", "resume: max_backoff: 10s is less than backoff (1m)"),
        ("0}", "resume: attempts: 0 must be at least 1")]),
])
def test_every_check_of_a_builtin_step_is_reported(step: str, problems: list[tuple[str, str]]) -> None:
    expected = expect(step, *problems)
    # " b}" points at the space before b: move to the value
    expected = [(line, col + 1 if msg.endswith("not both") else col, msg) for line, col, msg in expected]
    assert errors_of(step) == expected


@pytest.mark.parametrize(("step", "token", "message"), [
    ("wait_for: {event: RESUME, timeout: 0s}", "0s", "wait_for: timeout must be positive"),
    ("exec: {argv: [], timeout: 1s}", "[]", "exec: argv must name a program"),
    ("emit: {event: REACTOR_X, data: {}}", "REACTOR_X",
     "emit: event name 'REACTOR_X': the REACTOR_ prefix is reserved for reactor's own events"),
    ("libvirt_snapshot: {name: n, keep: 0}", "0", "libvirt_snapshot: keep: 0 must be at least 1"),
    ("libvirt_qmp: {vm: x, execute: Cont}", "Cont",
     "libvirt_qmp: 'Cont' is not a QMP command name (lower case, digits, - and _)"),
])
def test_a_check_error_points_at_its_argument_not_the_step(step: str, token: str, message: str) -> None:
    assert errors_of(step) == [(*at(step, token), message)]


def test_the_shorthand_form_is_located_at_its_value() -> None:
    assert errors_of("wait_for: resume") == [(5, 19, "wait_for: event name 'resume' must be upper case letters, "
                                                     "digits and _")]


def test_a_check_problem_about_an_argument_that_failed_to_convert_is_not_reported() -> None:
    """dir failed, so the check sees its default (None): 'mode external needs dir' would be wrong."""
    step = "snapshot: {mode: external, dir: [a], timeout: 0}"
    assert errors_of(step) == expect(step, ("[a]", "snapshot: argument 'dir': expected a string, got list"),
                                     ("0}", "snapshot: timeout must be positive"))


# --- plugins -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountArgs:
    count: int = 1
    label: str = "x"


def _plain_check(args: CountArgs) -> None:
    if args.count < 1:
        raise ValueError(f"count: {args.count} must be at least 1")
    if not args.label:
        raise ValueError("label must not be empty")


def _many_check(args: CountArgs) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    if args.count < 1:
        problems.append(("count", f"count: {args.count} must be at least 1"))
    if not args.label:
        problems.append(("label", "label must not be empty"))
    if problems:
        raise ArgumentErrors(problems)


async def _count(ctx: ActionContext, args: CountArgs) -> int:
    return args.count


PLAIN = action("plain_count", check=_plain_check, mutating=False)(_count)
MANY = action("many_count", check=_many_check, mutating=False)(_count)


def plugin_errors(spec_name: str) -> list[tuple[int, int, str]]:
    with pytest.raises(LoadError) as info:
        load_test_rules(rule(spec_name + ': {count: 0, label: ""}'), actions=[PLAIN, MANY])
    return [(e.position.line, e.position.col, e.message) for e in info.value.errors if e.position is not None]


def test_a_plugin_check_raising_value_error_still_works() -> None:
    """Only its first problem (it raises there), located by the message's leading "count: "."""
    step = 'plain_count: {count: 0, label: ""}'
    assert plugin_errors("plain_count") == [(*at(step, "0"), "plain_count: count: 0 must be at least 1")]


def test_a_plugin_check_raising_argument_errors_reports_each_at_its_value() -> None:
    step = 'many_count: {count: 0, label: ""}'
    assert plugin_errors("many_count") == [(*at(step, "0"), "many_count: count: 0 must be at least 1"),
                                           (*at(step, '""'), "many_count: label must not be empty")]


@dataclass(frozen=True)
class NestedArgs:
    items: list[str]
    opts: dict[str, str]


def _nested_check(args: NestedArgs) -> None:
    raise ArgumentErrors([("items[1]", "the second item is wrong"), ("opts.level", "level is wrong"),
                          (("missing", "opts"), "opts, since missing is not written"), (None, "the step")])


async def _nested(ctx: ActionContext, args: NestedArgs) -> None:
    return None


NESTED = action("nested", check=_nested_check, mutating=False)(_nested)


def test_a_problem_key_can_be_a_path_into_an_argument_or_several_arguments() -> None:
    step = "nested: {items: [a, b], opts: {level: x}}"
    with pytest.raises(LoadError) as info:
        load_test_rules(rule(step), actions=[NESTED])
    got = [(e.position.line, e.position.col, e.message) for e in info.value.errors if e.position is not None]
    assert sorted(got) == sorted([(*at(step, "b"), "nested: the second item is wrong"),
                                  (*at(step, "x"), "nested: level is wrong"),
                                  (*at(step, "{level"), "nested: opts, since missing is not written"),
                                  (*at(step, "{items"), "nested: the step")])


def test_argument_errors_is_a_value_error_with_every_message() -> None:
    err = ArgumentErrors([("count", "count: 0 must be at least 1"), (None, "label must not be empty")])
    assert isinstance(err, ValueError)
    assert str(err) == "count: 0 must be at least 1; label must not be empty"
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ArgumentErrors) and again.problems == err.problems


async def test_run_action_reports_every_problem() -> None:
    with pytest.raises(RuleError, match="count: 0 must be at least 1; label must not be empty"):
        await run_action(MANY, {"count": 0, "label": ""})


async def test_templated_arguments_are_checked_per_run_with_every_problem() -> None:
    out = await run_rules("""
        rules:
          - name: r
            on: STOP
            actions:
              - many_count: {count: "{{ 0 }}", label: ""}
        """, [make_event("STOP", {}, vm="vm0")], actions=[MANY])
    [call] = out.calls
    assert call.status == "failed"
    assert call.error is not None
    assert "count: 0 must be at least 1" in call.error and "label must not be empty" in call.error
