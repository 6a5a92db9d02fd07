"""An account's ledger and rated calls through the API: filters, keyset pages, CSV exports,
bad query parameters (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from balance.ledger import Ledger
from daemon.api import listings
from daemon.api.openapi import openapi_document
from tests.integration.api_fixtures import World, world_fixture  # noqa: F401
from tests.integration.report_fixtures import BASE_US, call, write_calls

MINUTE_US = 60_000_000


def ledger_path(w: World, who: str = "customer_a") -> str:
    return f"/v1/accounts/{w.ids[who]}/ledger"


def calls_path(w: World, who: str = "customer_a") -> str:
    return f"/v1/accounts/{w.ids[who]}/rated-calls"


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def all_pages(w: World, who: str, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await w.call(who, "GET", path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 100)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def seed_ledger(w: World) -> Ledger:
    """Customer A: 5 top-ups, 2 adjustments, 3 call charges; customer B: one top-up."""
    ledger = Ledger(w.engine)
    account = w.ids["customer_a"]
    for n in range(5):
        await ledger.topup(account, Decimal(f"1{n}.25"), f"t-{n}", f"payment {n}")
    await ledger.adjust(account, Decimal("-0.75"), "adj-1", "credit note")
    await ledger.adjust(account, Decimal("0.10"), "adj-2", "goodwill")
    await write_calls(w, [call(account, n) for n in range(3)])
    await ledger.topup(w.ids["customer_b"], Decimal("99"), "b-1")
    return ledger


async def test_given_entries_when_paged_by_three_then_every_entry_once_newest_first(
    world: World,
) -> None:
    await seed_ledger(world)
    items = await all_pages(world, "reseller_a", ledger_path(world), limit=3)
    ids = [item["id"] for item in items]
    assert len(ids) == 10 and ids == sorted(set(ids), reverse=True)
    assert [i["kind"] for i in items].count("charge") == 3
    assert {i["currency"] for i in items} == {"USD"}
    charges = [i for i in items if i["kind"] == "charge"]
    assert {i["amount"] for i in charges} == {"-0.012000"}
    assert all(i["rated_call_id"] is not None for i in charges)
    total = sum(Decimal(i["amount"]) for i in items)
    assert total == Decimal("61.25") + Decimal("-0.65") - Decimal("0.036")


async def test_given_filters_when_listing_the_ledger_then_only_matching_entries(
    world: World,
) -> None:
    await seed_ledger(world)
    path = ledger_path(world)
    topups = await all_pages(world, "operator", path, kind="topup")
    assert [i["description"] for i in topups] == [f"payment {n}" for n in reversed(range(5))]
    every = await all_pages(world, "operator", path)
    middle = sorted(every, key=lambda i: i["id"])[3]["created_at"]
    since = await all_pages(world, "operator", path, **{"from": middle})
    assert since and all(i["created_at"] >= middle for i in since)
    before = await all_pages(world, "operator", path, to=middle)
    assert len(since) + len(before) == len(every)
    future = await all_pages(world, "operator", path, **{"from": "2999-01-01T00:00:00Z"})
    assert future == []


async def test_given_the_ledger_as_csv_then_every_entry_with_money_as_decimal_strings(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_ledger(world)
    monkeypatch.setattr(listings, "EXPORT_BATCH", 3)  # the export spans 4 queries
    by_param = await world.call("customer_a", "GET", ledger_path(world), params={"format": "csv"})
    by_header = await world.client.get(
        ledger_path(world), headers=world.headers("customer_a", Accept="text/csv")
    )
    assert by_param.status_code == by_header.status_code == 200
    assert by_param.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in by_param.headers["content-disposition"]
    assert by_param.text == by_header.text
    exported = rows(by_param.text)
    paged = await all_pages(world, "customer_a", ledger_path(world))
    assert [int(r["id"]) for r in exported] == [i["id"] for i in paged]
    assert [r["amount"] for r in exported] == [i["amount"] for i in paged]
    assert list(exported[0]) == [
        "id", "kind", "amount", "currency", "description", "txn_key", "rated_call_id",
        "created_at",
    ]  # fmt: skip
    charges = [r for r in exported if r["kind"] == "charge"]
    assert {r["amount"] for r in charges} == {"-0.012000"}
    only = await world.call(
        "customer_a", "GET", ledger_path(world), params={"format": "csv", "kind": "adjustment"}
    )
    assert [r["amount"] for r in rows(only.text)] == ["0.100000", "-0.750000"]


async def test_given_json_asked_over_the_accept_header_then_format_json_wins(
    world: World,
) -> None:
    await seed_ledger(world)
    response = await world.client.get(
        ledger_path(world),
        params={"format": "json"},
        headers=world.headers("customer_a", Accept="text/csv"),
    )
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["items"]) == 10


async def seed_calls(w: World) -> list[Any]:
    account = w.ids["customer_a"]
    calls = [call(account, n) for n in range(6)]
    calls += [call(account, n, callee="+33142000000", disposition="NO ANSWER") for n in (6, 7)]
    calls += [
        call(account, n, callee="3314200", started_us=BASE_US + 3 * MINUTE_US) for n in (8, 9)
    ]  # fmt: skip  (same start as call 3: ordered by id)
    await write_calls(w, calls)
    await write_calls(w, [call(w.ids["customer_b"], 0)])
    return calls


async def test_given_calls_when_paged_by_two_then_newest_start_first_and_ties_by_id(
    world: World,
) -> None:
    await seed_calls(world)
    items = await all_pages(world, "reseller_a", calls_path(world), limit=2)
    assert len(items) == 10
    keys = [(i["started_at"], i["id"]) for i in items]
    assert keys == sorted(keys, reverse=True)
    assert len({i["id"] for i in items}) == 10
    first = items[-1]
    assert first["started_at"] == "2026-01-01T00:00:00Z"
    assert (first["cost"], first["rate"], first["billsec_us"]) == (
        "0.012000",
        "0.012000",
        30_000_000,
    )
    # carrier, buy cost and margin are the operator's business
    assert (first["carrier"], first["buy_cost"], first["margin"]) == (None, None, None)
    shown = await all_pages(world, "operator", calls_path(world), limit=1000)
    assert {(i["carrier"], i["buy_cost"]) for i in shown if i["disposition"] == "ANSWERED"} == {
        ("carrier-x", "0.004000")
    }


async def test_given_filters_when_listing_calls_then_only_matching_calls(world: World) -> None:
    await seed_calls(world)
    path = calls_path(world)
    no_answer = await all_pages(world, "customer_a", path, disposition="NO ANSWER")
    assert sorted(i["call_id"][-6:] for i in no_answer) == ["call-6", "call-7"]
    france = await all_pages(world, "customer_a", path, destination_prefix="33")
    assert len(france) == 4  # '+33...' and '33...' alike
    plus = await all_pages(world, "customer_a", path, destination_prefix="+3314")
    assert len(plus) == 4
    window = await all_pages(
        world, "customer_a", path,
        **{"from": "2026-01-01T00:02:00Z", "to": "2026-01-01T00:05:00+00:00"},
    )  # fmt: skip
    assert sorted(i["started_at"] for i in window) == [
        "2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z", "2026-01-01T00:03:00Z",
        "2026-01-01T00:03:00Z", "2026-01-01T00:04:00Z",
    ]  # fmt: skip
    naive = await all_pages(
        world, "customer_a", path, **{"from": "2026-01-01T00:02:00", "to": "2026-01-01T00:05:00"}
    )
    assert naive == window  # no offset: UTC


async def test_given_calls_as_csv_then_all_rows_and_no_operator_columns_for_a_customer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_calls(world)
    monkeypatch.setattr(listings, "EXPORT_BATCH", 4)
    mine = await world.call("customer_a", "GET", calls_path(world), params={"format": "csv"})
    assert mine.status_code == 200
    exported = rows(mine.text)
    assert len(exported) == 10
    assert "carrier" not in exported[0] and "buy_cost" not in exported[0]
    paged = await all_pages(world, "customer_a", calls_path(world))
    assert [int(r["id"]) for r in exported] == [i["id"] for i in paged]
    assert exported[-1]["cost"] == "0.012000"
    assert exported[-1]["callee"] == "442071234567"
    answered = {"format": "csv", "disposition": "ANSWERED"}
    ops = rows((await world.call("operator", "GET", calls_path(world), params=answered)).text)
    assert len(ops) == 8 and {r["margin"] for r in ops} == {"0.008000"}
    plus = [r for r in rows(mine.text) if r["callee"].startswith("+")]
    assert {r["callee"] for r in plus} == {"+33142000000"}  # a number, not a formula


async def test_given_a_cursor_when_exporting_then_the_csv_starts_after_it(world: World) -> None:
    await seed_calls(world)
    first = await world.call("customer_a", "GET", calls_path(world), params={"limit": 4})
    cursor = first.json()["next_cursor"]
    rest = await world.call(
        "customer_a", "GET", calls_path(world), params={"format": "csv", "cursor": cursor}
    )
    assert len(rows(rest.text)) == 6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"kind": "refund"}, "kind"),
    ],
)
async def test_given_a_bad_ledger_query_when_sent_then_422_names_it(
    world: World, params: dict[str, Any], field: str
) -> None:
    response = await world.call("customer_a", "GET", ledger_path(world), params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"destination_prefix": "44%"}, "destination_prefix"),
        ({"destination_prefix": ""}, "destination_prefix"),
        ({"disposition": "x" * 33}, "disposition"),
        ({"cursor": "TDox"}, "cursor"),  # a ledger cursor ("L:1") is not a calls cursor
    ],
)
async def test_given_a_bad_calls_query_when_sent_then_422_names_it(
    world: World, params: dict[str, Any], field: str
) -> None:
    response = await world.call("customer_a", "GET", calls_path(world), params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]
    assert params[field] not in str(response.json()["detail"]) or params[field] == ""


async def test_given_a_reseller_descendant_when_listing_its_ledger_then_allowed(
    world: World,
) -> None:
    await Ledger(world.engine).topup(world.ids["sub_a"], Decimal("4"), "sub-1")
    mine = await world.call("reseller_a", "GET", ledger_path(world, "sub_a"))
    assert [i["amount"] for i in mine.json()["items"]] == ["4.000000"]
    assert (await world.call("customer_a", "GET", ledger_path(world, "sub_a"))).status_code == 404


def test_given_the_document_then_every_report_endpoint_and_its_csv_are_described() -> None:
    document = openapi_document()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert {
        ("GET", "/v1/accounts/{account_id}/ledger"),
        ("GET", "/v1/accounts/{account_id}/rated-calls"),
        ("GET", "/v1/accounts/{account_id}/live-calls"),
        ("GET", "/v1/accounts/{account_id}/seats"),
        ("GET", "/v1/accounts/{account_id}/denials"),
        ("GET", "/v1/decks"),
        ("GET", "/v1/decks/{name}"),
        ("POST", "/v1/decks/{name}"),
        ("POST", "/v1/decks/{name}/activate"),
    } <= operations
    for path in ("ledger", "rated-calls"):
        ok = document["paths"][f"/v1/accounts/{{account_id}}/{path}"]["get"]["responses"]["200"]
        assert set(ok["content"]) == {"application/json", "text/csv"}
    upload = document["paths"]["/v1/decks/{name}"]["post"]
    assert set(upload["requestBody"]["content"]) == {"text/csv"}
    assert {"201", "401", "403", "413", "415", "422"} <= set(upload["responses"])
