"""Routes: an account's live calls and seats (Redis, SQL seat sessions) and its denials.

Scoped like every account route (``auth.Visible``). Live calls are the account's credit
reservations in Redis, one per call (``call_key`` is ``<switch_id>:<call_id>``). Seats
are the live seats counted against the seat limit (Redis) merged with the open seat
sessions (SQL, the source of truth): a seat in one and not the other is shown with the
flag it lacks unset, which is worth a look. Denials are counted per reason and UTC day
(``balance.denials``), kept 40 days.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from balance.denials import MAX_DAYS
from daemon.api.auth import Context, Visible
from daemon.api.report_context import Reports
from daemon.api.report_schemas import DenialsOut, LiveCallsOut, SeatsOut
from daemon.api.report_views import denials_out, live_calls_out, seats_out
from daemon.api.schemas import ErrorOut, responses

router = APIRouter(prefix="/v1", tags=["live"])

DEFAULT_DENIAL_DAYS = 7
_NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Not configured, or Redis down."}
}

FromDay = Annotated[
    date | None,
    Query(alias="from", description=f"UTC day, inclusive (default: {DEFAULT_DENIAL_DAYS} days "
          "back from `to`)."),
]  # fmt: skip
ToDay = Annotated[
    date | None, Query(alias="to", description="UTC day, inclusive (default: today).")
]


@router.get(
    "/accounts/{account_id}/live-calls",
    response_model=LiveCallsOut,
    responses=responses(401, 404),
    summary="An account's live calls and the credit each holds",
)
async def live_calls(target: Visible, context: Context) -> LiveCallsOut:
    """From Redis: one reservation per live call, and what is left available."""
    snapshot = await context.live.snapshot(target.account.id)
    return live_calls_out(target.account.id, snapshot)


@router.get(
    "/accounts/{account_id}/seats",
    response_model=SeatsOut,
    responses={**responses(401, 404), **_NOT_CONFIGURED},
    summary="An account's live agent seats",
)
async def seats(target: Visible, reports: Reports) -> SeatsOut:
    """Live seats (Redis) and open seat sessions (SQL), against the seat limit."""
    account = target.account
    state = reports.seat_state()
    live = await state.live(account.id)
    holds = await state.holds(account.id)
    now_us = time.time_ns() // 1000
    sessions = await reports.sessions.list(account.id, since_us=now_us)
    return seats_out(account, live, sessions, holds)


def _day_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


@router.get(
    "/accounts/{account_id}/denials",
    response_model=DenialsOut,
    responses={**responses(401, 404), **_NOT_CONFIGURED},
    summary="An account's denied authorizations by reason",
)
async def denials(
    target: Visible, reports: Reports, from_day: FromDay = None, to_day: ToDay = None
) -> DenialsOut:
    """Counts per reason code (``INSUFFICIENT_CREDIT``, ``CONCURRENCY_LIMIT``, ...), in all
    and per UTC day, over at most 40 days."""
    counter = reports.denial_counter()
    last = to_day or datetime.now(UTC).date()
    first = from_day or last - timedelta(days=DEFAULT_DENIAL_DAYS - 1)
    if last < first:
        raise _day_error("to", "must not be before from")
    if (last - first).days + 1 > MAX_DAYS:
        raise _day_error("from", f"at most {MAX_DAYS} days before to (older counts expire)")
    daily = await counter.daily(target.account.id, first, last)
    return denials_out(target.account.id, first, last, daily)
