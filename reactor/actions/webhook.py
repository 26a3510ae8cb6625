"""The ``webhook`` action: an HTTP request, signed when a secret is given.

::

    - webhook: https://hooks.example.com/reactor                    # POST the event as JSON
    - webhook:
        url: https://hooks.example.com/reactor
        secret_file: /etc/reactor/hook.secret                       # or secret: "..." (avoid in rule files)
        headers: {X-Source: reactor}
        body: {text: "{{ vm.name }} paused: {{ event.name }}"}
        timeout: 5s
      register: hook                                                 # {status, body, headers}

Connection errors, timeouts, 5xx and 429 are retried (``retries`` times, with
jittered exponential backoff; ``Retry-After`` is honoured); other statuses
are final.  A final status of 400 or more fails the step with the status in
the message.  Redirects are not followed unless ``follow_redirects: true``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from reactor.actions.action import ActionContext, ActionSpec, Duration, action
from reactor.errors import ArgumentErrors, ProblemKey
from reactor.integrations.webhook import HttpSession, WebhookError, retry_delay, should_retry, sign

__all__ = ["WEBHOOK", "WebhookArgs"]


_TIMEOUT = Duration(10.0)
_BACKOFF = Duration(0.5)
_MAX_BACKOFF = Duration(30.0)


@dataclass(frozen=True)
class WebhookArgs:
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    headers: dict[str, str] | None = None
    body: Any = None
    secret: str | None = None
    secret_file: str | None = None
    timeout: Duration = _TIMEOUT
    retries: int = 3
    backoff: Duration = _BACKOFF
    max_backoff: Duration = _MAX_BACKOFF
    ca_file: str | None = None
    verify: bool = True
    follow_redirects: bool = False
    max_body: int = 65536


def _check(args: Any) -> None:
    problems: list[tuple[ProblemKey, str]] = []
    url = getattr(args, "url", "")
    if isinstance(url, str) and "{{" not in url and not url.startswith(("http://", "https://")):
        problems.append(("url", f"url: {url!r} is not an http:// or https:// URL"))
    if getattr(args, "secret", None) is not None and getattr(args, "secret_file", None) is not None:
        problems.append((("secret_file", "secret"), "give either secret or secret_file, not both"))
    retries = getattr(args, "retries", 0)
    if isinstance(retries, int) and not 0 <= retries <= 20:
        problems.append(("retries", f"retries: {retries} is not between 0 and 20"))
    if problems:
        raise ArgumentErrors(problems)


def _body(ctx: ActionContext, args: WebhookArgs) -> tuple[bytes | None, str | None]:
    """The bytes to send and their default content type."""
    if args.body is None:
        if args.method in ("GET", "HEAD", "DELETE"):
            return None, None
        return orjson.dumps(ctx.event.to_qmp()), "application/json"
    if isinstance(args.body, bytes):
        return args.body, "application/octet-stream"
    if isinstance(args.body, str):
        return args.body.encode(), "text/plain; charset=utf-8"
    return orjson.dumps(args.body), "application/json"


def _where(url: str) -> str:
    """The URL for messages: without credentials and query string (they may hold tokens)."""
    try:
        import yarl  # with aiohttp, only when a webhook is sent

        u = yarl.URL(url)
    except (TypeError, ValueError):
        return "<invalid url>"
    return str(u.with_user(None).with_query(None).with_fragment(None))


async def _webhook(ctx: ActionContext, args: WebhookArgs) -> object:
    """Send an HTTP request (default: POST the event as JSON); the result is ``{status, body, headers}``."""
    import aiohttp  # not at import: `reactor check`, `replay`, `--help` never load the HTTP client

    http = ctx.resource(HttpSession)
    where = f"{args.method} {_where(args.url)}"
    session = http.session
    body, content_type = _body(ctx, args)
    headers = dict(args.headers or {})
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    secret = args.secret
    if args.secret_file is not None:
        secret = await asyncio.to_thread(http.secret, args.secret_file)
    ssl_ctx = http.ssl_context(args.ca_file, args.verify) if args.url.startswith("https:") else None
    last_error = ""
    for attempt in range(args.retries + 1):
        if secret is not None:
            headers.update(sign(secret, body or b""))
        retry_after: str | None = None
        try:
            async with (
                asyncio.timeout(args.timeout),
                session.request(
                    args.method,
                    args.url,
                    data=body,
                    headers=headers,
                    allow_redirects=args.follow_redirects,
                    ssl=ssl_ctx if ssl_ctx is not None else True,
                ) as resp,
            ):
                excerpt = await resp.content.read(args.max_body)
                status = resp.status
                if should_retry(status) and attempt < args.retries:
                    retry_after = resp.headers.get("Retry-After")
                    last_error = f"HTTP {status}"
                else:
                    result = {
                        "status": status,
                        "body": excerpt.decode("utf-8", "replace"),
                        "headers": {k: v for k, v in resp.headers.items()},
                    }
                    if status >= 400:
                        raise WebhookError(
                            f"webhook {where}: HTTP {status} {resp.reason or ''}".rstrip()
                            + (f" after {attempt + 1} attempts" if attempt else ""),
                            status,
                        )
                    return result
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as err:
            raise WebhookError(f"webhook {where}: TLS error: {err}") from err
        except aiohttp.ClientConnectionError as err:
            last_error = f"{type(err).__name__}: {err}"
            if attempt == args.retries:
                raise WebhookError(f"webhook {where}: {last_error}") from err
        except TimeoutError as err:
            last_error = f"no response within {args.timeout:g}s"
            if attempt == args.retries:
                raise WebhookError(f"webhook {where}: timed out: {last_error}") from err
        except aiohttp.ClientError as err:  # invalid URL, bad response...: final
            raise WebhookError(f"webhook {where}: {type(err).__name__}: {err}") from err
        delay = retry_delay(attempt, args.backoff, args.max_backoff, retry_after)
        ctx.log.info("webhook %s: %s; retry %d/%d in %.2fs", where, last_error, attempt + 1, args.retries, delay)
        await ctx.sleep(delay)
    raise WebhookError(f"webhook {where}: {last_error}")  # pragma: no cover


WEBHOOK: ActionSpec = action("webhook", shorthand="url", check=_check, resources=(HttpSession,))(_webhook)
