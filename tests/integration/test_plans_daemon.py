"""Volume tiers and bundled minutes in the running daemon: authorization, the debit loop's
first slice, rating and settlement (real daemon, real Redis, both SQL backends).

The daemon is started for real (``daemon.app.Daemon``) and driven with switch-neutral
events, as its connectors drive it. Deck ``plans`` (prefix 44, no connect fee): 0.60/min,
1/1, i.e. 0.01 (10,000 micro-units) per second; debit_interval 30 s, so one slice of a
call is 30 bundled seconds or 0.30 of money.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from balance import keys
from balance.accounts import Account, AccountStore
from balance.bundle_store import BundleStore
from balance.ledger import Ledger
from balance.rerate import Rerater
from balance.usage import TierPlanStore, UsageCounters
from connectors.events import CallAnswered, CallEnded, CallStarted
from daemon.app import Daemon, open_resources
from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason
from daemon.settings import (
    ApiSettings,
    AuthorizationSettings,
    DatabaseSettings,
    RedisSettings,
    Settings,
)
from daemon.tariff_catalog import TariffCatalog
from storage.decks import DeckStore
from storage.tables import rated_calls
from tariffs.bundles import Bundle
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.ratedeck import RateDeck
from tariffs.tiers import Tier, TierCounter, TierMode, TierPlan, Usage, period_of
from tests.support import services
from tests.support.daemon_harness import running_daemon

RUN = f"plans-{uuid.uuid4().hex[:8]}"  # every account of this module starts with it
SLICE = 30
PER_SECOND = 10_000  # micro-units
INFO = DeckInfo(name="plans", currency="USD", rounding=Rounding.UP, decimals=6)
RATE = Rate("44", "United Kingdom", Decimal("0.60"), Decimal(0), 1, 1, 0)
CALLEE = "442071234567"


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


def _settings(tmp: Path, sql_url: str, redis_url: str) -> Settings:
    return Settings(
        state_dir=tmp,
        database=DatabaseSettings(url=sql_url, batch_delay_ms=5),
        redis=RedisSettings(url=redis_url),
        api=ApiSettings(port=0),

        authorization=AuthorizationSettings(
            http_port=0, fastagi_port=0, debit_interval=SLICE, max_call_duration=3600
        ),
        switches=[],
    )


async def _provision(settings: Settings, account: str, topup: str) -> None:
    res = await open_resources(settings)
    try:
        if await DeckStore(res.engine).load(INFO.name) is None:
            await DeckStore(res.engine).replace(INFO, [RATE])
        await AccountStore(res.engine).create(Account(id=account, rate_deck=INFO.name))
        if Decimal(topup):
            await Ledger(res.engine).topup(account, Decimal(topup), f"init-{account}")
    finally:
        await res.close()


class Calls:
    """Authorize and play calls through one running daemon, as a switch would."""

    def __init__(self, daemon: Daemon, account: str, switch_id: str) -> None:
        self.daemon, self.account, self.switch_id = daemon, account, switch_id
        self.start = Decimal(int(time.time()))  # the current month, as authorization's

    async def authorize(self, call_id: str) -> AuthorizationDecision:
        assert self.daemon.service is not None
        return await self.daemon.service.authorize(
            AuthorizationRequest(self.switch_id, call_id, self.account, "1000", CALLEE)
        )

    def ended(self, call_id: str, talk: int) -> CallEnded:
        start = self.start
        return CallEnded(
            switch_id=self.switch_id, call_id=call_id, leg_id=call_id, channel=f"SIP/{call_id}",
            account=self.account, caller="1000", callee=CALLEE, answered=True,
            started_at=start, answered_at=start + 1, ended_at=start + 1 + talk,
            billsec=Decimal(talk), cause="16", disposition="ANSWER",
        )  # fmt: skip

    async def play(self, call_id: str, talk: int) -> None:
        """Start, answer and end an authorized call (the debit loop has its first slice)."""
        sessions = self.daemon.sessions
        assert sessions is not None
        common = dict(switch_id=self.switch_id, call_id=call_id, leg_id=call_id,
                      channel=f"SIP/{call_id}", account=self.account)  # fmt: skip
        await sessions.handle(CallStarted(**common, caller="1000", callee=CALLEE, at=self.start))
        await sessions.handle(CallAnswered(**common, at=self.start + 1))
        await sessions.handle(self.ended(call_id, talk))

    async def replay_end(self, call_id: str, talk: int) -> None:
        """The switch sends a call's end again (after a reconnect or a restart)."""
        assert self.daemon.sessions is not None
        await self.daemon.sessions.handle(self.ended(call_id, talk))

    async def settled(self) -> None:
        assert self.daemon.settler is not None
        await self.daemon.settler.wait_idle()

    async def rows(self) -> dict[str, dict[str, object]]:
        assert self.daemon.resources is not None
        query = select(rated_calls).where(rated_calls.c.account_id == self.account)
        async with self.daemon.resources.engine.connect() as conn:
            return {row.call_id: dict(row._mapping) for row in await conn.execute(query)}


