"""Request and response bodies of the management API (pydantic, ``extra="forbid"``).

Money crosses the API as a decimal string in the account's currency (``"25.50"``), never
a JSON number: at most 6 decimals (one micro-unit), no exponent, and at most
:data:`MAX_AMOUNT` in absolute value (a typo guard far above any real payment, and far
below the 2^53 micro-units Redis holds exactly). Request models are strict: an unknown
field, a number where a string is expected or a string where a number is, is a 422 that
names the field. Responses show money with 6 decimals (``"25.500000"``).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from tariffs.currencies import is_known_currency

MAX_AMOUNT = Decimal("1000000000")
"""The largest amount one request may move or set (one billion currency units)."""

MAX_DECIMALS = 6
MAX_PAGE = 500
_NUMBER_RE = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")
_ACCOUNT_ID_PATTERN = r"^[^\s{}]{1,64}$"


def _amount(text: str, *, negative: bool, zero: bool) -> str:
    if not _NUMBER_RE.match(text):
        raise PydanticCustomError(
            "amount_format", 'a decimal number as a string, like "25.50" (no exponent)'
        )
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMALS:
        raise PydanticCustomError("amount_too_precise", "at most 6 decimals (one micro-unit)")
    if value < 0 and not negative:
        raise PydanticCustomError("amount_negative", "must not be negative")
    if value == 0 and not zero:
        raise PydanticCustomError(
            "amount_not_positive", "must be greater than 0" if not negative else "must not be 0"
        )
    if abs(value) > MAX_AMOUNT:
        raise PydanticCustomError("amount_too_large", f"at most {MAX_AMOUNT} in absolute value")
    return text


def _positive(text: str) -> str:
    return _amount(text, negative=False, zero=False)


def _non_zero(text: str) -> str:
    return _amount(text, negative=True, zero=False)


def _non_negative(text: str) -> str:
    return _amount(text, negative=False, zero=True)


def _currency(text: str) -> str:
    if not is_known_currency(text):
        raise PydanticCustomError("currency", 'an ISO 4217 code in use, like "USD"')
    return text


_MONEY_RULES = "a decimal string, at most 6 decimals, at most 1000000000"
PositiveAmount = Annotated[
    str,
    Field(examples=["25.50"], max_length=24, description=f"> 0: {_MONEY_RULES}."),
    AfterValidator(_positive),
]
SignedAmount = Annotated[
    str,
    Field(examples=["-3.20"], max_length=24, description=f"Not 0: {_MONEY_RULES}."),
    AfterValidator(_non_zero),
]
NonNegativeAmount = Annotated[
    str,
    Field(examples=["100.00"], max_length=24, description=f">= 0: {_MONEY_RULES}."),
    AfterValidator(_non_negative),
]
Currency = Annotated[str, Field(examples=["USD"], max_length=3), AfterValidator(_currency)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
Name = Annotated[str, Field(max_length=200)]
Description = Annotated[str, Field(max_length=500)]


def to_decimal(text: str) -> Decimal:
    """A validated amount string as a Decimal (exact)."""
    return Decimal(text)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Caps(_Request):
    """Real-time caps; null is "no cap"."""

    concurrency_limit: Count | None = Field(None, description="Concurrent calls (the burst).")
    concurrency_package: Count | None = Field(None, description="Calls included in the plan.")
    overage_rate: NonNegativeAmount | None = Field(
        None, description="Per channel-minute above the package."
    )
    cps_limit: Count | None = Field(None, description="Calls admitted per second.")
    seat_limit: Count | None = Field(None, description="Live agent seats.")
    customers_concurrency_limit: Count | None = Field(
        None, description="A reseller: all its customers' concurrent calls."
    )
    customers_cps_limit: Count | None = Field(
        None, description="A reseller: all its customers' calls per second."
    )


CAP_FIELDS = tuple(_Caps.model_fields)


class AccountCreate(_Caps):
    """A new account. A reseller's key creates it under the reseller by default."""

    id: str = Field(
        pattern=_ACCOUNT_ID_PATTERN, description="The switch accountcode.", examples=["acme-01"]
    )
    currency: Currency
    name: Name = ""
    parent_id: str | None = Field(
        None, max_length=64, description="The reseller; a reseller key defaults to itself."
    )
    billing: Literal["prepaid", "postpaid"] = "prepaid"
    credit_limit: NonNegativeAmount = "0"
    rate_deck: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^@]+$")
    timezone: str = Field("UTC", max_length=64, examples=["Europe/Paris"])


