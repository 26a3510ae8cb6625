"""The HTTP listener end to end: a real daemon (in-process) with ``http:``, a fake QMP VM, real HTTP clients.

Each test starts the REAL daemon with a fake QEMU (tests/fakeqmp.py) and rules
that fire, makes the VM emit events and talks to the listener over loopback:
aiohttp as the client, raw sockets for garbage, prometheus-client's own parser
for ``/metrics``, ``chattr +i`` for an unwritable journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from http_fixtures import RULES, SECRET, Site, get_json, io_error, reactor_site
from polling import eventually
from prometheus_client.parser import text_string_to_metric_families

from reactor.model.event import Event
from reactor.ops.metrics import EventCounts, StepDurations


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with reactor_site(tmp_path) as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def runs_of(client: aiohttp.ClientSession, site: Site, query: str = "") -> list[dict[str, Any]]:
    return list(await get_json(client, site, "/api/runs" + query))


async def finished_run(client: aiohttp.ClientSession, site: Site, rule: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        runs = await runs_of(client, site, f"?rule={rule}")
        return next((r for r in runs if r["status"] not in ("running", "queued")), None)
    result: dict[str, Any] = await eventually(done)
    return result


# --------------------------------------------------------------------------- /metrics


async def test_metrics_parse_with_the_listed_families(site: Site, client: aiohttp.ClientSession) -> None:
    fake = site.fake
    fake.emit("BLOCK_IO_ERROR", io_error())
    fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
    fake.emit("RESET", {"guest": True, "reason": "guest-reset"})          # throttled
    fake.emit("POWERDOWN")
    fake.emit("POWERDOWN")                                                 # dropped (mode single)
    fake.emit("RTC_CHANGE", {"offset": 1, "qom-path": "/machine/unattached/device[0]"})  # fails
    await finished_run(client, site, "resume-on-io-error")
    await finished_run(client, site, "clock-check")

    async with client.get(site.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("reactor_events", "reactor_matches", "reactor_runs", "reactor_step_duration_seconds",
                 "reactor_bus_queue_depth", "reactor_bus_dropped", "reactor_vm_connected", "reactor_vm_state",
                 "reactor_vm_reconnects", "reactor_journal_flush_seconds", "reactor_journal_flush_last_seconds",
                 "reactor_journal_healthy", "reactor_journal_pending_rows", "reactor_journal_dropped_rows",
                 "reactor_runs_in_flight", "reactor_events_unlabelled", "reactor_http_stream_clients_dropped"):
        assert name in families, name

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        for s in families[family].samples:
            if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no sample {family} {labels} in {families[family].samples}")

    assert families["reactor_events"].type == "counter"
    assert value("reactor_events", vm="vm1", name="BLOCK_IO_ERROR") == 1
    assert value("reactor_events", vm="vm1", name="RESET") == 2
    assert value("reactor_matches") >= 6
    assert value("reactor_runs", rule="resume-on-io-error", outcome="ok", mode="single") == 1
    assert value("reactor_runs", rule="reset-once-an-hour", outcome="throttled", mode="parallel") == 1
    assert value("reactor_runs", rule="slow-powerdown", outcome="dropped", mode="single") == 1
    assert value("reactor_runs", rule="clock-check", outcome="failed") == 1
    hist = families["reactor_step_duration_seconds"]
    assert hist.type == "histogram"
    assert value("reactor_step_duration_seconds", "reactor_step_duration_seconds_count", action="exec") >= 2
    assert value("reactor_step_duration_seconds", "reactor_step_duration_seconds_bucket",
                 action="qmp", le="+Inf") == 1
    assert value("reactor_step_duration_seconds", "reactor_step_duration_seconds_sum", action="log") > 0
    assert value("reactor_vm_connected", vm="vm1") == 1
    assert value("reactor_vm_state", vm="vm1", state="connected") == 1
    assert value("reactor_vm_state", vm="vm1", state="disconnected") == 0
    assert value("reactor_vm_reconnects", vm="vm1") == 0
    assert value("reactor_bus_queue_depth", vm="vm1") == 0
    assert value("reactor_journal_healthy") == 1
    assert value("reactor_journal_flush_seconds", "reactor_journal_flush_seconds_count") >= 1
    assert families["reactor_journal_flush_seconds"].type == "summary"


async def test_metrics_count_vm_reconnects_and_state(site: Site, client: aiohttp.ClientSession) -> None:
    site.fake.drop_all()
    vm = site.daemon.fleet.get("vm1") if site.daemon.fleet else None
    assert vm is not None
    await eventually(lambda: vm.reconnects == 1 and vm.connected)
    async with client.get(site.url + "/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    reconnects = [s for s in families["reactor_vm_reconnects"].samples if s.labels == {"vm": "vm1"}]
    assert reconnects and reconnects[0].value == 1


def test_event_counts_are_bounded_in_label_sets() -> None:
    counts = EventCounts(max_series=2)
    for vm, name in [("a", "STOP"), ("a", "STOP"), ("b", "STOP"), ("c", "STOP"), ("a", "RESUME"), ("b", "STOP")]:
        counts(Event(name, {}, 0.0, vm, None, 0))
    assert counts.counts == {("a", "STOP"): 2, ("b", "STOP"): 2}
    assert counts.overflow == 2


def test_step_histogram_buckets_are_cumulative() -> None:
    h = StepDurations(buckets=(0.1, 1.0))
    for s in (0.05, 0.1, 0.5, 3.0):
        h.observe("exec", s)
    [(action, buckets, total)] = list(h.snapshot())
    assert action == "exec"
    assert buckets == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert total == pytest.approx(3.65)


# --------------------------------------------------------------------------- health


async def test_healthz_and_readyz(site: Site, client: aiohttp.ClientSession) -> None:
    async with client.get(site.url + "/healthz") as r:
        assert r.status == 200 and await r.text() == "ok\n"
    ready = await get_json(client, site, "/readyz")
    assert ready == {"ready": True, "checks": {"started": True, "rules_loaded": True, "journal_writable": True}}


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths made immutable with chattr (even root cannot write them); undone afterwards."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr needs root")
    frozen: list[Path] = []
    yield frozen
    for p in frozen:
        subprocess.run(["chattr", "-i", str(p)], check=False)


async def test_readyz_flips_while_the_journal_is_unwritable(site: Site, client: aiohttp.ClientSession,
                                                            immutable: list[Path]) -> None:
    db = site.state / "journal.db"
    for p in (db, db.with_name("journal.db-wal"), site.state):
        r = await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(p)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make files immutable here: {r.stderr.decode().strip()}")
        immutable.append(p)
    site.fake.emit("BLOCK_IO_ERROR", io_error())  # recorded: the next journal write fails

    async def not_ready() -> Any:
        async with client.get(site.url + "/readyz") as r:
            return r.status == 503 and await r.json()
    body = await eventually(not_ready)
    assert body["checks"]["journal_writable"] is False
    status = await get_json(client, site, "/api/status")
    assert status["journal"]["healthy"] is False and status["journal"]["last_error"]

    for p in immutable:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(p)], check=True)

    async def ready_again() -> bool:
        async with client.get(site.url + "/readyz") as r:
            return r.status == 200
    await eventually(ready_again, timeout=20)
    run = await finished_run(client, site, "resume-on-io-error")  # nothing was lost meanwhile
    assert run["status"] == "ok"


# --------------------------------------------------------------------------- JSON API


async def test_api_vms_and_rules(site: Site, client: aiohttp.ClientSession) -> None:
    site.fake.emit("BLOCK_IO_ERROR", io_error())
    await finished_run(client, site, "resume-on-io-error")
    [vm] = await get_json(client, site, "/api/vms")
    assert vm["name"] == "vm1" and vm["labels"] == {"env": "test"}
    assert vm["state"] == "connected" and vm["connected"] is True and vm["status"] == "running"
    assert vm["qemu_version"]["qemu"] == {"major": 7, "minor": 2, "micro": 0}
    assert vm["events_received"] >= 1 and vm["reconnects"] == 0

    rules = {r["name"]: r for r in await get_json(client, site, "/api/rules")}
    assert list(rules) == ["resume-on-io-error", "reset-once-an-hour", "slow-powerdown", "clock-check"]
    r = rules["resume-on-io-error"]
    assert r["on"] == ["BLOCK_IO_ERROR"] and r["match"] == {"operation": "write", "action": "stop"}
    assert r["if"] == "event.data.device != 'ignored'" and r["mode"] == "single"
    assert r["file"].endswith("test.yaml") and r["line"] > 1
    assert r["steps"][1]["action"] == "exec" and r["steps"][1]["args"]["env"] == {"API_TOKEN": "***"}
    assert r["last_run"]["status"] == "ok"
    assert rules["reset-once-an-hour"]["throttle"] == {"max": 1, "within": 3600.0, "per": ["vm"]}
    assert rules["clock-check"]["last_run"] is None
    async with client.get(site.url + "/api/rules") as resp:
        assert SECRET not in await resp.text()


async def test_api_runs_filters_and_a_runs_trace(site: Site, client: aiohttp.ClientSession) -> None:
    t0 = time.time()
    site.fake.emit("BLOCK_IO_ERROR", io_error("disk7"))
    site.fake.emit("RTC_CHANGE", {"offset": 1, "qom-path": "/machine/rtc"})
    ok = await finished_run(client, site, "resume-on-io-error")
    failed = await finished_run(client, site, "clock-check")
    assert failed["status"] == "failed"

    assert [r["id"] for r in await runs_of(client, site, "?rule=clock-check")] == [failed["id"]]
    assert {r["rule"] for r in await runs_of(client, site, "?vm=vm1")} == {"resume-on-io-error", "clock-check"}
    assert await runs_of(client, site, "?vm=nope") == []
    assert len(await runs_of(client, site, "?since=1h")) == 2
    assert len(await runs_of(client, site, f"?since={t0 - 1}")) == 2
    assert await runs_of(client, site, f"?since={t0 + 3600}") == []
    assert len(await runs_of(client, site, "?limit=1")) == 1
    assert len(await runs_of(client, site, "?status=failed")) == 1
    for bad in ("?since=yesterday-ish", "?limit=-3", "?limit=many", "?rule=" + "x" * 300):
        body = await get_json(client, site, "/api/runs" + bad, status=400)
        assert body["error"]

    trace = await get_json(client, site, f"/api/runs/{ok['id']}")
    assert trace["rule"] == "resume-on-io-error" and trace["status"] == "ok" and trace["vm"] == "vm1"
    assert trace["event"]["name"] == "BLOCK_IO_ERROR" and trace["event"]["data"]["device"] == "disk7"
    kinds = [(c["kind"], c["held"]) for c in trace["conditions"]]
    assert kinds == [("on", True), ("match", True), ("match", True), ("if", True)]
    assert [c["source"] for c in trace["conditions"] if c["kind"] == "match"] == [{"operation": "write"},
                                                                                 {"action": "stop"}]
    steps = trace["steps"]
    assert [s["action"] for s in steps] == ["log", "exec", "qmp"]
    assert steps[0]["args"]["message"] == "write error on vm1: disk7"      # rendered
    assert steps[1]["args"]["env"] == {"API_TOKEN": "***"}                 # redacted
    assert steps[1]["result"]["stdout"] == "disk7\n"
    assert all(s["status"] == "ok" and s["duration"] >= 0 and s["started"] >= t0 - 1 for s in steps)
    assert trace["duration"] >= sum(s["duration"] for s in steps) * 0.5
    async with client.get(f"{site.url}/api/runs/{ok['id']}") as resp:
        assert SECRET not in await resp.text()

    bad = await get_json(client, site, f"/api/runs/{failed['id']}")
    assert bad["steps"][0]["status"] == "failed" and bad["steps"][0]["error"]
    assert (await get_json(client, site, "/api/runs/999999", status=404))["error"]
    async with client.get(site.url + "/api/runs/abc") as resp:
        assert resp.status == 404


async def test_a_condition_that_no_longer_holds_is_shown(site: Site, client: aiohttp.ClientSession,
                                                         tmp_path: Path) -> None:
    site.fake.emit("BLOCK_IO_ERROR", io_error("disk1"))
    run = await finished_run(client, site, "resume-on-io-error")
    (tmp_path / "rules" / "test.yaml").write_text(RULES.replace("operation: write", "operation: read"))
    result = await site.daemon.reload("test")
    assert result.ok
    trace = await get_json(client, site, f"/api/runs/{run['id']}")
    [op] = [c for c in trace["conditions"] if c["source"] == {"operation": "read"}]
    assert op["held"] is False and "write" in op["detail"][0]


# --------------------------------------------------------------------------- the live event stream


async def read_sse(resp: aiohttp.ClientResponse, want: Callable[[str, str], bool],
                   timeout: float = 10.0) -> list[tuple[str, str]]:
    """Read server-sent events until ``want(kind, data)``; every (kind, data) read."""
    seen: list[tuple[str, str]] = []
    kind, data = "message", ""
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode()
            if line == "":
                raise AssertionError(f"stream ended; saw {seen}")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                seen.append((kind, data))
                if want(kind, data):
                    return seen
                kind, data = "message", ""


async def test_event_stream_delivers_new_events_and_runs(site: Site, client: aiohttp.ClientSession) -> None:
    async with client.get(site.url + "/api/events?backlog=0") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        site.fake.emit("BLOCK_IO_ERROR", io_error("disk9"))
        seen = await read_sse(resp, lambda k, d: k == "run" and '"step"' in d and '"qmp"' in d)
    events = [d for k, d in seen if k == "event"]
    assert any('"BLOCK_IO_ERROR"' in d and '"disk9"' in d for d in events)
    assert any(k == "run" and '"match"' in d for k, d in seen)
    # a new client gets the recent backlog, and Last-Event-ID resumes after what it saw
    async with client.get(site.url + "/api/events") as resp:
        seen = await read_sse(resp, lambda k, d: "disk9" in d)
    async with client.get(site.url + "/api/events", headers={"Last-Event-ID": "0"}) as resp:
        await read_sse(resp, lambda k, d: "REACTOR_VM_CONNECTED" in d)


async def test_a_stream_client_that_does_not_read_is_dropped_and_counted(site: Site,
                                                                          client: aiohttp.ClientSession) -> None:
    host, port = site.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    try:
        await eventually(lambda: _is(stream_clients(client, site), 1))
        big = {"offset": 1, "qom-path": "/machine/" + "x" * 2000}
        for i in range(3000):  # never read: the socket fills, the server's queue fills, the client goes
            site.fake.emit("RTC_CHANGE", big)
            if i % 100 == 0:
                await asyncio.sleep(0.01)
        await eventually(lambda: _is(stream_clients(client, site), 0), timeout=20)
    finally:
        sock.close()
    async with client.get(site.url + "/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    assert families["reactor_http_stream_clients_dropped"].samples[0].value >= 1
    async with client.get(site.url + "/healthz") as r:  # the listener goes on serving
        assert r.status == 200


async def _is(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def stream_clients(client: aiohttp.ClientSession, site: Site) -> int:
    return int((await get_json(client, site, "/api/status"))["stream"]["clients"])


# --------------------------------------------------------------------------- bad input


async def raw_request(site: Site, data: bytes, *, read: int = 65536) -> bytes:
    host, port = site.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(read)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_garbage_and_oversized_requests_are_refused(site: Site, client: aiohttp.ClientSession) -> None:
    assert (await raw_request(site, b"\x00\xff garbage \r\n\r\n")).startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert (await raw_request(site, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            )[9:12] in (b"400", b"414", b"431")
    assert (await raw_request(site, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"b" * 20000 + b"\r\n\r\n")
            )[9:12] in (b"400", b"431")
    big = await raw_request(site, b"GET /api/vms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\nx")
    assert big.startswith(b"HTTP/1.1 413")
    async with client.post(site.url + "/api/runs", data=b"{}") as r:
        assert r.status == 405
    for path in ("/static/../reactor.yaml", "/static/%2e%2e/reactor.yaml", "/static/..%2f..%2fetc%2fpasswd",
                 "/static/index.html", "/static/", "/../state/journal.db", "/nope"):
        async with client.get(site.url + path) as r:
            assert r.status == 404, path
            assert b"SQLite" not in await r.read() and b"root:" not in await r.read()
    # the listener still answers, and counted what it refused
    async with client.get(site.url + "/api/status") as r:
        assert r.status == 200


async def test_security_headers_and_the_host_check(site: Site, client: aiohttp.ClientSession) -> None:
    for path in ("/", "/static/app.js", "/api/vms", "/metrics", "/nope"):
        async with client.get(site.url + path) as r:
            assert "script-src 'self'" in r.headers["Content-Security-Policy"], path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "Server" not in r.headers
    async with client.get(site.url + "/api/vms") as r:
        assert r.headers["Cache-Control"] == "no-store"
    # DNS rebinding: without a token only loopback Host names are answered
    async with client.get(site.url + "/api/vms", headers={"Host": "evil.example:9187"}) as r:
        assert r.status == 421
        assert "vm1" not in await r.text()
    async with client.get(site.url + "/api/vms", headers={"Host": "localhost"}) as r:
        assert r.status == 200


async def test_a_configured_token_is_required(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    async with reactor_site(tmp_path, token="s3cret-token") as site:
        site.fake.emit("BLOCK_IO_ERROR", io_error())
        await finished_run(client, site, "resume-on-io-error")
        for path in ("/metrics", "/api/vms", "/api/rules", "/api/runs", "/api/runs/1", "/api/status",
                     "/api/events"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                            {"Authorization": "Bearer s3cret-token-and-more"}):
                async with client.get(site.url + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    body = await r.text()
                    assert "vm1" not in body and "resume" not in body and "reactor_" not in body
        for path in ("/healthz", "/readyz", "/", "/static/app.js"):
            async with client.get(site.url + path) as r:
                assert r.status == 200, path
        async with client.get(site.url + "/api/vms", headers={"Host": "reactor.example"}) as r:
            assert r.status == 401  # a token makes any Host acceptable, but still needs the token
        ok = {"Authorization": "Bearer s3cret-token"}
        async with client.get(site.url + "/api/vms", headers=ok) as r:
            assert r.status == 200 and (await r.json())[0]["name"] == "vm1"
        async with client.get(site.url + "/metrics", headers=ok) as r:
            assert r.status == 200 and "reactor_events_total" in await r.text()
        async with client.get(site.url + "/metrics", headers=ok) as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
        rejected = {s.labels["reason"]: s.value for s in families["reactor_http_requests_rejected"].samples
                    if s.name.endswith("_total")}
        assert rejected["unauthorized"] >= 28


async def test_stopping_the_daemon_ends_open_event_streams(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    running = reactor_site(tmp_path)
    site = await running.__aenter__()
    try:
        resp = await client.get(site.url + "/api/events?backlog=1")
        await read_sse(resp, lambda k, d: True)
    finally:
        t0 = time.monotonic()
        await running.__aexit__(None, None, None)  # stops the daemon with the stream open
    assert time.monotonic() - t0 < 5
    async with asyncio.timeout(5):
        while await resp.content.readany():  # the server ended the stream
            pass
    resp.release()


async def test_a_run_whose_steps_were_all_skipped_shows_as_skipped(tmp_path: Path,
                                                                   client: aiohttp.ClientSession) -> None:
    rules = """
rules:
  - name: only-when-io-error
    on: STOP
    actions:
      - log: "stopped by an I/O error"
        when: "vm.status == 'io-error'"
      - qmp: query-block
        when: "vm.status == 'io-error'"
"""
    async with reactor_site(tmp_path, rules=rules) as site:
        site.fake.emit("STOP")
        run = await finished_run(client, site, "only-when-io-error")
        assert run["status"] == "skipped"
        trace = await get_json(client, site, f"/api/runs/{run['id']}")
        assert [s["status"] for s in trace["steps"]] == ["skipped", "skipped"]
        async with client.get(site.url + "/metrics") as r:
            metrics = await r.text()
        runs = [line for line in metrics.splitlines() if line.startswith("reactor_runs_total{")]
        mine = [line for line in runs if 'rule="only-when-io-error"' in line]
        assert len(mine) == 1 and 'outcome="skipped"' in mine[0] and mine[0].endswith(" 1.0"), runs
