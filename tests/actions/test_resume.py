"""The ``resume`` action: load-time checks, and the real daemon against fake QEMUs (tests/fakeqmp.py).

The fakes stand in for QEMU where the test needs many VMs or a VM that misbehaves
on cue (a ``cont`` that flaps, an error answer, a hang); the single-VM cases
against a real QEMU and the tiny guest are in tests/actions/test_resume_qemu.py.  Every
assertion reads what the daemon did from the journal (another reader, as
``reactor history`` would) or from what the fakes received.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakeqmp import FakeError, FakeQMP
from ports import free_port
from resume_fixtures import RULES, daemon_for, io_error

from reactor.daemon.daemon import Daemon
from reactor.errors import LoadError
from reactor.ops.journal import Journal, ResumeRecord, RunRecord
from reactor.rules.loader import load_rules_text

# --- load-time checks ---------------------------------------------------------------------------


def load_errors(actions: str) -> list[str]:
    text = f"rules:\n  - name: r\n    on: BLOCK_IO_ERROR\n    actions:\n{actions}"
    with pytest.raises(LoadError) as info:
        load_rules_text([("rules/r.yaml", text)])
    return [str(e) for e in info.value.errors]


def test_valid_resume_loads_with_nested_probe_steps() -> None:
    rs = load_rules_text([("rules/r.yaml", """
rules:
  - name: r
    on: BLOCK_IO_ERROR
    actions:
      - resume:
          settle: 1s
          probe:
            - exec: {argv: [/bin/true]}
              timeout: 5s
            - qmp: query-block
              register: blocks
          verify: 5s
          attempts: 2
          within: 30m
          backoff: 10s
          max_backoff: 1m
          max_concurrent: 3
          stagger: 200ms
      - resume: {}
      - resume:
""")])
    (rule,) = rs.rules
    first = rule.steps[0]
    assert [s.name for s in first.walk()] == ["resume", "exec", "qmp"]
    probe = first.args.static.probe
    assert probe[0].timeout == 5.0 and probe[1].register == "blocks"
    shown = first.args.shown
    assert shown is not None and shown["probe"] == [{"exec": {"argv": ["/bin/true"]}}, {"qmp": "query-block"}]
    defaults = rule.steps[1].args.static
    assert (defaults.settle, defaults.verify, defaults.attempts, defaults.within, defaults.backoff,
            defaults.max_backoff) == (2.0, 10.0, 3, 3600.0, 30.0, 600.0)
    assert rule.steps[2].args.static == defaults


def test_events_emitted_by_probe_steps_can_be_listened_to() -> None:
    rs = load_rules_text([("rules/r.yaml", """
rules:
  - name: r
    on: BLOCK_IO_ERROR
    actions:
      - resume:
          probe:
            - emit: {event: RESUME_PROBED, data: {what: storage}}
  - name: listener
    on: RESUME_PROBED
    match: {what: storage}
    actions:
      - log: probed
