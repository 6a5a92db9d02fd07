"""Real-time caps through the real daemon, with Asterisk and FreeSWITCH traffic mixed.

For every cap, N calls are placed at once over both switches' real protocols (FastAGI
from the simulated Asterisk, xml_curl from the simulated FreeSWITCH, or HTTP) and exactly
the allowed number pass: an account's calls per second, a reseller's concurrency over all
its customers, a reseller's CPS, trunk concurrency (overflow to the next route). Then the
account states: a trial that ends during a live call, a suspension during a live call
(cut or kept per policy), a postpaid account suspended at its credit limit and resumed
by a payment, and a trial account's caps lifted by converting it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from daemon import authorization_service
from daemon.app import Daemon, open_resources
from daemon.authorization import AuthorizationRequest, Reason
from daemon.demo import local_freeswitch
from daemon.settings import CapsSettings, RedisSettings, Settings
from daemon.simulator.asterisk import CallOutcome, CallPlan, SimulatedAsterisk
from daemon.simulator.freeswitch import SimulatedFreeSWITCH
from daemon.simulator.loadgen import run_calls
from storage.carriers import CarrierStore
from storage.decks import DeckStore
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.lcr import Carrier
from tests.support.daemon_harness import (
    DECK,
    RATES,
    eventually,
    make_settings,
    running_daemon,
    unique_switch_id,
)

PASSWORD = "fs-caps-secret"


class Mixed:
    """A daemon with a simulated Asterisk and a simulated FreeSWITCH pointed at it."""

    def __init__(self, daemon: Daemon, ast: SimulatedAsterisk, fs: SimulatedFreeSWITCH) -> None:
        self.daemon, self.ast, self.fs = daemon, ast, fs

    async def place(self, plans: list[CallPlan]) -> list[CallOutcome]:
        """Half the plans over Asterisk, half over FreeSWITCH, all at once."""
        half = len(plans) // 2
        ast_out, fs_out = await asyncio.gather(
            run_calls(self.ast, plans[:half], cps=1000), run_calls(self.fs, plans[half:], cps=1000)
        )
        return [*ast_out, *fs_out]

    async def idle(self) -> None:
        sessions = self.daemon.sessions
        assert sessions is not None
        await eventually(lambda: not sessions.live_sessions())
        assert self.daemon.settler is not None
        await self.daemon.settler.wait_idle()


def _settings(
    tmp: Path,
    sql_url: str,
    redis_url: str,
    ami_port: int,
    fs_id: str,
    esl_port: int,
    lease_ttl: int = 120,
    **caps: Any,
) -> Settings:
    base = make_settings(tmp, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=ami_port)
    base = base.model_copy(update={"redis": RedisSettings(url=redis_url, lease_ttl=lease_ttl)})
    fs = local_freeswitch(
        fs_id, esl_port, PASSWORD, ping_interval=30, reconnect_min=0.05, reconnect_max=0.2
    )
    return base.model_copy(
        update={
            "switches": [*base.switches, fs],
            "caps": CapsSettings(accounts_refresh_interval=0.1, **caps),
        }
    )


@asynccontextmanager
async def mixed_daemon(
    tmp: Path,
    sql_url: str,
    redis_url: str,
    accounts: list[Account],
    lease_ttl: int = 120,
    **caps: Any,
) -> AsyncIterator[Mixed]:
    """Accounts (with 10.00 each) in SQL, then the daemon and both simulated switches."""
    fs_id = unique_switch_id()
    ast = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    fs = SimulatedFreeSWITCH(
        esl_password=PASSWORD, xml_curl_url="http://127.0.0.1:9/", switch_name=fs_id
    )
    await ast.start()
    await fs.start()
    try:
        settings = _settings(
            tmp, sql_url, redis_url, ast.ami_port, fs_id, fs.esl_port, lease_ttl, **caps
        )
        res = await open_resources(settings)
        try:
            await DeckStore(res.engine).replace(DECK, list(RATES))
            store, ledger = AccountStore(res.engine), Ledger(res.engine)
            for account in accounts:
                await store.create(account)
                if account.billing == "prepaid":
                    await ledger.topup(account.id, Decimal("10"), f"initial-{account.id}")
        finally:
            await res.close()
        async with running_daemon(settings) as daemon:
            await eventually(lambda: all(c.connected for c in daemon.connectors))
            fs.xml_curl_url = (
                f"http://127.0.0.1:{daemon.http_port}/v1/freeswitch/dialplan?switch_id={fs_id}"
            )
            ast.fastagi_port = daemon.fastagi_port
            yield Mixed(daemon, ast, fs)
    finally:
        await fs.stop()
        await ast.stop()


def _plans(accounts: list[str], n: int, talk: float = 1.5) -> list[CallPlan]:
    return [
        CallPlan(accounts[i % len(accounts)], f"1555000{i:04d}", f"1555100{i:04d}", 0.0, talk)
        for i in range(n)
    ]


def _new(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _reasons(outcomes: list[CallOutcome]) -> dict[str, int]:
    found: dict[str, int] = {}
    for outcome in outcomes:
        found[outcome.reason] = found.get(outcome.reason, 0) + 1
    return found


async def test_given_account_cps_when_mixed_calls_at_once_then_exactly_the_cps_pass(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("cps")
    accounts = [Account(id=account, rate_deck=DECK.name, cps_limit=3)]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        outcomes = await mixed.place(_plans([account], 10, talk=0.3))
        await mixed.idle()
        counted = mixed.daemon.metrics.authorizations_of(Reason.CPS_LIMIT)

    assert _reasons(outcomes) == {"OK": 3, "CPS_LIMIT": 7}
    assert counted == 7  # every denial counted in the metrics by its reason


async def test_given_reseller_cap_when_its_customers_call_on_both_switches_then_the_cap_holds(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    reseller = _new("res")
    customers = [_new("cust"), _new("cust")]
    accounts = [
        Account(id=reseller, customers_concurrency_limit=4),
        *(Account(id=c, parent_id=reseller, rate_deck=DECK.name) for c in customers),
    ]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        outcomes = await mixed.place(_plans(customers, 12))
        await mixed.idle()
        assert mixed.daemon.caps is not None
        left = await mixed.daemon.caps.live_calls(f"reseller:{reseller}")
        after = await mixed.place(_plans(customers, 2, talk=0.2))

    assert _reasons(outcomes) == {"OK": 4, "CONCURRENCY_LIMIT": 8}
    assert left == 0  # every slot released when its call was rated
    assert _reasons(after) == {"OK": 2}


async def test_given_reseller_cps_when_customers_call_at_once_then_exactly_the_cps_pass(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    reseller = _new("res")
    customers = [_new("cust"), _new("cust"), _new("cust")]
    accounts = [
        Account(id=reseller, customers_cps_limit=5),
        *(Account(id=c, parent_id=reseller, rate_deck=DECK.name) for c in customers),
    ]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        outcomes = await mixed.place(_plans(customers, 12, talk=0.3))
        await mixed.idle()

    assert _reasons(outcomes) == {"OK": 5, "CPS_LIMIT": 7}


async def test_given_capped_trunks_when_calls_overflow_then_routes_start_at_the_trunk_with_room(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("lcr")
    accounts = [Account(id=account, rate_deck=DECK.name)]
    buy = DeckInfo(name=_new("buy"), currency="USD", rounding=Rounding.UP, decimals=6)
    cheap, dear = _new("cheap"), _new("dear")
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        assert mixed.daemon.resources is not None and mixed.daemon.routes is not None
        engine = mixed.daemon.resources.engine
        await DeckStore(engine).replace(
            buy, [Rate("1", "North America", Decimal("0.10"), Decimal("0"), 1, 1, 0)]
        )
        store = CarrierStore(engine)
        await store.add(Carrier(cheap, "", buy.name, "PJSIP/{number}@cheap", concurrency_limit=2))
        await store.add(
            Carrier(dear, "", buy.name, "PJSIP/{number}@dear", priority=5, concurrency_limit=3)
        )
        await mixed.daemon.reload()
        url = f"http://127.0.0.1:{mixed.daemon.http_port}/v1/authorize"
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(
                *(
                    client.get(
                        url,
                        params={
                            "call_id": f"{account}-{i}",
                            "account": account,
                            "callee": f"1555200{i:04d}",
                            "switch_id": "http-test",
                        },
                    )
                    for i in range(8)
                )
            )
        bodies = [a.json() for a in answers]

    allowed = [b for b in bodies if b["allowed"]]
    first_routes = sorted(b["routes"][0]["carrier"] for b in allowed)
    assert first_routes == sorted([cheap, cheap, dear, dear, dear])
    assert all(len(b["routes"]) == 1 for b in allowed if b["routes"][0]["carrier"] == dear)
    assert {b["reason"] for b in bodies if not b["allowed"]} == {"CONCURRENCY_LIMIT"}


async def test_given_trial_ending_during_a_live_call_then_it_is_not_renewed_and_new_calls_denied(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("trial")
    ends = datetime.now(UTC) + timedelta(seconds=2.5)
    accounts = [Account(id=account, rate_deck=DECK.name, trial_ends_at=ends)]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        live = await run_calls(mixed.fs, _plans([account], 1, talk=8.0), cps=10)
        await mixed.idle()
        after = await run_calls(mixed.ast, _plans([account], 1, talk=0.2), cps=10)
        sessions = mixed.daemon.sessions
        assert sessions is not None
        cuts = [reason for _, _, reason in sessions.cuts]

    assert live[0].authorized and live[0].cut_by_daemon
    assert cuts == ["TRIAL_EXPIRED"]
    assert after[0].reason == "TRIAL_EXPIRED"


async def test_given_trial_account_when_converted_then_its_trial_caps_are_lifted_at_once(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("conv")
    ends = datetime.now(UTC) + timedelta(days=7)
    accounts = [Account(id=account, rate_deck=DECK.name, trial_ends_at=ends)]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        during = await mixed.place(_plans([account], 6))  # trial: 2 concurrent calls
        international = await run_calls(
            mixed.ast, [CallPlan(account, "15550001", "0044207000000", 0.0, 0.2)], cps=10
        )
        await mixed.idle()
        assert mixed.daemon.admin is not None
        await mixed.daemon.admin.convert(account)
        await asyncio.sleep(0.3)  # the directory follows SQL (refresh every 0.1 s)
        paid = await mixed.place(_plans([account], 6))
        await mixed.idle()

    assert _reasons(during) == {"OK": 2, "CONCURRENCY_LIMIT": 4}
    assert international[0].reason == "TRIAL_RESTRICTED"
    assert _reasons(paid) == {"OK": 6}


async def test_given_suspension_during_live_calls_then_they_are_cut_and_new_ones_denied(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("susp")
    accounts = [Account(id=account, rate_deck=DECK.name)]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        calls = asyncio.create_task(mixed.place(_plans([account], 2, talk=8.0)))
        sessions = mixed.daemon.sessions
        assert sessions is not None and mixed.daemon.admin is not None
        await eventually(
            lambda: sum(s.state == "answered" for s in sessions.live_sessions()) == 2
        )
        await mixed.daemon.admin.suspend(account)
        outcomes = await calls
        denied = await mixed.place(_plans([account], 2, talk=0.2))
        await mixed.daemon.admin.resume(account)
        resumed = await mixed.place(_plans([account], 2, talk=0.2))
        await mixed.idle()
        cuts = sorted(reason for _, _, reason in sessions.cuts)

    assert all(o.cut_by_daemon for o in outcomes)
    assert cuts == ["ACCOUNT_SUSPENDED", "ACCOUNT_SUSPENDED"]
    assert _reasons(denied) == {"ACCOUNT_SUSPENDED": 2}
    assert _reasons(resumed) == {"OK": 2}  # Redis has the status at once


async def test_given_keep_policy_when_suspended_then_live_calls_finish(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("keep")
    accounts = [Account(id=account, rate_deck=DECK.name)]
    async with mixed_daemon(
        tmp_path, sql_url, redis_url, accounts, suspended_live_calls="keep"
    ) as mixed:
        call = asyncio.create_task(run_calls(mixed.fs, _plans([account], 1, talk=3.0), cps=10))
        sessions = mixed.daemon.sessions
        assert sessions is not None and mixed.daemon.admin is not None
        await eventually(lambda: any(s.state == "answered" for s in sessions.live_sessions()))
        await mixed.daemon.admin.suspend(account)
        outcome = (await call)[0]
        await mixed.idle()

    assert outcome.answered and not outcome.cut_by_daemon
    assert sessions.cuts == []


async def test_given_postpaid_account_at_its_credit_limit_then_suspended_and_resumed_by_payment(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("post")
    # 0.60/min in 1 s increments: a credit limit of 0.03 pays for 3 seconds
    accounts = [
        Account(
            id=account, rate_deck=DECK.name, billing="postpaid", credit_limit_micros=30_000
        )
    ]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        first = await run_calls(mixed.ast, _plans([account], 1, talk=6.0), cps=10)
        await mixed.idle()
        assert mixed.daemon.resources is not None and mixed.daemon.admin is not None
        engine = mixed.daemon.resources.engine
        status = (await AccountStore(engine).get(account)).status  # type: ignore[union-attr]
        at_limit = await Ledger(engine).balance_micros(account)
        denied = await run_calls(mixed.fs, _plans([account], 1, talk=0.2), cps=10)
        await Ledger(engine).topup(account, Decimal("1.00"), f"payment-{account}")
        resumed_account = await mixed.daemon.admin.after_payment(account)
        await mixed.daemon.live.credit(account, 1_000_000, f"payment-{account}")  # type: ignore[union-attr]
        after = await run_calls(mixed.ast, _plans([account], 1, talk=0.2), cps=10)
        await mixed.idle()

    assert first[0].cut_by_daemon or first[0].limited_by_switch  # ran down to the limit
    assert status == "suspended"
    assert denied[0].reason == "ACCOUNT_SUSPENDED"
    assert resumed_account is not None and resumed_account.status == "active"
    assert after[0].reason == "OK"
    assert -30_000 - 10_000 <= at_limit <= -30_000  # at the limit, past it by at most 1 s


async def test_given_capped_trunks_when_mixed_calls_at_once_then_their_caps_add_up_exactly(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = _new("trunks")
    accounts = [Account(id=account, rate_deck=DECK.name)]
    buy = DeckInfo(name=_new("buy"), currency="USD", rounding=Rounding.UP, decimals=6)
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        assert mixed.daemon.resources is not None
        engine = mixed.daemon.resources.engine
        await DeckStore(engine).replace(
            buy, [Rate("1", "North America", Decimal("0.10"), Decimal("0"), 1, 1, 0)]
        )
        store = CarrierStore(engine)
        await store.add(Carrier(_new("a"), "", buy.name, "PJSIP/{number}@a", concurrency_limit=2))
        await store.add(
            Carrier(_new("b"), "", buy.name, "PJSIP/{number}@b", priority=5, cps_limit=3)
        )
        await mixed.daemon.reload()
        outcomes = await mixed.place(_plans([account], 12))
        await mixed.idle()
        assert mixed.daemon.caps is not None

    # trunk a takes 2 live calls, trunk b 3 calls in the second: 5 of 12, whatever the
    # switch; a denial carries the reason of the first trunk of the routes
    assert _reasons(outcomes) == {"OK": 5, "CONCURRENCY_LIMIT": 7}


async def test_given_an_answered_call_when_it_outlives_the_lease_then_it_keeps_its_shared_slot(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    reseller, customer = _new("res"), _new("cust")
    accounts = [
        Account(id=reseller, customers_concurrency_limit=1),
        Account(id=customer, parent_id=reseller, rate_deck=DECK.name),
    ]
    # a 2 s lease: an authorization's slot that no call answers is gone after 2 s, but an
    # answered call holds its slot until it ends
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts, lease_ttl=2) as mixed:
        long_call = asyncio.create_task(run_calls(mixed.fs, _plans([customer], 1, 5.0), cps=10))
        sessions = mixed.daemon.sessions
        assert sessions is not None
        await eventually(lambda: any(s.state == "answered" for s in sessions.live_sessions()))
        await asyncio.sleep(3.0)  # past the lease
        second = await run_calls(mixed.ast, _plans([customer], 1, 0.2), cps=10)
        first = await long_call
        await mixed.idle()

    assert first[0].authorized and first[0].answered
    assert second[0].reason == "CONCURRENCY_LIMIT"


async def test_given_more_authorizations_than_kept_then_the_oldest_are_forgotten_in_order(
    sql_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authorization_service, "PRICED_CALLS_KEPT", 3)
    reseller, customer = _new("res"), _new("cust")
    accounts = [
        Account(id=reseller, customers_concurrency_limit=50),
        Account(id=customer, parent_id=reseller, rate_deck=DECK.name),
    ]
    async with mixed_daemon(tmp_path, sql_url, redis_url, accounts) as mixed:
        service = mixed.daemon.service
        assert service is not None
        for i in range(5):
            request = AuthorizationRequest("pbx-kept", f"k{i}", customer, "1555", "15551000001")
            assert (await service.authorize(request)).allowed

        priced = [service.priced_call(f"pbx-kept:k{i}") is not None for i in range(5)]
        shared = [service.holds_shared_caps(f"pbx-kept:k{i}") for i in range(5)]

    assert priced == [False, False, True, True, True]  # the two oldest dropped, in order
    assert shared == [False, False, True, True, True]
