"""The real daemon in-process with an HTTP listener and one fake QMP VM (the HTTP, page and correlation tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from fakeqmp import FakeQMP
from polling import eventually
from ports import free_port

from reactor.daemon.config import parse_config
from reactor.daemon.daemon import Daemon, serve

RULES = """
rules:
  - name: resume-on-io-error
    description: Resume a VM paused by a write error.
    on: BLOCK_IO_ERROR
    match:
      operation: write
      action: stop
    if: "event.data.device != 'ignored'"
    actions:
      - log: "write error on {{ vm.name }}: {{ event.data.device }}"
      - exec: {argv: [/bin/echo, "{{ event.data.device }}"], env: {API_TOKEN: hunter2}}
      - qmp: cont
  - name: reset-once-an-hour
    on: RESET
    throttle: {max: 1, within: 1h}
    mode: parallel
    actions:
      - log: reset
  - name: slow-powerdown
    on: POWERDOWN
    mode: single
    actions:
      - sleep: 1s
  - name: clock-check
    on: RTC_CHANGE
    actions:
      - exec: [/bin/false]
"""


SECRET = "hunter2"


@dataclass
class Site:
    daemon: Daemon
    fake: FakeQMP
    url: str
    state: Path
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def io_error(device: str = "disk0", operation: str = "write") -> dict[str, Any]:
    return {"device": device, "node-name": "node0", "operation": operation, "action": "stop", "nospace": False,
            "reason": "Input/output error"}


@contextlib.asynccontextmanager
async def reactor_site(tmp: Path, *, rules: str = RULES, token: str | None = None) -> AsyncIterator[Site]:
    """The real daemon with an HTTP listener and one connected fake VM ``vm1``."""
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "test.yaml").write_text(rules)
    port = free_port()
    async with FakeQMP(tmp / "vm1.qmp", name="vm1", status="running") as fake:
        http = f"{{listen: '127.0.0.1:{port}'" + (f", token: {token}" if token else "") + "}"
        text = (f"rules: {tmp / 'rules'}\nstate_dir: {tmp / 'state'}\njournal: {{events: all}}\n"
                f"vms:\n  - {{name: vm1, qmp: {fake.address}, labels: {{env: test}}}}\nhttp: {http}\n")
        (tmp / "reactor.yaml").write_text(text)  # read again on reload
        daemon = Daemon(parse_config(text, tmp / "reactor.yaml"), watch=False, grace=2.0)
        task = asyncio.create_task(serve(daemon, install_signals=False), name="test.daemon")
        try:
            async with asyncio.timeout(10):
                ready = asyncio.ensure_future(daemon.ready.wait())
                await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    ready.cancel()
                    task.result()
            await eventually(lambda: daemon.fleet is not None and (vm := daemon.fleet.get("vm1")) and vm.connected)
            yield Site(daemon, fake, f"http://127.0.0.1:{port}", tmp / "state", token)
        finally:
            daemon.stop()
            async with asyncio.timeout(20):
                await task


async def get_json(client: aiohttp.ClientSession, site: Site, path: str, status: int = 200) -> Any:
    async with client.get(site.url + path, headers=site.headers()) as r:
        assert r.status == status, (path, r.status, await r.text())
        assert r.content_type == "application/json"
        return await r.json()


CORRELATION_RULES = """
rules:
  - name: paused-too-long
    on: STOP
    unless: {event: [RESUME, SHUTDOWN], within: 1h}
    actions:
      - log: "paused for an hour"
  - name: repeated-resets
    on: RESET
    count: {min: 3, within: 1h}
    actions:
      - log: "third reset"
"""
