"""The alertmanager action against a real HTTP server speaking Alertmanager's v2 alerts endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from reactor_alertmanager import ALERTMANAGER

from reactor.errors import ActionError, LoadError
from reactor.testing import ActionHarness, FakeVM, load_test_rules, make_event, run_rules


class Alertmanager:
    """A loopback HTTP server that records what is posted to /api/v2/alerts."""

    def __init__(self) -> None:
        self.posts: list[Any] = []
        self.status = 200
        self.url = ""

    async def alerts(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        return web.Response(status=self.status, text="" if self.status == 200 else "bad alert")


@pytest.fixture
async def am() -> AsyncIterator[Alertmanager]:
    server = Alertmanager()
    app = web.Application()
    app.router.add_post("/api/v2/alerts", server.alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def test_posts_an_alert_with_the_event_labels(am: Alertmanager) -> None:
    event = make_event("GUEST_PANICKED", {"action": "pause"}, vm="db-1", at=1_700_000_000.0, host="h1")
    async with ActionHarness(event=event, rule="panic-alert") as h:
        result = await h.run(ALERTMANAGER, {"url": am.url, "severity": "critical", "labels": {"team": "db"},
                                            "annotations": {"summary": "db-1 panicked"}})
        await h.run(ALERTMANAGER, {"url": am.url + "/", "resolve": True})
    assert result["status"] == 200
    first, second = am.posts
    assert first == [{"labels": {"alertname": "ReactorEvent", "severity": "critical", "vm": "db-1",
                                 "rule": "panic-alert", "event": "GUEST_PANICKED", "reactor_host": "h1",
                                 "team": "db"},
                      "annotations": {"summary": "db-1 panicked"}, "startsAt": "2023-11-14T22:13:20Z"}]
    assert second[0]["endsAt"] == "2023-11-14T22:13:20Z"
    assert second[0]["annotations"] == {"summary": "GUEST_PANICKED on db-1"}


async def test_http_errors_fail_the_step(am: Alertmanager) -> None:
    am.status = 400
    async with ActionHarness() as h:
        with pytest.raises(ActionError, match="answered 400: bad alert"):
            await h.run(ALERTMANAGER, {"url": am.url})
        with pytest.raises(ActionError, match=r"alertmanager: http://127\.0\.0\.1:1/api/v2/alerts"):
            await h.run(ALERTMANAGER, {"url": "http://127.0.0.1:1"})


async def test_in_rules_with_templates_and_a_shared_session(am: Alertmanager) -> None:
    out = await run_rules(f"""
        rules:
          - name: paused
            on: STOP
            actions:
              - alertmanager: {{url: "{am.url}", alertname: VMPaused,
                               annotations: {{summary: "{{{{ vm.name }}}} paused"}}}}
          - name: resumed
            on: RESUME
            actions: [{{alertmanager: {{url: "{am.url}", alertname: VMPaused, resolve: true}}}}]
        """, [make_event("STOP", vm="web-1", at=10.0), make_event("RESUME", vm="web-1", at=70.0)],
        actions=[ALERTMANAGER], vms=[FakeVM("web-1")])
    assert [(c.rule, c.status) for c in out.calls] == [("paused", "ok"), ("resumed", "ok")]
    assert [p[0]["annotations"]["summary"] for p in am.posts] == ["web-1 paused", "RESUME on web-1"]
    assert "endsAt" in am.posts[1][0] and "endsAt" not in am.posts[0][0]


def test_url_is_checked_at_load() -> None:
    with pytest.raises(LoadError) as info:
        load_test_rules("""
            rules:
              - name: r
                on: STOP
                actions: [{alertmanager: "alertmanager:9093"}]
            """, actions=[ALERTMANAGER])
    assert [str(e) for e in info.value.errors] == [
        "rules.yaml:5:30: alertmanager: url: 'alertmanager:9093' must start with http:// or https://"]
