"""Secrets stay secret: API keys never in logs nor in error bodies, whatever the request."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from structlog.testing import capture_logs

from balance.api_keys import ApiKeyStore
from tests.integration.api_fixtures import World, world_fixture  # noqa: F401

AMI_PASSWORD = "s3cret-ami-password"


def _flatten(events: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(repr(event) for event in events)


async def test_given_good_and_bad_keys_when_used_then_no_key_is_logged_or_echoed(
    world: World,
) -> None:
    forged = "rk_" + secrets.token_urlsafe(32)  # looks like a key, is none
    account = world.ids["customer_a"]
    bodies: list[str] = []
    with capture_logs() as logs:
        info, fresh = await ApiKeyStore(world.engine).create("reseller", world.ids["reseller_a"])
        world.keys["fresh"] = fresh
        attempts = [
            ("fresh", "GET", f"/v1/accounts/{account}", None),
            (
                "fresh",
                "POST",
                f"/v1/accounts/{account}/topups",
                {"amount": fresh, "currency": "USD"},
            ),
            ("fresh", "POST", f"/v1/accounts/{account}/topups", {"amount": "1", "currency": "USD"}),
            (
                "customer_a",
                "POST",
                f"/v1/accounts/{account}/topups",
                {"amount": "1", "currency": "USD"},
            ),
            ("fresh", "PATCH", f"/v1/accounts/{account}", {"name": "x", "api_key": fresh}),
            ("fresh", "GET", f"/v1/accounts/{world.ids['customer_b']}", None),
            ("revoked", "GET", f"/v1/accounts/{account}", None),
        ]
        for who, method, path, body in attempts:
            response = await world.call(who, method, path, json=body, idempotency_key="s-1")
            bodies.append(response.text)
        for presented in (forged, AMI_PASSWORD):
            for header in ({"Authorization": f"Bearer {presented}"}, {"X-API-Key": presented}):
                response = await world.client.get(f"/v1/accounts/{account}", headers=header)
                assert response.status_code == 401
                bodies.append(response.text)
    logged = _flatten(logs)
    every_secret = [*world.keys.values(), forged, AMI_PASSWORD]
    for secret in every_secret:
        assert secret not in logged
        assert all(secret not in body for body in bodies)
    refused = [e for e in logs if e["event"] == "api key refused"]
    revoked = world.keys["revoked"][:8]
    assert {e["key_prefix"] for e in refused} == {forged[:8], revoked, "(not a ratekeeper key)"}
    created = [e for e in logs if e["event"] == "api key created"]
    assert created[0]["key_prefix"] == info.prefix == fresh[:8]
    assert any(e["event"] == "api top-up" and e["key_prefix"] == fresh[:8] for e in logs)


async def test_given_a_failing_database_when_called_then_503_without_the_drivers_words(
    world: World,
) -> None:
    key = world.keys["operator"]
    async with world.engine.begin() as conn:  # drop the table the key check reads
        await conn.execute(text("DROP TABLE api_keys"))
    with capture_logs() as logs:
        response = await world.client.get(
            "/v1/accounts", headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 503
    assert response.json() == {
        "code": "STORAGE_UNAVAILABLE",
        "detail": "the database is unavailable",
    }
    assert "api_keys" not in response.text
    assert key not in _flatten(logs)
