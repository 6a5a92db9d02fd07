"""Live seats in Redis (``balance.seats``): the seat cap under parallel attempts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from balance import keys
from balance.live import InvalidLiveInput
from balance.seats import LiveSeat, SeatState
from tests.support import services

RUN = f"seats-{uuid.uuid4().hex[:12]}"  # every tenant of this module starts with it
AT = 1_764_000_000_000_000  # epoch microseconds


def new_tenant() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def _delete_tenants(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def seats(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[SeatState]:
    state = SeatState(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


async def test_given_limit_k_when_50_distinct_seats_log_in_at_once_then_exactly_k_pass(
    seats: SeatState,
) -> None:
    tenant, k = new_tenant(), 7

    results = await asyncio.gather(
        *(seats.login(tenant, f"Agent:{i}", "pbx-1", AT + i, k) for i in range(50))
    )

    admitted = [r for r in results if r.ok]
    assert len(admitted) == k
    assert {r.reason for r in admitted} == {"OK"}
    assert {r.reason for r in results if not r.ok} == {"SEAT_LIMIT"}
    assert sorted(r.live_seats for r in admitted) == list(range(1, k + 1))
    assert await seats.count(tenant) == k
    assert len(await seats.live(tenant)) == k


async def test_given_limit_k_when_50_distinct_seats_ask_at_once_then_exactly_k_are_held(
    seats: SeatState,
) -> None:
    tenant, k = new_tenant(), 9

    results = await asyncio.gather(*(seats.hold(tenant, f"Agent:{i}", k) for i in range(50)))

    assert sum(r.ok for r in results) == k
    assert {r.reason for r in results if not r.ok} == {"SEAT_LIMIT"}
    assert await seats.holds(tenant) == k
    assert await seats.count(tenant) == 0


async def test_given_holds_fill_the_limit_when_a_seat_without_hold_logs_in_then_refused(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    assert (await seats.hold(tenant, "Agent:1", 2)).ok
    assert (await seats.hold(tenant, "Agent:2", 2)).ok

    stranger = await seats.login(tenant, "Agent:3", "pbx-1", AT, 2)
    converted = await seats.login(tenant, "Agent:1", "pbx-1", AT, 2)

    assert (stranger.ok, stranger.reason, stranger.live_seats) == (False, "SEAT_LIMIT", 0)
    assert (converted.ok, converted.reason, converted.live_seats) == (True, "OK", 1)
    assert await seats.holds(tenant) == 1  # Agent:2's hold is still counted
    assert set(await seats.live(tenant)) == {"Agent:1"}


async def test_given_a_hold_when_asked_again_or_seat_live_then_ok_without_another_place(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    assert (await seats.hold(tenant, "Agent:1", 1)).ok
    assert (await seats.hold(tenant, "Agent:1", 1)).ok  # idempotent
    assert not (await seats.hold(tenant, "Agent:2", 1)).ok
    assert (await seats.login(tenant, "Agent:1", "pbx-1", AT, 1)).reason == "OK"
    again = await seats.hold(tenant, "Agent:1", 1)
    assert (again.ok, again.reason, again.live_seats) == (True, "OK", 1)
    assert await seats.holds(tenant) == 0


async def test_given_a_live_seat_when_it_logs_in_again_then_already_and_counted_once(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    assert (await seats.login(tenant, "Agent:1", "pbx-1", AT, 1)).reason == "OK"

    again = await seats.login(tenant, "Agent:1", "pbx-2", AT + 5, 1)

    assert (again.ok, again.reason, again.live_seats) == (True, "ALREADY", 1)
    assert await seats.live(tenant) == {"Agent:1": LiveSeat("Agent:1", "pbx-1", AT)}


async def test_given_50_parallel_logins_of_one_seat_then_one_ok_and_the_rest_already(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    results = await asyncio.gather(
        *(seats.login(tenant, "Agent:7", "pbx-1", AT, 3) for _ in range(50))
    )
    assert sorted(r.reason for r in results) == ["ALREADY"] * 49 + ["OK"]
    assert await seats.count(tenant) == 1


async def test_given_a_short_hold_when_it_expires_then_its_place_is_free(
    redis_client: aioredis.Redis,
) -> None:
    seats = SeatState(redis_client, hold_ttl=1, batch=False)
    tenant = new_tenant()
    assert (await seats.hold(tenant, "Agent:1", 1)).ok
    assert not (await seats.hold(tenant, "Agent:2", 1)).ok
    assert not (await seats.login(tenant, "Agent:2", "pbx-1", AT, 1)).ok

    await asyncio.sleep(1.1)

    assert await seats.holds(tenant) == 0
    assert (await seats.login(tenant, "Agent:2", "pbx-1", AT, 1)).reason == "OK"
    assert not (await seats.login(tenant, "Agent:1", "pbx-1", AT, 1)).ok
    assert await redis_client.exists(keys.seat_holds_key(tenant)) == 0


async def test_given_no_limit_then_every_seat_is_admitted(seats: SeatState) -> None:
    tenant = new_tenant()
    logins = await asyncio.gather(
        *(seats.login(tenant, f"Agent:{i}", "pbx-1", AT, None) for i in range(40))
    )
    holds = await asyncio.gather(*(seats.hold(tenant, f"SIP/{i}", -1) for i in range(40)))
    assert all(r.reason == "OK" for r in logins + holds)
    assert await seats.count(tenant) == 40
    assert await seats.holds(tenant) == 40


async def test_given_limit_zero_then_nothing_is_admitted(seats: SeatState) -> None:
    tenant = new_tenant()
    assert (await seats.hold(tenant, "Agent:1", 0)).reason == "SEAT_LIMIT"
    assert (await seats.login(tenant, "Agent:1", "pbx-1", AT, 0)).reason == "SEAT_LIMIT"
    assert await seats.count(tenant) == 0


async def test_given_a_logout_then_the_seat_is_freed_and_a_second_logout_is_false(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    await seats.login(tenant, "Agent:1", "pbx-1", AT, 1)

    assert await seats.logout(tenant, "Agent:1") is True
    assert await seats.logout(tenant, "Agent:1") is False
    assert (await seats.login(tenant, "Agent:2", "pbx-1", AT, 1)).reason == "OK"


async def test_given_seat_live_elsewhere_or_since_later_when_logout_then_it_is_kept(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    await seats.login(tenant, "Agent:1", "pbx-2", AT + 100, None)

    assert await seats.logout(tenant, "Agent:1", switch_id="pbx-1") is False
    assert await seats.logout(tenant, "Agent:1", switch_id="pbx-2", at_us=AT + 99) is False
    assert await seats.count(tenant) == 1
    assert await seats.logout(tenant, "Agent:1", switch_id="pbx-2", at_us=AT + 100) is True
    assert await seats.count(tenant) == 0


async def test_given_a_hold_when_the_seat_logs_out_then_the_hold_is_gone(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    await seats.hold(tenant, "Agent:1", 1)
    assert await seats.logout(tenant, "Agent:1") is False
    assert await seats.holds(tenant) == 0


async def test_given_sql_seats_when_loaded_then_they_replace_the_live_seats(
    seats: SeatState,
) -> None:
    tenant = new_tenant()
    await seats.login(tenant, "Agent:stale", "pbx-1", AT, None)
    await seats.hold(tenant, "Agent:2", None)
    loaded = [LiveSeat("Agent:1", "pbx|odd", AT + 1), LiveSeat("Agent:2", "pbx-2", AT + 2)]

    assert await seats.load(tenant, loaded) == 2

    assert await seats.live(tenant) == {s.seat: s for s in loaded}
    assert await seats.holds(tenant) == 0
    assert await seats.load(tenant, [LiveSeat("Agent:3", "pbx-1", AT)], replace=False) == 3
    # at the limit now: a new login is refused
    assert (await seats.login(tenant, "Agent:4", "pbx-1", AT, 3)).reason == "SEAT_LIMIT"


@pytest.mark.parametrize(
    ("tenant", "seat", "culprit"),
    [("", "Agent:1", "tenant"), ("a{b}", "Agent:1", "tenant"), ("t", "has space", "seat")],
)
async def test_given_bad_ids_then_invalid_input_names_them(
    seats: SeatState, tenant: str, seat: str, culprit: str
) -> None:
    with pytest.raises(InvalidLiveInput, match=culprit):
        await seats.login(tenant, seat, "pbx-1", AT, 1)


async def test_given_bad_limit_or_time_then_invalid_input_names_it(seats: SeatState) -> None:
    tenant = new_tenant()
    with pytest.raises(InvalidLiveInput, match="seat limit"):
        await seats.hold(tenant, "Agent:1", -2)
    with pytest.raises(InvalidLiveInput, match="at_us"):
        await seats.login(tenant, "Agent:1", "pbx-1", -1, 1)
