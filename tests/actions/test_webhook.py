"""The webhook action against real aiohttp servers on loopback (plain and TLS)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from reactor.actions.action import Duration, VMHandle
from reactor.actions.webhook import WEBHOOK, WebhookArgs
from reactor.integrations.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HttpSession,
    WebhookError,
    retry_delay,
    sign,
)
from reactor.model.event import Event

try:
    from tests.broker import make_ca, make_server_cert
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo
    from broker import make_ca, make_server_cert  # type: ignore[import-not-found,no-redef,unused-ignore]

SECRET = "hook-secret-do-not-log"


@dataclass
class Ctx:
    """A minimal ActionContext for running actions without the engine."""

    event: Event
    resources: dict[type, Any]
    vars: Mapping[str, Any] = field(default_factory=dict)
    rule: str = "test-rule"
    run_id: int = 1
    step: int = 0
    dry_run: bool = False
    slept: list[float] = field(default_factory=list)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger("test.action"), {})

    def resource(self, cls: type[Any]) -> Any:
        return self.resources[cls]

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(min(seconds, 0.05))

    @property
    def vm(self) -> VMHandle:
        raise NotImplementedError

    def vm_named(self, name: str) -> VMHandle:
        raise NotImplementedError

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        raise NotImplementedError

    async def wait_for(
        self,
        name: str | list[str],
        *,
        match: Callable[[Event], bool] | None = None,
        vm: str | None = None,
        timeout: float,
    ) -> Event:
        raise NotImplementedError


class Daemon:
    host = "h1"


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does (the snippet in docs/mqtt-webhooks.md)."""
    ts = headers.get("X-Reactor-Timestamp", "")
    sig = headers.get("X-Reactor-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig, "sha256=" + expected)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    requests: list[tuple[web.Request, bytes]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Server:
        requests: list[tuple[web.Request, bytes]] = []

        async def record(request: web.Request) -> web.StreamResponse:
            requests.append((request, await request.read()))
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return Server(f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}", requests)

    yield start
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[HttpSession]:
    s = HttpSession(Daemon())  # type: ignore[arg-type]
    await s.start()
    yield s
    await s.aclose()


def ctx_for(http: HttpSession) -> Ctx:
    return Ctx(Event("GUEST_PANICKED", {"action": "pause"}, 1700000000.0, "web-1"), {HttpSession: http})


def args(url: str, **kw: Any) -> WebhookArgs:
    kw.setdefault("backoff", Duration(0.01))
    return WebhookArgs(url=url, **kw)


async def test_default_body_is_the_event_and_the_signature_verifies(
    serve: Callable[..., Awaitable[Server]], http: HttpSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True}, headers={"X-Seen": "1"})

    srv = await serve(ok)
    ctx = ctx_for(http)
    result = await WEBHOOK.run(ctx, args(srv.url + "/hook?token=abc", secret=SECRET, headers={"X-Extra": "y"}))
    assert isinstance(result, dict)
    assert result["status"] == 200 and orjson.loads(result["body"]) == {"ok": True}
    assert result["headers"]["X-Seen"] == "1"
    (request, body), = srv.requests  # fmt: skip
    assert request.method == "POST" and request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Extra"] == "y"
    assert orjson.loads(body) == ctx.event.to_qmp()
    assert verify(SECRET, request.headers, body)
    assert not verify("wrong", request.headers, body)
    assert not verify(SECRET, request.headers, body + b" ")
    assert SECRET not in caplog.text and SECRET not in repr(http)


def test_sign_is_stable() -> None:
    headers = sign("k", b"{}", timestamp=1700000000)
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"sha256={expected}"}


async def test_500_then_200_delivers_once(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    statuses = [500, 200]

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=statuses.pop(0), text="x")

    srv = await serve(flaky)
    result = await WEBHOOK.run(ctx_for(http), args(srv.url, body={"n": 1}))
    assert isinstance(result, dict) and result["status"] == 200
    assert len(srv.requests) == 2 and statuses == []
    assert [orjson.loads(b) for _, b in srv.requests] == [{"n": 1}, {"n": 1}]


async def test_429_honours_retry_after(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    statuses = [429, 503, 204]

    async def busy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=statuses.pop(0), headers={"Retry-After": "7"})

    srv = await serve(busy)
    ctx = ctx_for(http)
    result = await WEBHOOK.run(ctx, args(srv.url, body="plain text"))
    assert isinstance(result, dict) and result["status"] == 204 and result["body"] == ""
    assert ctx.slept == [7.0, 7.0] and len(srv.requests) == 3
    assert srv.requests[0][0].headers["Content-Type"].startswith("text/plain")
    assert retry_delay(0, 1, 30, "120") == 30  # capped at max_backoff
    assert 0.5 <= retry_delay(0, 1, 30) <= 1


