"""AccountStore on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountExists, AccountStore, InvalidAccount, UnknownAccount


def _id(tag: str = "acc") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


async def test_given_new_account_when_created_then_it_reads_back_identically(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    account = Account(
        id=_id(),
        name="Call center Nord",
        currency="EUR",
        billing="postpaid",
        credit_limit_micros=5_000_000,
        concurrency_limit=30,
        rate_deck="retail-eu",
        timezone="Europe/Paris",
    )
    created = await store.create(account)
    assert created.created_at is not None and created.created_at.tzinfo is not None
    assert await store.get(account.id) == created
    assert await store.get("missing") is None


async def test_given_existing_id_when_created_again_then_account_exists(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    account = Account(id=_id())
    await store.create(account)
    with pytest.raises(AccountExists, match=account.id):
        await store.create(account)


async def test_given_unknown_parent_when_created_then_unknown_account(
    sql_engine: AsyncEngine,
) -> None:
    with pytest.raises(UnknownAccount, match="no-such-reseller"):
        await AccountStore(sql_engine).create(Account(id=_id(), parent_id="no-such-reseller"))


async def test_given_reseller_when_children_listed_then_only_its_children(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    reseller = await store.create(Account(id=_id("res")))
    kids = [await store.create(Account(id=_id("kid"), parent_id=reseller.id)) for _ in range(3)]
    other = await store.create(Account(id=_id("other")))
    children = await store.list(parent_id=reseller.id)
    assert [a.id for a in children] == sorted(k.id for k in kids)
    everyone = {a.id for a in await store.list()}
    assert everyone >= {reseller.id, other.id, *(k.id for k in kids)}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "has space"),
        ("id", "sys:revenue"),
        ("currency", "eur"),
        ("billing", "credit"),
        ("status", "frozen"),
        ("credit_limit_micros", -1),
        ("concurrency_limit", -5),
        ("timezone", "Mars/Olympus"),
    ],
)
async def test_given_invalid_field_when_created_then_error_names_the_field(
    sql_engine: AsyncEngine, field: str, value: object
) -> None:
    fields: dict[str, object] = {"id": _id(), field: value}
    with pytest.raises(InvalidAccount) as caught:
        await AccountStore(sql_engine).create(Account(**fields))  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


async def test_given_account_when_status_and_fields_changed_then_changes_persist(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    created = await store.create(Account(id=_id()))
    suspended = await store.set_status(created.id, "suspended")
    assert suspended.status == "suspended"
    updated = await store.update(created.id, credit_limit_micros=1_000, concurrency_limit=None)
    assert await store.get(created.id) == updated
    assert (updated.status, updated.credit_limit_micros) == ("suspended", 1_000)
    assert updated.updated_at is not None and created.updated_at is not None
    assert updated.updated_at >= created.updated_at
    assert updated.created_at == created.created_at


async def test_given_bad_update_when_applied_then_named_error_and_nothing_changes(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    created = await store.create(Account(id=_id()))
    with pytest.raises(InvalidAccount, match=r"^status:"):
        await store.set_status(created.id, "gone")
    with pytest.raises(InvalidAccount, match=r"^created_at:"):
        await store.update(created.id, created_at=None)
    with pytest.raises(UnknownAccount):
        await store.set_status("nobody", "closed")
    assert await store.get(created.id) == created


async def test_given_reseller_chain_when_parent_set_to_descendant_then_cycle_refused(
    sql_engine: AsyncEngine,
) -> None:
    store = AccountStore(sql_engine)
    top = await store.create(Account(id=_id("top")))
    mid = await store.create(Account(id=_id("mid"), parent_id=top.id))
    with pytest.raises(InvalidAccount, match="cycle"):
        await store.update(top.id, parent_id=mid.id)
