"""``alertmanager``: raise (or resolve) an alert in Prometheus Alertmanager (API v2).

::

    - alertmanager:
        url: http://127.0.0.1:9093
        alertname: VMPausedOnIOError
        severity: critical
        annotations: {summary: "{{ vm.name }} paused: {{ event.data.reason }}"}

The alert's labels are ``alertname``, ``severity``, ``vm``, ``rule``,
``event`` and ``reactor_host`` (when known) plus ``labels``; Alertmanager
groups and deduplicates on them, so the same rule and VM update one alert.
``resolve: true`` sends it with ``endsAt`` now (put it in a rule on
``RESUME``).  One HTTP session is shared by every step (a
:class:`~reactor.plugin.Resource`, opened when the daemon starts and closed
on stop).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reactor.plugin import ActionContext, ActionError, DaemonContext, Duration, Resource, action

if TYPE_CHECKING:
    import aiohttp  # imported when the session starts: loading the plugin (`reactor check`) stays cheap

__all__ = ["ALERTMANAGER", "AlertArgs", "AlertmanagerSession", "build_alert"]


class AlertmanagerSession(Resource):
    """The HTTP session every ``alertmanager`` step shares."""

    def __init__(self, daemon: DaemonContext) -> None:
        super().__init__(daemon)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(headers={"User-Agent": "reactor-alertmanager/0.1"})

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


@dataclass(frozen=True)
class AlertArgs:
    #: Alertmanager's base URL (``http://alertmanager:9093``).
    url: str
    alertname: str = "ReactorEvent"
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: Send the alert as resolved (``endsAt`` now).
    resolve: bool = False
    #: A link back (``generatorURL``), e.g. to reactor's HTTP API.
    generator_url: str | None = None
    timeout: Duration = Duration(5.0)  # noqa: RUF009


def _check(args: AlertArgs) -> None:
    if "{{" not in args.url and not args.url.startswith(("http://", "https://")):
        raise ValueError(f"url: {args.url!r} must start with http:// or https://")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def build_alert(ctx: ActionContext, args: AlertArgs) -> dict[str, Any]:
    """The Alertmanager v2 alert object for this step."""
    labels = {"alertname": args.alertname, "severity": args.severity, "vm": ctx.vm.name, "rule": ctx.rule,
              "event": ctx.event.name}
    if ctx.event.host:
        labels["reactor_host"] = ctx.event.host
    labels.update(args.labels)
    annotations = {"summary": f"{ctx.event.name} on {ctx.vm.name}", **args.annotations}
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": _iso(ctx.event.timestamp)}
    if args.resolve:
        alert["endsAt"] = _iso(ctx.now())
    if args.generator_url:
        alert["generatorURL"] = args.generator_url
    return alert


@action("alertmanager", shorthand="url", mutating=True, check=_check, resources=(AlertmanagerSession,))
async def ALERTMANAGER(ctx: ActionContext, args: AlertArgs) -> dict[str, Any]:
    """Post an alert (or, with ``resolve: true``, its resolution) to Alertmanager at ``url``; fails on an
    HTTP error or after ``timeout``."""
    import aiohttp

    session = ctx.resource(AlertmanagerSession).session
    if session is None:
        raise ActionError("alertmanager: the HTTP session is closed")
    alert = build_alert(ctx, args)
    endpoint = args.url.rstrip("/") + "/api/v2/alerts"
    try:
        async with session.post(endpoint, json=[alert], timeout=aiohttp.ClientTimeout(total=args.timeout)) as resp:
            body = (await resp.text())[:500]
            if resp.status >= 300:
                raise ActionError(f"alertmanager: {endpoint} answered {resp.status}: {body.strip()}")
    except aiohttp.ClientError as err:
        raise ActionError(f"alertmanager: {endpoint}: {err}") from err
    return {"status": resp.status, "labels": alert["labels"], "resolved": args.resolve}
