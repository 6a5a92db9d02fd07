"""Routes: an account's ledger and rated calls, filtered, keyset-paged, or as CSV.

Scoped like every account route (``auth.Visible``): out of the key's scope is 404. A
page holds ``limit`` rows (at most 1000) and ``next_cursor``, passed back as ``cursor``
for the next page. ``format=csv`` (or ``Accept: text/csv``) streams EVERY matching row
from ``cursor`` on instead (``limit`` is ignored), read from SQL a batch at a time.

``from`` / ``to`` are ISO 8601 datetimes (no offset means UTC), ``from`` inclusive,
``to`` exclusive: the entry's creation, the call's start. Carrier, buy cost and margin
of a rated call are an operator key's business only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from daemon.api.auth import Visible
from daemon.api.csv_export import CSV_RESPONSE, Format, stream_csv, wants_csv
from daemon.api.listings import CallFilter, InvalidCursor, LedgerFilter, check_cursor
from daemon.api.report_context import ReportContext, Reports
from daemon.api.report_schemas import (
    MAX_REPORT_PAGE,
    LedgerEntryOut,
    LedgerPage,
    RatedCallOut,
    RatedCallPage,
)
from daemon.api.report_views import (
    CALL_COLUMNS,
    CUSTOMER_CALL_COLUMNS,
    LEDGER_COLUMNS,
    ledger_entry_out,
    rated_call_out,
)
from daemon.api.schemas import responses

router = APIRouter(prefix="/v1", tags=["reports"])

From = Annotated[
    datetime | None,
    Query(alias="from", description="ISO 8601, inclusive (no offset: UTC)."),
]
To = Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive.")]
Limit = Annotated[int, Query(ge=1, le=MAX_REPORT_PAGE, description="Rows per page.")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]
FormatQuery = Annotated[
    Format | None,
    Query(alias="format", description="`csv`: every matching row as CSV (as `Accept: text/csv`)."),
]
Kind = Annotated[
    Literal["topup", "charge", "adjustment"] | None, Query(description="Only this kind.")
]
Disposition = Annotated[
    str | None, Query(min_length=1, max_length=32, description="e.g. `ANSWERED`.")
]
DestinationPrefix = Annotated[
    str | None,
    Query(
        pattern=r"^\+?[0-9]{1,32}$",
        description="Calls whose callee starts with these digits (a leading `+` ignored).",
    ),
]
_LISTING_RESPONSES = {200: CSV_RESPONSE, **responses(401, 404)}


def _query_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    start, end = _utc(since), _utc(until)
    if start is not None and end is not None and end <= start:
        raise _query_error("to", "must be after from")
    return start, end


def _check_cursor(listing: Literal["ledger", "calls"], cursor: str | None) -> None:
    try:
        check_cursor(listing, cursor)
    except InvalidCursor as exc:
        raise _query_error("cursor", str(exc)) from exc


@router.get(
    "/accounts/{account_id}/ledger",
    response_model=LedgerPage,
    responses=_LISTING_RESPONSES,
    summary="An account's ledger entries (page or CSV)",
)
async def ledger(
    target: Visible,
    reports: Reports,
    request: Request,
    since: From = None,
    until: To = None,
    kind: Kind = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    fmt: FormatQuery = None,
) -> LedgerPage | StreamingResponse:
    """Newest first: top-ups, call charges and adjustments, each with its amount (credit
    > 0, debit < 0) in the account's currency."""
    account = target.account
    start, end = _window(since, until)
    where = LedgerFilter(account.id, start, end, kind)
    _check_cursor("ledger", cursor)
    if wants_csv(request, fmt):
        return await _ledger_csv(reports, where, account.currency, cursor)
    page = await reports.listings.ledger_page(where, limit=limit, cursor=cursor)
    items = [ledger_entry_out(row, account.currency) for row in page.rows]
    return LedgerPage(items=items, next_cursor=page.next_cursor)


async def _ledger_csv(
    reports: ReportContext, where: LedgerFilter, currency: str, cursor: str | None
) -> StreamingResponse:
    async def batches() -> AsyncIterator[list[LedgerEntryOut]]:
        async for rows in reports.listings.ledger_batches(where, cursor):
            yield [ledger_entry_out(row, currency) for row in rows]

    return await stream_csv(LEDGER_COLUMNS, batches(), f"{where.account_id}-ledger.csv")


@router.get(
    "/accounts/{account_id}/rated-calls",
    response_model=RatedCallPage,
    responses=_LISTING_RESPONSES,
    summary="An account's rated calls (page or CSV)",
)
async def rated_calls(
    target: Visible,
    reports: Reports,
    request: Request,
    since: From = None,
    until: To = None,
    disposition: Disposition = None,
    destination_prefix: DestinationPrefix = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    fmt: FormatQuery = None,
) -> RatedCallPage | StreamingResponse:
    """Newest start first, with the retail cost; an operator key also sees the carrier,
    its buy cost and the margin."""
    account = target.account
    operator = target.principal.role == "operator"
    start, end = _window(since, until)
    where = CallFilter(account.id, start, end, disposition, destination_prefix)
    _check_cursor("calls", cursor)
    if wants_csv(request, fmt):

        async def batches() -> AsyncIterator[list[RatedCallOut]]:
            async for rows in reports.listings.call_batches(where, cursor):
                yield [rated_call_out(row, operator=operator) for row in rows]

        columns = CALL_COLUMNS if operator else CUSTOMER_CALL_COLUMNS
        return await stream_csv(columns, batches(), f"{account.id}-rated-calls.csv")
    page = await reports.listings.call_page(where, limit=limit, cursor=cursor)
    items = [rated_call_out(row, operator=operator) for row in page.rows]
    return RatedCallPage(items=items, next_cursor=page.next_cursor)
