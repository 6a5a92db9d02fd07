"""Rate decks through the API: upload (checked whole, staged), list, export, activate, and
the price a call gets before and after (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from structlog.testing import capture_logs

from daemon.api.app import build_api
from daemon.tariff_catalog import TariffCatalog
from storage.decks import DeckStore
from tests.integration.api_fixtures import World, unique, world_fixture  # noqa: F401
from tests.integration.report_fixtures import (  # noqa: F401
    DECK_CSV,
    add_deck,
    customer_decks_fixture,
)

CSV = {"Content-Type": "text/csv"}
CALL_START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BAD_DECK = (
    "prefix,destination,rate,initial_increment\n"  # line 1
    "44,United Kingdom,0.01,60\n"  # line 2: fine
    "33,France,abc,60\n"  # line 3: not a price
    "\n"  # line 4: blank, skipped
    "+49,Germany,0.02,60\n"  # line 5: not digits
    "34,Spain,0.02,0\n"  # line 6: increment 0
)


async def upload(w: World, name: str, text: str, **params: str) -> httpx.Response:
    return await w.send("operator", "POST", f"/v1/decks/{name}", content=text, headers=CSV,
                        params=params)  # fmt: skip


async def stored_names(w: World, name: str) -> set[str]:
    return {n for n in await DeckStore(w.engine).names() if n.startswith(name)}


async def test_given_a_deck_with_bad_lines_when_uploaded_then_422_per_line_and_nothing_stored(
    world: World,
) -> None:
    name = unique("bad")
    response = await upload(world, name, BAD_DECK, currency="USD")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    lines = [e["loc"][1] for e in body["detail"]]
    assert sorted(set(lines)) == ["line 3", "line 5", "line 6"]
    by_line = {e["loc"][1]: e for e in body["detail"]}
    assert by_line["line 3"]["field"] == "line 3.rate"
    assert by_line["line 6"]["loc"] == ["body", "line 6", "initial_increment"]
    assert by_line["line 3"]["msg"] == "not a price: 'abc'"  # a short cell is quoted
    assert await stored_names(world, name) == set()
    listed = await world.call("operator", "GET", "/v1/decks")
    assert name not in {item["name"] for item in listed.json()["items"]}


async def test_given_an_existing_deck_when_a_bad_file_is_uploaded_then_it_stays_as_it_was(
    world: World,
) -> None:
    name = unique("kept")
    await add_deck(world, name, "0.05")
    before = (await world.call("operator", "GET", f"/v1/decks/{name}")).json()
    assert (await upload(world, name, "prefix,destination,rate\n44,UK,-1\n")).status_code == 422
    assert (await world.call("operator", "GET", f"/v1/decks/{name}")).json() == before
    assert await stored_names(world, name) == {name}


@pytest.mark.parametrize(
    ("text", "headers", "params", "status", "field"),
    [
        (DECK_CSV, CSV, {}, 422, "currency"),  # a new deck needs its currency
        (DECK_CSV, CSV, {"currency": "XXQ"}, 422, "currency"),
        (DECK_CSV, CSV, {"currency": "USD", "decimals": "7"}, 422, "decimals"),
        (DECK_CSV, CSV, {"currency": "USD", "rounding": "sideways"}, 422, "rounding"),
        ("", CSV, {"currency": "USD"}, 422, "line 1"),
        ("prefix,destination\n44,UK\n", CSV, {"currency": "USD"}, 422, "line 1"),
        (DECK_CSV, {"Content-Type": "application/json"}, {"currency": "USD"}, 415, None),
    ],
)
async def test_given_a_bad_upload_when_sent_then_refused_naming_the_culprit(
    world: World,
    text: str,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    name = unique("refused")
    response = await world.send("operator", "POST", f"/v1/decks/{name}", content=text,
                                headers=headers, params=params)  # fmt: skip
    assert response.status_code == status, response.text
    if field is not None:
        assert field in [e["field"].split(".")[0] for e in response.json()["detail"]]
    assert await stored_names(world, name) == set()


async def test_given_a_file_not_in_utf8_when_uploaded_then_422_on_the_body(world: World) -> None:
    name = unique("latin1")
    text = "prefix,destination,rate\n33,Fran\xe7e,0.01\n".encode("latin-1")
    response = await world.send("operator", "POST", f"/v1/decks/{name}", content=text,
                                headers=CSV, params={"currency": "EUR"})  # fmt: skip
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"


@pytest.fixture(name="priced")
async def priced_fixture(world: World) -> AsyncIterator[tuple[httpx.AsyncClient, TariffCatalog]]:
    """An API whose ``on_decks_changed`` reloads a daemon's catalog, as the daemon wires it."""
    store = DeckStore(world.engine)
    catalog = TariffCatalog()

    async def reload(name: str) -> object:
        return await catalog.reload(store, name)

    app = build_api(world.engine, world.live, world.admin, on_decks_changed=reload)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client, catalog


def price(catalog: TariffCatalog, deck: str) -> Decimal | None:
    found = catalog.price(deck, "442071234567", CALL_START)
    return None if found is None else found.rate.rate


