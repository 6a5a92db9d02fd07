"""Accounts through the API: create, show with live state, change, suspend, list, page."""

from __future__ import annotations

from typing import Any

import pytest

from balance.accounts import AccountStore
from tests.integration.api_fixtures import World, unique, world_fixture  # noqa: F401


async def test_given_a_reseller_when_it_creates_an_account_then_it_is_its_customer_and_live(
    world: World,
) -> None:
    new_id = unique("shop")
    body = {"id": new_id, "currency": "EUR", "name": "Shop", "credit_limit": "0", "cps_limit": 5}
    response = await world.call("reseller_a", "POST", "/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["parent_id"] == world.ids["reseller_a"]
    assert (created["currency"], created["balance"], created["cps_limit"]) == ("EUR", "0.000000", 5)
    snapshot = await world.live.snapshot(new_id)
    assert snapshot is not None and snapshot.status == "active"
    customers = await world.call(
        "reseller_a", "GET", f"/v1/resellers/{world.ids['reseller_a']}/customers"
    )
    assert new_id in [item["id"] for item in customers.json()["items"]]
    again = await world.call("operator", "POST", "/v1/accounts", json=body)
    assert again.status_code == 409
    assert again.json()["code"] == "ACCOUNT_EXISTS"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "has space", "currency": "USD"}, "id"),
        ({"id": "brace{x}", "currency": "USD"}, "id"),
        ({"id": "sys:funding", "currency": "USD"}, "id"),
        ({"id": "ok-id", "currency": "usd"}, "currency"),
        ({"id": "ok-id"}, "currency"),
        ({"id": "ok-id", "currency": "USD", "billing": "weekly"}, "billing"),
        ({"id": "ok-id", "currency": "USD", "timezone": "Mars/Olympus"}, "timezone"),
        ({"id": "ok-id", "currency": "USD", "credit_limit": "-1"}, "credit_limit"),
        ({"id": "ok-id", "currency": "USD", "credit_limit": 100}, "credit_limit"),
        ({"id": "ok-id", "currency": "USD", "concurrency_limit": -1}, "concurrency_limit"),
        ({"id": "ok-id", "currency": "USD", "concurrency_limit": "5"}, "concurrency_limit"),
        ({"id": "ok-id", "currency": "USD", "status": "active"}, "status"),
        ({"id": "ok-id", "currency": "USD", "parent_id": "no-such-parent"}, "parent_id"),
        (
            {"id": "ok-id", "currency": "USD", "concurrency_limit": 2, "concurrency_package": 3},
            "concurrency_package",
        ),
    ],
)
async def test_given_a_bad_new_account_when_created_then_422_names_the_field(
    world: World, body: dict[str, Any], field: str
) -> None:
    body = {**body, "id": unique("x") if body["id"] == "ok-id" else body["id"]}
    response = await world.call("operator", "POST", "/v1/accounts", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]
    assert await AccountStore(world.engine).get(body["id"]) is None


