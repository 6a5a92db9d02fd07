"""The authorization matrix of the reporting endpoints: ledger, rated calls (JSON and CSV),
live calls, seats, denials and rate decks, each called on reseller A's resources AND on
reseller B's by the operator, both resellers, both customers, without a key and with a
revoked key (``test_api_authorization``'s pattern). Out of scope is 404 (as unknown),
a deck change by any key but an operator's is 403, no valid key is 401.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import httpx

from daemon.api.deck_staging import DeckStaging
from storage.decks import DeckStore
from tariffs.csv_deck import parse_deck_csv
from tariffs.deck import DeckInfo
from tests.integration.api_fixtures import PRINCIPALS, World, world_fixture  # noqa: F401
from tests.integration.report_fixtures import (  # noqa: F401
    DECK_CSV,
    call,
    customer_decks_fixture,
    write_calls,
)
from tests.integration.test_api_authorization import OWNERS, READ, relation

Request = Callable[[World, str, str], Awaitable[httpx.Response]]
ACCOUNT_CODES = ("FORBIDDEN", "UNKNOWN_ACCOUNT", "UNAUTHENTICATED")
DECK_CODES = ("FORBIDDEN", "UNKNOWN_DECK", "UNAUTHENTICATED")
OPERATOR_ONLY = {"operator": 0, "owner": 403, "stranger": 403, "self": 403,
                 "other_customer": 403, "none": 401, "revoked": 401}  # fmt: skip


async def check_matrix(
    w: World, request: Request, expected: dict[str, int], codes: tuple[str, ...] = ACCOUNT_CODES
) -> None:
    """Call as every principal on A's and on B's customer; report every mismatch at once."""
    wrong = []
    for target, who in itertools.product(OWNERS, PRINCIPALS):
        response = await request(w, who, target)
        want = expected[relation(who, target)]
        if response.status_code != want:
            wrong.append(f"{who} on {target}: {response.status_code} (want {want}) {response.text}")
        if want == 401:
            assert response.headers.get("www-authenticate") == "Bearer"
        if want in (403, 404, 401):
            assert response.json()["code"] in codes, (who, target, response.text)
    assert wrong == []


def account_read(path: str, **params: str) -> Request:
    async def read(w: World, who: str, target: str) -> httpx.Response:
        return await w.call(who, "GET", f"/v1/accounts/{w.ids[target]}/{path}", params=params)

    return read


async def test_given_every_caller_when_reading_the_ledger_then_scope_decides(world: World) -> None:
    for target in OWNERS:
        response = await world.call(
            "operator",
            "POST",
            f"/v1/accounts/{world.ids[target]}/topups",
            json={"amount": "2.50", "currency": "USD"},
            idempotency_key=f"seed-{target}",
        )
        assert response.status_code == 201
    await check_matrix(world, account_read("ledger"), READ)
    await check_matrix(world, account_read("ledger", format="csv"), READ)
    mine = await world.call("customer_a", "GET", f"/v1/accounts/{world.ids['customer_a']}/ledger")
    assert [item["amount"] for item in mine.json()["items"]] == ["2.500000"]


async def test_given_every_caller_when_reading_rated_calls_then_scope_decides(
    world: World,
) -> None:
    await write_calls(world, [call(world.ids[t], 1) for t in OWNERS])
    await check_matrix(world, account_read("rated-calls"), READ)
    await check_matrix(world, account_read("rated-calls", format="csv"), READ)
    theirs = await world.call(
        "reseller_a", "GET", f"/v1/accounts/{world.ids['customer_a']}/rated-calls"
    )
    assert [item["call_id"] for item in theirs.json()["items"]] == [
        f"{world.ids['customer_a']}-call-1"
    ]


async def test_given_every_caller_when_reading_live_calls_then_scope_decides(
    world: World,
) -> None:
    await check_matrix(world, account_read("live-calls"), READ)


async def test_given_every_caller_when_reading_seats_then_scope_decides(world: World) -> None:
    await check_matrix(world, account_read("seats"), READ)


async def test_given_every_caller_when_reading_denials_then_scope_decides(world: World) -> None:
    await check_matrix(world, account_read("denials"), READ)


async def test_given_every_caller_when_showing_a_customers_deck_then_scope_decides(
    world: World, customer_decks: dict[str, str]
) -> None:
    async def show(w: World, who: str, target: str) -> httpx.Response:
        return await w.call(who, "GET", f"/v1/decks/{customer_decks[target]}")

    async def export(w: World, who: str, target: str) -> httpx.Response:
        return await w.call(who, "GET", f"/v1/decks/{customer_decks[target]}?format=csv")

    await check_matrix(world, show, READ, DECK_CODES)
    await check_matrix(world, export, READ, DECK_CODES)


async def test_given_every_caller_when_listing_decks_then_each_sees_its_accounts_decks(
    world: World, customer_decks: dict[str, str]
) -> None:
    a, b = customer_decks["customer_a"], customer_decks["customer_b"]
    seen = {
        "reseller_a": {a},
        "reseller_b": {b},
        "customer_a": {a},
        "customer_b": {b},
    }
    for who in PRINCIPALS:
        response = await world.call(who, "GET", "/v1/decks")
        if who in ("none", "revoked"):
            assert response.status_code == 401, who
            continue
        assert response.status_code == 200, (who, response.text)
        names = {item["name"] for item in response.json()["items"]}
        if who == "operator":
            assert {a, b} <= names
        else:
            assert names == seen[who], who


async def test_given_every_caller_when_uploading_a_deck_then_only_the_operator_may(
    world: World, customer_decks: dict[str, str]
) -> None:
    async def upload(w: World, who: str, target: str) -> httpx.Response:
        return await w.send(
            who,
            "POST",
            f"/v1/decks/{customer_decks[target]}",
            content=DECK_CSV.replace("0.010000", "0.020000"),
            headers={"Content-Type": "text/csv"},
        )

    await check_matrix(world, upload, {**OPERATOR_ONLY, "operator": 201}, DECK_CODES)
    store = DeckStore(world.engine)
    names = await store.names()  # the decks in force: the uploads are staged, not in force
    assert sorted(n for n in names if n.startswith(tuple(customer_decks.values()))) == sorted(
        customer_decks.values()
    )
    for name in customer_decks.values():
        assert await store.load(f"{name}@pending") is not None  # one staged upload each


async def test_given_every_caller_when_activating_a_deck_then_only_the_operator_may(
    world: World, customer_decks: dict[str, str]
) -> None:
    staging = DeckStaging(world.engine)

    async def activate(w: World, who: str, target: str) -> httpx.Response:
        name = customer_decks[target]
        parsed = parse_deck_csv(DECK_CSV.replace("0.010000", "0.030000"), DeckInfo(name))
        await staging.stage(parsed.info, list(parsed.rates))  # something to activate
        return await w.call(who, "POST", f"/v1/decks/{name}/activate")

    await check_matrix(world, activate, {**OPERATOR_ONLY, "operator": 200}, DECK_CODES)


async def test_given_a_reseller_when_it_reads_another_resellers_reports_then_404(
    world: World, customer_decks: dict[str, str]
) -> None:
    foreign = world.ids["customer_b"]
    for path in ("ledger", "rated-calls", "live-calls", "seats", "denials"):
        response = await world.call("reseller_a", "GET", f"/v1/accounts/{foreign}/{path}")
        assert (response.status_code, response.json()["code"]) == (404, "UNKNOWN_ACCOUNT"), path
        unknown = await world.call("reseller_a", "GET", f"/v1/accounts/no-such-account/{path}")
        assert unknown.json() == {**response.json(), "detail": "unknown account: 'no-such-account'"}
    deck = await world.call("reseller_a", "GET", f"/v1/decks/{customer_decks['customer_b']}")
    unknown_deck = await world.call("reseller_a", "GET", "/v1/decks/no-such-deck")
    assert deck.status_code == unknown_deck.status_code == 404
    assert deck.json()["code"] == unknown_deck.json()["code"] == "UNKNOWN_DECK"
