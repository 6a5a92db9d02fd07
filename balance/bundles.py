"""Bundled minutes: definitions and assignments in SQL, abstract balances in Redis.

A bundle's balance is per account and period (seconds, integers): ``allowance`` (the
bundle's seconds), ``used`` (settled calls) and ``reserved`` (live calls), with each
live call's reservation held as a LEASE, exactly as money is (``balance.live``): one
atomic script per operation (``balance/lua/bundle_*.lua``), every key in ``KEYS``.

- :meth:`BundleBalances.reserve` asks for a TOTAL of seconds for the call and is granted
  ``min(total - held, available)``: the first slice and every extension alike, so a
  re-sent call changes nothing. Concurrent calls never hold more than the allowance:
  N calls asking one slice each of a bundle of K slices get K full grants, the others
  nothing (``BUNDLE_EXHAUSTED``) and pay with money.
- :meth:`BundleBalances.settle` drops the call's hold and adds the seconds it used, once
  per call (a ``bundle_settled`` marker, the settle idempotency idea); ``release`` drops
  a hold unused. A lease neither extended nor settled within ``lease_ttl`` goes back to
  the bundle on its next ``reserve``.

**SQL is the truth**: ``bundles`` and ``bundle_assignments`` (``storage.plan_tables``),
and every rated call records the bundle it held and the seconds it used
(``rated_calls.bundle`` / ``bundle_seconds``). A period's balance is loaded from them:
at start for the current period (:meth:`BundleService.rebuild`, overwriting), and on
first use otherwise (a new month: loaded only if still absent). A call settled while its
period is not loaded adds nothing in Redis (the load from SQL includes it).

A bundle assigned in the middle of a period gives its whole allowance for that period
(no proration). Definitions and assignments are cached by :class:`BundleService`
(reloaded at start or on demand; a CLI change applies after it).

Definitions, assignments and the SQL sums are in ``balance.bundle_store``. Redis
failures are ``balance.live`` errors; SQL failures ``storage.engine.StorageError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from balance import keys
from balance.bundle_store import Assignment, BundleStore
from balance.rated_calls import RatedCallRecord
from balance.scripts import ScriptRunner
from balance.usage import PlanScripts, TierService, call_period, check_count, check_id
from tariffs.bundles import Bundle, covering_bundle
from tariffs.tiers import period_of

log = structlog.get_logger(__name__)

BUNDLE_SCRIPTS = (
    "bundle_reserve",
    "bundle_settle",
    "bundle_release",
    "bundle_load",
    "bundle_snapshot",
)
BUNDLE_OK = "OK"
BUNDLE_EXHAUSTED = "BUNDLE_EXHAUSTED"
BUNDLE_NOT_LOADED = "NOT_LOADED"


@dataclass(frozen=True, slots=True)
class BundleGrant:
    """The answer of :meth:`BundleBalances.reserve`: seconds the call now holds."""

    reason: str  # OK, BUNDLE_EXHAUSTED, NOT_LOADED
    held_seconds: int
    available_seconds: int  # left in the bundle after this grant

    @property
    def ok(self) -> bool:
        """True when the call holds the whole total it asked for."""
        return self.reason == BUNDLE_OK


@dataclass(frozen=True, slots=True)
class BundleState:
    """One consistent read of a period's bundle balance (seconds)."""

    allowance: int
    used: int
    reserved: int
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def available(self) -> int:
        """Seconds that a new reservation can still get."""
        return self.allowance - self.used - self.reserved


