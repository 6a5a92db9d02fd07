"""Live calls, seats and denials of an account through the API (real Redis and SQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from balance.seat_sessions import SeatSessions
from daemon.api.app import build_api
from tests.integration.api_fixtures import World, world_fixture  # noqa: F401

NOW_US = int(datetime.now(UTC).timestamp() * 1_000_000)


async def topup(w: World, who: str, amount: str) -> None:
    response = await w.call("operator", "POST", f"/v1/accounts/{w.ids[who]}/topups",
                            json={"amount": amount, "currency": "USD"},
                            idempotency_key=f"live-{who}-{amount}")  # fmt: skip
    assert response.status_code == 201


async def test_given_two_reservations_when_listing_live_calls_then_each_with_its_credit(
    world: World,
) -> None:
    account = world.ids["customer_a"]
    await topup(world, "customer_a", "10")
    assert (await world.live.reserve(account, "pbx-1:call-1", 1_500_000)).ok
    assert (await world.live.reserve(account, "pbx-2:abc:def", 250_000)).ok
    response = await world.call("customer_a", "GET", f"/v1/accounts/{account}/live-calls")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["live_calls"], body["reserved"], body["available"]) == (
        "active", 2, "1.750000", "8.250000",
    )  # fmt: skip
    assert body["calls"] == [
        {"call_key": "pbx-1:call-1", "switch_id": "pbx-1", "call_id": "call-1",
         "reserved": "1.500000"},
        {"call_key": "pbx-2:abc:def", "switch_id": "pbx-2", "call_id": "abc:def",
         "reserved": "0.250000"},
    ]  # fmt: skip
    await world.live.settle(account, "pbx-1:call-1", 1_000_000)
    after = await world.call("reseller_a", "GET", f"/v1/accounts/{account}/live-calls")
    assert [c["call_key"] for c in after.json()["calls"]] == ["pbx-2:abc:def"]
    other = await world.call(
        "operator", "GET", f"/v1/accounts/{world.ids['customer_b']}/live-calls"
    )
    assert other.json()["calls"] == []


async def test_given_seats_in_redis_and_sql_when_listed_then_merged_by_seat(world: World) -> None:
    assert world.seats is not None
    account = world.ids["customer_a"]
    await world.call("operator", "PATCH", f"/v1/accounts/{account}", json={"seat_limit": 3})
    sessions = SeatSessions(world.engine)
    for seat, switch in (("agent-1", "pbx-1"), ("agent-2", "pbx-2")):
        assert (await world.seats.login(account, seat, switch, NOW_US, 3)).ok
    await sessions.open(account, "agent-1", "pbx-1", NOW_US, "Alice")
    await sessions.open(account, "agent-3", "pbx-1", NOW_US - 5_000_000, "Carol")  # SQL only
    await sessions.open(account, "agent-4", "pbx-1", NOW_US - 9_000_000, "Dave")
    await sessions.close("pbx-1", "agent-4", NOW_US - 1_000_000, "logoff")  # gone
    await world.seats.hold(account, "agent-9", 3)
    response = await world.call("customer_a", "GET", f"/v1/accounts/{account}/seats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["seat_limit"], body["live_seats"], body["holds"]) == (3, 2, 1)
    seen = {s["seat"]: (s["name"], s["switch_id"], s["live"], s["session_open"])
            for s in body["seats"]}  # fmt: skip
    assert seen == {
        "agent-1": ("Alice", "pbx-1", True, True),
        "agent-2": ("", "pbx-2", True, False),
        "agent-3": ("Carol", "pbx-1", False, True),
    }
    since = datetime.fromisoformat(body["seats"][0]["since"])
    assert abs(since - datetime.fromtimestamp(NOW_US / 1e6, UTC)) < timedelta(seconds=1)
    other = await world.call("reseller_b", "GET", f"/v1/accounts/{world.ids['customer_b']}/seats")
    assert other.json()["seats"] == []


def denials_path(w: World, who: str = "customer_a") -> str:
    return f"/v1/accounts/{w.ids[who]}/denials"


async def test_given_denials_over_days_when_asked_then_counted_per_reason_and_day(
    world: World,
) -> None:
    assert world.denials is not None
    account = world.ids["customer_a"]
    day1 = datetime(2026, 2, 27, 23, 59, 59, tzinfo=UTC)
    day2 = datetime(2026, 2, 28, 0, 0, 1, tzinfo=UTC)
    late = datetime(2026, 2, 28, 23, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    # 00:30 on 1 March in Paris: counted on its UTC day, 28 February
    march = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    for at, reason in [(day1, "INSUFFICIENT_CREDIT")] * 3 + [
        (day2, "INSUFFICIENT_CREDIT"), (day2, "CONCURRENCY_LIMIT"), (late, "NO_RATE"),
        (march, "NO_RATE"),
    ]:  # fmt: skip
        await world.denials.record(account, reason, at)
    await world.denials.record(world.ids["customer_b"], "NO_RATE", day2)
    response = await world.call("reseller_a", "GET", denials_path(world),
                                params={"from": "2026-02-27", "to": "2026-03-01"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"], body["total"]) == ("2026-02-27", "2026-03-01", 7)
    assert body["reasons"] == {"CONCURRENCY_LIMIT": 1, "INSUFFICIENT_CREDIT": 4, "NO_RATE": 2}
    assert [(d["day"], d["total"]) for d in body["days"]] == [
        ("2026-02-27", 3), ("2026-02-28", 3), ("2026-03-01", 1),
    ]  # fmt: skip
    one = await world.call("customer_a", "GET", denials_path(world),
                           params={"from": "2026-02-28", "to": "2026-02-28"})  # fmt: skip
    assert one.json()["reasons"] == {
        "CONCURRENCY_LIMIT": 1, "INSUFFICIENT_CREDIT": 1, "NO_RATE": 1,
    }  # fmt: skip


async def test_given_no_range_when_asking_denials_then_the_last_seven_days(world: World) -> None:
    assert world.denials is not None
    await world.denials.record(world.ids["customer_a"], "ACCOUNT_SUSPENDED")
    body = (await world.call("customer_a", "GET", denials_path(world))).json()
    today = datetime.now(UTC).date()
    assert (body["from"], body["to"]) == (str(today - timedelta(days=6)), str(today))
    assert body["reasons"] == {"ACCOUNT_SUSPENDED": 1}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ({"from": "2026-01-01", "to": "2026-03-01"}, "from"),  # 60 days: older ones expired
        ({"from": "March"}, "from"),
        ({"to": "2026-02-30"}, "to"),
    ],
)
async def test_given_a_bad_range_when_asking_denials_then_422_names_it(
    world: World, params: dict[str, Any], field: str
) -> None:
    response = await world.call("customer_a", "GET", denials_path(world), params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["detail"]] == [field]


async def test_given_an_api_without_redis_counters_when_asked_then_503_not_configured(
    world: World,
) -> None:
    app = build_api(world.engine, world.live, world.admin)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        for path in ("seats", "denials"):
            response = await client.get(
                f"/v1/accounts/{world.ids['customer_a']}/{path}", headers=world.headers("operator")
            )
            assert response.status_code == 503
            assert response.json()["code"] == "NOT_CONFIGURED"
