"""The alertmanager action against a real Alertmanager (Debian's prometheus-alertmanager): alerts posted by the
action are read back from Alertmanager's own API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reactor_alertmanager import ALERTMANAGER

from reactor.errors import ActionError, LoadError
from reactor.testing import ActionHarness, FakeVM, load_test_rules, make_event, run_rules

AM_CONFIG = """\
route:
  receiver: nobody
  group_wait: 1s
receivers:
  - name: nobody
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Alertmanager:
    """A real Alertmanager (Debian's ``prometheus-alertmanager``) on a loopback port, clustering off."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus-alertmanager"],
                           check=False, capture_output=True, timeout=600)
            binary = shutil.which("prometheus-alertmanager")
        if binary is None:
            pytest.fail("prometheus-alertmanager is not installed (tests/run.sh installs it)")
        (directory / "alertmanager.yml").write_text(AM_CONFIG)
        self.log = directory / "alertmanager.log"
        for _attempt in range(5):
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [binary, f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory}",
                     f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                    stdout=log, stderr=log)
            if self._ready():
                return
            self.stop()
        raise RuntimeError(f"alertmanager did not start: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (``filter`` as label matchers, e.g. ``vm="db-1"``)."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as r:
            out: list[dict[str, Any]] = json.loads(r.read())
            return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
    try:
        yield server
    finally:
        server.stop()


def until(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


async def test_posts_an_alert_with_the_event_labels(am: Alertmanager) -> None:
    import datetime as dt

    now = time.time()
    event = make_event("GUEST_PANICKED", {"action": "pause"}, vm="db-1", at=now - 5, host="h1")
    async with ActionHarness(event=event, rule="panic-alert") as h:
        result = await h.run(ALERTMANAGER, {"url": am.url, "severity": "critical", "labels": {"team": "db"},
                                            "annotations": {"summary": "db-1 panicked"},
                                            "generator_url": "http://h1:9187/api/runs/1"})
    assert result["status"] == 200
    (alert,) = until(lambda: am.alerts(vm="db-1"))
    assert alert["labels"] == {"alertname": "ReactorEvent", "severity": "critical", "vm": "db-1",
                               "rule": "panic-alert", "event": "GUEST_PANICKED", "reactor_host": "h1", "team": "db"}
    assert alert["annotations"] == {"summary": "db-1 panicked"}
    assert alert["status"]["state"] == "active"
    assert alert["generatorURL"] == "http://h1:9187/api/runs/1"
    starts = dt.datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")).timestamp()
    assert abs(starts - (now - 5)) < 1.0

    # the same labels, resolve: true -> Alertmanager ends the alert (it leaves the active list)
    async with ActionHarness(event=event, rule="panic-alert") as h:
        await h.run(ALERTMANAGER, {"url": am.url + "/", "resolve": True, "severity": "critical",
                                   "labels": {"team": "db"}})
    assert until(lambda: not am.alerts(vm="db-1")), am.alerts(vm="db-1")


async def test_http_errors_fail_the_step(am: Alertmanager) -> None:
    async with ActionHarness() as h:
        # Alertmanager refuses an alert whose label name is invalid (400, with its reason)
        with pytest.raises(ActionError, match="answered 400") as info:
            await h.run(ALERTMANAGER, {"url": am.url, "labels": {"not a label name": "x"}})
        assert "label" in str(info.value)
        with pytest.raises(ActionError, match=r"alertmanager: http://127\.0\.0\.1:1/api/v2/alerts"):
            await h.run(ALERTMANAGER, {"url": "http://127.0.0.1:1"})


async def test_in_rules_with_templates_and_a_shared_session(am: Alertmanager) -> None:
    """Raised by one rule, resolved by another: the README's advice (the same explicit labels on both sides)."""
    now = time.time()
    same = "labels: {rule: paused, event: STOP}"
    out = await run_rules(f"""
        rules:
          - name: paused
            on: STOP
            actions:
              - alertmanager: {{url: "{am.url}", alertname: VMPaused, {same},
                               annotations: {{summary: "{{{{ vm.name }}}} paused"}}}}
          - name: resumed
            on: RESUME
            actions: [{{alertmanager: {{url: "{am.url}", alertname: VMPaused, resolve: true, {same}}}}}]
        """, [make_event("STOP", vm="web-1", at=now)],
        actions=[ALERTMANAGER], vms=[FakeVM("web-1")])
    assert [(c.rule, c.status) for c in out.calls] == [("paused", "ok")]
    (alert,) = until(lambda: am.alerts(alertname="VMPaused", vm="web-1"))
    assert alert["annotations"] == {"summary": "web-1 paused"}
    assert alert["labels"]["rule"] == "paused" and alert["status"]["state"] == "active"

    out = await run_rules(f"""
        rules:
          - name: resumed
            on: RESUME
            actions: [{{alertmanager: {{url: "{am.url}", alertname: VMPaused, resolve: true, {same}}}}}]
        """, [make_event("RESUME", vm="web-1", at=now + 1)], actions=[ALERTMANAGER], vms=[FakeVM("web-1")])
    assert [(c.rule, c.status) for c in out.calls] == [("resumed", "ok")]
    assert until(lambda: not am.alerts(alertname="VMPaused", vm="web-1"))


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