async def test_given_an_upload_when_activated_then_calls_are_priced_with_it_at_once(
    world: World, priced: tuple[httpx.AsyncClient, TariffCatalog]
) -> None:
    client, catalog = priced
    name = unique("retail")
    auth = world.headers("operator")
    await add_deck(world, name, "0.010000")
    await catalog.reload(DeckStore(world.engine))
    assert price(catalog, name) == Decimal("0.01")

    new = DECK_CSV.replace("0.010000", "0.025000")
    staged = await client.post(f"/v1/decks/{name}", content=new, headers={**auth, **CSV})
    assert staged.status_code == 201, staged.text
    shown = staged.json()
    assert (shown["rates"], shown["currency"], shown["pending_rates"]) == (1, "USD", 1)
    assert shown["pending_version"] not in (None, shown["active_version"])
    await catalog.reload(DeckStore(world.engine), name)  # even a reload keeps the deck in force
    assert price(catalog, name) == Decimal("0.01")

    activated = await client.post(f"/v1/decks/{name}/activate", headers=auth)
    assert activated.status_code == 200, activated.text
    assert activated.json()["active_version"] == shown["pending_version"]
    assert activated.json()["pending_version"] is None
    assert price(catalog, name) == Decimal("0.025")  # no SIGHUP: on_decks_changed reloaded it
    assert await stored_names(world, name) == {name}
    again = await client.post(f"/v1/decks/{name}/activate", headers=auth)
    assert (again.status_code, again.json()["code"]) == (409, "NO_PENDING_VERSION")


async def test_given_a_version_when_activating_another_one_then_409_and_nothing_changes(
    world: World,
) -> None:
    name = unique("guarded")
    first = await upload(world, name, DECK_CSV, currency="EUR", rounding="half_up", decimals="4")
    assert first.status_code == 201
    assert first.json()["active_version"] is None  # a new deck: nothing in force yet
    reviewed = first.json()["pending_version"]
    second = await upload(world, name, DECK_CSV.replace("0.010000", "0.9"))  # rules kept
    assert second.json()["pending_version"] != reviewed
    assert second.json()["pending_currency"] == "EUR"
    refused = await world.call("operator", "POST", f"/v1/decks/{name}/activate",
                               params={"version": reviewed})  # fmt: skip
    assert (refused.status_code, refused.json()["code"]) == (409, "VERSION_MISMATCH")
    assert (await world.call("operator", "GET", f"/v1/decks/{name}")).json()["rates"] == 0
    done = await world.call("operator", "POST", f"/v1/decks/{name}/activate",
                            params={"version": second.json()["pending_version"]})  # fmt: skip
    assert done.status_code == 200
    assert (done.json()["currency"], done.json()["rounding"], done.json()["decimals"]) == (
        "EUR", "half_up", 4,
    )  # fmt: skip
    exported = await world.call("operator", "GET", f"/v1/decks/{name}", params={"format": "csv"})
    assert list(csv.reader(io.StringIO(exported.text)))[1][:3] == [
        "44",
        "United Kingdom",
        "0.900000",
    ]


async def test_given_unknown_decks_when_activated_then_404(world: World) -> None:
    response = await world.call("operator", "POST", "/v1/decks/no-such-deck/activate")
    assert (response.status_code, response.json()["code"]) == (404, "UNKNOWN_DECK")


async def test_given_a_customer_when_reading_its_deck_then_no_staged_version_is_shown(
    world: World, customer_decks: dict[str, str]
) -> None:
    name = customer_decks["customer_a"]
    staged = await upload(world, name, DECK_CSV.replace("0.010000", "0.5"))
    assert staged.status_code == 201
    for who in ("customer_a", "reseller_a"):
        shown = (await world.call(who, "GET", f"/v1/decks/{name}")).json()
        assert (shown["pending_version"], shown["pending_rates"]) == (None, None), who
        exported = await world.call(who, "GET", f"/v1/decks/{name}",
                                    params={"format": "csv", "version": "pending"})  # fmt: skip
        assert exported.status_code == 404, who
    as_csv = await world.client.get(
        f"/v1/decks/{name}", headers=world.headers("customer_a", Accept="text/csv")
    )
    assert as_csv.text.splitlines()[1].startswith("44,United Kingdom,0.01")
    operator = await world.call("operator", "GET", f"/v1/decks/{name}",
                                params={"format": "csv", "version": "pending"})  # fmt: skip
    assert operator.text.splitlines()[1].startswith("44,United Kingdom,0.5")


async def test_given_a_secret_in_a_bad_deck_when_uploaded_then_no_body_or_log_holds_it(
    world: World,
) -> None:
    secret = world.keys["reseller_a"]
    with capture_logs() as logs:
        response = await upload(
            world, unique("leak"), f"prefix,destination,rate\n44,UK,{secret}\n", currency="USD"
        )
        forbidden = await world.send("reseller_a", "POST", f"/v1/decks/{unique('x')}",
                                     content=secret, headers=CSV)  # fmt: skip
    assert response.status_code == 422 and forbidden.status_code == 403
    for text in (response.text, forbidden.text, repr(logs)):
        for key in world.keys.values():
            assert key not in text
