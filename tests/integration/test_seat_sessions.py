"""Seat sessions in SQL (``balance.seat_sessions``) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.seat_sessions import OpenResult, SeatSession, SeatSessions
from storage.seat_tables import seat_sessions
from tariffs.seat_usage import SeatUsage

HOUR = 3_600_000_000
T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp()) * 1_000_000  # a Monday, 00:00 UTC


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(seat_sessions))).scalar_one()
        )


async def test_given_a_login_replayed_then_it_is_one_row(sql_engine: AsyncEngine) -> None:
    store = SeatSessions(sql_engine)

    first = await store.open("acme", "Agent:1", "pbx-1", T0, "Alice")
    replay = await store.open("acme", "Agent:1", "pbx-1", T0, "Alice")
    later = await store.open("acme", "Agent:1", "pbx-1", T0 + 5, "Alice")  # still open

    assert (first, replay, later) == (
        OpenResult.OPENED,
        OpenResult.ALREADY_OPEN,
        OpenResult.ALREADY_OPEN,
    )
    assert await _rows(sql_engine) == 1
    assert await store.open_sessions() == [
        SeatSession("acme", "Agent:1", "pbx-1", "Alice", T0, None, "")
    ]


async def test_given_parallel_replays_of_one_login_then_one_row(sql_engine: AsyncEngine) -> None:
    store = SeatSessions(sql_engine)
    results = await asyncio.gather(
        *(store.open("acme", "Agent:1", "pbx-1", T0) for _ in range(10)),
        return_exceptions=True,
    )
    assert results.count(OpenResult.OPENED) == 1
    assert set(results) <= {OpenResult.OPENED, OpenResult.ALREADY_OPEN}
    assert await _rows(sql_engine) == 1


async def test_given_an_open_session_when_closed_twice_then_closed_once(
    sql_engine: AsyncEngine,
) -> None:
    store = SeatSessions(sql_engine)
    await store.open("acme", "Agent:1", "pbx-1", T0)

    assert await store.close("pbx-1", "Agent:1", T0 + HOUR, "logoff") is True
    assert await store.close("pbx-1", "Agent:1", T0 + 2 * HOUR, "logoff") is False

    assert await store.open_sessions() == []
    assert await store.list("acme") == [
        SeatSession("acme", "Agent:1", "pbx-1", "", T0, T0 + HOUR, "logoff")
    ]
    # a replay of that login is recognised as a session already over
    assert await store.open("acme", "Agent:1", "pbx-1", T0) is OpenResult.ENDED
    assert await _rows(sql_engine) == 1


async def test_given_a_logout_older_than_the_open_session_then_it_stays_open(
    sql_engine: AsyncEngine,
) -> None:
    store = SeatSessions(sql_engine)
    await store.open("acme", "Agent:1", "pbx-1", T0 + HOUR)
    assert await store.close("pbx-1", "Agent:1", T0, "logoff") is False
    assert len(await store.open_sessions("pbx-1")) == 1
    assert await store.open_sessions("pbx-2") == []


async def test_given_a_refusal_recorded_twice_then_one_zero_length_row(
    sql_engine: AsyncEngine,
) -> None:
    store = SeatSessions(sql_engine)
    assert await store.refused("acme", "Agent:9", "pbx-1", T0, "Zed") is True
    assert await store.refused("acme", "Agent:9", "pbx-1", T0, "Zed") is False
    assert await store.list("acme") == [
        SeatSession("acme", "Agent:9", "pbx-1", "Zed", T0, T0, "refused")
    ]
    assert await store.open_sessions() == []


async def test_given_bad_arguments_then_value_error_names_them(sql_engine: AsyncEngine) -> None:
    store = SeatSessions(sql_engine)
    with pytest.raises(ValueError, match="started_at_us"):
        await store.open("acme", "Agent:1", "pbx-1", -1)
    with pytest.raises(ValueError, match="end reason"):
        await store.close("pbx-1", "Agent:1", T0, "bored")
    with pytest.raises(ValueError, match="Mars/Olympus"):
        await store.usage("acme", T0, T0 + HOUR, "Mars/Olympus")


async def test_given_sessions_when_listed_between_times_then_those_present_are_returned(
    sql_engine: AsyncEngine,
) -> None:
    store = SeatSessions(sql_engine)
    await store.open("acme", "a", "pbx-1", T0)  # 0h-1h
    await store.close("pbx-1", "a", T0 + HOUR, "logoff")
    await store.open("acme", "b", "pbx-1", T0 + 2 * HOUR)  # 2h-open
    await store.refused("acme", "c", "pbx-1", T0 + 3 * HOUR)
    await store.open("other", "a", "pbx-9", T0)

    def seats(found: list[SeatSession]) -> list[str]:
        return [s.seat for s in found]

    assert seats(await store.list("acme")) == ["a", "b", "c"]
    assert seats(await store.list("acme", T0 + HOUR)) == ["b", "c"]  # 'a' ended at since
    assert seats(await store.list("acme", T0 + HOUR, T0 + 3 * HOUR)) == ["b"]
    assert seats(await store.list("acme", until_us=T0 + 2 * HOUR)) == ["a"]


async def test_given_a_day_of_sessions_then_usage_has_peak_seat_days_and_seconds(
    sql_engine: AsyncEngine,
) -> None:
    store = SeatSessions(sql_engine)
    # Nov 1 22:00 -> Nov 2 02:00 (starts before the period), 'a' on two switches
    await store.open("acme", "a", "pbx-1", T0 - 2 * HOUR)
    await store.close("pbx-1", "a", T0 + 2 * HOUR, "logoff")
    await store.open("acme", "a", "pbx-2", T0 + HOUR)
    await store.close("pbx-2", "a", T0 + 3 * HOUR, "logoff")
    # 'b' logs in when 'c' logs out: never three at once
    await store.open("acme", "c", "pbx-1", T0 + HOUR)
    await store.close("pbx-1", "c", T0 + 4 * HOUR, "logoff")
    await store.open("acme", "b", "pbx-1", T0 + 4 * HOUR)
    await store.close("pbx-1", "b", T0 + 5 * HOUR, "lost")
    # 'd' still live, from Nov 2 23:00: counts until now_us (Nov 3 01:00)
    await store.open("acme", "d", "pbx-1", T0 + 23 * HOUR)
    await store.refused("acme", "e", "pbx-1", T0 + HOUR)  # no presence
    await store.open("other", "z", "pbx-1", T0)  # another tenant

    now = T0 + 25 * HOUR
    day = await store.usage("acme", T0, T0 + 24 * HOUR, "UTC", now_us=now)
    two_days = await store.usage("acme", T0, T0 + 48 * HOUR, "UTC", now_us=now)

    # Nov 2: a 0-3h, c 1-4h, b 4-5h, d 23-24h
    assert day == SeatUsage(peak_seats=2, seat_days=4, seat_seconds=(3 + 3 + 1 + 1) * 3600)
    assert two_days == SeatUsage(peak_seats=2, seat_days=5, seat_seconds=(3 + 3 + 1 + 2) * 3600)
    # in New York (UTC-5) the same hours fall on Nov 1 (a: 17:00-22:00) and Nov 2 (d)
    ny = await store.usage("acme", T0 - 48 * HOUR, T0 + 48 * HOUR, "America/New_York", now_us=now)
    assert ny.seat_days == 4
    assert ny.peak_seats == 2
