"""Volume-tier counters: per account and period in Redis, rebuilt from the rated calls.

**Where the counters live.** SQL holds no counter table: a period's usage IS its rated
calls, ``count(*)`` and ``sum(billable_seconds)`` of the account's answered calls
(``billable_seconds > 0``) that STARTED in the period (:func:`usage_from_rated_calls`).
That keeps the rated-call hot path untouched and the counters exact by construction.
Redis holds the hot copy (``balance.keys.usage_key``), read once per authorization and
incremented once per settled call (:meth:`UsageCounters.add`, a ``counted`` marker per
call, the settle idempotency idea): the settler calls it only for a call its SQL
transaction newly wrote, and the marker absorbs a re-sent script.

**Loading.** At start :meth:`TierService.rebuild` overwrites the current period's
counters of every account with a tier plan from SQL. A period not in Redis (a new
month, a plan set after start) is loaded on first read, only if still absent; a call
settled while its period is not loaded is not counted in Redis (the load from SQL
includes it). As with balances (``balance.live``), a settlement racing a load may be
counted zero or two times in Redis; SQL stays exact and the next rebuild corrects it.

Tier plans are stored per account in ``tier_plans`` (:class:`TierPlanStore`) and cached
by :class:`TierService` (reloaded at start or on demand; a CLI change applies after it).

Errors: Redis failures are ``balance.live`` errors (``LiveStateUnavailable``,
``LiveScriptError``, ``InvalidLiveInput``); SQL failures ``storage.engine.StorageError``;
a bad plan ``tariffs.tiers.InvalidTierPlan``; ``UnknownPlanAccount`` (code
``UNKNOWN_ACCOUNT``) when a plan names an account that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance import keys
from balance.batching import script_runner
from balance.live import InvalidLiveInput, script_failure
from balance.rated_calls import RatedCallRecord
from balance.scripts import Arg, LuaScript, ScriptRunner, load_script
from storage.engine import wrap_driver_errors
from storage.plan_tables import tier_plans
from storage.tables import accounts, rated_calls, utcnow
from tariffs.tiers import (
    MAX_DISCOUNT_DECIMALS,
    Tier,
    TierPlan,
    Usage,
    period_bounds_us,
    period_of,
)

log = structlog.get_logger(__name__)

USAGE_SCRIPTS = ("usage_add", "usage_load", "usage_read")
_MAX_ID_LENGTH = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownPlanAccount(Exception):
    """A plan names an account that does not exist."""

    code: ClassVar[str] = "UNKNOWN_ACCOUNT"


class CountResult(StrEnum):
    """What :meth:`UsageCounters.add` did."""

    COUNTED = "counted"
    DUPLICATE = "duplicate"  # the call was counted before
    NOT_LOADED = "not_loaded"  # the period is not in Redis (its load from SQL has the call)


# --- shared by the plan scripts (here and balance.bundles) ------------------------------


def check_id(field: str, value: object) -> str:
    """A Redis-safe id: 1-256 printable characters without braces or spaces."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise InvalidLiveInput(
            f"{field} must be a non-empty str of at most {_MAX_ID_LENGTH} characters: {value!r}"
        )
    if "{" in value or "}" in value or not keys.printable_word(value):
        raise InvalidLiveInput(f"{field} must not hold braces, spaces or controls: {value!r}")
    return value


def check_count(field: str, value: object) -> int:
    """A non-negative int that a Lua double holds exactly."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise InvalidLiveInput(f"{field} must be an int >= 0: {value!r}")
    return value


class PlanScripts:
    """Runs a set of Lua scripts on one runner; Redis errors become ``balance.live`` errors."""

    def __init__(
        self,
        redis: Redis,
        names: Sequence[str],
        *,
        batch: bool = True,
        runner: ScriptRunner | None = None,
    ) -> None:
        self._scripts: dict[str, LuaScript] = {name: load_script(name) for name in names}
        self._runner = runner or script_runner(redis, batch=batch)

    async def run(self, name: str, script_keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run script ``name``; raise ``LiveStateUnavailable`` / ``LiveScriptError``."""
        try:
            return await self._runner.run(self._scripts[name], script_keys, args)
        except (RedisError, OSError) as exc:
            raise script_failure(exc, name, script_keys[0]) from exc

    async def aclose(self) -> None:
        """Wait for script calls in flight."""
        await self._runner.aclose()