""")])
    assert "RESUME_PROBED" in rs.emitted


@pytest.mark.parametrize(("actions", "expected"), [
    ("      - resume: {atempts: 2}\n",
     "rules/r.yaml:5:18: resume: unknown argument 'atempts' (did you mean 'attempts'?)"),
    ("      - resume: {settle: -1}\n",
     "rules/r.yaml:5:26: resume: argument 'settle': a duration must be a non-negative"),
    ("      - resume: {backoff: -5s}\n", "rules/r.yaml:5:27: resume: argument 'backoff': expected a duration"),
    ("      - resume: {attempts: 0}\n", "rules/r.yaml:5:28: resume: attempts: 0 must be at least 1"),
    ("      - resume: {max_concurrent: 0}\n", "rules/r.yaml:5:34: resume: max_concurrent: 0 must be at least 1"),
    ("      - resume: {backoff: 1m, max_backoff: 10s}\n", "rules/r.yaml:5:44: resume: max_backoff: 10s is less"),
    ("      - resume: {probe: exec}\n", "rules/r.yaml:5:25: resume.probe: expected a list of steps, got"),
    ("      - resume:\n          probe:\n            - exce: {argv: [x]}\n",
     "rules/r.yaml:7:15: unknown action 'exce' (did you mean 'exec'?)"),
    ("      - resume:\n          probe:\n            - qmp: quit\n",
     "rules/r.yaml:7:20: qmp: quit is destructive"),
    ("      - resume:\n          probe:\n            - exec: {argv: [x], tiemout: 1s}\n",
     "rules/r.yaml:7:33: exec: unknown argument 'tiemout'"),
])
def test_bad_arguments_are_load_errors_with_position(actions: str, expected: str) -> None:
    errors = load_errors(actions)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]


def test_every_mistake_of_one_resume_step_is_reported_in_one_load() -> None:
    """The action's own check (attempts >= 1) runs on the arguments that did compile, beside the others' errors."""
    errors = load_errors("      - resume: {attempts: 0, settle: -1s, bogus: 1}\n")
    where = [e.split(": ", 1)[0] for e in errors]
    assert where == ["rules/r.yaml:5:28", "rules/r.yaml:5:39", "rules/r.yaml:5:44"], errors
    assert "attempts: 0 must be at least 1" in errors[0]
    assert "argument 'settle'" in errors[1] and "unknown argument 'bogus'" in errors[2]


async def test_explain_shows_the_backoff_and_the_give_up_from_the_journal(tmp_path: Path) -> None:
    from reactor.engine.explain import explain, format_verdicts
    from reactor.testing.events import make_event

    rs = load_rules_text([("rules/r.yaml", RULES.replace("{ARGS}", "{attempts: 2, backoff: 1m}"))])
    event = make_event("BLOCK_IO_ERROR", io_error(), vm="vm1")
    async with Journal(tmp_path / "journal.db") as j:
        (v,) = explain(event, rs, journal=j, now=1000.0)
        assert v.resume == "0 failed attempt(s) of vm1 within 1h: the first attempt would start after settle (2s)"
        j.record_resume(ResumeRecord("vm1", "resume-io", 1, "1.1", "end", "flap", 900.0, 950.0, 960.0, 980.0,
                                     "STOP 50ms after cont"))
        (v,) = explain(event, rs, journal=j, now=1000.0)
        assert v.resume == ("1 failed attempt(s) of vm1 within 1h (limit 2; last: STOP 50ms after cont): "
                            "would back off 40s first")
        j.record_resume(ResumeRecord("vm1", "resume-io", 1, "1.2", "cont", "cont", 990.0, 990.0, 995.0, 995.0,
                                     None))   # a cont whose outcome never came (kill -9): counted
        (v,) = explain(event, rs, journal=j, now=1000.0)
        assert v.resume is not None and v.resume.startswith("2 failed attempt(s)") and "would give up" in v.resume
        assert "      resume: 2 failed attempt(s)" in format_verdicts(event, [v])
        assert explain(event, rs, journal=j, now=1000.0 + 3600 + 996)[0].resume.startswith("0 failed")  # type: ignore[union-attr]


# --- the daemon against fakes -------------------------------------------------------------------


def flapping(fake: FakeQMP, *, recover_after: int | None = None) -> Callable[[dict[str, Any]], Any]:
    """A ``cont`` as on a disk that keeps failing: RESUME, then BLOCK_IO_ERROR and STOP (io-error again).

    With ``recover_after=N`` the disk works from the (N+1)th cont on.
    """
    conts = 0

    def cont(_args: dict[str, Any]) -> dict[str, Any]:
        nonlocal conts
        conts += 1
        fake.status = "running"
        fake.emit("RESUME")
        if recover_after is None or conts <= recover_after:
            loop = asyncio.get_running_loop()

            def fail() -> None:
                fake.status = "io-error"
                fake.emit("BLOCK_IO_ERROR", io_error())
                fake.emit("STOP")

            loop.call_later(0.05, fail)
        return {}

    return cont


def journal_rows(state: Path) -> tuple[list[RunRecord], list[ResumeRecord], list[Any]]:
    j = Journal(state / "journal.db")
    j.open_sync(readonly=True)
    try:
        return (list(reversed(j.runs(limit=1000))), j.resume_history(limit=10_000),
                list(reversed(j.events(limit=10_000))))
    finally:
        j.close_sync()


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):  # noqa: ASYNC110 - polling the journal and the fakes
                await asyncio.sleep(0.05)
            return value
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def finished_runs(daemon: Daemon, tmp: Path, rule: str, n: int = 1) -> Callable[[], list[RunRecord] | None]:
    def check() -> list[RunRecord] | None:
        runs = [r for r in journal_rows(tmp / "state")[0]
                if r.rule == rule and r.ended is not None and r.outcome == "started"]
        return runs if len(runs) >= n else None
    return check


def conts(fake: FakeQMP) -> int:
    return sum(1 for c, _ in fake.commands if c == "cont")


async def test_operator_pause_is_left_alone(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="paused") as fake, \
            daemon_for(tmp_path, [fake], "{settle: 0s, verify: 200ms}") as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())   # the event, but QEMU says the VM is paused by an operator
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 10, "the resume run")
    assert run.status == "ok"
    (step,) = run.steps
    assert step.result["resumed"] is False and "paused" in step.result["reason"]
    assert conts(fake) == 0 and fake.status == "paused"
    assert [c for c, _ in fake.commands if c == "query-status"]


async def test_a_disk_that_keeps_failing_gets_attempts_conts_with_growing_gaps_then_gives_up(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake:
        fake.handlers["cont"] = flapping(fake)
        args = "{settle: 0s, verify: 1s, attempts: 3, backoff: 500ms, max_backoff: 10s, stagger: 0s}"
        async with daemon_for(tmp_path, [fake], args) as daemon:
            fake.status = "io-error"
            fake.emit("BLOCK_IO_ERROR", io_error())
            fake.emit("STOP")
            runs = await until(finished_runs(daemon, tmp_path, "gave-up"), 30, "the give-up")
            await asyncio.sleep(0.5)
            assert conts(fake) == 3 and fake.status == "io-error"
        all_runs, rows, events = journal_rows(tmp_path / "state")
    (resume_run,) = [r for r in all_runs if r.rule == "resume-io" and r.outcome == "started"]
    assert {r.outcome for r in all_runs if r.rule == "resume-io"} == {"started", "dropped"}  # the flaps' events
    result = resume_run.steps[-1].result
    assert result["resumed"] is False and result["reason"].startswith("gave up: 3 failed attempts within 1h")
    assert result["attempts"] == 3 and [h["outcome"] for h in result["history"]] == ["flap"] * 3
    assert [d["decision"] for d in result["decisions"]] == ["backoff", "backoff", "give-up"]
    assert 0.3 < result["decisions"][0]["seconds"] <= 0.5 < 0.8 < result["decisions"][1]["seconds"] <= 1.0
    cont_times = [r.cont for r in rows if r.phase == "cont" and r.cont is not None]
    assert len(cont_times) == 3
    gaps = [b - a for a, b in itertools.pairwise(cont_times)]
    assert 0.5 <= gaps[0] < gaps[1], gaps   # 500 ms, then 1 s of backoff (plus the flap itself)
    assert [r.outcome for r in rows if r.phase == "end"] == ["flap", "flap", "flap", "gave-up"]
    (gave_up,) = [e for e in events if e.name == "REACTOR_RESUME_GAVE_UP"]
    assert gave_up.data["attempts"] == 3 and "BLOCK_IO_ERROR" in gave_up.data["last_error"]
    assert gave_up.data["since"] == pytest.approx(rows[0].started)
    assert runs[0].status == "ok"
    assert sum(1 for e in events if e.name == "RESUME") == 3


async def test_resumed_once_the_disk_recovers(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake:
        fake.handlers["cont"] = flapping(fake, recover_after=1)
        args = "{settle: 0s, verify: 500ms, backoff: 200ms, stagger: 0s}"
        async with daemon_for(tmp_path, [fake], args) as daemon:
            fake.status = "io-error"
            fake.emit("BLOCK_IO_ERROR", io_error())
            (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 20, "the resume run")
    result = run.steps[-1].result
    assert result["resumed"] is True and result["attempts"] == 2
    assert [h["outcome"] for h in result["history"]] == ["flap", "resumed"]
    assert fake.status == "running" and conts(fake) == 2


async def test_failing_and_hanging_probes_end_the_attempt_and_count(tmp_path: Path) -> None:
    marker = tmp_path / "storage-ok"
    args = ("{settle: 0s, verify: 300ms, backoff: 200ms, attempts: 5, stagger: 0s, probe: ["
            f"{{exec: {{argv: [test, -e, {marker}]}}}}, {{exec: {{argv: [sleep, '60']}}, timeout: 300ms,"
            " when: 'false'}]}")
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error") as fake, \
            daemon_for(tmp_path, [fake], args) as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())
        await until(lambda: [r for r in journal_rows(tmp_path / "state")[1] if r.outcome == "probe-failed"][1:],
                    10, "two failed probes")
        assert conts(fake) == 0
        marker.touch()
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 20, "the resume run")
    result = run.steps[-1].result
    assert result["resumed"] is True
    outcomes = [h["outcome"] for h in result["history"]]
    assert outcomes[-1] == "resumed" and set(outcomes[:-1]) == {"probe-failed"} and len(outcomes) >= 3
    probes = [s for s in run.steps if s.action == "probe:exec"]
    assert probes and probes[0].status == "failed" and probes[0].index == 0
    assert [s.status for s in probes[-2:]] == ["ok", "skipped"]
    assert conts(fake) == 1


async def test_a_hanging_probe_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    args = ("{settle: 0s, verify: 300ms, backoff: 100ms, attempts: 2,"
            " probe: [{exec: {argv: [sleep, '60']}, timeout: 300ms}]}")
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error") as fake, \
            daemon_for(tmp_path, [fake], args) as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 20, "the resume run")
        assert daemon.engine is not None and daemon.engine.runs_in_flight == 0
    result = run.steps[-1].result
    assert result["resumed"] is False and result["reason"].startswith("gave up: 2 failed attempts")
    assert [s.status for s in run.steps if s.action == "probe:exec"] == ["timeout", "timeout"]
    assert conts(fake) == 0


async def test_an_error_answer_to_cont_is_a_failed_attempt(tmp_path: Path) -> None:
    refused = 0

    def cont(_args: dict[str, Any]) -> Any:
        nonlocal refused
        if refused < 1:
            refused += 1
            raise FakeError("GenericError", "Resetting the Virtual Machine is required")
        fake.status = "running"
        fake.emit("RESUME")
        return {}

    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error",
                       handlers={"cont": cont}) as fake, \
            daemon_for(tmp_path, [fake], "{settle: 0s, verify: 300ms, backoff: 100ms, stagger: 0s}") as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 20, "the resume run")
        _, rows, _ = journal_rows(tmp_path / "state")
    result = run.steps[-1].result
    assert result["resumed"] is True
    assert [h["outcome"] for h in result["history"]] == ["cont-failed", "resumed"]
    assert "Resetting the Virtual Machine is required" in result["history"][0]["error"]
    assert [r.outcome for r in rows if r.phase == "end"] == ["cont-failed", "resumed"]


async def test_a_vm_that_disconnects_mid_resume_fails_the_step_and_the_daemon_goes_on(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error", close_on={"cont"}) as fake, \
            FakeQMP(tmp_path / "vm2.qmp", name="vm2", status="io-error") as other, \
            daemon_for(tmp_path, [fake, other], "{settle: 0s, verify: 300ms, stagger: 0s}") as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())
        runs = await until(finished_runs(daemon, tmp_path, "resume-io"), 20, "the resume run")
        other.emit("BLOCK_IO_ERROR", io_error())
        runs = await until(finished_runs(daemon, tmp_path, "resume-io", 2), 20, "the second VM's run")
        _, rows, _ = journal_rows(tmp_path / "state")
    first, second = runs
    assert first.status == "failed" and "disconnected" in (first.steps[-1].error or "")
    assert second.status == "ok" and second.steps[-1].result["resumed"] is True
    assert [(r.vm, r.outcome) for r in rows if r.phase == "end"] == [("vm1", "disconnected"), ("vm2", "resumed")]


async def test_dry_run_sends_only_the_queries(tmp_path: Path) -> None:
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error") as fake, \
            daemon_for(tmp_path, [fake], "{settle: 0s, probe: [{qmp: query-block}, {qmp: stop}]}",
                       dry_run=True) as daemon:
        fake.handlers["query-block"] = lambda _a: []
        fake.emit("BLOCK_IO_ERROR", io_error())
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 10, "the resume run")
        _, rows, _ = journal_rows(tmp_path / "state")
    assert {c for c, _ in fake.commands} <= {"qmp_capabilities", "query-version", "query-status", "query-name",
                                            "query-qmp-schema", "query-block"}
    result = run.steps[-1].result
    assert result["resumed"] is False and result["reason"].startswith("dry run: would send cont")
    assert [(s.action, s.status) for s in run.steps] == [("probe:qmp", "ok"), ("probe:qmp", "dry-run"),
                                                          ("resume", "ok")]
    assert rows == [] and fake.status == "io-error"


async def test_twenty_vms_at_most_three_at_once_in_arrival_order(tmp_path: Path) -> None:
    n = 20
    fakes = [FakeQMP(tmp_path / f"vm{i:02d}.qmp", name=f"vm{i:02d}", status="io-error") for i in range(n)]
    port = free_port()
    seen: list[dict[str, Any]] = []   # /api/vms's resume entries while VMs wait
    metrics: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        for f in fakes:
            await stack.enter_async_context(f)
        client = await stack.enter_async_context(aiohttp.ClientSession())
        args = "{settle: 100ms, verify: 300ms, max_concurrent: 3, stagger: 50ms}"
        async with daemon_for(tmp_path, fakes, args, http_port=port) as daemon:
            order = [fakes[i] for i in (7, 3, 19, 0, 12, 5, 8, 1, 15, 2, 9, 18, 4, 11, 6, 17, 10, 13, 16, 14)]
            for f in order:   # a storage outage: every VM pauses, one after the other
                f.emit("BLOCK_IO_ERROR", io_error())
                await asyncio.sleep(0.02)
            async with asyncio.timeout(60):
                while not all(f.status == "running" for f in fakes):
                    async with client.get(f"http://127.0.0.1:{port}/api/vms") as resp:
                        seen.extend(vm["resume"] | {"vm": vm["name"]} for vm in await resp.json() if vm["resume"])
                    async with client.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        metrics.append(await resp.text())
                    await asyncio.sleep(0.1)
            await until(finished_runs(daemon, tmp_path, "resume-io", n), 20, "every run")
            async with client.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics.append(await resp.text())
        runs, rows, _ = journal_rows(tmp_path / "state")
    ends = [r for r in rows if r.phase == "end"]
    assert len(ends) == n and {r.outcome for r in ends} == {"resumed"}
    # never more than 3 in a resume: at every slot start, count the slots held then
    overlaps = [len([o for o in ends if o.started <= r.started < o.ended]) for r in ends]
    assert max(overlaps) == 3, overlaps
    by_start = [r.vm for r in sorted(ends, key=lambda r: r.started)]
    assert by_start == [f.name for f in order]   # first come, first served
    cont_times = sorted(r.cont for r in rows if r.phase == "cont" and r.cont is not None)
    assert min(b - a for a, b in itertools.pairwise(cont_times)) >= 0.049   # stagger
    assert all(r.steps[-1].result["resumed"] for r in runs if r.rule == "resume-io")
    waiting = [e for e in seen if e["phase"] == "waiting"]
    assert waiting and max(e["position"] for e in waiting) >= 5
    assert {e["phase"] for e in seen} >= {"waiting", "verify"}
    assert any("reactor_resume_waiting " in m and "reactor_resume_waiting 0.0" not in m for m in metrics)
    assert 'reactor_resume_attempts_total{outcome="resumed"} 20.0' in metrics[-1]
    assert "reactor_resume_active 0.0" in metrics[-1]


async def test_one_resume_per_vm_whatever_the_rule(tmp_path: Path) -> None:
    rules = RULES + """
  - name: resume-at-connect
    on: STOP
    actions:
      - resume: {ARGS}