async def test_given_bundle_of_k_slices_when_n_calls_authorize_at_once_then_k_on_minutes(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account, k, n = f"{RUN}-{uuid.uuid4().hex[:8]}", 3, 8
    name = f"uk-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, sql_url, redis_url)
    await _provision(settings, account, "10")
    res = await open_resources(settings, migrate=False)
    try:
        await BundleStore(res.engine).create(Bundle(name, k * SLICE, ("44",)))
        await BundleStore(res.engine).assign(account, name)
    finally:
        await res.close()
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"
    talk = {f"c{i}": 20 + 5 * i for i in range(n)}  # 20, 25, ..., 55 s

    async with running_daemon(settings) as daemon:
        calls = Calls(daemon, account, switch_id)
        decisions = await asyncio.gather(*(calls.authorize(call) for call in talk))
        assert all(d.allowed for d in decisions), [d.reason for d in decisions]
        assert daemon.live is not None and daemon.bundles is not None
        money = await daemon.live.snapshot(account)
        assert money is not None
        cover = daemon.bundles.cover(account, CALLEE)
        assert cover is not None
        held = await daemon.bundles.balances.snapshot(account, name, cover.period)
        assert held is not None
        # exactly K calls hold a whole first slice of minutes and no money; the rest money
        on_minutes = {key.split(":")[1] for key in held.calls}
        assert len(on_minutes) == k and set(held.calls.values()) == {SLICE}
        assert held.available == 0
        for call in talk:
            expected = 0 if call in on_minutes else SLICE * PER_SECOND
            assert money.calls[f"{switch_id}:{call}"] == expected, call

        for call, seconds in talk.items():
            await calls.play(call, seconds)
        await calls.settled()
        rows = await calls.rows()
        assert set(rows) == set(talk)
        for call, seconds in talk.items():
            row = rows[call]
            if call in on_minutes:  # 30 s from the bundle, the rest at 0.01/s
                assert (row["bundle"], row["bundle_seconds"]) == (name, min(seconds, SLICE))
                assert row["cost_micros"] == max(seconds - SLICE, 0) * PER_SECOND, call
            else:
                assert (row["bundle"], row["bundle_seconds"]) == ("", 0)
                assert row["cost_micros"] == seconds * PER_SECOND, call
            assert row["billable_seconds"] == seconds
        used = sum(int(row["bundle_seconds"]) for row in rows.values())  # type: ignore[call-overload]
        assert used == k * SLICE - sum(SLICE - min(talk[c], SLICE) for c in on_minutes)
        after = await daemon.bundles.balances.snapshot(account, name, cover.period)
        assert after is not None
        assert (after.used, after.reserved, after.calls) == (used, 0, {})
        charged = sum(int(row["cost_micros"]) for row in rows.values())  # type: ignore[call-overload]
        final = await daemon.live.snapshot(account)
        assert final is not None and final.reserved_micros == 0
        assert final.balance_micros == 10_000_000 - charged

    async with running_daemon(settings) as daemon:  # restart: rebuilt from SQL
        assert daemon.bundles is not None
        rebuilt = await daemon.bundles.balances.snapshot(account, name, cover.period)
        assert rebuilt is not None
        assert (rebuilt.allowance, rebuilt.used, rebuilt.reserved) == (k * SLICE, used, 0)
        # a replayed end changes nothing: no second charge, no second use of the bundle
        calls = Calls(daemon, account, switch_id)
        replayed = next(iter(on_minutes))
        await calls.replay_end(replayed, talk[replayed])
        await calls.settled()
        again = await daemon.bundles.balances.snapshot(account, name, cover.period)
        assert again is not None and again.used == used and again.reserved == 0
        assert daemon.settler is not None and daemon.settler.duplicates == 1


async def test_given_bundle_when_call_outruns_it_then_pays_the_rest_from_the_slice_on(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A bundle of 40 s: the first call holds 30, the second the last 10 and pays 20 s of
    its first slice (0.20 reserved); 35 s of talk: 10 s bundled, 25 s paid = 0.25."""
    account = f"{RUN}-{uuid.uuid4().hex[:8]}"
    name = f"uk-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, sql_url, redis_url)
    await _provision(settings, account, "1")
    res = await open_resources(settings, migrate=False)
    try:
        await BundleStore(res.engine).create(Bundle(name, 40, ("44",)))
        await BundleStore(res.engine).assign(account, name)
    finally:
        await res.close()
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"
    async with running_daemon(settings) as daemon:
        calls = Calls(daemon, account, switch_id)
        first = await calls.authorize("a")
        second = await calls.authorize("b")
        assert first.allowed and second.allowed
        assert daemon.live is not None
        money = await daemon.live.snapshot(account)
        assert money is not None
        assert money.calls == {f"{switch_id}:a": 0, f"{switch_id}:b": 20 * PER_SECOND}
        # max_usage: 10 bundled seconds + 1.00 of money = 100 s
        assert second.max_usage == 110
        await calls.play("a", 30)
        await calls.play("b", 35)
        await calls.settled()
        rows = await calls.rows()
        assert (rows["a"]["bundle_seconds"], rows["a"]["cost_micros"]) == (30, 0)
        assert (rows["b"]["bundle_seconds"], rows["b"]["cost_micros"]) == (10, 250_000)


async def test_given_tier_crossed_by_call_n_when_call_n_plus_1_then_tier_price_counted_once(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Tier plan: from 2 answered calls this month on, 50 % off (all_units): 0.30/min."""
    account = f"{RUN}-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, sql_url, redis_url)
    await _provision(settings, account, "10")
    plan = TierPlan("volume", TierCounter.CALLS, TierMode.ALL_UNITS, (Tier(2, Decimal(50)),))
    res = await open_resources(settings, migrate=False)
    try:
        await TierPlanStore(res.engine).set(account, plan)
    finally:
        await res.close()
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"
    async with running_daemon(settings) as daemon:
        calls = Calls(daemon, account, switch_id)
        for call in ("n1", "n2"):
            decision = await calls.authorize(call)
            assert decision.allowed and decision.rate == Decimal("0.60")
            await calls.play(call, 10)
            await calls.settled()
        third = await calls.authorize("n3")
        assert third.allowed and third.rate == Decimal("0.30")
        assert daemon.live is not None
        money = await daemon.live.snapshot(account)
        assert money is not None and money.calls[f"{switch_id}:n3"] == SLICE * PER_SECOND // 2
        await calls.play("n3", 10)
        await calls.settled()
        await calls.replay_end("n3", 10)  # a duplicate, not counted again
        await calls.settled()
        rows = await calls.rows()
        assert [rows[c]["cost_micros"] for c in ("n1", "n2", "n3")] == [100_000, 100_000, 50_000]
        assert rows["n3"]["rate_micros"] == 300_000
        assert daemon.resources is not None
        period = period_of(datetime.now(UTC))
        counters = UsageCounters(daemon.resources.redis, batch=False)
        assert await counters.read(account, period) == Usage(3, 30)

    async with running_daemon(settings) as daemon:  # restart: counters rebuilt from SQL
        assert daemon.resources is not None
        counters = UsageCounters(daemon.resources.redis, batch=False)
        assert await counters.read(account, period) == Usage(3, 30)
        calls = Calls(daemon, account, switch_id)
        await calls.replay_end("n3", 10)  # replayed after the restart: still once
        await calls.settled()
        assert await counters.read(account, period) == Usage(3, 30)
        fourth = await calls.authorize("n4")
        assert fourth.allowed and fourth.rate == Decimal("0.30")


async def test_given_account_without_plans_when_called_then_priced_as_before(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"{RUN}-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, sql_url, redis_url)
    await _provision(settings, account, "0.05")
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"
    async with running_daemon(settings) as daemon:
        calls = Calls(daemon, account, switch_id)
        decision = await calls.authorize("p1")
        assert decision.allowed and decision.max_usage == 5 and decision.rate == Decimal("0.60")
        denied = await calls.authorize("p2")
        assert denied.reason is Reason.INSUFFICIENT_CREDIT
        await calls.play("p1", 4)
        await calls.settled()
        rows = await calls.rows()
        assert (rows["p1"]["cost_micros"], rows["p1"]["bundle"]) == (40_000, "")
        assert daemon.resources is not None
        assert await daemon.resources.redis.keys(f"{keys.PREFIX}:{{{account}}}:*usage*") == []



async def test_given_plan_calls_when_rerated_then_bundled_seconds_and_tier_kept(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A 45 s call on a 30 s bundle paid 15 s (0.15); the deck doubles to 1.20/min: the
    rerate charges 15 s more at 0.01 = +0.15. A tier account's first call (below its
    5-call tier, stored usage 0) paid 45 s at 0.01 = 0.45 and is re-priced at the same
    tier position: 45 s at 0.02 = 0.90, +0.45."""
    bundled, tiered = f"{RUN}-{uuid.uuid4().hex[:8]}", f"{RUN}-{uuid.uuid4().hex[:8]}"
    name = f"uk-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, sql_url, redis_url)
    await _provision(settings, bundled, "1")
    await _provision(settings, tiered, "1")
    plan = TierPlan("volume", TierCounter.CALLS, TierMode.ALL_UNITS, (Tier(5, Decimal(10)),))
    res = await open_resources(settings, migrate=False)
    try:
        await BundleStore(res.engine).create(Bundle(name, SLICE, ("44",)))
        await BundleStore(res.engine).assign(bundled, name)
        await TierPlanStore(res.engine).set(tiered, plan)
    finally:
        await res.close()
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"
    async with running_daemon(settings) as daemon:
        for account in (bundled, tiered):
            calls = Calls(daemon, account, switch_id)
            assert (await calls.authorize(f"r-{account}")).allowed
            await calls.play(f"r-{account}", 45)
            await calls.settled()
        assert daemon.resources is not None and daemon.live is not None
        dearer = Rate("44", "United Kingdom", Decimal("1.20"), Decimal(0), 1, 1, 0)
        catalog = TariffCatalog({INFO.name: RateDeck(INFO, [dearer])})
        since = datetime.fromtimestamp(int(calls.start) - 60, UTC)
        rerater = Rerater(daemon.resources.engine, daemon.live)
        window = {"since": since, "until": since + timedelta(hours=1), "deck": None}
        reports = [
            await rerater.rerate(account=account, catalog=catalog, **window)  # type: ignore[arg-type]
            for account in (bundled, tiered)
        ]
    assert reports[0].changed == 1
    assert reports[0].differences[0].difference_micros == 15 * PER_SECOND
    assert reports[1].changed == 1 and reports[1].skipped == {}
    assert reports[1].differences[0].difference_micros == 45 * PER_SECOND


async def test_given_live_call_when_debit_loop_runs_then_bundle_then_money_within_one_increment(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    # debit every second: a 3 s bundle is used up by the loop, then money takes over;
    # the call's holds grow in real time and never pass what is left (I1 on minutes)
    account, name = f"{RUN}-{uuid.uuid4().hex[:8]}", f"rt-{uuid.uuid4().hex[:8]}"
    base = _settings(tmp_path, sql_url, redis_url)
    settings = base.model_copy(
        update={"authorization": base.authorization.model_copy(update={"debit_interval": 1})}
    )
    await _provision(settings, account, "10")
    res = await open_resources(settings, migrate=False)
    try:
        await BundleStore(res.engine).create(Bundle(name, 3, ("44",)))
        await BundleStore(res.engine).assign(account, name)
    finally:
        await res.close()
    switch_id = f"pbx-{uuid.uuid4().hex[:8]}"

    async with running_daemon(settings) as daemon:
        calls = Calls(daemon, account, switch_id)
        assert (await calls.authorize("live")).allowed
        sessions, bundles, live = daemon.sessions, daemon.bundles, daemon.live
        assert sessions is not None and bundles is not None and live is not None
        cover = bundles.cover(account, CALLEE)
        assert cover is not None
        common = dict(switch_id=switch_id, call_id="live", leg_id="live",
                      channel="SIP/live", account=account)  # fmt: skip
        await sessions.handle(CallStarted(**common, caller="1000", callee=CALLEE, at=calls.start))
        await sessions.handle(CallAnswered(**common, at=calls.start + 1))
        samples = []
        for _ in range(12):  # ~6 s of talk
            state = await bundles.balances.snapshot(account, name, cover.period)
            money = await live.snapshot(account)
            assert state is not None and money is not None
            samples.append((state.reserved + state.used, money.calls.get(f"{switch_id}:live", 0)))
            await asyncio.sleep(0.5)
        await sessions.handle(calls.ended("live", 6))
        await calls.settled()
        row = (await calls.rows())["live"]
        after = await bundles.balances.snapshot(account, name, cover.period)

    assert all(minutes <= 3 for minutes, _ in samples)  # never past the bundle
    assert samples[-1][0] == 3 and samples[-1][1] > 0  # used up, then money held
    assert (row["bundle"], row["bundle_seconds"]) == (name, 3)
    assert row["cost_micros"] == 3 * PER_SECOND  # 6 s billed: 3 bundled, 3 paid
    assert after is not None and (after.used, after.reserved, after.calls) == (3, 0, {})
