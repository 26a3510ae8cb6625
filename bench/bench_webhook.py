"""Benchmark: the webhook action against a local aiohttp server with keep-alive.

The receiver runs in a child process (``--serve PORT``) so client and server do
not share one event loop.  The client runs the real ``webhook`` action (event
JSON body, HMAC signature) from ``--concurrency`` rule runs at once on the
shared session and reports requests/s per run and the median.

Usage: ``python bench/bench_webhook.py [--requests 20000] [--concurrency 64] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from reactor.actions.action import VMHandle
from reactor.actions.webhook import WEBHOOK, WebhookArgs
from reactor.integrations.webhook import HttpSession
from reactor.model.event import Event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int) -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Ctx:
    """Just enough of an ActionContext for the webhook action."""

    def __init__(self, http: HttpSession) -> None:
        self.event = Event("GUEST_PANICKED", {"action": "pause"}, 1700000000.0, "web-1")
        self.http = http
        self.vars: Mapping[str, Any] = {}
        self.rule, self.run_id, self.step, self.dry_run = "bench", 1, 0, False
        self.log = logging.LoggerAdapter(logging.getLogger("bench"), {})

    def resource(self, cls: type[Any]) -> Any:
        return self.http

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @property
    def vm(self) -> VMHandle:
        raise NotImplementedError

    def vm_named(self, name: str) -> VMHandle:
        raise NotImplementedError

    def emit(self, name: str, data: Mapping[str, Any] | None = None, *, vm: str | None = None) -> None:
        raise NotImplementedError

    async def wait_for(self, name: Any, *, match: Callable[[Event], bool] | None = None, vm: str | None = None,
                       timeout: float) -> Event:  # fmt: skip
        raise NotImplementedError


async def one_run(url: str, n: int, concurrency: int) -> float:
    http = HttpSession(None)  # type: ignore[arg-type]
    await http.start()
    ctx = Ctx(http)
    args = WebhookArgs(url=url, secret="bench-secret")
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            result = await WEBHOOK.run(ctx, args)
            assert isinstance(result, dict) and result["status"] == 200

    try:
        await WEBHOOK.run(ctx, args)  # warm the pool
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(worker(), name=f"bench-worker-{i}")
        return n / (time.perf_counter() - t0)
    finally:
        await http.aclose()


async def main(opts: argparse.Namespace) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])  # noqa: ASYNC220 - a benchmark's helper process
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        rates = []
        for r in range(opts.runs):
            rate = await one_run(f"http://127.0.0.1:{port}/hook", opts.requests, opts.concurrency)
            rates.append(rate)
            print(f"run {r + 1}: {rate:,.0f} requests/s ({opts.requests} requests, concurrency {opts.concurrency})")
        print(f"median {statistics.median(rates):,.0f} requests/s over {opts.runs} runs")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    options = ap.parse_args()
    if options.serve:
        serve(options.serve)
    else:
        asyncio.run(main(options))