"""
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error") as fake, \
            daemon_for(tmp_path, [fake], "{settle: 300ms, verify: 300ms, stagger: 0s}", rules=rules) as daemon:
        fake.emit("BLOCK_IO_ERROR", io_error())
        fake.emit("STOP")
        await until(finished_runs(daemon, tmp_path, "resume-at-connect"), 10, "the second rule's run")
        (first,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 10, "the first rule's run")
        (second,) = finished_runs(daemon, tmp_path, "resume-at-connect")() or []
    assert first.steps[-1].result["resumed"] is True
    assert second.steps[-1].result == {"resumed": False, "attempts": 0, "waited": 0.0, "failures": 0, "history": [],
                                       "reason": f"a resume of vm1 is in progress (rule resume-io, run {first.id})"}
    assert conts(fake) == 1


async def test_a_block_io_error_seen_before_the_vm_stopped_is_still_resumed(tmp_path: Path) -> None:
    """QEMU emits BLOCK_IO_ERROR, then stops the VM: a query-status in between says running."""
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake, \
            daemon_for(tmp_path, [fake], "{settle: 0s, verify: 300ms, stagger: 0s}") as daemon:
        before = [c for c, _ in fake.commands].count("query-status")
        fake.emit("BLOCK_IO_ERROR", io_error())
        await until(lambda: [c for c, _ in fake.commands].count("query-status") >= before + 3, 5,
                    "the step asking again while the VM still runs")
        fake.status = "io-error"
        fake.emit("STOP")
        (run,) = await until(finished_runs(daemon, tmp_path, "resume-io"), 10, "the resume run")
    assert run.steps[-1].result["resumed"] is True and conts(fake) == 1


async def test_a_give_up_is_notified_once_per_episode(tmp_path: Path) -> None:
    """Events of the last flap that start runs after the give-up (a second in-flight write failing late)
    find it given up: no second give-up, no second REACTOR_RESUME_GAVE_UP."""
    rules = RULES + """
  - name: resume-other
    on: BLOCK_IO_ERROR
    actions:
      - resume: {ARGS}
