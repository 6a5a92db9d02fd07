"""The daemon's event loop: ``event_loop = "auto" | "uvloop" | "asyncio"``, and the whole
authorization path and MQTT delivery working on uvloop (``ratekeeper run``'s default).

The uvloop tests are plain functions that run their own loop (``daemon.event_loop.run``),
on the test Redis, an SQLite file and the test MQTT broker. ``tests/integration/
test_signals.py`` runs ``ratekeeper run`` itself (real signals, AMI, FastAGI, systemd
notifications) and checks it reports uvloop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from balance import keys
from connectors.mqtt.publisher import BrokerAddress
from daemon import event_loop
from daemon.event_loop import EventLoopUnavailable, resolve, running_loop_name
from daemon.notification_settings import MQTTSettings, NotificationSettings, build_notifier
from daemon.notifications import account_suspended
from daemon.settings import (
    ApiSettings,
    AuthorizationSettings,
    ConfigError,
    DatabaseSettings,
    RedisSettings,
    Settings,
    load_settings,
)
from daemon.simulator.agi_client import run_fastagi
from tests.integration.mqtt_fixtures import mqtt_url  # noqa: F401
from tests.support import services
from tests.support.daemon_harness import provision, running_daemon

RUN = f"uv-{uuid.uuid4().hex[:8]}"  # every account of this module starts with it
CALLEE = "12125550100"  # the harness deck's North America


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's Redis keys afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


def test_given_each_choice_when_resolved_then_uvloop_only_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve("asyncio") == "asyncio"
    assert resolve("auto") == "uvloop"  # a dependency of ratekeeper on this platform
    assert resolve("uvloop") == "uvloop"

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert resolve("auto") == "asyncio"
    with pytest.raises(EventLoopUnavailable, match=r"event_loop = 'uvloop'.*not installed"):
        resolve("uvloop")


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_given_a_choice_when_run_then_the_coroutine_runs_on_that_loop(choice: str) -> None:
    async def name() -> str:
        return running_loop_name()

    assert event_loop.run(name(), choice) == choice  # type: ignore[arg-type]


def test_given_an_unknown_event_loop_in_the_file_when_loaded_then_the_key_is_named(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ratekeeper.toml"
    config.write_text('event_loop = "tokio"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={}, default_path=tmp_path / "none.toml")
    assert "event_loop" in str(info.value) and str(config) in str(info.value)
    good = tmp_path / "good.toml"
    good.write_text('event_loop = "asyncio"\n', encoding="utf-8")
    assert load_settings(good, environ={}, default_path=tmp_path / "none.toml").event_loop == (
        "asyncio"
    )


async def _http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_given_uvloop_when_switches_authorize_then_http_and_fastagi_answer_and_reserve(
    tmp_path: Path, redis_url: str
) -> None:
    account = f"{RUN}-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        state_dir=tmp_path,
        database=DatabaseSettings(url=f"sqlite:///{tmp_path}/uv.db", batch_delay_ms=5),
        redis=RedisSettings(url=redis_url),
        api=ApiSettings(port=0),
        authorization=AuthorizationSettings(http_port=0, fastagi_port=0, debit_interval=30),
    )

    async def scenario() -> tuple[str, int, dict[str, Any], dict[str, str], int]:
        await provision(settings, {account: Decimal("10")})
        async with running_daemon(settings) as daemon:
            path = f"/v1/authorize?account={account}&callee={CALLEE}&call_id=uv-http-1"
            status, answer = await _http_get(daemon.http_port, path)
            env = [
                ("agi_network_script", "authorize"),
                ("agi_uniqueid", "uv-agi-1"),
                ("agi_callerid", "1001"),
                ("agi_extension", CALLEE),
                ("agi_accountcode", account),
            ]
            agi = await run_fastagi("127.0.0.1", daemon.fastagi_port, env)
            assert daemon.live is not None
            live = await daemon.live.snapshot(account)
            calls = 0 if live is None else len(live.calls)
            return running_loop_name(), status, answer, agi.variables, calls

    loop, status, answer, variables, live_calls = event_loop.run(scenario(), "uvloop")

    assert loop == "uvloop"
    assert (status, answer["result"], answer["reason"]) == (200, "ALLOW", "OK")
    assert variables["AUTH_RESULT"] == "ALLOW" and int(variables["AUTH_MAXSECS"]) > 0
    assert live_calls == 2  # both reservations are in Redis


def test_given_uvloop_when_a_notification_is_published_then_mqtt_delivers_it(
    mqtt_url: str,  # noqa: F811
) -> None:
    prefix = f"rk-uv-{uuid.uuid4().hex[:8]}"
    tenant = f"acct-{uuid.uuid4().hex[:8]}"
    notifier = build_notifier(
        NotificationSettings(
            mqtt=MQTTSettings(url=mqtt_url, client_id=f"{prefix}-pub", topic_prefix=prefix)
        )
    )
    address = BrokerAddress.parse(mqtt_url)

    async def scenario() -> tuple[str, str, dict[str, Any]]:
        broker = aiomqtt.Client(  # made on the running loop, as aiomqtt requires
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=f"{prefix}-sub",
        )
        async with broker:
            await broker.subscribe(f"{prefix}/#", qos=1)
            await notifier.start()
            notifier.publish(account_suspended(tenant, reason="uvloop test"))
            async with asyncio.timeout(20):
                message = await anext(aiter(broker.messages))
            await notifier.aclose()
            return running_loop_name(), str(message.topic), json.loads(message.payload)

    loop, topic, payload = event_loop.run(scenario(), "uvloop")

    assert loop == "uvloop"
    assert topic.startswith(f"{prefix}/{tenant}/")
    assert (payload["tenant"], payload["payload"]["reason"]) == (tenant, "uvloop test")
