"""reactor.testing: typed events, the fake VM, the action harness, rules on a virtual clock."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from reactor.errors import RuleError, VMCommandError, VMConnectionError
from reactor.model.catalog.events import BlockIoError
from reactor.plugin import ActionContext, Duration, Resource, action
from reactor.testing import ActionHarness, FakeVM, make_event, run_action, run_rules


def test_make_event_is_typed_and_checked() -> None:
    ev = make_event("BLOCK_IO_ERROR", {"device": "d0", "operation": "write", "action": "stop",
                                       "reason": "No space left on device", "nospace": True}, vm="web-1", at=5.5)
    assert isinstance(ev, BlockIoError) and ev.valid
    assert (ev.vm, ev.timestamp, ev.nospace) == ("web-1", 5.5, True)
    assert not make_event("BLOCK_IO_ERROR", {"device": 3}).valid


async def test_fake_vm_answers_like_qemu() -> None:
    vm = FakeVM("web-1", status="paused", responses={"query-block": [{"device": "d0"}]})
    assert await vm.execute("query-block") == [{"device": "d0"}]
    assert (await vm.execute("query-status"))["status"] == "paused"
    await vm.execute("cont")
    assert vm.status == "running"
    with pytest.raises(VMCommandError) as info:
        await vm.execute("no-such-command", {"x": 1})
    assert info.value.error_class == "CommandNotFound"
    vm.fail("stop", "GenericError", "nope")
    with pytest.raises(VMCommandError, match="stop: GenericError: nope"):
        await vm.execute("stop")
    vm.respond("query-name", lambda args: {"name": "renamed"})
    assert await vm.execute("query-name") == {"name": "renamed"}
    assert [c for c, _ in vm.commands] == ["query-block", "query-status", "cont", "no-such-command", "stop",
                                           "query-name"]
    assert vm.called("no-such-command") == [{"x": 1}]
    vm.disconnect()
    with pytest.raises(VMConnectionError):
        await vm.execute("query-status")


class Counter(Resource):
    started = 0
    closed = 0

    async def start(self) -> None:
        Counter.started += 1
        self.value = 0

    async def aclose(self) -> None:
        Counter.closed += 1


@dataclass(frozen=True)
class BumpArgs:
    by: int = 1
    wait: Duration = Duration(0)  # noqa: RUF009


@action("bump", resources=(Counter,))
async def bump(ctx: ActionContext, args: BumpArgs) -> int:
    counter = ctx.resource(Counter)
    await ctx.sleep(args.wait)
    counter.value += args.by
    ctx.emit("BUMPED", {"value": counter.value})
    resumed = await ctx.wait_for("RESUME", timeout=5)
    return counter.value + int(resumed.timestamp - ctx.event.timestamp)


async def test_action_harness_runs_an_action_with_resources_events_and_virtual_time() -> None:
    Counter.started = Counter.closed = 0
    async with ActionHarness(event=make_event("STOP", vm="web-1", at=100.0)) as h:
        h.feed(make_event("RESUME", vm="web-1", at=200.0))
        t0 = time.monotonic()
        assert await h.run(bump, {"by": 2, "wait": "1h"}) == 2 + 100
        assert time.monotonic() - t0 < 1
        assert h.clock.now() == 100.0 + 3600
        assert [(e.name, dict(e.data), e.vm) for e in h.emitted] == [("BUMPED", {"value": 2}, "web-1")]
        with pytest.raises(TimeoutError):                         # no RESUME left
            await h.run(bump, {"by": 1})
    assert (Counter.started, Counter.closed) == (1, 1)
    with pytest.raises(RuleError, match="bump: by: expected an integer, got string 'x'"):
        await run_action(bump, {"by": "x"})


async def test_run_rules_reports_what_ran_on_a_virtual_clock() -> None:
    vm = FakeVM("web-1", status="paused")
    t0 = time.monotonic()
    out = await run_rules("""
        rules:
          - name: resume
            on: STOP
            throttle: {max: 1, within: 1h}
            actions:
              - sleep: 10m
              - qmp: cont
              - wait_for: RESUME
              - emit: {event: RESUMED_BY_RULE, data: {after: "{{ vars.w.timestamp }}"}}
                when: "true"
        """.replace("- wait_for: RESUME", "- {wait_for: RESUME, register: w}"),
        [make_event("STOP", vm="web-1", at=1000.0), make_event("STOP", vm="web-1", at=2000.0)], vms=[vm])
    assert time.monotonic() - t0 < 2
    assert [(c.action, c.status, c.time) for c in out.calls] == [
        ("sleep", "ok", 1000.0), ("qmp", "ok", 1600.0), ("wait_for", "ok", 1600.0), ("emit", "ok", 1600.0)]
    assert out.called("qmp") == [{"execute": "cont", "arguments": {}, "vm": None, "timeout": 10.0,
                                  "allow_destructive": False}]
    assert vm.commands == [("cont", {})]
    assert out.runs("resume") == {"ok": 1, "throttled": 1}
    assert [e.data["after"] for e in out.emitted("RESUMED_BY_RULE")] == [1600.0]