class BundleBalances:
    """Abstract balances of bundled seconds in Redis, one script per operation."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_ttl: int = keys.DEFAULT_LEASE_TTL_SECONDS,
        batch: bool = True,
        runner: ScriptRunner | None = None,
    ) -> None:
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int) or lease_ttl < 1:
            raise ValueError(f"lease_ttl must be a positive int of seconds: {lease_ttl!r}")
        self._lease_ttl_ms = lease_ttl * 1000
        self._scripts = PlanScripts(redis, BUNDLE_SCRIPTS, batch=batch, runner=runner)

    async def aclose(self) -> None:
        """Wait for script calls in flight (the Redis client stays the caller's)."""
        await self._scripts.aclose()

    async def reserve(
        self, account_id: str, bundle: str, period: str, call_key: str, total_seconds: int
    ) -> BundleGrant:
        """Hold up to ``total_seconds`` of the bundle for the call (idempotent)."""
        reply = await self._scripts.run(
            "bundle_reserve",
            _bundle_keys(account_id, bundle, period),
            [
                check_id("call_key", call_key),
                check_count("total_seconds", total_seconds),
                self._lease_ttl_ms,
                keys.PERIOD_STATE_TTL_SECONDS,
            ],
        )
        return BundleGrant(_text(reply[0]), int(reply[1]), int(reply[2]))

    async def settle(
        self, account_id: str, bundle: str, period: str, call_key: str, used_seconds: int
    ) -> bool:
        """Drop the call's hold and count ``used_seconds`` once; False if already settled."""
        call = check_id("call_key", call_key)
        reply = await self._scripts.run(
            "bundle_settle",
            [
                *_bundle_keys(account_id, bundle, period),
                keys.bundle_settled_key(check_id("account_id", account_id), call),
            ],
            [call, check_count("used_seconds", used_seconds), keys.SETTLED_TTL_SECONDS],
        )
        return int(reply) == 1

    async def release(self, account_id: str, bundle: str, period: str, call_key: str) -> int:
        """Drop the call's hold unused; the seconds released (-1: it held none)."""
        reply = await self._scripts.run(
            "bundle_release",
            _bundle_keys(account_id, bundle, period),
            [check_id("call_key", call_key)],
        )
        return int(reply)

    async def load(
        self,
        account_id: str,
        bundle: str,
        period: str,
        allowance: int,
        used: int,
        *,
        overwrite: bool = True,
    ) -> BundleState:
        """Write the period's balance (from SQL); without ``overwrite`` only if absent."""
        reply = await self._scripts.run(
            "bundle_load",
            _bundle_keys(account_id, bundle, period)[:2],
            [
                check_count("allowance", allowance),
                check_count("used", used),
                1 if overwrite else 0,
                keys.PERIOD_STATE_TTL_SECONDS,
            ],
        )
        return BundleState(int(reply[1]), int(reply[2]), int(reply[3]))

    async def snapshot(self, account_id: str, bundle: str, period: str) -> BundleState | None:
        """The period's balance and live holds, or None when it is not loaded."""
        reply = await self._scripts.run(
            "bundle_snapshot", _bundle_keys(account_id, bundle, period)[:2], []
        )
        if int(reply[0]) == 0:
            return None
        flat = reply[4:]
        calls = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return BundleState(int(reply[1]), int(reply[2]), int(reply[3]), calls)


def _bundle_keys(account_id: str, bundle: str, period: str) -> list[str]:
    account = check_id("account_id", account_id)
    name, when = check_id("bundle", bundle), check_id("period", period)
    return [
        keys.bundle_key(account, name, when),
        keys.bundle_calls_key(account, name, when),
        keys.bundle_leases_key(account, name, when),
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the service the daemon wires ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleCover:
    """The bundle that covers one call, and the period (account zone) it draws from."""

    bundle: Bundle
    prefix: str
    period: str
    tz: str = "UTC"


class BundleService:
    """Cached definitions and assignments over the Redis balances, loaded on demand."""

    def __init__(self, engine: AsyncEngine, balances: BundleBalances) -> None:
        self._store = BundleStore(engine)
        self._balances = balances
        self._bundles: Mapping[str, Bundle] = {}
        self._assigned: Mapping[str, tuple[Assignment, ...]] = {}

    @property
    def balances(self) -> BundleBalances:
        """The Redis balances."""
        return self._balances

    async def reload(self) -> int:
        """(Re)load every bundle and assignment from SQL; returns the assignments."""
        found = {bundle.name: bundle for bundle in await self._store.list()}
        assigned: dict[str, list[Assignment]] = {}
        for item in await self._store.assignments():
            assigned.setdefault(item.account_id, []).append(item)
        self._bundles = found
        self._assigned = {account: tuple(items) for account, items in assigned.items()}
        return sum(len(items) for items in self._assigned.values())

    def holds_bundles(self, account_id: str) -> bool:
        """Whether the account has any bundle assigned (active or not): without one, no
        call of it is covered and ``cover`` need not be asked."""
        return account_id in self._assigned

    def bundles_for(self, account_id: str, at: datetime) -> list[Bundle]:
        """The bundles the account holds at ``at``, oldest assignment first."""
        return [
            self._bundles[item.bundle]
            for item in self._assigned.get(account_id, ())
            if item.active(at) and item.bundle in self._bundles
        ]

    def cover(
        self, account_id: str, callee: str, at: datetime | None = None, tz: str = "UTC"
    ) -> BundleCover | None:
        """The bundle covering a call to ``callee`` starting at ``at`` (now), or None."""
        at = at or datetime.now(UTC)
        match = covering_bundle(self.bundles_for(account_id, at), callee)
        if match is None:
            return None
        return BundleCover(match.bundle, match.prefix, period_of(at, tz), tz)

    async def reserve(
        self, account_id: str, cover: BundleCover, call_key: str, total_seconds: int
    ) -> BundleGrant:
        """Hold up to ``total_seconds`` for the call; the period is loaded when absent."""
        name = cover.bundle.name
        grant = await self._balances.reserve(
            account_id, name, cover.period, call_key, total_seconds
        )
        if grant.reason != BUNDLE_NOT_LOADED:
            return grant
        used = await self._store.used_seconds(account_id, cover.period, cover.tz)
        await self._balances.load(
            account_id, name, cover.period, cover.bundle.seconds, used.get(name, 0),
            overwrite=False,
        )
        return await self._balances.reserve(
            account_id, name, cover.period, call_key, total_seconds
        )

    async def settle(
        self, account_id: str, cover: BundleCover, call_key: str, used_seconds: int
    ) -> bool:
        """Count the seconds a call used and drop its hold, once."""
        return await self._balances.settle(
            account_id, cover.bundle.name, cover.period, call_key, used_seconds
        )

    async def release(self, account_id: str, cover: BundleCover, call_key: str) -> int:
        """Drop a call's hold unused (a denied or duplicate call)."""
        return await self._balances.release(
            account_id, cover.bundle.name, cover.period, call_key
        )

    async def settle_record(
        self, record: RatedCallRecord, call_key: str, tz: str = "UTC", period: str | None = None
    ) -> bool | None:
        """Settle a newly written rated call's bundle (None: it held none).

        ``period``: the one the call reserved in (its cover's); else the month of its start.
        """
        if not record.bundle:
            return None
        when = period or call_period(record, tz)
        return await self._balances.settle(
            record.account_id, record.bundle, when, call_key, record.bundle_seconds
        )

    async def rebuild(self, zones: Mapping[str, str], at: datetime | None = None) -> int:
        """Overwrite the balances of the period holding ``at`` (now) from SQL.

        ``zones`` maps account ids to time zones. Returns how many balances were loaded.
        """
        at = at or datetime.now(UTC)
        count = 0
        for account_id in self._assigned:
            held = self.bundles_for(account_id, at)
            if not held:
                continue
            tz = zones.get(account_id, "UTC")
            period = period_of(at, tz)
            used = await self._store.used_seconds(account_id, period, tz)
            for bundle in held:
                await self._balances.load(
                    account_id, bundle.name, period, bundle.seconds, used.get(bundle.name, 0)
                )
                count += 1
        log.info("bundle balances rebuilt", balances=count)
        return count


async def settle_call_plans(
    record: RatedCallRecord,
    reservation_key: str,
    *,
    is_new: bool,
    tz: str = "UTC",
    tiers: TierService | None = None,
    bundles: BundleService | None = None,
) -> None:
    """The plan side of one settlement, after the SQL write (``daemon.settlement``).

    A newly written call is counted in its period (tiers) and its bundled seconds are
    settled; a duplicate only drops what its bundle reservation still holds.
    """
    if is_new:
        if tiers is not None:
            await tiers.count(record, tz)
        if bundles is not None:
            await bundles.settle_record(record, reservation_key, tz)
    elif bundles is not None and record.bundle:
        await bundles.balances.release(
            record.account_id, record.bundle, call_period(record, tz), reservation_key
        )
