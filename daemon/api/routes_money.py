"""Routes: top-ups and adjustments, idempotent by the ``Idempotency-Key`` header.

The header is required (a 422 names it when missing). A key applies once per account:
the ledger key is ``api:<account>:<Idempotency-Key>``, so two tenants using the same
key never collide, nor learn of each other. A retried request gets the first answer:
the same body, with status 200 instead of 201 and ``Idempotent-Replayed: true``; the
same key with another amount is 409 ``IDEMPOTENCY_CONFLICT``.

After the SQL ledger (the truth), the hot balance in Redis follows as the CLI does: a
credit is added once per key (``LiveState.credit``; a retry repairs a request that died
in between), a debit reloads the account's hot state from SQL (``AccountAdmin.sync``:
``LiveState`` has no debit-once script). Then a payment may lift a credit-limit
suspension (``AccountAdmin.after_payment``) and a debit may impose one
(``AccountAdmin.check_postpaid``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, TypeVar

import structlog
from fastapi import APIRouter, Header, Response

from balance import keys
from balance.accounts import Account, UnknownAccount
from balance.ledger import IdempotencyConflict, InvalidAmount, PostingResult
from daemon.api.auth import Context, Writable
from daemon.api.errors import ApiError, FieldError, unknown_account
from daemon.api.schemas import AdjustmentIn, MoneyIn, PostingOut, responses, to_decimal
from daemon.api.views import posting_out
from storage.tables import utcnow

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["money"])

REPLAY_HEADER = "Idempotent-Replayed"
# a replay older than Redis remembers its credit marker must not credit again
_LIVE_REPLAY_WINDOW = timedelta(seconds=keys.CREDIT_MARKER_TTL_SECONDS) - timedelta(hours=1)

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Required. 1-128 visible ASCII characters, unique per operation "
        "(a UUID): a retry with the same key gets the first answer.",
    ),
]

_MONEY_RESPONSES = {
    **responses(401, 403, 404, 409),
    200: {
        "model": PostingOut,
        "description": "A replay: this key was already applied; the first answer again.",
        "headers": {REPLAY_HEADER: {"description": "`true`", "schema": {"type": "string"}}},
    },
}


def _check_currency(currency: str, account: Account) -> None:
    if currency != account.currency:
        raise FieldError(
            "currency", f"the account is in {account.currency}, not {currency}", "currency"
        )


def _ledger_key(account: Account, client_key: str) -> str:
    return f"api:{account.id}:{client_key}"


def _answer(response: Response, result: PostingResult) -> None:
    if result.replayed:
        response.status_code = 200
        response.headers[REPLAY_HEADER] = "true"


async def _credit_live(context: Context, result: PostingResult, live_key: str) -> None:
    if result.replayed and utcnow() - result.created_at > _LIVE_REPLAY_WINDOW:
        log.info("old replay: hot balance left as is", account_id=result.account_id)
        return
    await context.live.credit(result.account_id, result.amount_micros, live_key)


async def _after_credit(context: Context, account_id: str) -> None:
    resumed = await context.admin.after_payment(account_id)
    if resumed is not None:
        context.changed(resumed)


R = TypeVar("R", bound=PostingResult)


async def _post(
    post: Callable[[str, Decimal, str, str], Awaitable[R]],
    account: Account,
    body: MoneyIn | AdjustmentIn,
    idempotency_key: str,
) -> tuple[R, str]:
    """One ledger posting of the API (a top-up or an adjustment) and its ledger key;
    the ledger's refusals as the API's errors."""
    _check_currency(body.currency, account)
    ledger_key = _ledger_key(account, idempotency_key)
    try:
        result = await post(account.id, to_decimal(body.amount), ledger_key, body.description)
    except IdempotencyConflict as exc:
        raise _conflict() from exc
    except InvalidAmount as exc:
        raise FieldError("amount", str(exc)) from exc
    except UnknownAccount as exc:
        raise unknown_account(account.id) from exc
    return result, ledger_key


@router.post(
    "/accounts/{account_id}/topups",
    status_code=201,
    response_model=PostingOut,
    responses=_MONEY_RESPONSES,
    summary="Top up an account (idempotent)",
)
async def topup(
    body: MoneyIn,
    target: Writable,
    context: Context,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> PostingOut:
    """Credit a positive amount. A customer key cannot top itself up, nor can a reseller
    top up its own account (403)."""
    account = target.account
    result, ledger_key = await _post(context.ledger.topup, account, body, idempotency_key)
    await _credit_live(context, result, f"topup:{ledger_key}")
    await _after_credit(context, account.id)
    _answer(response, result)
    log.info("api top-up", account_id=account.id, amount_micros=result.amount_micros,
             replayed=result.replayed, key_prefix=target.principal.key_prefix)  # fmt: skip
    return posting_out("topup", result, idempotency_key, account.currency)


@router.post(
    "/accounts/{account_id}/adjustments",
    status_code=201,
    response_model=PostingOut,
    responses=_MONEY_RESPONSES,
    summary="Adjust an account's balance by hand (idempotent)",
)
async def adjust(
    body: AdjustmentIn,
    target: Writable,
    context: Context,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> PostingOut:
    """Credit (> 0) or debit (< 0) the account, with the reason in ``description``."""
    account = target.account
    result, ledger_key = await _post(context.ledger.adjust, account, body, idempotency_key)
    if result.amount_micros > 0:
        await _credit_live(context, result, f"adjustment:{ledger_key}")
        await _after_credit(context, account.id)
    else:
        current = await context.accounts.get(account.id)
        if current is None:
            raise unknown_account(account.id)
        await context.admin.sync(current)
        suspended = await context.admin.check_postpaid(account.id)
        if suspended is not None:
            context.changed(suspended)
    _answer(response, result)
    log.info("api adjustment", account_id=account.id, amount_micros=result.amount_micros,
             replayed=result.replayed, key_prefix=target.principal.key_prefix)  # fmt: skip
    return posting_out("adjustment", result, idempotency_key, account.currency)


def _conflict() -> ApiError:
    return ApiError(
        409,
        "IDEMPOTENCY_CONFLICT",
        "this Idempotency-Key was already used on this account for another amount",
    )
