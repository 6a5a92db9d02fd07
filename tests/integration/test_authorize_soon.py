"""``AuthorizationService.decide_soon``, the switches' hot path without a task, on real
SQL and Redis: the same decisions as the whole way of ``authorize``, I1 under
concurrency, counted once, a Redis failure handed to the listener, declined (nothing
done) for the calls it does not take."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from balance import keys
from balance.live import LiveState, LiveStateUnavailable
from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason
from daemon.authorization_service import AuthorizationService
from daemon.metrics import Metrics
from tests.support import services
from tests.support.authorization_build import build_service
from tests.support.mqtt import free_port

GUARD = 10.0  # hang guard only
DEBIT_INTERVAL = 30
SLICE = Decimal("0.30")  # the first slice: 30 s at 0.60/min
RUN = f"soon-{uuid.uuid4().hex[:10]}"  # every account of this module starts with it


def new_account() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:8]}"


def call(account: str, callee: str = "15551234567") -> AuthorizationRequest:
    return AuthorizationRequest(
        switch_id="pbx-soon",
        call_id=uuid.uuid4().hex,
        account=account,
        caller="1000",
        callee=callee,
    )


@pytest.fixture(scope="module", autouse=True)
def _delete_accounts(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


Build = Callable[[dict[str, Decimal]], Awaitable[AuthorizationService]]


@pytest.fixture
async def live(redis_client: aioredis.Redis) -> AsyncIterator[LiveState]:
    state = LiveState(redis_client, lease_ttl=60)
    try:
        yield state
    finally:
        await state.aclose()


@pytest.fixture
def build(sql_engine: AsyncEngine, live: LiveState) -> Build:
    async def built(balances: dict[str, Decimal]) -> AuthorizationService:
        return await build_service(sql_engine, live, balances, debit_interval=DEBIT_INTERVAL)

    return built


class Listener:
    """Records what ``decide_soon`` tells it; ``answer`` waits for the one answer."""

    def __init__(self) -> None:
        self.decisions: list[AuthorizationDecision] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()

    def decided(self, decision: AuthorizationDecision) -> None:
        self.decisions.append(decision)
        self.done.set()

    def failed(self, error: BaseException) -> None:
        self.errors.append(error)
        self.done.set()

    async def answer(self) -> AuthorizationDecision | BaseException:
        await asyncio.wait_for(self.done.wait(), GUARD)
        await asyncio.sleep(0.01)  # a second answer would come by now
        [answer] = [*self.decisions, *self.errors]
        return answer


async def decided_soon(service: AuthorizationService, request: AuthorizationRequest) -> object:
    listener = Listener()
    assert service.decide_soon(request, listener) is True
    return await listener.answer()


def comparable(decision: AuthorizationDecision) -> tuple[object, ...]:
    return decision.allowed, decision.reason, decision.max_usage, decision.rate, decision.routes


async def test_given_plain_calls_when_decided_soon_then_same_decisions_as_the_whole_way(
    build: Build,
) -> None:
    cases = {  # balance -> what it comes to
        "rich": Decimal("100"),  # the whole slice, max_usage from the credit
        "short": Decimal("0.05"),  # less than a slice: the shorter call (a second reserve)
        "broke": Decimal("0"),  # not one increment: INSUFFICIENT_CREDIT
    }
    soon = {name: new_account() for name in cases}
    whole = {name: new_account() for name in cases}
    service = await build(
        {soon[n]: b for n, b in cases.items()} | {whole[n]: b for n, b in cases.items()}
    )

    answers: dict[str, tuple[object, ...]] = {}
    for name in cases:
        answer = await decided_soon(service, call(soon[name]))
        assert isinstance(answer, AuthorizationDecision), answer
        answers[name] = comparable(answer)
        expected = comparable(await service._authorize(call(whole[name])))
        assert answers[name] == expected, name
    no_rate = await decided_soon(service, call(soon["rich"], callee="999"))

    assert answers["rich"][:3] == (True, Reason.OK, 3600)
    assert answers["short"][:3] == (True, Reason.OK, 5)  # 0.05 at 0.60/min
    assert answers["broke"][:2] == (False, Reason.INSUFFICIENT_CREDIT)
    assert isinstance(no_rate, AuthorizationDecision) and no_rate.reason is Reason.NO_RATE
    held = await service._live.snapshot(soon["short"])
    assert held is not None and held.reserved_micros == 50_000  # the shorter call's


async def test_given_credit_for_k_slices_when_50_decided_soon_at_once_then_exactly_k_allowed(
    build: Build,
) -> None:
    account, k = new_account(), 7
    service = await build({account: SLICE * k + Decimal("0.000001") * 9})  # < 1 s more
    listeners = [Listener() for _ in range(50)]

    started = [service.decide_soon(call(account), listener) for listener in listeners]
    answers = [await listener.answer() for listener in listeners]

    assert started == [True] * 50
    assert all(isinstance(a, AuthorizationDecision) for a in answers)
    allowed = [a for a in answers if isinstance(a, AuthorizationDecision) and a.allowed]
    assert len(allowed) == k
    snap = await service._live.snapshot(account)
    assert snap is not None and snap.reserved_micros == k * 300_000 == sum(snap.calls.values())


async def test_given_metrics_and_denial_hook_when_decided_soon_then_each_counted_once(
    build: Build,
) -> None:
    rich, broke = new_account(), new_account()
    service = await build({rich: Decimal("10"), broke: Decimal("0")})
    service.metrics = Metrics()
    denied: list[tuple[str, Reason]] = []
    service.on_denial = lambda request, decision: denied.append((request.account, decision.reason))

    for request in (call(rich), call(broke), call(rich, callee="999")):
        await decided_soon(service, request)

    assert service.metrics.authorizations_of(Reason.OK) == 1
    assert service.metrics.authorizations_of(Reason.INSUFFICIENT_CREDIT) == 1
    assert service.metrics.authorizations_of(Reason.NO_RATE) == 1
    assert denied == [(broke, Reason.INSUFFICIENT_CREDIT), (rich, Reason.NO_RATE)]


async def test_given_redis_unreachable_when_decided_soon_then_listener_told_the_failure(
    build: Build,
) -> None:
    account = new_account()
    service = await build({account: Decimal("10")})
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    unreachable = LiveState(dead, lease_ttl=60)
    cut_off = AuthorizationService(
        service._accounts, service.catalog, unreachable, service.policy
    )
    try:
        answer = await decided_soon(cut_off, call(account))
    finally:
        await unreachable.aclose()
        await dead.aclose()

    assert isinstance(answer, LiveStateUnavailable), answer
    assert "reserve" in str(answer)


async def test_given_calls_the_common_path_does_not_take_when_decided_soon_then_declined(
    build: Build, live: LiveState, redis_client: aioredis.Redis
) -> None:
    cached = new_account()
    service = await build({cached: Decimal("10")})
    stranger = call(f"{RUN}-never-created")  # not in the directory's cache: a SQL read
    listener = Listener()

    assert service.decide_soon(stranger, listener) is False
    unbatched = LiveState(redis_client, lease_ttl=60, batch=False)
    direct = AuthorizationService(service._accounts, service.catalog, unbatched, service.policy)
    assert direct.decide_soon(call(cached), listener) is False
    await asyncio.sleep(0.05)
    assert not listener.decisions and not listener.errors
    snap = await live.snapshot(cached)
    assert snap is not None and snap.calls == {}
