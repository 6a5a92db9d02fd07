"""SQL rows and live state to report bodies: micro-units become 6-decimal strings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from balance.accounts import Account
from balance.live import AccountSnapshot
from balance.seat_sessions import SeatSession
from balance.seats import LiveSeat
from daemon.api.report_schemas import (
    OPERATOR_ONLY_CALL_FIELDS,
    DenialDay,
    DenialsOut,
    LedgerEntryOut,
    LiveCallOut,
    LiveCallsOut,
    RatedCallOut,
    SeatOut,
    SeatsOut,
)
from daemon.api.views import money

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LEDGER_COLUMNS = tuple(LedgerEntryOut.model_fields)
CALL_COLUMNS = tuple(RatedCallOut.model_fields)
CUSTOMER_CALL_COLUMNS = tuple(c for c in CALL_COLUMNS if c not in OPERATOR_ONLY_CALL_FIELDS)


def from_epoch_us(micros: int) -> datetime:
    """An aware UTC datetime from epoch microseconds."""
    return _EPOCH + timedelta(microseconds=micros)


def ledger_entry_out(row: Any, currency: str) -> LedgerEntryOut:
    """One ``ledger_entries`` row in the account's currency."""
    return LedgerEntryOut(
        id=row.id,
        kind=row.kind,
        amount=money(row.amount_micros),
        currency=currency,
        description=row.description,
        txn_key=row.txn_key,
        rated_call_id=row.rated_call_id,
        created_at=row.created_at,
    )


def rated_call_out(row: Any, *, operator: bool) -> RatedCallOut:
    """One ``rated_calls`` row; the carrier, its cost and the margin for an operator only."""
    return RatedCallOut(
        id=row.id,
        switch_id=row.switch_id,
        call_id=row.call_id,
        caller=row.caller,
        callee=row.callee,
        started_at=from_epoch_us(row.started_at_us),
        answered_at=None if row.answered_at_us is None else from_epoch_us(row.answered_at_us),
        ended_at=from_epoch_us(row.ended_at_us),
        billsec_us=row.billsec_us,
        billable_seconds=row.billable_seconds,
        cost=money(row.cost_micros),
        currency=row.currency,
        deck=row.deck,
        prefix=row.prefix,
        destination=row.destination,
        rate=money(row.rate_micros),
        disposition=row.disposition,
        cause=row.cause,
        bundle=row.bundle,
        bundle_seconds=row.bundle_seconds,
        carrier=row.carrier if operator else None,
        buy_cost=money(row.buy_cost_micros) if operator else None,
        margin=money(row.margin_micros) if operator else None,
        rated_at=row.rated_at,
    )


def live_calls_out(account_id: str, snapshot: AccountSnapshot | None) -> LiveCallsOut:
    """The account's live calls from its Redis snapshot (none when Redis holds none)."""
    if snapshot is None:
        return LiveCallsOut(
            account_id=account_id,
            status=None,
            reserved=money(0),
            available=None,
            live_calls=0,
            concurrency_limit=None,
            calls=[],
        )
    calls = []
    for call_key, reserved in sorted(snapshot.calls.items()):
        switch_id, _, call_id = call_key.partition(":")
        calls.append(
            LiveCallOut(
                call_key=call_key, switch_id=switch_id, call_id=call_id, reserved=money(reserved)
            )
        )
    available = snapshot.balance_micros + snapshot.credit_limit_micros - snapshot.reserved_micros
    return LiveCallsOut(
        account_id=account_id,
        status=snapshot.status,
        reserved=money(snapshot.reserved_micros),
        available=money(available),
        live_calls=len(calls),
        concurrency_limit=snapshot.concurrency_limit,
        calls=calls,
    )


def seats_out(
    account: Account,
    live: Mapping[str, LiveSeat],
    sessions: list[SeatSession],
    holds: int,
) -> SeatsOut:
    """Live seats (Redis) merged with open seat sessions (SQL), by seat."""
    open_by_seat = {s.seat: s for s in sessions if s.ended_at_us is None}
    seats = []
    for seat in sorted(set(live) | set(open_by_seat)):
        in_redis, in_sql = live.get(seat), open_by_seat.get(seat)
        switch_id = in_redis.switch_id if in_redis else in_sql.switch_id if in_sql else ""
        since = in_redis.since_us if in_redis else in_sql.started_at_us if in_sql else 0
        seats.append(
            SeatOut(
                seat=seat,
                name=in_sql.name if in_sql else "",
                switch_id=switch_id,
                since=from_epoch_us(since),
                live=in_redis is not None,
                session_open=in_sql is not None,
            )
        )
    return SeatsOut(
        account_id=account.id,
        seat_limit=account.seat_limit,
        live_seats=len(live),
        holds=holds,
        seats=seats,
    )


def denials_out(
    account_id: str, from_day: date, to_day: date, daily: Mapping[date, Mapping[str, int]]
) -> DenialsOut:
    """Denials per day and in all, by reason."""
    total: dict[str, int] = {}
    days = []
    for day, reasons in sorted(daily.items()):
        for reason, count in reasons.items():
            total[reason] = total.get(reason, 0) + count
        days.append(
            DenialDay(day=day, total=sum(reasons.values()), reasons=dict(sorted(reasons.items())))
        )
    return DenialsOut(
        account_id=account_id,
        from_day=from_day,
        to_day=to_day,
        total=sum(total.values()),
        reasons=dict(sorted(total.items())),
        days=days,
    )
