"""The authorization matrix of the management API: every endpoint, every kind of caller.

Each endpoint is called on reseller A's resources AND on reseller B's, by the operator,
both resellers, both customers, without a key and with a revoked key. Out of scope is
404 (as unknown), a write by a read-only key is 403, no valid key is 401. A customer
cannot top itself up; a reseller cannot change its own account.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import httpx

from tests.integration.api_fixtures import PRINCIPALS, World, unique, world_fixture  # noqa: F401

OWNERS = {"customer_a": "reseller_a", "customer_b": "reseller_b"}
_counter = itertools.count()

Request = Callable[[World, str, str], Awaitable[httpx.Response]]


def relation(who: str, target: str) -> str:
    """How the caller ``who`` stands to the customer account ``target``."""
    if who in ("operator", "none", "revoked"):
        return who
    if who == OWNERS[target]:
        return "owner"
    if who.startswith("reseller"):
        return "stranger"
    return "self" if who == target else "other_customer"


READ = {"operator": 200, "owner": 200, "stranger": 404, "self": 200, "other_customer": 404,
        "none": 401, "revoked": 401}  # fmt: skip


def write(ok: int) -> dict[str, int]:
    """Expected statuses of a write that succeeds with ``ok``."""
    return {"operator": ok, "owner": ok, "stranger": 404, "self": 403, "other_customer": 403,
            "none": 401, "revoked": 401}  # fmt: skip


async def check_matrix(w: World, request: Request, expected: dict[str, int]) -> None:
    """Call as every principal on A's and on B's customer (``request(world, who, target)``,
    target ``customer_a`` or ``customer_b``); report every mismatch at once."""
    wrong = []
    for target, who in itertools.product(OWNERS, PRINCIPALS):
        response = await request(w, who, target)
        want = expected[relation(who, target)]
        if response.status_code != want:
            wrong.append(f"{who} on {target}: {response.status_code} (want {want}) {response.text}")
        if want == 401:
            assert response.headers.get("www-authenticate") == "Bearer"
        if want in (403, 404, 401):
            assert response.json()["code"] in ("FORBIDDEN", "UNKNOWN_ACCOUNT", "UNAUTHENTICATED")
    assert wrong == []


def key() -> str:
    return f"matrix-{next(_counter)}"


async def test_given_every_caller_when_showing_an_account_then_scope_decides(world: World) -> None:
    async def show(w: World, who: str, account: str) -> httpx.Response:
        return await w.call(who, "GET", f"/v1/accounts/{w.ids[account]}")

    await check_matrix(world, show, READ)


async def test_given_every_caller_when_patching_an_account_then_only_writers_in_scope_may(
    world: World,
) -> None:
    async def patch(w: World, who: str, account: str) -> httpx.Response:
        return await w.call(
            who, "PATCH", f"/v1/accounts/{w.ids[account]}", json={"name": f"by {who}"}
        )

    await check_matrix(world, patch, write(200))


async def test_given_every_caller_when_suspending_then_only_writers_in_scope_may(
    world: World,
) -> None:
    async def suspend(w: World, who: str, account: str) -> httpx.Response:
        return await w.call(who, "POST", f"/v1/accounts/{w.ids[account]}/suspend")

    await check_matrix(world, suspend, write(200))


async def test_given_every_caller_when_resuming_then_only_writers_in_scope_may(
    world: World,
) -> None:
    async def resume(w: World, who: str, account: str) -> httpx.Response:
        return await w.call(who, "POST", f"/v1/accounts/{w.ids[account]}/resume")

    await check_matrix(world, resume, write(200))


async def test_given_every_caller_when_topping_up_then_a_customer_cannot_top_itself_up(
    world: World,
) -> None:
    async def topup(w: World, who: str, account: str) -> httpx.Response:
        body = {"amount": "1.00", "currency": "USD"}
        return await w.call(
            who, "POST", f"/v1/accounts/{w.ids[account]}/topups", json=body, idempotency_key=key()
        )

    await check_matrix(world, topup, write(201))
    # only the operator's and the owner's top-ups landed: 2 per customer
    for target in OWNERS:
        shown = await world.call("operator", "GET", f"/v1/accounts/{world.ids[target]}")
        assert shown.json()["balance"] == "2.000000"


async def test_given_every_caller_when_adjusting_then_only_writers_in_scope_may(
    world: World,
) -> None:
    async def adjust(w: World, who: str, account: str) -> httpx.Response:
        body = {"amount": "-0.50", "currency": "USD", "description": "credit note"}
        return await w.call(
            who,
            "POST",
            f"/v1/accounts/{w.ids[account]}/adjustments",
            json=body,
            idempotency_key=key(),
        )

    await check_matrix(world, adjust, write(201))


async def test_given_every_caller_when_listing_a_resellers_customers_then_scope_decides(
    world: World,
) -> None:
    async def customers(w: World, who: str, account: str) -> httpx.Response:
        reseller = w.ids[OWNERS[account]]
        return await w.call(who, "GET", f"/v1/resellers/{reseller}/customers")

    # the path names the customer's reseller: its own customer may not see it
    expected = {**READ, "self": 404}
    await check_matrix(world, customers, expected)
    answer = await world.call(
        "reseller_a", "GET", f"/v1/resellers/{world.ids['reseller_a']}/customers"
    )
    assert [item["id"] for item in answer.json()["items"]] == [world.ids["customer_a"]]


async def test_given_every_caller_when_creating_an_account_then_only_writers_in_scope_may(
    world: World,
) -> None:
    async def create(w: World, who: str, account: str) -> httpx.Response:
        body = {"id": unique("new"), "currency": "USD", "parent_id": w.ids[OWNERS[account]]}
        return await w.call(who, "POST", "/v1/accounts", json=body)

    # a reseller naming another's account as parent: that parent is unknown to it (422)
    await check_matrix(world, create, {**write(201), "stranger": 422})


async def test_given_every_caller_when_listing_accounts_then_each_sees_only_its_scope(
    world: World,
) -> None:
    ids = world.ids
    visible = {
        "reseller_a": {ids["reseller_a"], ids["customer_a"], ids["sub_a"]},
        "reseller_b": {ids["reseller_b"], ids["customer_b"]},
        "customer_a": {ids["customer_a"]},
        "customer_b": {ids["customer_b"]},
    }
    for who in PRINCIPALS:
        response = await world.call(who, "GET", "/v1/accounts", params={"limit": 500})
        if who in ("none", "revoked"):
            assert response.status_code == 401, who
            continue
        assert response.status_code == 200, (who, response.text)
        seen = {item["id"] for item in response.json()["items"]}
        if who == "operator":
            assert set(ids.values()) <= seen
        else:
            assert seen == visible[who], who


async def test_given_a_reseller_when_it_changes_its_own_account_then_403(world: World) -> None:
    own = world.ids["reseller_a"]
    money = {"amount": "5.00", "currency": "USD", "description": "self"}
    attempts = [
        ("PATCH", f"/v1/accounts/{own}", {"credit_limit": "1000"}),
        ("POST", f"/v1/accounts/{own}/suspend", None),
        ("POST", f"/v1/accounts/{own}/resume", None),
        ("POST", f"/v1/accounts/{own}/topups", money),
        ("POST", f"/v1/accounts/{own}/adjustments", money),
    ]
    for method, path, body in attempts:
        response = await world.call("reseller_a", method, path, json=body, idempotency_key=key())
        assert response.status_code == 403, (path, response.text)
    shown = await world.call("reseller_a", "GET", f"/v1/accounts/{own}")
    assert shown.status_code == 200
    assert shown.json()["balance"] == "0.000000"
    assert shown.json()["credit_limit"] == "0.000000"


async def test_given_a_reseller_when_it_reaches_its_customers_customer_then_allowed(
    world: World,
) -> None:
    sub = world.ids["sub_a"]
    assert (await world.call("reseller_a", "GET", f"/v1/accounts/{sub}")).status_code == 200
    assert (await world.call("reseller_b", "GET", f"/v1/accounts/{sub}")).status_code == 404
    # customer A resells too, but its key is a customer key: itself only, read-only
    assert (await world.call("customer_a", "GET", f"/v1/accounts/{sub}")).status_code == 404
    body = {"amount": "3.00", "currency": "USD"}
    response = await world.call(
        "reseller_a", "POST", f"/v1/accounts/{sub}/topups", json=body, idempotency_key=key()
    )
    assert response.status_code == 201


async def test_given_an_unknown_account_when_asked_then_404_like_out_of_scope(
    world: World,
) -> None:
    unknown = await world.call("reseller_a", "GET", "/v1/accounts/no-such-account")
    foreign = await world.call("reseller_a", "GET", f"/v1/accounts/{world.ids['customer_b']}")
    assert unknown.status_code == foreign.status_code == 404
    assert unknown.json()["code"] == foreign.json()["code"] == "UNKNOWN_ACCOUNT"


async def test_given_key_in_x_api_key_header_when_called_then_authenticated(world: World) -> None:
    account = world.ids["customer_a"]
    by_header = await world.client.get(
        f"/v1/accounts/{account}", headers={"X-API-Key": world.keys["customer_a"]}
    )
    assert by_header.status_code == 200
    basic = await world.client.get(
        f"/v1/accounts/{account}", headers={"Authorization": f"Basic {world.keys['operator']}"}
    )
    assert basic.status_code == 401
    forged = world.keys["operator"][:-4] + "AAAA"
    wrong = await world.client.get(f"/v1/accounts/{account}", headers={"X-API-Key": forged})
    assert wrong.status_code == 401
