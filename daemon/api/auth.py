"""Authentication and scoping of the management API (FastAPI dependencies).

A request carries its API key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
No key, or an unknown or revoked one, is 401. The key's :class:`Principal` decides the
scope:

- ``operator``: every account, read and write;
- ``reseller``: its own account (read) and every descendant (read and write);
- ``customer``: its own account, read-only.

An account out of scope is 404, exactly as an unknown one (existence is not revealed);
a write the role may not make is 403, checked before the account is looked up, so a
read-only key learns nothing from a write either. Keys are never logged: only their
prefix (``balance.api_keys.key_prefix``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from balance.accounts import Account
from balance.api_keys import Principal, key_prefix
from daemon.api.context import ApiContext, api_context
from daemon.api.errors import ApiError, forbidden, unknown_account

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <api key>`"
)
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="`X-API-Key: <api key>`"
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

Context = Annotated[ApiContext, Depends(api_context)]
AccountId = Annotated[str, Path(min_length=1, max_length=64, description="The account id.")]


async def authenticate(
    request: Request,
    context: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    """The principal of the request's API key; 401 without a valid one."""
    presented = bearer.credentials if bearer is not None else header_key
    if not presented:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            _CHALLENGE,
        )
    principal = await context.keys.verify(presented)
    if principal is None:
        log.warning(
            "api key refused",
            key_prefix=key_prefix(presented),
            method=request.method,
            path=request.url.path,
        )
        raise ApiError(401, "UNAUTHENTICATED", "invalid or revoked API key", _CHALLENGE)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require_writer(principal: Caller) -> Principal:
    """403 for a read-only (customer) key."""
    if principal.read_only:
        raise forbidden(f"a {principal.role} key is read-only")
    return principal


Writer = Annotated[Principal, Depends(require_writer)]


def may_write(principal: Principal, account: Account) -> bool:
    """Whether the principal may change this (visible) account.

    A reseller changes its descendants, not itself: its own caps, credit and balance are
    its reseller's or the operator's business.
    """
    if principal.role == "operator":
        return True
    return principal.role == "reseller" and account.id != principal.account_id


@dataclass(frozen=True, slots=True)
class Target:
    """The account a request is about, and who asks."""

    account: Account
    principal: Principal


async def visible_account(account_id: AccountId, principal: Caller, context: Context) -> Target:
    """The path's account if the key sees it; 404 otherwise."""
    account = await context.scope.visible(principal, account_id)
    if account is None:
        raise unknown_account(account_id)
    return Target(account, principal)


async def writable_account(account_id: AccountId, principal: Writer, context: Context) -> Target:
    """The path's account if the key may change it; 403 (read-only, own account) or 404."""
    target = await visible_account(account_id, principal, context)
    if not may_write(principal, target.account):
        raise forbidden(f"a {principal.role} key cannot change its own account")
    return target


Visible = Annotated[Target, Depends(visible_account)]
Writable = Annotated[Target, Depends(writable_account)]