# --- Redis ---------------------------------------------------------------------------


class UsageCounters:
    """Per account and period: answered calls and billable seconds, in Redis."""

    def __init__(
        self, redis: Redis, *, batch: bool = True, runner: ScriptRunner | None = None
    ) -> None:
        self._scripts = PlanScripts(redis, USAGE_SCRIPTS, batch=batch, runner=runner)

    async def aclose(self) -> None:
        """Wait for script calls in flight (the Redis client stays the caller's)."""
        await self._scripts.aclose()

    async def read(self, account_id: str, period: str) -> Usage | None:
        """The period's counters, or None when they are not loaded."""
        account = check_id("account_id", account_id)
        reply = await self._scripts.run(
            "usage_read", [keys.usage_key(account, check_id("period", period))], []
        )
        return Usage(int(reply[1]), int(reply[2])) if int(reply[0]) == 1 else None

    async def load(
        self, account_id: str, period: str, usage: Usage, *, overwrite: bool = True
    ) -> Usage:
        """Write the period's counters (from SQL); without ``overwrite`` only if absent.

        Returns the counters now in force.
        """
        account = check_id("account_id", account_id)
        reply = await self._scripts.run(
            "usage_load",
            [keys.usage_key(account, check_id("period", period))],
            [
                check_count("calls", usage.calls),
                check_count("seconds", usage.seconds),
                1 if overwrite else 0,
                keys.PERIOD_STATE_TTL_SECONDS,
            ],
        )
        return Usage(int(reply[1]), int(reply[2]))

    async def add(
        self, account_id: str, period: str, call_key: str, calls: int, seconds: int
    ) -> CountResult:
        """Count one settled call once (``calls`` 0 or 1, its billable ``seconds``)."""
        account = check_id("account_id", account_id)
        call = check_id("call_key", call_key)
        reply = int(
            await self._scripts.run(
                "usage_add",
                [
                    keys.usage_key(account, check_id("period", period)),
                    keys.counted_key(account, call),
                ],
                [
                    check_count("calls", calls),
                    check_count("seconds", seconds),
                    keys.SETTLED_TTL_SECONDS,
                    keys.PERIOD_STATE_TTL_SECONDS,
                ],
            )
        )
        if reply == 1:
            return CountResult.COUNTED
        return CountResult.DUPLICATE if reply == 0 else CountResult.NOT_LOADED


# --- SQL -----------------------------------------------------------------------------


async def usage_from_rated_calls(
    engine: AsyncEngine, account_id: str, period: str, tz: str = "UTC"
) -> Usage:
    """The account's answered calls and billable seconds that started in ``period``."""
    start_us, end_us = period_bounds_us(period, tz)
    query = select(
        func.count(), func.coalesce(func.sum(rated_calls.c.billable_seconds), 0)
    ).where(
        rated_calls.c.account_id == account_id,
        rated_calls.c.started_at_us >= start_us,
        rated_calls.c.started_at_us < end_us,
        rated_calls.c.billable_seconds > 0,
    )
    with wrap_driver_errors("counting an account's usage"):
        async with engine.connect() as conn:
            calls, seconds = (await conn.execute(query)).one()
    return Usage(int(calls), int(seconds))


def call_period(record: RatedCallRecord, tz: str) -> str:
    """The period of a rated call: the month its start falls in, in zone ``tz``."""
    return period_of(_EPOCH + timedelta(microseconds=record.started_at_us), tz)


def _tiers_json(plan: TierPlan) -> str:
    return json.dumps([[tier.threshold, tier.basis_points] for tier in plan.tiers])


def plan_from_row(row: Any, prefix: str = "") -> TierPlan:
    """The tier plan of a ``tier_plans`` row; ``prefix`` when its columns were labelled
    (a join selecting ``tier_plans.c.name.label("plan_name")`` etc. passes ``"plan_"``)."""
    values = row._mapping
    return TierPlan(
        name=values[f"{prefix}name"],
        counter=values[f"{prefix}counter"],
        mode=values[f"{prefix}mode"],
        period=values[f"{prefix}period"],
        tiers=tuple(
            Tier(int(threshold), Decimal(points).scaleb(-MAX_DISCOUNT_DECIMALS))
            for threshold, points in json.loads(values[f"{prefix}tiers"])
        ),
    )


