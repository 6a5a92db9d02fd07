"""Top-ups and adjustments through the API: idempotency, races, Redis, bad payloads."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from balance.accounts import AccountStore
from storage.tables import ledger_entries
from tests.integration.api_fixtures import World, unique, world_fixture  # noqa: F401


def topup_path(account_id: str) -> str:
    return f"/v1/accounts/{account_id}/topups"


def adjust_path(account_id: str) -> str:
    return f"/v1/accounts/{account_id}/adjustments"


async def ledger_rows(w: World, account_id: str) -> list[Any]:
    query = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
    async with w.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def hot_balance(w: World, account_id: str) -> int:
    snapshot = await w.live.snapshot(account_id)
    assert snapshot is not None
    return snapshot.balance_micros


async def test_given_20_identical_topups_racing_when_sent_then_one_entry_and_one_answer(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    body = {"amount": "12.345678", "currency": "USD", "description": "invoice 42"}
    key = f"race-{uuid.uuid4()}"

    async def send() -> Any:
        return await world.call(
            "reseller_a", "POST", topup_path(account), json=body, idempotency_key=key
        )

    responses = await asyncio.gather(*(send() for _ in range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["amount"] == "12.345678"
    assert bodies[0]["idempotency_key"] == key
    replays = [r for r in responses if r.status_code == 200]
    assert all(r.headers["idempotent-replayed"] == "true" for r in replays)
    rows = await ledger_rows(world, account)
    assert [row.amount_micros for row in rows] == [12_345_678]
    assert rows[0].id == bodies[0]["id"]
    assert await hot_balance(world, account) == 12_345_678  # Redis credited once
    async with world.engine.connect() as conn:
        total = await conn.execute(
            select(func.count()).where(ledger_entries.c.txn_key == rows[0].txn_key)
        )
        assert total.scalar_one() == 2  # the account's entry and sys:funding's


async def test_given_a_key_when_reused_with_another_amount_then_409_and_nothing_applied(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    first = await world.call(
        "operator",
        "POST",
        topup_path(account),
        json={"amount": "5", "currency": "USD"},
        idempotency_key="order-1",
    )
    assert first.status_code == 201
    second = await world.call(
        "operator",
        "POST",
        topup_path(account),
        json={"amount": "6", "currency": "USD"},
        idempotency_key="order-1",
    )
    assert second.status_code == 409
    assert second.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert "customer" not in second.text and "6000000" not in second.text
    assert [row.amount_micros for row in await ledger_rows(world, account)] == [5_000_000]


async def test_given_two_tenants_when_using_the_same_key_then_each_topup_applies(
    world: World,
) -> None:
    body = {"amount": "1.50", "currency": "USD"}
    for who, target in (("reseller_a", "customer_a"), ("reseller_b", "customer_b")):
        response = await world.call(
            who, "POST", topup_path(world.ids[target]), json=body, idempotency_key="order-1"
        )
        assert response.status_code == 201, response.text
    for target in ("customer_a", "customer_b"):
        assert await hot_balance(world, world.ids[target]) == 1_500_000


async def test_given_no_idempotency_key_when_topping_up_then_422_names_the_header(
    world: World,
) -> None:
    for path in (topup_path, adjust_path):
        response = await world.call(
            "operator",
            "POST",
            path(world.ids["customer_a"]),
            json={"amount": "1", "currency": "USD", "description": "x"},
        )
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["detail"]] == ["Idempotency-Key"]
    for bad_key in ("has space", "k" * 129, ""):
        response = await world.call(
            "operator",
            "POST",
            topup_path(world.ids["customer_a"]),
            json={"amount": "1", "currency": "USD"},
            idempotency_key=bad_key,
        )
        assert response.status_code == 422, bad_key
        assert [e["field"] for e in response.json()["detail"]] == ["Idempotency-Key"]
    assert await ledger_rows(world, world.ids["customer_a"]) == []


BAD_TOPUPS = [
    ({"amount": "-5.00", "currency": "USD"}, "amount", "amount_negative"),
    ({"amount": "0", "currency": "USD"}, "amount", "amount_not_positive"),
    ({"amount": "0.000000", "currency": "USD"}, "amount", "amount_not_positive"),
    ({"amount": "1000000000.01", "currency": "USD"}, "amount", "amount_too_large"),
    ({"amount": "99999999999999999", "currency": "USD"}, "amount", "amount_too_large"),
    ({"amount": "1.0000001", "currency": "USD"}, "amount", "amount_too_precise"),
    ({"amount": "1e3", "currency": "USD"}, "amount", "amount_format"),
    ({"amount": "NaN", "currency": "USD"}, "amount", "amount_format"),
    ({"amount": 12.5, "currency": "USD"}, "amount", "string_type"),
    ({"amount": 12, "currency": "USD"}, "amount", "string_type"),
    ({"currency": "USD"}, "amount", "missing"),
    ({"amount": "10", "currency": "EUR"}, "currency", "currency"),
    ({"amount": "10", "currency": "usd"}, "currency", "currency"),
    ({"amount": "10", "currency": "XYZ"}, "currency", "currency"),
    ({"amount": "10", "currency": "USD", "bonus": "1"}, "bonus", "extra_forbidden"),
    ({"amount": "10", "currency": "USD", "description": "x" * 501}, "description", None),
]


@pytest.mark.parametrize(("body", "field", "kind"), BAD_TOPUPS)
async def test_given_a_bad_topup_when_sent_then_422_names_the_field_and_nothing_moves(
    world: World, body: dict[str, Any], field: str, kind: str | None
) -> None:
    account = world.ids["customer_a"]
    response = await world.call(
        "operator", "POST", topup_path(account), json=body, idempotency_key="bad-1"
    )
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [e["field"] for e in errors] == [field]
    if kind is not None:
        assert errors[0]["type"] == kind
    assert "input" not in errors[0]
    assert await ledger_rows(world, account) == []
    assert await hot_balance(world, account) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "0", "currency": "USD", "description": "x"}, "amount"),
        ({"amount": "-1.1234567", "currency": "USD", "description": "x"}, "amount"),
        ({"amount": "-1000000001", "currency": "USD", "description": "x"}, "amount"),
        ({"amount": "-1", "currency": "USD"}, "description"),
        ({"amount": "-1", "currency": "USD", "description": ""}, "description"),
        ({"amount": "-1", "currency": "GBP", "description": "x"}, "currency"),
        ({"amount": "-1", "currency": "USD", "description": "x", "id": 3}, "id"),
    ],
)
async def test_given_a_bad_adjustment_when_sent_then_422_names_the_field(
    world: World, body: dict[str, Any], field: str
) -> None:
    account = world.ids["customer_a"]
    response = await world.call(
        "operator", "POST", adjust_path(account), json=body, idempotency_key="bad-2"
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]
    assert await ledger_rows(world, account) == []


async def test_given_adjustments_when_applied_then_sql_and_redis_move_together(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    credit = {"amount": "10.00", "currency": "USD", "description": "goodwill"}
    debit = {"amount": "-2.500001", "currency": "USD", "description": "late fee"}
    for body, key in ((credit, "adj-1"), (debit, "adj-2"), (debit, "adj-2")):
        response = await world.call(
            "operator", "POST", adjust_path(account), json=body, idempotency_key=key
        )
        assert response.status_code in (200, 201), response.text
        assert response.json()["kind"] == "adjustment"
    assert [r.amount_micros for r in await ledger_rows(world, account)] == [10_000_000, -2_500_001]
    assert await hot_balance(world, account) == 7_499_999
    shown = await world.call("customer_a", "GET", f"/v1/accounts/{account}")
    assert shown.json()["balance"] == shown.json()["live"]["balance"] == "7.499999"


async def test_given_a_postpaid_account_suspended_at_its_limit_when_paid_then_resumed(
    world: World,
) -> None:
    account = unique("post")
    await world.add_account(
        account,
        world.ids["reseller_a"],
        billing="postpaid",
        credit_limit_micros=5_000_000,
    )
    debit = {"amount": "-5", "currency": "USD", "description": "usage"}
    response = await world.call(
        "operator", "POST", adjust_path(account), json=debit, idempotency_key="use-1"
    )
    assert response.status_code == 201
    stored = await AccountStore(world.engine).get(account)
    assert stored is not None
    assert (stored.status, stored.status_reason) == ("suspended", "credit_limit")
    payment = {"amount": "20", "currency": "USD"}
    response = await world.call(
        "reseller_a", "POST", topup_path(account), json=payment, idempotency_key="pay-1"
    )
    assert response.status_code == 201
    stored = await AccountStore(world.engine).get(account)
    assert stored is not None and stored.status == "active"
    snapshot = await world.live.snapshot(account)
    assert snapshot is not None and snapshot.status == "active"
    assert snapshot.balance_micros == 15_000_000
