"""Routes: accounts (create, list, show, change, suspend, resume) and resellers' customers.

Changes go to SQL first, then the account's hot state is reloaded into Redis
(``AccountAdmin``), as the CLI does, so the next authorization sees them.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query

from balance.accounts import (
    Account,
    AccountExists,
    InvalidAccount,
    UnknownAccount,
    validate,
)
from balance.api_keys import Principal
from daemon.account_admin import CAP_FIELDS as ADMIN_CAP_FIELDS
from daemon.account_admin import OPERATOR_REASON
from daemon.api.auth import Caller, Context, Visible, Writable, Writer
from daemon.api.errors import ApiError, FieldError, forbidden, unknown_account
from daemon.api.schemas import (
    MAX_PAGE,
    AccountCreate,
    AccountDetail,
    AccountList,
    AccountOut,
    AccountPatch,
    responses,
)
from daemon.api.scope import AccountPage
from daemon.api.views import API_FIELD_OF, account_detail, account_out
from tariffs.money import to_micros

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1")

RESELLER_REASON = "reseller"
_RANK = {RESELLER_REASON: 1, OPERATOR_REASON: 2}  # a suspension's reason only goes up
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Accounts per page.")]
Cursor = Annotated[
    str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
]


def _micros(text: str) -> int:
    return to_micros(Decimal(text))


def _account_changes(body: AccountCreate | AccountPatch, names: set[str]) -> dict[str, Any]:
    """The body's fields (those in ``names``) as ``Account`` field values."""
    changes: dict[str, Any] = {}
    for name in sorted(names):
        value = getattr(body, name)
        if name == "credit_limit":
            changes["credit_limit_micros"] = _micros(value)
        elif name == "overage_rate":
            changes["overage_rate_micros"] = None if value is None else _micros(value)
        else:
            changes[name] = value
    return changes


def _invalid(exc: InvalidAccount) -> FieldError:
    message = str(exc).removeprefix(f"{exc.field}: ")
    return FieldError(API_FIELD_OF.get(exc.field, exc.field), message)


async def _with_balance(context: Context, account: Account) -> AccountOut:
    balance = (await context.scope.balances([account.id]))[account.id]
    return account_out(account, balance)


async def _page_out(context: Context, page: AccountPage) -> AccountList:
    balances = await context.scope.balances([a.id for a in page.accounts])
    items = [account_out(a, balances[a.id]) for a in page.accounts]
    return AccountList(items=items, next_cursor=page.next_cursor)


@router.post(
    "/accounts",
    status_code=201,
    response_model=AccountOut,
    responses=responses(401, 403, 409),
    tags=["accounts"],
    summary="Create an account",
)
async def create_account(body: AccountCreate, principal: Writer, context: Context) -> AccountOut:
    """Operator: any account. Reseller: a customer under itself (or under a descendant)."""
    parent = body.parent_id
    if principal.role == "reseller" and parent is None:
        parent = principal.account_id
    if parent is not None and await context.scope.visible(principal, parent) is None:
        raise FieldError("parent_id", f"unknown account: {parent!r}", "unknown_account")
    fields = set(AccountCreate.model_fields) - {"id", "parent_id"}
    account = Account(id=body.id, parent_id=parent, **_account_changes(body, fields))
    try:
        created = await context.accounts.create(account)
    except AccountExists as exc:
        raise ApiError(409, "ACCOUNT_EXISTS", f"account exists: {body.id!r}") from exc
    except InvalidAccount as exc:
        raise _invalid(exc) from exc
    except UnknownAccount as exc:  # the parent went away meanwhile
        raise FieldError("parent_id", f"unknown account: {parent!r}", "unknown_account") from exc
    await context.admin.sync(created)
    context.changed(created)
    log.info("api account created", account_id=created.id, parent_id=parent,
             key_prefix=principal.key_prefix)  # fmt: skip
    return account_out(created, 0)


@router.get(
    "/accounts",
    response_model=AccountList,
    responses=responses(401),
    tags=["accounts"],
    summary="List the accounts the key sees",
)
async def list_accounts(
    principal: Caller, context: Context, limit: Limit = 100, cursor: Cursor = None
) -> AccountList:
    """Ordered by id. Operator: all; reseller: itself and its descendants; customer: itself."""
    page = await context.scope.page(principal, limit=limit, cursor=cursor)
    return await _page_out(context, page)