class TierPlanStore:
    """Set, read and clear the tier plan of an account (``tier_plans``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def set(self, account_id: str, plan: TierPlan) -> None:
        """Give ``account_id`` the plan ``plan`` (replacing its previous one)."""
        values = {
            "name": plan.name,
            "counter": plan.counter.value,
            "mode": plan.mode.value,
            "period": plan.period,
            "tiers": _tiers_json(plan),
            "updated_at": utcnow(),
        }
        with wrap_driver_errors("setting a tier plan"):
            async with self._engine.begin() as conn:
                found = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                if found.first() is None:
                    raise UnknownPlanAccount(f"unknown account: {account_id!r}")
                where = tier_plans.c.account_id == account_id
                changed = await conn.execute(update(tier_plans).where(where).values(**values))
                if changed.rowcount == 0:
                    await conn.execute(insert(tier_plans).values(account_id=account_id, **values))
        log.info("tier plan set", account_id=account_id, plan=plan.name)

    async def get(self, account_id: str) -> TierPlan | None:
        """The account's plan, or None."""
        query = select(tier_plans).where(tier_plans.c.account_id == account_id)
        with wrap_driver_errors("reading a tier plan"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return None if row is None else plan_from_row(row)

    async def clear(self, account_id: str) -> bool:
        """Remove the account's plan; False when it had none."""
        with wrap_driver_errors("clearing a tier plan"):
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    delete(tier_plans).where(tier_plans.c.account_id == account_id)
                )
        return bool(result.rowcount)

    async def load_all(self) -> dict[str, TierPlan]:
        """Every account's plan, by account id."""
        with wrap_driver_errors("loading tier plans"):
            async with self._engine.connect() as conn:
                rows = await conn.execute(select(tier_plans))
                return {row.account_id: plan_from_row(row) for row in rows}


# --- the service the daemon wires ----------------------------------------------------


class TierService:
    """Tier plans (cached) and their counters: what authorization and settlement call."""

    def __init__(self, engine: AsyncEngine, counters: UsageCounters) -> None:
        self._engine = engine
        self._counters = counters
        self._store = TierPlanStore(engine)
        self._plans: Mapping[str, TierPlan] = {}

    async def reload(self) -> int:
        """(Re)load every tier plan from SQL; returns how many accounts have one."""
        self._plans = await self._store.load_all()
        return len(self._plans)

    def plan_for(self, account_id: str) -> TierPlan | None:
        """The account's tier plan (from the cache), or None."""
        return self._plans.get(account_id)

    async def usage(self, account_id: str, period: str, tz: str = "UTC") -> Usage:
        """The account's counters in ``period``, loaded from SQL when Redis has none."""
        found = await self._counters.read(account_id, period)
        if found is not None:
            return found
        counted = await usage_from_rated_calls(self._engine, account_id, period, tz)
        return await self._counters.load(account_id, period, counted, overwrite=False)

    async def usage_at(self, account_id: str, at: datetime, tz: str = "UTC") -> Usage:
        """The counters of the period holding ``at`` (a call's start) in zone ``tz``."""
        return await self.usage(account_id, period_of(at, tz), tz)

    async def count(self, record: RatedCallRecord, tz: str = "UTC") -> CountResult | None:
        """Count a newly written rated call once (None: no plan, or not answered)."""
        if record.account_id not in self._plans or record.billable_seconds <= 0:
            return None
        return await self._counters.add(
            record.account_id,
            call_period(record, tz),
            f"{record.switch_id}:{record.call_id}",
            1,
            record.billable_seconds,
        )

    async def rebuild(self, zones: Mapping[str, str], at: datetime | None = None) -> int:
        """Overwrite the counters of the period holding ``at`` (now) from SQL.

        ``zones`` maps account ids to time zones; only accounts with a plan are loaded.
        Returns how many were.
        """
        at = at or datetime.now(UTC)
        count = 0
        for account_id in self._plans:
            tz = zones.get(account_id, "UTC")
            period = period_of(at, tz)
            counted = await usage_from_rated_calls(self._engine, account_id, period, tz)
            await self._counters.load(account_id, period, counted, overwrite=True)
            count += 1
        log.info("tier counters rebuilt", accounts=count)
        return count


def zones_of(items: Iterable[Any]) -> dict[str, str]:
    """``{account.id: account.timezone}`` of ``balance.accounts.Account`` objects."""
    return {item.id: item.timezone for item in items}

