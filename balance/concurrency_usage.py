"""Concurrency-package usage of an account over a period, measured from its rated calls.

The figures (defined in ``tariffs.concurrency``): the peak number of answered calls in
progress at once, the peak of each local day in the account's time zone, and the
channel-seconds above the package (``overage_us``, exact microseconds; as Decimal
seconds; priced per channel-minute, rounded up to 10^-6). They are billing data: the
real-time burst limit is enforced elsewhere (authorization, Redis).

Only the answered calls overlapping the period are read (``answered_at_us`` not NULL,
``ended_at_us > start``, ``answered_at_us < end``: the ``(account_id, ended_at_us)``
index), streamed in answer order through ``tariffs.concurrency.ConcurrencySweep``, so
memory follows the peak concurrency, not the number of calls. A call whose recorded end
precedes its answer counts as zero-length. A period's figures are final once every call
in progress during it has ended and been rated (calls still up are not in SQL yet).

Errors: ``tariffs.concurrency.ConcurrencyError`` (bad window, package, price or zone),
``tariffs.tiers.PlanError`` (a period that is not ``YYYY-MM``), and
``storage.engine.StorageError`` for SQL failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import wrap_driver_errors
from storage.tables import rated_calls
from tariffs.concurrency import (
    ConcurrencyError,
    ConcurrencySweep,
    Interval,
    day_cuts,
    overage_cost,
    us_to_seconds,
    zone,
)
from tariffs.money import to_micros
from tariffs.tiers import period_bounds_us

_FETCH_ROWS = 5_000  # rows per round trip of the streamed query


@dataclass(frozen=True, slots=True)
class ConcurrencyUsage:
    """One account's concurrency figures over ``[start_us, end_us)``."""

    account_id: str
    start_us: int
    end_us: int
    tz: str
    package: int  # channels included
    overage_price_per_minute: Decimal  # per channel-minute above the package
    calls: int  # answered calls overlapping the period
    peak: int
    overage_us: int  # channel-microseconds above the package
    overage_seconds: Decimal  # the same, in seconds (6 decimals, exact)
    overage_cost: Decimal  # rounded up to 10^-6
    overage_cost_micros: int
    daily_peaks: Mapping[date, int] = field(default_factory=dict)  # every local day
    period: str | None = None  # "YYYY-MM" when the window is a month


def _check_account(account_id: object) -> str:
    if not isinstance(account_id, str) or not account_id:
        raise ConcurrencyError(f"account_id must be a non-empty str, got {account_id!r}")
    return account_id


async def concurrency_usage(
    engine: AsyncEngine,
    account_id: str,
    start_us: int,
    end_us: int,
    *,
    package: int,
    overage_price_per_minute: Decimal,
    tz: str,
    period: str | None = None,
) -> ConcurrencyUsage:
    """The account's peak, daily peaks and overage within ``[start_us, end_us)``.

    ``tz`` (the account's time zone) cuts the local days; ``period`` only labels the
    result (:func:`month_usage` sets it). An empty window is refused.
    """
    account = _check_account(account_id)
    zone(tz)
    overage_cost(0, overage_price_per_minute)  # validates the price before any I/O
    days = day_cuts(tz, start_us, end_us)
    if not days:
        raise ConcurrencyError(f"an empty period: [{start_us}, {end_us})")
    sweep = ConcurrencySweep(package, [at for _day, at in days] + [end_us])
    answered, ended = rated_calls.c.answered_at_us, rated_calls.c.ended_at_us
    query = (
        select(answered, ended)
        .where(
            rated_calls.c.account_id == account,
            ended > start_us,
            answered.is_not(None),
            answered < end_us,
        )
        .order_by(answered)
    )
    calls = 0
    with wrap_driver_errors(f"reading the answered calls of {account!r}"):
        async with engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=_FETCH_ROWS))
            async for answered_us, ended_us in result:
                sweep.add(Interval(answered_us, max(answered_us, ended_us)))
                calls += 1
    segments = sweep.finish()
    overage = sum(segment.overage_us for segment in segments)
    cost = overage_cost(overage, overage_price_per_minute)
    return ConcurrencyUsage(
        account_id=account,
        start_us=start_us,
        end_us=end_us,
        tz=tz,
        package=package,
        overage_price_per_minute=overage_price_per_minute,
        calls=calls,
        peak=max((segment.peak for segment in segments), default=0),
        overage_us=overage,
        overage_seconds=us_to_seconds(overage),
        overage_cost=cost,
        overage_cost_micros=to_micros(cost),
        daily_peaks=MappingProxyType(
            {day: segment.peak for (day, _at), segment in zip(days, segments, strict=True)}
        ),
        period=period,
    )


async def month_usage(
    engine: AsyncEngine,
    account_id: str,
    period: str,
    *,
    package: int,
    overage_price_per_minute: Decimal,
    tz: str,
) -> ConcurrencyUsage:
    """:func:`concurrency_usage` over the calendar month ``period`` (``YYYY-MM``) in ``tz``."""
    zone(tz)  # an unknown zone is a ConcurrencyError here too
    start_us, end_us = period_bounds_us(period, tz)
    return await concurrency_usage(
        engine,
        account_id,
        start_us,
        end_us,
        package=package,
        overage_price_per_minute=overage_price_per_minute,
        tz=tz,
        period=period,
    )