async def test_404_is_final(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no such hook")

    srv = await serve(missing)
    with pytest.raises(WebhookError, match="HTTP 404") as info:
        await WEBHOOK.run(ctx_for(http), args(srv.url + "/nope?key=s3cr3t"))
    assert info.value.status == 404 and len(srv.requests) == 1
    assert "s3cr3t" not in str(info.value) and "/nope" in str(info.value)


async def test_500_to_the_end_fails_with_the_status(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502)

    srv = await serve(broken)
    with pytest.raises(WebhookError, match="HTTP 502 Bad Gateway after 3 attempts"):
        await WEBHOOK.run(ctx_for(http), args(srv.url, retries=2))
    assert len(srv.requests) == 3


async def test_slow_receiver_times_out(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.Response(text="late")

    srv = await serve(slow)
    t0 = time.monotonic()
    with pytest.raises(WebhookError, match="timed out"):
        await WEBHOOK.run(ctx_for(http), args(srv.url, timeout=Duration(0.2), retries=1))
    assert time.monotonic() - t0 < 1.5
    assert len(srv.requests) == 2


async def test_connection_refused_is_retried_then_fails(http: HttpSession) -> None:
    ctx = ctx_for(http)
    with pytest.raises(WebhookError, match="ClientConnectorError"):
        await WEBHOOK.run(ctx, args("http://127.0.0.1:9/", retries=2))
    assert len(ctx.slept) == 2


async def test_redirects_are_not_followed_unless_asked(
    serve: Callable[..., Awaitable[Server]], http: HttpSession
) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        if request.path == "/old":
            raise web.HTTPFound("/new")
        return web.Response(text="new place")

    srv = await serve(moved)
    result = await WEBHOOK.run(ctx_for(http), args(srv.url + "/old"))
    assert isinstance(result, dict) and result["status"] == 302 and result["headers"]["Location"] == "/new"
    result = await WEBHOOK.run(ctx_for(http), args(srv.url + "/old", follow_redirects=True, method="GET"))
    assert isinstance(result, dict) and (result["status"], result["body"]) == (200, "new place")


async def test_body_excerpt_is_bounded(serve: Callable[..., Awaitable[Server]], http: HttpSession) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(text="x" * 100_000)

    srv = await serve(big)
    result = await WEBHOOK.run(ctx_for(http), args(srv.url, max_body=1000))
    assert isinstance(result, dict) and result["body"] == "x" * 1000


async def test_tls_right_and_wrong_ca(
    serve: Callable[..., Awaitable[Server]], http: HttpSession, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "ca")
    other, _ = make_ca(tmp_path, "other")
    cert, key = make_server_cert(tmp_path, ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="secure")

    srv = await serve(ok, server_ctx)
    result = await WEBHOOK.run(ctx_for(http), args(srv.url, ca_file=str(ca[0])))
    assert isinstance(result, dict) and result["body"] == "secure"
    with pytest.raises(WebhookError, match=r"TLS error.*certificate verify failed"):
        await WEBHOOK.run(ctx_for(http), args(srv.url, ca_file=str(other)))
    with pytest.raises(WebhookError, match="TLS error"):  # system CAs do not know ours
        await WEBHOOK.run(ctx_for(http), args(srv.url))
    assert len(srv.requests) == 1  # no retry on TLS errors
    result = await WEBHOOK.run(ctx_for(http), args(srv.url, verify=False))
    assert isinstance(result, dict) and result["status"] == 200


async def test_secret_file_signs_and_is_reread(
    serve: Callable[..., Awaitable[Server]], http: HttpSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    srv = await serve(ok)
    path = tmp_path / "hook.secret"
    path.write_text(SECRET + "\n")
    await WEBHOOK.run(ctx_for(http), args(srv.url, secret_file=str(path)))
    path.write_text("rotated-secret\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    await WEBHOOK.run(ctx_for(http), args(srv.url, secret_file=str(path)))
    (r1, b1), (r2, b2) = srv.requests
    assert verify(SECRET, r1.headers, b1) and verify("rotated-secret", r2.headers, b2)
    with pytest.raises(WebhookError, match="cannot read secret_file"):
        await WEBHOOK.run(ctx_for(http), args(srv.url, secret_file=str(tmp_path / "missing")))
    assert SECRET not in caplog.text and "rotated-secret" not in caplog.text
