"""The webhook sender against a real HTTP server (asyncio streams) in the test."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from connectors.reconnect import Backoff
from daemon import notifications as events
from daemon.notification_settings import NotificationSettings, WebhookSettings, build_notifier
from daemon.webhook import WebhookSender
from tests.support.mqtt import free_port

WAIT = 30.0  # a guard against hanging forever, not a speed assertion


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HookServer:
    """An HTTP/1.1 server answering the scripted statuses in order (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, _version = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(method, target, headers, body))
            status = self.statuses.pop(0) if self.statuses else 200
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: 2\r\n"
                "Connection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[HookServer]:
    hook = HookServer()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.close()


def _fast_backoff() -> Backoff:
    return Backoff(0.01, 0.05, random.Random(3))


def _notification(reason: str = "manual") -> events.Notification:
    return events.account_suspended(f"acct-{uuid.uuid4().hex[:8]}", reason=reason)


async def _run(sender: WebhookSender, *notifications: events.Notification) -> None:
    await sender.start()
    for notification in notifications:
        sender.offer(notification)
    await sender.aclose(WAIT)
    assert sender.queued == 0


async def test_given_5xx_answers_then_the_same_notification_is_retried_until_2xx(
    server: HookServer,
) -> None:
    server.statuses = [500, 503, 429, 200]
    sender = WebhookSender(server.url(), retries=5, timeout=5.0, backoff=_fast_backoff())
    notification = _notification()

    await _run(sender, notification)

    assert len(server.requests) == 4
    assert {r.body for r in server.requests} == {notification.to_json()}
    assert {r.headers["x-ratekeeper-id"] for r in server.requests} == {notification.id}
    assert sender.delivered == 1
    assert sender.failed == 0
    first = server.requests[0]
    assert first.method == "POST"
    assert first.target == "/hook"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-ratekeeper-event"] == "account.suspended"
    assert json.loads(first.body)["payload"] == {"reason": "manual"}


async def test_given_a_400_then_it_is_not_retried_and_the_next_one_goes_on(
    server: HookServer,
) -> None:
    server.statuses = [400]
    sender = WebhookSender(server.url(), retries=5, timeout=5.0, backoff=_fast_backoff())
    rejected, accepted = _notification("a"), _notification("b")

    with capture_logs() as logs:
        await _run(sender, rejected, accepted)

    assert [r.headers["x-ratekeeper-id"] for r in server.requests] == [rejected.id, accepted.id]
    assert sender.failed == 1
    assert sender.delivered == 1
    assert any(e["event"] == "webhook rejected a notification" and e["status"] == 400 for e in logs)


async def test_given_retries_exhausted_then_the_notification_is_given_up(
    server: HookServer,
) -> None:
    server.statuses = [502, 502, 502]
    sender = WebhookSender(server.url(), retries=2, timeout=5.0, backoff=_fast_backoff())

    await _run(sender, _notification())

    assert len(server.requests) == 3  # the first attempt and two retries
    assert sender.failed == 1
    assert sender.delivered == 0


async def test_given_no_server_then_connection_errors_are_retried_and_counted() -> None:
    sender = WebhookSender(
        f"http://127.0.0.1:{free_port()}/hook", retries=2, timeout=5.0, backoff=_fast_backoff()
    )
    with capture_logs() as logs:
        await _run(sender, _notification())
    assert sender.failed == 1
    assert [e["attempt"] for e in logs if e["event"] == "webhook delivery failed, retrying"] == [
        1,
        2,
    ]


async def test_given_a_secret_then_the_signature_is_the_hmac_of_the_body(
    server: HookServer,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    notifier = build_notifier(
        NotificationSettings(
            webhook=WebhookSettings(
                url=server.url("/hook?token=abc"), secret=SecretStr(secret), retries=1
            )
        )
    )
    notification = _notification()
    await notifier.start()
    notifier.publish(notification)
    await notifier.aclose(WAIT)

    (request,) = server.requests
    assert request.target == "/hook?token=abc"
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-ratekeeper-signature"] == f"sha256={expected}"
    assert request.body == notification.to_json()


async def test_given_no_secret_then_no_signature_header(server: HookServer) -> None:
    sender = WebhookSender(server.url(), backoff=_fast_backoff())
    await _run(sender, _notification())
    (request,) = server.requests
    assert "x-ratekeeper-signature" not in request.headers


async def test_given_failures_then_the_secret_and_query_token_never_reach_the_logs(
    server: HookServer,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    server.statuses = [500, 401]
    sender = WebhookSender(
        server.url(f"/hook?token={token}"),
        secret=secret,
        retries=3,
        timeout=5.0,
        backoff=_fast_backoff(),
    )
    with capture_logs() as logs:
        await _run(sender, _notification())

    assert sender.failed == 1
    assert len(logs) >= 2  # a retry warning and the rejection
    text = repr(logs) + repr(sender)
    assert secret not in text
    assert token not in text
    settings = WebhookSettings(url=server.url(f"/hook?token={token}"), secret=SecretStr(secret))
    assert secret not in repr(settings)
    assert secret not in settings.model_dump_json()
