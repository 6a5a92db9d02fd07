"""The seat manager (``daemon.seat_manager``) over real Redis and real SQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from balance import keys
from balance.seat_sessions import SeatSessions
from balance.seats import SeatState
from connectors.events import AgentLoggedIn, AgentLoggedOut, CallStarted
from daemon.seat_manager import SeatManager
from tests.support import services

RUN = f"seatmgr-{uuid.uuid4().hex[:12]}"
AT = Decimal("1764000000.250000")  # switch epoch seconds
AT_US = 1_764_000_000_250_000


def new_tenant() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def _delete_tenants(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


@dataclass
class Hooks:
    """The switch side of the manager: limits per tenant, logoffs and notifications seen."""

    limits: dict[str, int | None] = field(default_factory=dict)
    logoffs: list[tuple[str, str]] = field(default_factory=list)
    notified: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    fail_logoff: bool = False

    async def seat_limit(self, tenant: str) -> int | None:
        return self.limits[tenant]  # KeyError is a LookupError: unknown tenant

    async def logoff(self, switch_id: str, seat: str) -> None:
        self.logoffs.append((switch_id, seat))
        if self.fail_logoff:
            raise ConnectionError(f"switch {switch_id} unreachable")

    def notify(self, name: str, tenant: str, payload: dict[str, object]) -> None:
        self.notified.append((name, tenant, payload))

    def names(self) -> list[str]:
        return [name for name, _tenant, _payload in self.notified]


@dataclass
class Harness:
    hooks: Hooks
    state: SeatState
    sessions: SeatSessions
    manager: SeatManager

    def new_manager(self) -> SeatManager:
        return SeatManager(
            self.state,
            self.sessions,
            seat_limit=self.hooks.seat_limit,
            logoff=self.hooks.logoff,
            notify=self.hooks.notify,
        )


@pytest.fixture
async def harness(redis_client: aioredis.Redis, sql_engine: AsyncEngine) -> AsyncIterator[Harness]:
    hooks = Hooks()
    state = SeatState(redis_client)
    sessions = SeatSessions(sql_engine)
    manager = SeatManager(
        state, sessions, seat_limit=hooks.seat_limit, logoff=hooks.logoff, notify=hooks.notify
    )
    try:
        yield Harness(hooks, state, sessions, manager)
    finally:
        await state.aclose()


def login(tenant: str, agent: str, at: Decimal = AT, switch: str = "pbx-1") -> AgentLoggedIn:
    return AgentLoggedIn(switch, tenant, agent, at, name=f"name of {agent}")


def logout(tenant: str, agent: str, at: Decimal, switch: str = "pbx-1") -> AgentLoggedOut:
    return AgentLoggedOut(switch, tenant, agent, at)


async def test_given_limit_k_when_20_agents_log_in_at_once_then_exactly_the_rest_are_logged_off(
    harness: Harness,
) -> None:
    tenant, k = new_tenant(), 5
    harness.hooks.limits[tenant] = k
    agents = [f"Agent:{i}" for i in range(20)]

    with capture_logs() as logs:
        await asyncio.gather(*(harness.manager.handle(login(tenant, a)) for a in agents))

    live = set(await harness.state.live(tenant))
    open_rows = await harness.sessions.open_sessions()
    refused = [s for s in await harness.sessions.list(tenant) if s.end_reason == "refused"]
    assert len(live) == k
    assert {s.seat for s in open_rows if s.tenant == tenant} == live
    assert sorted(harness.hooks.logoffs) == sorted(("pbx-1", a) for a in agents if a not in live)
    assert {s.seat for s in refused} == set(agents) - live
    assert all(s.started_at_us == s.ended_at_us == AT_US for s in refused)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 20 - k
    assert all(e["tenant"] == tenant and e["limit"] == k for e in warnings)
    assert {e["seat"] for e in warnings} == set(agents) - live
    assert sorted(harness.hooks.names()) == ["seat_logged_in"] * k + ["seat_refused"] * (20 - k)


async def test_given_a_seat_logs_out_then_its_session_closes_and_its_place_is_free(
    harness: Harness,
) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 1
    await harness.manager.handle(login(tenant, "Agent:1"))

    await harness.manager.handle(logout(tenant, "Agent:1", AT + 60))
    await harness.manager.handle(logout(tenant, "Agent:1", AT + 60))  # replayed: nothing
    await harness.manager.handle(login(tenant, "Agent:2", AT + 61))

    sessions = await harness.sessions.list(tenant)
    assert [(s.seat, s.ended_at_us, s.end_reason) for s in sessions] == [
        ("Agent:1", AT_US + 60_000_000, "logoff"),
        ("Agent:2", None, ""),
    ]
    assert set(await harness.state.live(tenant)) == {"Agent:2"}
    assert harness.hooks.logoffs == []
    assert harness.hooks.names() == ["seat_logged_in", "seat_logged_out", "seat_logged_in"]


async def test_given_a_relogin_or_a_replay_then_the_seat_counts_once(harness: Harness) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 1
    await harness.manager.handle(login(tenant, "Agent:1"))
    await harness.manager.handle(login(tenant, "Agent:1", AT + 5))  # ALREADY
    await harness.manager.handle(logout(tenant, "Agent:1", AT + 9))
    await harness.manager.handle(login(tenant, "Agent:1"))  # a replay of the first login

    assert await harness.state.count(tenant) == 0
    sessions = await harness.sessions.list(tenant)
    assert [(s.started_at_us, s.end_reason) for s in sessions] == [(AT_US, "logoff")]
    assert harness.hooks.logoffs == []


async def test_given_a_failing_logoff_hook_then_the_refusal_is_still_recorded(
    harness: Harness,
) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 0
    harness.hooks.fail_logoff = True

    with capture_logs() as logs:
        await harness.manager.handle(login(tenant, "Agent:1"))

    assert harness.hooks.logoffs == [("pbx-1", "Agent:1")]
    assert [s.end_reason for s in await harness.sessions.list(tenant)] == ["refused"]
    assert harness.hooks.names() == ["seat_refused"]
    failed = [e for e in logs if e["event"] == "logoff of a refused seat failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"


async def test_given_no_tenant_or_an_unknown_one_then_recorded_never_refused_warned_once(
    harness: Harness,
) -> None:
    unknown = new_tenant()  # not in the limits

    with capture_logs() as logs:
        for _ in range(3):
            await harness.manager.handle(login("", "SIP/1001"))
            await harness.manager.handle(login(unknown, "SIP/1002"))
        await harness.manager.handle(logout("", "SIP/1001", AT + 30))

    assert harness.hooks.logoffs == []
    assert [(s.seat, s.end_reason) for s in await harness.sessions.list("")] == [
        ("SIP/1001", "logoff")
    ]
    assert [s.seat for s in await harness.sessions.list(unknown)] == ["SIP/1002"]
    assert await harness.state.count(unknown) == 0
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert sorted(warnings) == [
        "seat of an unknown tenant: recorded, never refused",
        "seat without tenant: recorded, never refused",
    ]


async def test_given_the_pre_login_ask_then_holds_are_counted_and_converted(
    harness: Harness,
) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 2
    manager = harness.manager

    assert await manager.authorize_agent(tenant, "Agent:1") == (True, "OK")
    assert await manager.authorize_agent(tenant, "Agent:2") == (True, "OK")
    assert await manager.authorize_agent(tenant, "Agent:3") == (False, "SEAT_LIMIT")
    assert await manager.authorize_agent(new_tenant(), "Agent:1") == (False, "UNKNOWN_ACCOUNT")
    assert await manager.authorize_agent("", "Agent:1") == (True, "OK")

    await manager.handle(login(tenant, "Agent:3"))  # logged in anyway: logged off
    await manager.handle(login(tenant, "Agent:1"))  # converts its hold

    assert harness.hooks.logoffs == [("pbx-1", "Agent:3")]
    assert set(await harness.state.live(tenant)) == {"Agent:1"}


async def test_given_50_parallel_asks_then_exactly_the_limit_is_allowed(harness: Harness) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 6
    answers = await asyncio.gather(
        *(harness.manager.authorize_agent(tenant, f"Agent:{i}") for i in range(50))
    )
    assert answers.count((True, "OK")) == 6
    assert answers.count((False, "SEAT_LIMIT")) == 44


async def test_given_redis_lost_when_restored_then_sql_open_sessions_are_live_again(
    harness: Harness, redis_client: aioredis.Redis
) -> None:
    tenant = new_tenant()
    harness.hooks.limits[tenant] = 2
    await harness.manager.handle(login(tenant, "Agent:1"))
    await harness.manager.handle(login(tenant, "Agent:2", AT + 1))
    await harness.manager.handle(login(tenant, "Agent:2", AT + 2, switch="pbx-2"))  # same seat
    await redis_client.delete(keys.seats_key(tenant))  # Redis lost its state

    restarted = harness.new_manager()
    restored = await restarted.restore()

    assert restored == 2
    live = await harness.state.live(tenant)
    assert {s: (v.switch_id, v.since_us) for s, v in live.items()} == {
        "Agent:1": ("pbx-1", AT_US),
        "Agent:2": ("pbx-1", AT_US + 1_000_000),
    }
    await restarted.handle(login(tenant, "Agent:3", AT + 3))
    assert harness.hooks.logoffs == [("pbx-1", "Agent:3")]


async def test_given_other_events_then_they_are_ignored(harness: Harness) -> None:
    event = CallStarted("pbx-1", "c1", "l1", "SIP/x", "acme", "100", "200", AT)
    await harness.manager.handle(event)
    assert harness.hooks.notified == []
