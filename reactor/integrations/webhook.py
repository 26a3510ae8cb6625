"""Webhooks: one shared HTTP client session, HMAC request signing and the retry policy.

:class:`HttpSession` is the :class:`~reactor.actions.action.Resource` behind the
``webhook`` action: one ``aiohttp.ClientSession`` with a keep-alive connection
pool, shared by every rule.  :func:`sign` produces the signature headers a
receiver checks (see ``docs/mqtt-webhooks.md``), :func:`retry_delay` the wait
before the next attempt.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import os
import random
import ssl
import time
from typing import TYPE_CHECKING

from reactor.actions.action import DaemonContext, Resource
from reactor.errors import ActionError, WebhookError

if TYPE_CHECKING:
    import aiohttp  # imported when the session starts: a command that sends no webhook never loads it

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "HttpSession",
    "WebhookError",
    "retry_delay",
    "should_retry",
    "sign",
]

#: Seconds since the epoch, as decimal digits; part of the signed text.
TIMESTAMP_HEADER = "X-Reactor-Timestamp"
#: ``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``.
SIGNATURE_HEADER = "X-Reactor-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers for ``body``: HMAC-SHA256 over ``b"<timestamp>." + body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: f"sha256={mac}"}


def should_retry(status: int) -> bool:
    """5xx and 429 are retried; every other status is final."""
    return status >= 500 or status == 429


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(attempt: int, backoff: float, max_backoff: float, retry_after: str | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: ``Retry-After`` when given, else jittered
    exponential backoff (uniform in [d/2, d], d = backoff * 2**attempt); capped at ``max_backoff``."""
    honoured = _retry_after(retry_after)
    if honoured is not None:
        return min(honoured, max_backoff)
    d = min(max_backoff, backoff * (2 ** min(attempt, 16)))
    return random.uniform(d / 2, d)


class HttpSession(Resource):
    """The shared ``aiohttp.ClientSession`` (keep-alive pool) and TLS contexts per CA file."""

    #: Most connections open at once, and per host.
    LIMIT = 100
    LIMIT_PER_HOST = 32

    def __init__(self, daemon: DaemonContext) -> None:
        super().__init__(daemon)
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[tuple[str | None, bool], ssl.SSLContext] = {}
        self._secrets: dict[str, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"<HttpSession open={self._session is not None and not self._session.closed}>"

    async def start(self) -> None:
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.LIMIT, limit_per_host=self.LIMIT_PER_HOST)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": "reactor-webhook"},
                auto_decompress=True,
            )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise ActionError("webhook: the HTTP session is not started")
        return self._session

    def ssl_context(self, ca_file: str | None, verify: bool) -> ssl.SSLContext:
        """A client TLS context (cached): system CAs or ``ca_file``; ``verify=False`` checks nothing."""
        key = (ca_file, verify)
        ctx = self._ssl.get(key)
        if ctx is None:
            try:
                ctx = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as err:
                raise WebhookError(f"webhook: cannot load ca_file {ca_file}: {err}") from err
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl[key] = ctx
        return ctx

    def secret(self, path: str) -> str:
        """The secret in file ``path`` (first line, stripped), re-read when the file changes.  Blocking."""
        try:
            mtime = os.stat(path).st_mtime
            cached = self._secrets.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            with open(path, encoding="utf-8") as f:
                value = f.readline().strip()
        except OSError as err:
            raise WebhookError(f"webhook: cannot read secret_file {path}: {err.strerror}") from err
        self._secrets[path] = (mtime, value)
        return value

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