class AccountPatch(_Caps):
    """Fields to change; a field left out is unchanged, a cap set to null is lifted."""

    name: Name = Field("", description="Display name (not nullable).")
    credit_limit: NonNegativeAmount = Field("0", description="Credit below zero (not nullable).")

    @model_validator(mode="after")
    def _not_empty(self) -> AccountPatch:
        if not self.model_fields_set:
            raise PydanticCustomError("empty_patch", "name at least one field to change")
        return self


class MoneyIn(_Request):
    """A top-up: a positive amount in the account's currency."""

    amount: PositiveAmount
    currency: Currency
    description: Description = ""


class AdjustmentIn(_Request):
    """A correction by hand: a credit (> 0) or a debit (< 0), with its reason."""

    amount: SignedAmount
    currency: Currency
    description: Annotated[str, Field(min_length=1, max_length=500)]


class AccountOut(BaseModel):
    """An account as the API shows it; ``balance`` is the SQL ledger's."""

    id: str
    name: str
    parent_id: str | None
    currency: str
    billing: str
    status: str
    status_reason: str
    credit_limit: str
    balance: str
    rate_deck: str | None
    timezone: str
    concurrency_limit: int | None
    concurrency_package: int | None
    overage_rate: str | None
    cps_limit: int | None
    seat_limit: int | None
    customers_concurrency_limit: int | None
    customers_cps_limit: int | None
    trial_ends_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class LiveCall(BaseModel):
    """One live call of the account and the credit it holds."""

    call_key: str
    reserved: str


class LiveOut(BaseModel):
    """The account's hot state in Redis (what authorization checks)."""

    status: str
    balance: str
    credit_limit: str
    reserved: str
    available: str = Field(description="balance + credit_limit - reserved")
    live_calls: int
    calls: list[LiveCall]


class AccountDetail(AccountOut):
    """An account with its live state (null when Redis holds none for it)."""

    live: LiveOut | None


class AccountList(BaseModel):
    """One page of accounts; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[AccountOut]
    next_cursor: str | None


class PostingOut(BaseModel):
    """An applied top-up or adjustment: the account's ledger entry.

    A retried request (same ``Idempotency-Key``) gets this same body again, with status
    200 instead of 201 and the header ``Idempotent-Replayed: true``.
    """

    id: int = Field(description="The ledger entry id.")
    kind: Literal["topup", "adjustment"]
    account_id: str
    amount: str
    currency: str
    idempotency_key: str
    created_at: datetime


class ErrorOut(BaseModel):
    """Any error other than a validation error."""

    code: str = Field(examples=["UNKNOWN_ACCOUNT"])
    detail: str


class FieldErrorOut(BaseModel):
    """One bad field of a request."""

    field: str = Field(examples=["amount"])
    loc: list[str]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """422: every bad field of the request, by name."""

    code: Literal["VALIDATION_ERROR"]
    detail: list[FieldErrorOut]


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route."""
    described = {
        401: "No API key, or an invalid or revoked one (`UNAUTHENTICATED`).",
        403: "The key's role may not do this (`FORBIDDEN`).",
        404: "No such account, or not in the key's scope (`UNKNOWN_ACCOUNT`).",
        409: "A conflict (`ACCOUNT_EXISTS`, `IDEMPOTENCY_CONFLICT`, `ACCOUNT_CLOSED`).",
        503: "The database or Redis is unavailable.",
    }
    answer: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut, "description": described[status]} for status in statuses
    }
    answer[422] = {"model": ValidationErrorOut, "description": "A bad field, named."}
    return answer
