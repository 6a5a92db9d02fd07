"""The API's OpenAPI document (served and checked in) and the API over a real socket."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from daemon.api.openapi import CHECKED_IN, REFRESH_COMMAND, openapi_document, render
from daemon.api.server import serve_api
from tests.integration.api_fixtures import World, world_fixture  # noqa: F401


def test_given_the_code_when_the_openapi_document_is_rendered_then_it_matches_the_checked_in() -> (
    None
):
    checked_in = CHECKED_IN.read_text(encoding="utf-8") if CHECKED_IN.exists() else ""
    assert render(openapi_document()) == checked_in, (
        f"{CHECKED_IN} is out of date with the API; refresh it with: {REFRESH_COMMAND}"
    )


def test_given_the_document_when_read_then_every_endpoint_and_both_key_schemes_are_there() -> None:
    document = openapi_document()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == {
        ("POST", "/v1/accounts"),
        ("GET", "/v1/accounts"),
        ("GET", "/v1/accounts/{account_id}"),
        ("PATCH", "/v1/accounts/{account_id}"),
        ("POST", "/v1/accounts/{account_id}/suspend"),
        ("POST", "/v1/accounts/{account_id}/resume"),
        ("GET", "/v1/resellers/{account_id}/customers"),
        ("POST", "/v1/accounts/{account_id}/topups"),
        ("POST", "/v1/accounts/{account_id}/adjustments"),
        ("GET", "/v1/accounts/{account_id}/ledger"),
        ("GET", "/v1/accounts/{account_id}/rated-calls"),
        ("GET", "/v1/accounts/{account_id}/live-calls"),
        ("GET", "/v1/accounts/{account_id}/seats"),
        ("GET", "/v1/accounts/{account_id}/denials"),
        ("GET", "/v1/decks"),
        ("GET", "/v1/decks/{name}"),
        ("POST", "/v1/decks/{name}"),
        ("POST", "/v1/decks/{name}/activate"),
    }
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    topup = document["paths"]["/v1/accounts/{account_id}/topups"]["post"]
    header = [p for p in topup["parameters"] if p["in"] == "header"]
    assert header[0]["name"] == "Idempotency-Key" and header[0]["required"] is True
    assert {"200", "201", "403", "404", "409", "422"} <= set(topup["responses"])
    for schema in ("MoneyIn", "AdjustmentIn", "AccountCreate", "AccountPatch"):
        assert document["components"]["schemas"][schema]["additionalProperties"] is False


async def test_given_a_real_socket_when_served_then_openapi_auth_and_topups_work(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve_api(world.app, "127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            served = await http.get("/openapi.json")
            assert served.status_code == 200
            assert served.json() == json.loads(render(openapi_document()))
            assert (await http.get("/v1/accounts")).status_code == 401
            account = world.ids["customer_a"]
            key = f"socket-{uuid.uuid4()}"
            headers = {
                "Authorization": f"Bearer {world.keys['reseller_a']}",
                "Idempotency-Key": key,
            }
            body = {"amount": "7.25", "currency": "USD"}
            first = await http.post(f"/v1/accounts/{account}/topups", json=body, headers=headers)
            again = await http.post(f"/v1/accounts/{account}/topups", json=body, headers=headers)
            assert (first.status_code, again.status_code) == (201, 200)
            assert first.json() == again.json()
            shown = await http.get(
                f"/v1/accounts/{account}", headers={"X-API-Key": world.keys["customer_a"]}
            )
            assert shown.json()["live"]["balance"] == "7.250000"
    finally:
        await server.stop()
    for secret in world.keys.values():
        assert secret not in caplog.text
