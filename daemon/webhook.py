"""Deliver notifications to an HTTP webhook: one JSON POST each, retried with backoff.

:class:`WebhookSender` is a notification sink (``daemon.notifications``): ``offer`` only
appends to a bounded buffer (the oldest is dropped and counted when full); one task POSTs
the notifications in order, each over a fresh HTTP/1.1 connection written with asyncio
streams (``https`` uses ``ssl.create_default_context()``). A connection error, a timeout,
a 5xx or a 429 is retried up to ``retries`` times with jittered exponential backoff; any
other status is final (2xx delivered, 3xx and 4xx given up). Headers::

    Content-Type: application/json
    X-Ratekeeper-Event: <kind>
    X-Ratekeeper-Id: <notification id>           (the same on every retry: dedupe by it)
    X-Ratekeeper-Signature: sha256=<hex>         (HMAC-SHA256 of the exact body, when a
                                                  secret is set)

The secret, credentials in the URL and its query string are never logged.

Errors (stable ``code``)::

    WebhookError              WEBHOOK_ERROR
    +-- WebhookUnavailable    WEBHOOK_UNAVAILABLE  retried: connection, timeout, 5xx, 429
    +-- WebhookRejected       WEBHOOK_REJECTED     final: any other non-2xx status
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import re
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import structlog

from connectors.mqtt.publisher import DropOldestBuffer
from connectors.reconnect import Backoff, cancel_task
from daemon.notifications import Notification

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Ratekeeper-Signature"
USER_AGENT = "ratekeeper-webhook/1"
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: .*)?\r?\n$")
_MAX_LINE = 8192
_MAX_HEADERS = 100


class WebhookError(Exception):
    """A webhook delivery attempt failed."""

    code = "WEBHOOK_ERROR"


class WebhookUnavailable(WebhookError):
    """The endpoint could not be reached, timed out, or answered 5xx / 429 (retried)."""

    code = "WEBHOOK_UNAVAILABLE"


class WebhookRejected(WebhookError):
    """The endpoint answered a final non-2xx status (not retried)."""

    code = "WEBHOOK_REJECTED"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where to POST, parsed from an ``http://`` or ``https://`` URL."""

    host: str
    port: int
    tls: bool
    target: str  # path and query, as sent on the request line
    path: str  # path only, safe to log
    authorization: str | None  # Basic credentials from the URL's user info

    @classmethod
    def parse(cls, url: str) -> WebhookTarget:
        """Parse ``url``; ``ValueError`` (without credentials or query) when not valid."""
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"webhook URL {shown!r}: scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"webhook URL {shown!r}: no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"webhook URL {shown!r}: invalid port") from exc
        path = parts.path or "/"
        authorization = None
        if parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(user_pass.encode()).decode()
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "https",
            target=path + (f"?{parts.query}" if parts.query else ""),
            path=path,
            authorization=authorization,
        )

    def host_header(self) -> str:
        """The ``Host`` header (IPv6 literal bracketed, default port omitted)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


async def post(
    target: WebhookTarget,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,  # noqa: ASYNC109 - the whole request's deadline
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` and return the status; ``WebhookUnavailable`` on I/O or timeout."""
    lines = [
        f"POST {target.target} HTTP/1.1",
        f"Host: {target.host_header()}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if target.authorization:
        lines.append(f"Authorization: {target.authorization}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    context = (ssl_context or ssl.create_default_context()) if target.tls else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=context, limit=_MAX_LINE
            )
            try:
                writer.write(request)
                await writer.drain()
                return await _read_status(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError as exc:
        raise WebhookUnavailable(f"no answer within {timeout} s") from exc
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise WebhookUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def _read_status(reader: asyncio.StreamReader) -> int:
    """The final status of the response (skipping 1xx), after reading its headers."""
    while True:
        line = await reader.readline()
        found = _STATUS_LINE.match(line)
        if not found:
            raise WebhookUnavailable(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(found.group(1))
        for _ in range(_MAX_HEADERS):
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
        else:
            raise WebhookUnavailable(f"more than {_MAX_HEADERS} response headers")
        if status >= 200:
            return status


def is_retryable(status: int) -> bool:
    """5xx and 429 are worth another try; every other status is final."""
    return status >= 500 or status == 429


class WebhookSender:
    """Buffered, retrying webhook sink (see the module docstring)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: Backoff | None = None,
        buffer: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"webhook retries must be >= 0, got {retries}")
        if timeout <= 0:
            raise ValueError(f"webhook timeout must be > 0, got {timeout}")
        self._target = WebhookTarget.parse(url)
        self._secret = secret.encode() if secret else None
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff or Backoff(1.0, 60.0, random.Random())
        self._ssl_context = ssl_context
        self._buffer: DropOldestBuffer[Notification] = DropOldestBuffer(buffer, name="webhook")
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"WebhookSender(host={self._target.host!r}, path={self._target.path!r})"

    @property
    def queued(self) -> int:
        """Notifications not delivered nor given up yet."""
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Notifications dropped because the buffer was full."""
        return self._buffer.dropped

    def offer(self, notification: Notification) -> None:
        """Queue ``notification``; never blocks."""
        self._buffer.put(notification)

    async def start(self) -> None:
        """Start the delivery task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - flush deadline
        """Deliver what can be delivered within ``timeout`` seconds, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._buffer.wait_empty()
        await cancel_task(self._task)
        self._task = None
        if self.queued:
            log.warning("webhook sender closed with undelivered notifications", queued=self.queued)

    async def _run(self) -> None:
        while True:
            await self._buffer.wait_nonempty()
            notification = self._buffer.peek(1)[0]
            try:
                await self._deliver(notification)
            except Exception:
                self.failed += 1
                log.exception("webhook delivery crashed", notification_id=notification.id)
            self._buffer.discard(notification)

    def _headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        headers = {"X-Ratekeeper-Event": str(notification.kind), "X-Ratekeeper-Id": notification.id}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return headers

    async def _deliver(self, notification: Notification) -> None:
        """POST one notification, retrying what is worth retrying; count the outcome."""
        body = notification.to_json()
        headers = self._headers(notification, body)
        where = {
            "host": self._target.host,
            "path": self._target.path,
            "notification_id": notification.id,
            "kind": str(notification.kind),
        }
        self._backoff.reset()
        for attempt in range(1, self._retries + 2):
            try:
                status = await post(
                    self._target,
                    body,
                    headers,
                    timeout=self._timeout,
                    ssl_context=self._ssl_context,
                )
            except WebhookUnavailable as exc:
                problem = str(exc)
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                if not is_retryable(status):
                    self.failed += 1
                    log.error("webhook rejected a notification", status=status, **where)
                    return
                problem = f"HTTP {status}"
            if attempt > self._retries:
                break
            log.warning(
                "webhook delivery failed, retrying", attempt=attempt, error=problem, **where
            )
            await asyncio.sleep(self._backoff.next_delay())
        self.failed += 1
        log.error("webhook delivery given up", attempts=self._retries + 1, error=problem, **where)