"""
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="running") as fake:
        plain = flapping(fake)

        def cont(args: dict[str, Any]) -> Any:
            asyncio.get_running_loop().call_later(0.4, fake.emit, "BLOCK_IO_ERROR", io_error())   # a late one
            return plain(args)

        fake.handlers["cont"] = cont
        args = "{settle: 0s, verify: 1s, attempts: 2, backoff: 200ms, stagger: 0s}"
        async with daemon_for(tmp_path, [fake], args, rules=rules) as daemon:
            fake.status = "io-error"
            fake.emit("BLOCK_IO_ERROR", io_error())
            fake.emit("STOP")
            await until(finished_runs(daemon, tmp_path, "gave-up"), 20, "the give-up")
            await asyncio.sleep(1.0)   # the late event's runs
            assert daemon.engine is not None and daemon.engine.runs_in_flight == 0
        runs, rows, events = journal_rows(tmp_path / "state")
    assert conts(fake) == 2
    assert len([e for e in events if e.name == "REACTOR_RESUME_GAVE_UP"]) == 1
    assert [r.outcome for r in rows if r.outcome == "gave-up"] == ["gave-up"]
    reasons = [r.steps[-1].result["reason"] for r in runs if r.outcome == "started" and r.rule != "gave-up"]
    assert len([x for x in reasons if x.startswith("gave up: 2 failed attempts")]) == 1
    assert [x for x in reasons if x.startswith("gave up already")], reasons   # the late event after the give-up
    assert all(x.startswith(("gave up: 2", "gave up already", "a resume of vm1 is in progress")) for x in reasons)
