"""The HTTP listener: metrics, health, a JSON API, a live event stream and the traces page.

Configured by the ``http:`` section (``listen``, loopback by default; a
non-loopback address needs ``token``, which config.py enforces).  Routes::

    GET /                  the traces page (static, from reactor/ops/static/)
    GET /static/{file}     its script and style sheet (a fixed list: no paths)
    GET /healthz           200 while the process serves requests
    GET /readyz            200 when started, rules loaded and the journal writable; else 503
    GET /metrics           Prometheus text format (see reactor.ops.metrics)
    GET /api/status        engine, bus and journal counters, the last reload
    GET /api/vms           VMs, their connection state and counters (and ``resume``: a resume in progress)
    GET /api/rules         rules as loaded (arguments redacted) and each one's last run
    GET /api/runs          ?vm=&rule=&since=&status=&limit= runs, newest first
    GET /api/runs/{id}     one run's trace: event, conditions, steps (redacted), results, timings
    GET /api/events        server-sent events: ``event`` (each event) and ``run`` (matches, steps...)

With ``token`` set, every route but the page's static files and ``/healthz``
and ``/readyz`` needs ``Authorization: Bearer TOKEN`` (compared in constant
time); without it the answer is 401 and nothing else.  Without a token the
listener only answers requests whose ``Host`` is a loopback name (against DNS
rebinding).  Responses carry a strict Content-Security-Policy and friends.

Bounded everywhere: requests over ``max_request`` bytes are refused, at most
``max_streams`` event stream clients at once, each with a queue of
``stream_buffer`` messages; a client that falls behind (full queue, or a
write stalled for ``write_timeout``) is dropped and counted
(``reactor_http_stream_clients_dropped_total``).  The per-event cost is a dict
increment (metrics) and one append to a ring of recent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from reactor.actions.action import Resource
from reactor.errors import HttpError, JournalError
from reactor.model.duration import parse_duration
from reactor.model.event import Event
from reactor.ops.journal import EventRecord, RunRecord, StepRecord
from reactor.ops.metrics import EventCounts, HttpCounts, ReactorCollector, StepDurations, make_registry
from reactor.ops.status import DaemonStatus
from reactor.rules.arguments import REDACTED, redact
from reactor.rules.matcher import explain_match
from reactor.rules.rule import Correlation, Rule

__all__ = ["EventStream", "HttpError", "HttpServer", "parse_listen"]

log = logging.getLogger(__name__)

_STATIC: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_PUBLIC: Final = frozenset({"/", "/index.html", "/static/app.js", "/static/style.css", "/healthz", "/readyz"})
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_JSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
_MAX_LIMIT: Final = 1000
_MAX_PARAM: Final = 256


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT``) as ``(host, port)``; ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"http.listen must be HOST:PORT, not {listen!r}")
    return host, int(port)


# --------------------------------------------------------------------------- event stream


class _Item:
    """One stream message; serialised once, when the first client needs it."""

    __slots__ = ("_wire", "kind", "obj", "seq")

    def __init__(self, seq: int, kind: str, obj: Any) -> None:
        self.seq = seq
        self.kind = kind
        self.obj = obj
        self._wire: bytes | None = None

    def wire(self, max_bytes: int) -> bytes:
        if self._wire is None:
            obj = self.obj
            body = _event_wire(obj, self.seq, max_bytes) if isinstance(obj, Event) else _dumps(obj)
            self._wire = b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, self.kind.encode(), body)
            self.obj = None
        return self._wire


def _event_wire(e: Event, seq: int, max_bytes: int) -> bytes:
    obj: dict[str, Any] = {"seq": seq, "name": e.name, "vm": e.vm, "host": e.host, "timestamp": e.timestamp,
                           "data": e.data, "problems": list(e.problems)}
    body = _dumps(obj)
    if len(body) > max_bytes:
        obj["data"] = {"_truncated": f"{len(body)} bytes"}
        body = _dumps(obj)
    return body


class _Client:
    __slots__ = ("dropped", "queue", "transport")

    def __init__(self, size: int, transport: asyncio.BaseTransport | None) -> None:
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue(size)
        self.transport = transport
        self.dropped = False


class EventStream:
    """Fans events and run records out to server-sent-event clients; keeps a ring of recent ones."""

    def __init__(self, counts: HttpCounts, *, recent: int = 200, buffer: int = 256, max_clients: int = 32,
                 max_event_bytes: int = 16384) -> None:
        self.counts = counts
        self.buffer = buffer
        self.max_clients = max_clients
        self.max_event_bytes = max_event_bytes
        self._recent: deque[tuple[int, str, Any]] = deque(maxlen=recent)
        self._clients: set[_Client] = set()
        self._seq = 0
        self.closed = False

    def publish(self, kind: str, obj: Any) -> None:
        """Queue a message for every client (never blocks; a client with a full queue is dropped)."""
        if self.closed:
            return
        self._seq = seq = self._seq + 1
        self._recent.append((seq, kind, obj))  # a tuple: the common case is no client at all
        if not self._clients:
            return
        item = _Item(seq, kind, obj)
        for client in list(self._clients):
            if client.dropped:
                continue
            try:
                client.queue.put_nowait(item)
            except asyncio.QueueFull:
                self._drop(client, "its queue is full")

    def _drop(self, client: _Client, why: str) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.counts.stream_dropped += 1
        log.warning("http: dropping an event stream client: %s", why)
        _abort(client.transport)
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)

    def backlog(self, after: int | None, count: int) -> list[_Item]:
        entries = list(self._recent)
        if after is not None:
            return [_Item(*e) for e in entries if e[0] > after]
        return [_Item(*e) for e in entries[-count:]] if count > 0 else []

    def close(self) -> None:
        self.closed = True
        for client in list(self._clients):
            try:
                client.queue.put_nowait(None)
            except asyncio.QueueFull:
                _abort(client.transport)

    async def serve(self, request: web.Request, *, write_timeout: float, heartbeat: float) -> web.StreamResponse:
        if self.closed:
            raise web.HTTPServiceUnavailable(text="shutting down\n")
        if len(self._clients) >= self.max_clients:
            raise _json_error(web.HTTPServiceUnavailable, f"too many event stream clients (max {self.max_clients})")
        after = _last_event_id(request.headers.get("Last-Event-ID"))
        backlog = _int_param(request, "backlog", 50, 0, self._recent.maxlen or 0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        client = _Client(self.buffer, request.transport)
        self._clients.add(client)
        self.counts.stream_clients = len(self._clients)
        try:
            chunk = b"retry: 2000\n\n" + b"".join(i.wire(self.max_event_bytes) for i in self.backlog(after, backlog))
            await self._write(resp, client, chunk, write_timeout)
            while not client.dropped:
                try:
                    async with asyncio.timeout(heartbeat):
                        item = await client.queue.get()
                except TimeoutError:
                    await self._write(resp, client, b": keep-alive\n\n", write_timeout)
                    continue
                if item is None:
                    break
                parts = [item.wire(self.max_event_bytes)]
                while not client.queue.empty() and len(parts) < 64:  # batch what is queued already
                    more = client.queue.get_nowait()
                    if more is None:
                        break
                    parts.append(more.wire(self.max_event_bytes))
                await self._write(resp, client, b"".join(parts), write_timeout)
        except (ConnectionError, _ClientGone):
            pass
        finally:
            self._clients.discard(client)
            self.counts.stream_clients = len(self._clients)
        return resp

    async def _write(self, resp: web.StreamResponse, client: _Client, data: bytes, timeout: float) -> None:
        if client.dropped:
            raise _ClientGone
        try:
            async with asyncio.timeout(timeout):
                await resp.write(data)
        except TimeoutError:
            self._drop(client, f"a write stalled for {timeout:g}s")
            raise _ClientGone from None


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close now, discarding what is buffered (``close`` would wait for a client that does not read)."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    elif transport is not None:
        transport.close()


class _ClientGone(Exception):
    """The stream client was dropped or went away (internal)."""


# --------------------------------------------------------------------------- the server


class HttpServer(Resource):
    """The ``http:`` listener: an ``aiohttp`` server the daemon starts and closes.

    ``HttpServer(daemon)`` (a read-only :class:`~reactor.ops.status.DaemonStatus`);
    ``await start()`` once the engine and journal
    exist (it hooks the engine's event subscribers and output records);
    ``await aclose()``.  :attr:`url` is the address it listens on (useful
    with port 0).
    """

    def __init__(self, daemon: DaemonStatus, *, max_request: int = 65536, max_streams: int = 32,
                 stream_buffer: int = 256, recent_events: int = 200, write_timeout: float = 10.0,
                 heartbeat: float = 15.0) -> None:
        super().__init__(daemon)
        self._daemon = daemon
        cfg = daemon.config.http
        if cfg is None:
            raise HttpError("no http: section in the config")
        self.listen = cfg.listen
        self._token = cfg.token.encode() if cfg.token else None
        self.max_request = max_request
        self.write_timeout = write_timeout
        self.heartbeat = heartbeat
        self.counts = HttpCounts()
        self.event_counts = EventCounts()
        self.step_durations = StepDurations()
        self.stream = EventStream(self.counts, recent=recent_events, buffer=stream_buffer, max_clients=max_streams)
        self.registry = make_registry(ReactorCollector(daemon, self.event_counts, self.step_durations, self.counts))
        self._static: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self._prev_output: Callable[[dict[str, Any]], None] | None = None
        self._hooked = False
        self._host, self._port = self._parse(cfg.listen)
        self.url: str | None = None

    @staticmethod
    def _parse(listen: str) -> tuple[str, int]:
        try:
            return parse_listen(listen)
        except ValueError as err:
            raise HttpError(str(err)) from err

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        static = importlib.resources.files("reactor.ops") / "static"
        self._static = {name: (static / name).read_bytes() for name in _STATIC}
        app = web.Application(client_max_size=self.max_request, middlewares=[self._guard])
        app.on_response_prepare.append(self._headers)
        app.add_routes([
            web.get("/", self._index),
            web.get("/index.html", self._index),
            web.get("/static/{name}", self._static_file),
            web.get("/healthz", self._healthz),
            web.get("/readyz", self._readyz),
            web.get("/metrics", self._metrics),
            web.get("/api/status", self._api_status),
            web.get("/api/vms", self._api_vms),
            web.get("/api/rules", self._api_rules),
            web.get("/api/runs", self._api_runs),
            web.get(r"/api/runs/{id:\d{1,18}}", self._api_run),
            web.get("/api/events", self._api_events),
            web.get("/api/fleet", self._api_fleet),
        ])
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                               max_line_size=8190, max_field_size=8190)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, backlog=64)
            await site.start()
        except OSError as err:
            await runner.cleanup()
            # create_server's own strerror repeats the address: "error while attempting to bind ..."
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            raise HttpError(f"http.listen {self.listen}: {reason}") from err
        self._runner = runner
        self._hook()
        host, port = _bound(runner.addresses)
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        log.info("http: listening on %s%s", self.url, " (token required)" if self._token else "")

    async def aclose(self) -> None:
        self.stream.close()
        self._unhook()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _hook(self) -> None:
        engine = self._daemon.engine
        if engine is None or self._hooked:
            return
        self._hooked = True
        engine.subscribe(self._on_event)
        self._prev_output = engine.output
        engine.output = self._on_output

    def _unhook(self) -> None:
        engine = self._daemon.engine
        if engine is not None and self._hooked and engine.output == self._on_output:
            engine.output = self._prev_output
        self._hooked = False

    def _on_event(self, event: Event) -> None:
        if self._hooked:
            self.event_counts(event)
            self.stream.publish("event", event)

    def _on_output(self, record: dict[str, Any]) -> None:
        try:
            kind = record.get("type")
            if kind == "step":
                action = str(record.get("action"))
                engine = self._daemon.engine
                durations = engine.step_durations.get(action) if engine is not None else None
                # record_step appends the duration just before it outputs the record
                self.step_durations.observe(action, durations[-1] if durations else 0.0)
                self.stream.publish("run", {k: record.get(k) for k in
                                            ("type", "rule", "vm", "run", "step", "action", "status", "time")})
            else:
                self.stream.publish("run", {k: record[k] for k in
                                            ("type", "rule", "vm", "event", "run", "reason", "time") if k in record})
        finally:
            if self._prev_output is not None:
                self._prev_output(record)

    # -- middleware -------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if self._token is None and not _loopback_host(request.host):
            self.counts.rejected["host"] += 1
            raise _json_error(web.HTTPMisdirectedRequest, "this listener only answers to a loopback Host")
        if request.content_length is not None and request.content_length > self.max_request:
            self.counts.rejected["too_large"] += 1
            raise web.HTTPRequestEntityTooLarge(self.max_request, request.content_length,
                                                text=f"413: requests are limited to {self.max_request} bytes\n")
        if self._token is not None and request.path not in _PUBLIC:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
                self.counts.rejected["unauthorized"] += 1
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="reactor"'},
                                           text="401: a bearer token is required\n")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                self.counts.rejected["too_large"] += 1
            elif exc.status == 400:
                self.counts.rejected["bad_request"] += 1
            raise
        except JournalError as err:
            log.warning("http: %s %s: %s", request.method, request.path, err)
            raise _json_error(web.HTTPServiceUnavailable, f"journal: {err}") from err

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(_SECURITY_HEADERS)
        response.headers.pop("Server", None)
        if request.path.startswith(("/api/", "/metrics", "/readyz")):
            response.headers["Cache-Control"] = "no-store"

    # -- pages and probes -------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound(text="404: not found\n")
        return web.Response(body=self._static[name], headers={"Content-Type": _STATIC[name],
                                                              "Cache-Control": "no-cache"})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def ready_checks(self) -> dict[str, bool]:
        """What ``/readyz`` checks: started, rules loaded, journal writable."""
        d = self._daemon
        journal = _journal_of(d)
        return {
            "started": d.ready.is_set(),
            "rules_loaded": d.engine is not None,
            "journal_writable": journal is not None and bool(journal.healthy),
        }

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self.ready_checks()
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # the classic text format (0.0.4), or OpenMetrics when the scraper asks for it
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    # -- API --------------------------------------------------------------------------------
    async def _api_status(self, request: web.Request) -> web.Response:
        d = self._daemon
        engine = d.engine
        journal = _journal_of(d)
        last = d.last_reload
        out: dict[str, Any] = {
            "host": d.host, "dry_run": d.dry_run, "ready": self.ready_checks(),
            "rules": len(engine.rules) if engine is not None else 0, "reloads": d.reloads,
            "last_reload": None if last is None else {"ok": last.ok, "reason": last.reason,
                                                      "errors": list(last.errors)},
            "engine": dict(engine.stats) if engine is not None else {},
            "runs_in_flight": engine.runs_in_flight if engine is not None else 0,
            "bus": {"queued": len(engine.bus), "dropped": dict(engine.bus.dropped)} if engine is not None else {},
            "journal": None,
            "stream": {"clients": self.counts.stream_clients, "dropped": self.counts.stream_dropped},
        }
        if journal is not None:
            s = journal.stats
            out["journal"] = {"healthy": journal.healthy, "last_error": journal.last_error, "pending": s.pending,
                              "written": s.written, "dropped": s.dropped, "write_errors": s.write_errors,
                              "flush_latency_last": s.flush_latency_last, "flush_latency_avg": s.flush_latency_avg}
        return _json(out)

    async def _api_vms(self, request: web.Request) -> web.Response:
        from reactor.actions.resume import ResumeCoordinator

        d = self._daemon
        bus = d.engine.bus if d.engine is not None else None
        coord = d.resources.get(ResumeCoordinator)
        resuming = coord.snapshot() if isinstance(coord, ResumeCoordinator) else {}
        out = []
        for conn in list(d.fleet) if d.fleet is not None else ():
            out.append({
                "name": conn.name, "labels": dict(conn.labels), "state": conn.state.value, "status": conn.status,
                "connected": conn.connected, "qemu_version": conn.qemu_version, "reconnects": conn.reconnects,
                "last_error": conn.last_error, "events_received": conn.events_received,
                "queue_depth": bus.depth(conn.name) if bus is not None else 0,
                "dropped": bus.dropped.get(conn.name, 0) if bus is not None else 0,
                "resume": resuming.get(conn.name),   # what a resume step is doing with it (waiting, backoff...)
            })
        return _json(out)

    async def _api_fleet(self, request: web.Request) -> web.Response:
        from reactor.integrations.remote import FleetLink

        link = self._daemon.resources.get(FleetLink)
        if not isinstance(link, FleetLink):
            raise _json_error(web.HTTPNotFound, "fleet mode is off (no fleet: section in the config)")
        return _json(link.snapshot())

    async def _api_rules(self, request: web.Request) -> web.Response:
        engine = self._daemon.engine
        rules = engine.rules.rules if engine is not None else ()
        journal = _journal_of(self._daemon)
        last: dict[str, RunRecord] = {}
        if journal is not None and rules:
            last = await asyncio.to_thread(_last_runs, journal, [r.name for r in rules])
        out = []
        for r in rules:
            obj = rule_json(r)
            run = last.get(r.name)
            obj["last_run"] = None if run is None else run_json(run)
            if r.threshold is not None and engine is not None:   # distinct matches counted so far, per group
                obj["threshold"]["pending"] = engine.thresholds.pending(r.name, r.threshold, engine.clock.now())
            if r.correlations and engine is not None:   # counts, pending matches, recent cancellations
                obj["correlation"] = engine.correlation.snapshot(r.name)
            out.append(obj)
        return _json(out)

    async def _api_runs(self, request: web.Request) -> web.Response:
        q = request.query
        vm = _str_param(q, "vm")
        rule = _str_param(q, "rule")
        status = _str_param(q, "status")
        since = _since_param(q.get("since"))
        limit = _int_param(request, "limit", 100, 1, _MAX_LIMIT)
        journal = _journal_of(self._daemon)
        if journal is None:
            raise _json_error(web.HTTPServiceUnavailable, "the journal is not open")
        runs = await asyncio.to_thread(lambda: journal.runs(vm=vm, rule=rule, since=since, status=status,
                                                            limit=limit, with_steps=False))
        return _json([run_json(r) for r in runs])

    async def _api_run(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["id"])
        journal = _journal_of(self._daemon)
        if journal is None:
            raise _json_error(web.HTTPServiceUnavailable, "the journal is not open")
        run = await asyncio.to_thread(journal.run, run_id)
        if run is None:
            raise _json_error(web.HTTPNotFound, f"no run {run_id} in the journal")
        engine = self._daemon.engine
        rule = engine.rules.get(run.rule) if engine is not None else None
        obj = run_json(run)
        obj["event"] = None if run.event is None else event_json(run.event)
        obj["steps"] = [step_json(s) for s in run.steps]
        obj["rule_now"] = None if rule is None else rule_json(rule)
        fleet = self._daemon.fleet
        conn = fleet.get(run.vm) if fleet is not None else None
        obj["conditions"] = [] if rule is None else conditions(rule, run, conn.labels if conn is not None else {})
        return _json(obj)

    async def _api_events(self, request: web.Request) -> web.StreamResponse:
        return await self.stream.serve(request, write_timeout=self.write_timeout, heartbeat=self.heartbeat)


# --------------------------------------------------------------------------- JSON shapes


def run_json(r: RunRecord) -> dict[str, Any]:
    """A run without its steps and event."""
    return {"id": r.id, "rule": r.rule, "vm": r.vm, "event_id": r.event_id, "event_name": r.event_name,
            "outcome": r.outcome, "status": r.status, "started": r.started, "ended": r.ended,
            "duration": None if r.ended is None else max(r.ended - r.started, 0.0), "error": r.error}


def event_json(e: EventRecord) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "vm": e.vm, "host": e.host, "timestamp": e.timestamp, "data": e.data,
            "problems": list(e.problems)}


def step_json(s: StepRecord) -> dict[str, Any]:
    return {"index": s.index, "action": s.action, "args": s.args, "status": s.status, "result": s.result,
            "error": s.error, "started": s.started, "duration": s.duration}


def rule_json(r: Rule) -> dict[str, Any]:
    """A rule as loaded, its step arguments as written with secrets redacted."""
    return {
        "name": r.name, "description": r.description, "file": r.pos.path, "line": r.pos.line,
        "on": None if r.on is None else sorted(r.on), "enabled": r.enabled,
        "vms": None if r.vms is None else {"names": list(r.vms.names), "labels": dict(r.vms.labels or {})},
        "match": r.match_source, "if": r.condition.source if r.condition is not None else None,
        "mode": r.mode,
        "throttle": None if r.throttle is None else {"max": r.throttle.max, "within": r.throttle.within,
                                                     "per": list(r.throttle.per)},
        "threshold": None if r.threshold is None else {"count": r.threshold.count, "within": r.threshold.within,
                                                       "distinct": list(r.threshold.distinct),
                                                       "per": list(r.threshold.per)},
        **{c.form: _correlation_json(c) for c in r.correlations},
        "steps": [{"index": s.index, "action": s.name, "args": _redact_raw(s.action, s.args.raw),
                   "when": s.when.source if s.when is not None else None, "timeout": s.timeout,
                   "on_error": s.on_error} for s in r.steps],
    }


def _correlation_json(c: Correlation) -> dict[str, Any]:
    out: dict[str, Any] = {"within": c.within, "per": list(c.per), "text": c.describe()}
    if c.form == "count":
        out["min"] = c.min
    else:
        out["event"] = sorted(c.events)
        out["match"] = c.match_source
    return out


def conditions(rule: Rule, run: RunRecord, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rule's conditions and whether each held for the run's event.

    ``on``, ``vms`` and each top-level ``match`` entry are evaluated again (the
    rule as loaded now, on the recorded event data); ``if`` is not (it may
    depend on time and VM state): a recorded run means it held then.
    """
    out: list[dict[str, Any]] = []
    out.append({"kind": "on", "source": "*" if rule.on is None else sorted(rule.on),
                "held": rule.on is None or run.event_name in rule.on, "detail": []})
    if rule.vms is not None:
        out.append({"kind": "vms", "source": {"names": list(rule.vms.names), "labels": dict(rule.vms.labels or {})},
                    "held": rule.vms.matches(run.vm, labels), "detail": []})
    if isinstance(rule.match_source, Mapping):
        data = run.event.data if run.event is not None else None
        for key, want in rule.match_source.items():
            entry: dict[str, Any] = {"kind": "match", "source": {key: want}}
            if not isinstance(data, Mapping):
                entry.update(held=None, detail=["the event's data was not recorded"])
            else:
                failures = explain_match({key: want}, data)
                entry.update(held=not failures, detail=failures)
            out.append(entry)
    if rule.condition is not None:
        out.append({"kind": "if", "source": rule.condition.source, "held": True,
                    "detail": ["held when the event came (not evaluated again)"]})
    for c in rule.correlations:   # what after/count/unless decided, as the journal recorded it
        held: bool | None = True
        detail = [c.describe()]
        if c.form == "unless" and run.outcome == "pending":
            held = {"cancelled": False, "pending": None}.get(run.status, True)
            if run.error:
                detail.append(run.error)
        out.append({"kind": c.form, "source": _correlation_json(c), "held": held, "detail": detail})
    return out


def _redact_raw(spec: Any, raw: Any) -> Any:
    shown = redact(spec, raw)
    args_type = getattr(spec, "args", None)
    fields = getattr(args_type, "__dataclass_fields__", {})
    if isinstance(shown, dict):
        for key in list(shown):
            f = fields.get(key)
            if f is not None and f.metadata.get("secret") and shown[key] is not None:
                shown[key] = REDACTED
    return shown


def _last_runs(journal: Any, names: list[str], recent: int = 1000, singles: int = 200) -> dict[str, RunRecord]:
    """Each rule's newest run: one query for recent runs, then one per rule not among them (bounded)."""
    last: dict[str, RunRecord] = {}
    for r in journal.runs(limit=recent, with_steps=False):
        last.setdefault(r.rule, r)
    for name in [n for n in names if n not in last][:singles]:
        found = journal.runs(rule=name, limit=1, with_steps=False)
        if found:
            last[name] = found[0]
    return last


# --------------------------------------------------------------------------- helpers


def _journal_of(daemon: Any) -> Any:
    try:
        return daemon.journal
    except (JournalError, AttributeError):  # not running yet, or not a daemon (tests)
        return None


def _bound(addresses: Iterable[Any]) -> tuple[str, int]:
    for addr in addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return str(addr[0]), int(addr[1])
    raise HttpError("the listener has no address")


def _loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    name = name.lower()
    return name in _LOOPBACK_NAMES or name.startswith("127.") or name.endswith(".localhost")


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=_default, option=_JSON_OPTIONS)
    except TypeError:  # lone surrogates, huge integers: show them as text
        return orjson.dumps(repr(obj).encode("utf-8", "backslashreplace").decode())


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json")


def _json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=_dumps({"error": message}).decode(), content_type="application/json")


def _str_param(q: Mapping[str, str], name: str) -> str | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_PARAM:
        raise _json_error(web.HTTPBadRequest, f"{name}: longer than {_MAX_PARAM} characters")
    return value


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9:
        raise _json_error(web.HTTPBadRequest, f"{name}: expected a whole number, not {value[:40]!r}")
    return min(max(int(value), lo), hi)


def _since_param(value: str | None) -> float | None:
    """``since``: a duration back from now (``1h``), seconds since the epoch, or an ISO 8601 time."""
    if value is None or value == "":
        return None
    if len(value) > 64:
        raise _json_error(web.HTTPBadRequest, "since: too long")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    with contextlib.suppress(ValueError):
        return time.time() - parse_duration(value)
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        msg = f"since: expected a duration (1h), epoch seconds or an ISO 8601 time, not {value!r}"
        raise _json_error(web.HTTPBadRequest, msg) from None


def _last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit() or len(value) > 18:
        return None
    return int(value.strip())