@router.get(
    "/accounts/{account_id}",
    response_model=AccountDetail,
    responses=responses(401, 404),
    tags=["accounts"],
    summary="Show an account with its live state",
)
async def show_account(target: Visible, context: Context) -> AccountDetail:
    """The account, its ledger balance, and from Redis its live balance, reservations and
    live calls."""
    account = target.account
    balance = (await context.scope.balances([account.id]))[account.id]
    snapshot = await context.live.snapshot(account.id)
    return account_detail(account, balance, snapshot)


@router.patch(
    "/accounts/{account_id}",
    response_model=AccountOut,
    responses=responses(401, 403, 404),
    tags=["accounts"],
    summary="Change an account's name, credit limit or caps",
)
async def update_account(body: AccountPatch, target: Writable, context: Context) -> AccountOut:
    """Fields left out are unchanged; a cap set to null is lifted."""
    current = target.account
    changes = _account_changes(body, set(body.model_fields_set))
    try:
        validate(replace(current, **changes))  # every field checked before anything is written
    except InvalidAccount as exc:
        raise _invalid(exc) from exc
    caps = {name: value for name, value in changes.items() if name in ADMIN_CAP_FIELDS}
    plain = {name: value for name, value in changes.items() if name not in caps}
    try:
        account = current
        if plain:
            account = await context.accounts.update(current.id, **plain)
        if caps:
            account = await context.admin.set_caps(current.id, **caps)
        else:
            await context.admin.sync(account)
    except InvalidAccount as exc:
        raise _invalid(exc) from exc
    except UnknownAccount as exc:
        raise unknown_account(current.id) from exc
    context.changed(account)
    log.info("api account updated", account_id=account.id, fields=sorted(changes),
             key_prefix=target.principal.key_prefix)  # fmt: skip
    return await _with_balance(context, account)


def _refuse_closed(account: Account) -> None:
    if account.status == "closed":
        raise ApiError(409, "ACCOUNT_CLOSED", f"account {account.id!r} is closed")


def _reason_of(principal: Principal) -> str:
    return OPERATOR_REASON if principal.role == "operator" else RESELLER_REASON


@router.post(
    "/accounts/{account_id}/suspend",
    response_model=AccountOut,
    responses=responses(401, 403, 404, 409),
    tags=["accounts"],
    summary="Suspend an account",
)
async def suspend_account(target: Writable, context: Context) -> AccountOut:
    """New calls are denied ``ACCOUNT_SUSPENDED``; live calls are cut per the caps policy.

    The reason kept is ``operator`` or ``reseller``: a payment lifts neither (it lifts
    only a ``credit_limit`` suspension). Suspending a suspended account only raises its
    reason (credit_limit < reseller < operator), so a reseller cannot turn an operator's
    suspension into one it may lift."""
    account, principal = target.account, target.principal
    _refuse_closed(account)
    reason = _reason_of(principal)
    already = account.status == "suspended"
    if not already or _RANK.get(reason, 0) > _RANK.get(account.status_reason, 0):
        account = await context.admin.suspend(account.id, reason)
        context.changed(account)
        log.info("api account suspended", account_id=account.id, reason=reason,
                 key_prefix=principal.key_prefix)  # fmt: skip
    return await _with_balance(context, account)


@router.post(
    "/accounts/{account_id}/resume",
    response_model=AccountOut,
    responses=responses(401, 403, 404, 409),
    tags=["accounts"],
    summary="Resume a suspended account",
)
async def resume_account(target: Writable, context: Context) -> AccountOut:
    """A reseller cannot lift the operator's suspension (403). Resuming an active account
    changes nothing."""
    account, principal = target.account, target.principal
    _refuse_closed(account)
    if account.status == "suspended":
        if principal.role != "operator" and account.status_reason == OPERATOR_REASON:
            raise forbidden("only an operator lifts an operator's suspension")
        account = await context.admin.resume(account.id)
        context.changed(account)
        log.info("api account resumed", account_id=account.id,
                 key_prefix=principal.key_prefix)  # fmt: skip
    return await _with_balance(context, account)


@router.get(
    "/resellers/{account_id}/customers",
    response_model=AccountList,
    responses=responses(401, 404),
    tags=["resellers"],
    summary="List a reseller's customers",
)
async def list_customers(
    target: Visible, context: Context, limit: Limit = 100, cursor: Cursor = None
) -> AccountList:
    """The direct customers of the reseller, ordered by id (a customer key sees none)."""
    page = await context.scope.page(
        target.principal, limit=limit, cursor=cursor, parent_id=target.account.id
    )
    return await _page_out(context, page)
