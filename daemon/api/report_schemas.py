"""Response bodies of the reporting endpoints: ledger, rated calls, decks, live state, denials.

Money is a decimal string with 6 decimals (``"0.012000"``), never a JSON number; times
are ISO 8601 UTC datetimes. A listing is one page and the cursor of the next (null on
the last page); the same rows stream as CSV (``Accept: text/csv`` or ``format=csv``),
one column per field of the item, in the order below.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

MAX_REPORT_PAGE = 1000
"""The most rows one page of the ledger or the rated calls holds."""

OPERATOR_ONLY_CALL_FIELDS = ("carrier", "buy_cost", "margin")
"""Rated-call fields shown to an operator key only (null for the others, no CSV column)."""


class LedgerEntryOut(BaseModel):
    """One ledger entry of the account: a credit (> 0) or a debit (< 0)."""

    id: int
    kind: str = Field(description="`topup`, `charge` or `adjustment`.")
    amount: str = Field(examples=["-0.012000"])
    currency: str
    description: str
    txn_key: str = Field(description="The ledger transaction the entry belongs to.")
    rated_call_id: int | None = Field(description="The rated call a `charge` is for.")
    created_at: datetime


class LedgerPage(BaseModel):
    """One page of ledger entries, newest first; pass ``next_cursor`` as ``cursor``."""

    items: list[LedgerEntryOut]
    next_cursor: str | None


class RatedCallOut(BaseModel):
    """One rated call of the account (its retail price)."""

    id: int
    switch_id: str
    call_id: str
    caller: str
    callee: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    billsec_us: int = Field(description="Talk time in microseconds.")
    billable_seconds: int
    cost: str
    currency: str
    deck: str
    prefix: str
    destination: str
    rate: str = Field(description="Per minute.")
    disposition: str
    cause: str
    bundle: str
    bundle_seconds: int
    carrier: str | None = Field(description="Operator keys only: the LCR carrier.")
    buy_cost: str | None = Field(description="Operator keys only: the carrier's cost.")
    margin: str | None = Field(description="Operator keys only: cost - buy_cost.")
    rated_at: datetime


class RatedCallPage(BaseModel):
    """One page of rated calls, newest start first; pass ``next_cursor`` as ``cursor``."""

    items: list[RatedCallOut]
    next_cursor: str | None


class DeckOut(BaseModel):
    """A rate deck: the version in force and (operator keys only) one waiting to be."""

    name: str
    currency: str | None = Field(description="Of the version in force (null: none yet).")
    rounding: str | None
    decimals: int | None
    rates: int = Field(description="Rates of the version in force.")
    active_version: str | None = Field(description="The version in force (null: none yet).")
    pending_version: str | None = Field(
        description="Operator keys only: an upload waiting for `activate`."
    )
    pending_rates: int | None
    pending_currency: str | None


class DeckList(BaseModel):
    """The decks the key sees: an operator every deck; a reseller or a customer the decks
    its accounts are priced with."""

    items: list[DeckOut]


class LiveCallOut(BaseModel):
    """One live call of the account and the credit it holds in Redis."""

    call_key: str
    switch_id: str
    call_id: str
    reserved: str


class LiveCallsOut(BaseModel):
    """The account's live calls (null ``status``: Redis holds no state for it)."""

    account_id: str
    status: str | None
    reserved: str
    available: str | None = Field(description="balance + credit_limit - reserved")
    live_calls: int
    concurrency_limit: int | None
    calls: list[LiveCallOut]


class SeatOut(BaseModel):
    """One seat of the account: live in Redis, open in SQL, or both (they agree)."""

    seat: str
    name: str
    switch_id: str
    since: datetime
    live: bool = Field(description="Counted against the seat limit (Redis).")
    session_open: bool = Field(description="Its seat session is open (SQL).")


class SeatsOut(BaseModel):
    """The account's live seats against its seat limit."""

    account_id: str
    seat_limit: int | None
    live_seats: int
    holds: int = Field(description="Seats kept for a login announced by the switch.")
    seats: list[SeatOut]


class DenialDay(BaseModel):
    """One UTC day's denials by reason."""

    day: date
    total: int
    reasons: dict[str, int]


class DenialsOut(BaseModel):
    """Denied authorizations of the account over UTC days ``from``..``to`` (inclusive)."""

    account_id: str
    from_day: date = Field(serialization_alias="from")
    to_day: date = Field(serialization_alias="to")
    total: int
    reasons: dict[str, int] = Field(examples=[{"INSUFFICIENT_CREDIT": 3}])
    days: list[DenialDay]
