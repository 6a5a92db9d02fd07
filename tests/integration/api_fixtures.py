"""A management API over real SQL and Redis, with two resellers, their customers and keys.

The world (ids unique per test, Redis never flushed)::

    reseller A ── customer A ── sub-customer A   (A's customer resells too)
    reseller B ── customer B

Keys: operator, reseller A, reseller B, customer A, customer B, and a revoked reseller A
key. ``World.call(who, method, path, ...)`` sends a request as one of them (``none``:
without a key).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.api_keys import ApiKeyStore
from balance.denials import DenialCounter
from balance.live import LiveState
from balance.seats import SeatState
from daemon.account_admin import AccountAdmin
from daemon.api.app import build_api
from daemon.caps_policy import CapsPolicy

PRINCIPALS = ("operator", "reseller_a", "reseller_b", "customer_a", "customer_b", "none", "revoked")


@dataclass
class World:
    """The app, its client, the accounts and the keys of one test."""

    app: FastAPI
    client: httpx.AsyncClient
    engine: AsyncEngine
    live: LiveState
    admin: AccountAdmin
    ids: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    seats: SeatState | None = None
    denials: DenialCounter | None = None

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        """Headers of a request sent as ``who``."""
        headers = dict(extra)
        if who != "none":
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return headers

    async def call(
        self,
        who: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send one request as ``who``."""
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return await self.client.request(
            method, path, json=json, params=params, headers=self.headers(who, **extra)
        )

    async def send(
        self,
        who: str,
        method: str,
        path: str,
        *,
        content: str | bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with a raw body (a CSV upload) as ``who``."""
        return await self.client.request(
            method,
            path,
            content=content,
            params=params,
            headers=self.headers(who, **(headers or {})),
        )

    async def add_account(self, account_id: str, parent_id: str | None, **fields: Any) -> Account:
        """Create an account in SQL and load its hot state into Redis."""
        account = await AccountStore(self.engine).create(
            Account(id=account_id, parent_id=parent_id, **fields)
        )
        await self.admin.sync(account)
        return account


def unique(label: str) -> str:
    """An account id of its own for this test."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(name="world")
async def world_fixture(
    sql_engine: AsyncEngine, redis_client: aioredis.Redis
) -> AsyncIterator[World]:
    """The API and its world on the test's SQL database and Redis."""
    live = LiveState(redis_client)
    admin = AccountAdmin(sql_engine, live, CapsPolicy())
    seats = SeatState(redis_client)
    denials = DenialCounter(redis_client)
    app = build_api(sql_engine, live, admin, seats=seats, denials=denials)
    ids = {
        "reseller_a": unique("ra"),
        "customer_a": unique("ca"),
        "sub_a": unique("sa"),
        "reseller_b": unique("rb"),
        "customer_b": unique("cb"),
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        w = World(app, client, sql_engine, live, admin, ids, seats=seats, denials=denials)
        await w.add_account(ids["reseller_a"], None, name="Reseller A")
        await w.add_account(ids["customer_a"], ids["reseller_a"], name="Customer A")
        await w.add_account(ids["sub_a"], ids["customer_a"], name="Sub-customer A")
        await w.add_account(ids["reseller_b"], None, name="Reseller B")
        await w.add_account(ids["customer_b"], ids["reseller_b"], name="Customer B")
        store = ApiKeyStore(sql_engine)
        w.keys["operator"] = (await store.create("operator", None, "ops"))[1]
        for who in ("reseller_a", "reseller_b"):
            w.keys[who] = (await store.create("reseller", ids[who], who))[1]
        for who in ("customer_a", "customer_b"):
            w.keys[who] = (await store.create("customer", ids[who], who))[1]
        revoked, w.keys["revoked"] = await store.create("reseller", ids["reseller_a"], "old")
        await store.revoke(revoked.id)
        try:
            yield w
        finally:
            await denials.aclose()
            await seats.aclose()
            await live.aclose()