async def test_given_live_calls_when_an_account_is_shown_then_reservations_and_calls_appear(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    await world.call(
        "operator",
        "POST",
        f"/v1/accounts/{account}/topups",
        json={"amount": "10", "currency": "USD"},
        idempotency_key="seed",
    )
    assert (await world.live.reserve(account, "call-1", 1_250_000)).ok
    assert (await world.live.reserve(account, "call-2", 500_000)).ok
    response = await world.call("customer_a", "GET", f"/v1/accounts/{account}")
    assert response.status_code == 200
    shown = response.json()
    assert shown["balance"] == "10.000000"
    assert shown["live"] == {
        "status": "active",
        "balance": "10.000000",
        "credit_limit": "0.000000",
        "reserved": "1.750000",
        "available": "8.250000",
        "live_calls": 2,
        "calls": [
            {"call_key": "call-1", "reserved": "1.250000"},
            {"call_key": "call-2", "reserved": "0.500000"},
        ],
    }
    await world.live.release(account, "call-1")
    await world.live.release(account, "call-2")


async def test_given_a_patch_when_applied_then_sql_and_redis_follow(world: World) -> None:
    account = world.ids["customer_a"]
    body = {"name": "Renamed", "credit_limit": "25.5", "concurrency_limit": 3, "cps_limit": None}
    response = await world.call("reseller_a", "PATCH", f"/v1/accounts/{account}", json=body)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["name"], changed["credit_limit"]) == ("Renamed", "25.500000")
    assert (changed["concurrency_limit"], changed["cps_limit"]) == (3, None)
    snapshot = await world.live.snapshot(account)
    assert snapshot is not None
    assert (snapshot.credit_limit_micros, snapshot.concurrency_limit) == (25_500_000, 3)
    lifted = await world.call(
        "operator", "PATCH", f"/v1/accounts/{account}", json={"concurrency_limit": None}
    )
    assert lifted.json()["concurrency_limit"] is None
    assert lifted.json()["name"] == "Renamed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"credit_limit": "-1"}, "credit_limit"),
        ({"credit_limit": "1.1234567"}, "credit_limit"),
        ({"credit_limit": None}, "credit_limit"),
        ({"name": None}, "name"),
        ({"cps_limit": -1}, "cps_limit"),
        ({"seat_limit": "4"}, "seat_limit"),
        ({"overage_rate": "-0.01"}, "overage_rate"),
        ({"status": "active"}, "status"),
        ({"parent_id": "elsewhere"}, "parent_id"),
        ({"concurrency_limit": 1, "concurrency_package": 2}, "concurrency_package"),
    ],
)
async def test_given_a_bad_patch_when_sent_then_422_names_the_field_and_nothing_changes(
    world: World, body: dict[str, Any], field: str
) -> None:
    account = world.ids["customer_a"]
    before = await AccountStore(world.engine).get(account)
    response = await world.call("operator", "PATCH", f"/v1/accounts/{account}", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]
    assert await AccountStore(world.engine).get(account) == before


async def test_given_an_operator_suspension_when_the_reseller_resumes_then_403(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    path = f"/v1/accounts/{account}"
    suspended = await world.call("operator", "POST", f"{path}/suspend")
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["status_reason"] == "operator"
    snapshot = await world.live.snapshot(account)
    assert snapshot is not None and snapshot.status == "suspended"
    # the reseller's suspension does not lower the operator's reason
    again = await world.call("reseller_a", "POST", f"{path}/suspend")
    assert again.json()["status_reason"] == "operator"
    refused = await world.call("reseller_a", "POST", f"{path}/resume")
    assert refused.status_code == 403
    resumed = await world.call("operator", "POST", f"{path}/resume")
    assert resumed.json()["status"] == "active"
    # the reseller's own suspension: it may lift it
    assert (await world.call("reseller_a", "POST", f"{path}/suspend")).json()[
        "status_reason"
    ] == "reseller"
    assert (await world.call("reseller_a", "POST", f"{path}/resume")).json()["status"] == "active"
    snapshot = await world.live.snapshot(account)
    assert snapshot is not None and snapshot.status == "active"


async def test_given_a_closed_account_when_suspended_or_resumed_then_409(world: World) -> None:
    account = world.ids["customer_b"]
    await AccountStore(world.engine).set_status(account, "closed")
    for action in ("suspend", "resume"):
        response = await world.call("operator", "POST", f"/v1/accounts/{account}/{action}")
        assert response.status_code == 409
        assert response.json()["code"] == "ACCOUNT_CLOSED"


async def test_given_many_customers_when_paged_then_every_one_once_in_order(
    world: World,
) -> None:
    reseller = world.ids["reseller_b"]
    for n in range(5):
        await world.add_account(f"{reseller}-c{n}", reseller)
    expected = sorted([world.ids["customer_b"], *(f"{reseller}-c{n}" for n in range(5))])
    for path in ("/v1/accounts", f"/v1/resellers/{reseller}/customers"):
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await world.call("reseller_b", "GET", path, params=params)).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        wanted = expected if "customers" in path else sorted([reseller, *expected])
        assert seen == wanted, path


@pytest.mark.parametrize(("params", "field"), [({"limit": 0}, "limit"), ({"limit": 501}, "limit")])
async def test_given_a_bad_page_size_when_listing_then_422_names_it(
    world: World, params: dict[str, Any], field: str
) -> None:
    response = await world.call("operator", "GET", "/v1/accounts", params=params)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["detail"]] == [field]
