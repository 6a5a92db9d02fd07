"""Seat sessions in SQL: who was seated, for which tenant, on which switch, from and to.

The ``seat_sessions`` table (``storage.seat_tables``) is the source of truth of seats:
the live seats in Redis (``balance.seats``) are rebuilt from its open rows at start, and
seat usage per period (peak seats, seat-days, seat-seconds) is computed from its rows by
the pure ``tariffs.seat_usage``.

Every write is idempotent, so replayed switch events change nothing:

- :meth:`SeatSessions.open` writes one row per ``(switch_id, seat, started_at_us)``, and
  none while the seat already has an open row on that switch; it tells which
  (:class:`OpenResult`), so a replayed login of a session already ended is recognised;
- :meth:`SeatSessions.refused` writes a zero-length ``refused`` row, once;
- :meth:`SeatSessions.close` ends the seat's open row on its switch (a row started
  after the logout is left open: that logout is stale); closing nothing is not an error.

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver;
a bad argument (a negative time, an unknown end reason) as ``ValueError`` naming it.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import wrap_driver_errors
from storage.seat_tables import seat_sessions
from tariffs.seat_usage import SeatInterval, SeatUsage, seat_usage

log = structlog.get_logger(__name__)

CLOSE_REASONS = frozenset({"logoff", "refused", "lost"})


class OpenResult(StrEnum):
    """What :meth:`SeatSessions.open` did."""

    OPENED = "opened"  # a new row
    ALREADY_OPEN = "already_open"  # the seat has an open row on this switch: none added
    ENDED = "ended"  # this very session (same start) was written and has ended: a replay


@dataclass(frozen=True, slots=True)
class SeatSession:
    """One row of ``seat_sessions`` (``ended_at_us`` None while the seat is live)."""

    tenant: str
    seat: str
    switch_id: str
    name: str
    started_at_us: int
    ended_at_us: int | None
    end_reason: str


def _session(row: Any) -> SeatSession:
    return SeatSession(
        tenant=row.tenant,
        seat=row.seat,
        switch_id=row.switch_id,
        name=row.name,
        started_at_us=int(row.started_at_us),
        ended_at_us=None if row.ended_at_us is None else int(row.ended_at_us),
        end_reason=row.end_reason,
    )


class SeatSessions:
    """The seat sessions table: idempotent writes, listings and seat usage."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def open(
        self, tenant: str, seat: str, switch_id: str, started_at_us: int, name: str = ""
    ) -> OpenResult:
        """Start a session of ``seat`` on ``switch_id`` at ``started_at_us`` (idempotent)."""
        started = _us("started_at_us", started_at_us)
        values = {
            "tenant": tenant,
            "seat": seat,
            "switch_id": switch_id,
            "name": name,
            "started_at_us": started,
            "ended_at_us": None,
            "end_reason": "",
        }
        with wrap_driver_errors("opening a seat session"):
            try:
                async with self._engine.begin() as conn:
                    found = await self._same_or_open(conn, switch_id, seat, started)
                    if found is not None:
                        return found
                    await conn.execute(insert(seat_sessions).values(**values))
            except IntegrityError:  # lost a race with the same login
                async with self._engine.connect() as conn:
                    found = await self._same_or_open(conn, switch_id, seat, started)
                return found or OpenResult.ALREADY_OPEN
        log.debug("seat session opened", tenant=tenant, seat=seat, switch_id=switch_id)
        return OpenResult.OPENED

    async def refused(
        self, tenant: str, seat: str, switch_id: str, at_us: int, name: str = ""
    ) -> bool:
        """Record a login refused at ``at_us`` (a zero-length row); False if recorded before."""
        at = _us("at_us", at_us)
        values = {
            "tenant": tenant,
            "seat": seat,
            "switch_id": switch_id,
            "name": name,
            "started_at_us": at,
            "ended_at_us": at,
            "end_reason": "refused",
        }
        with wrap_driver_errors("recording a refused seat"):
            try:
                async with self._engine.begin() as conn:
                    if await self._row(conn, switch_id, seat, at) is not None:
                        return False
                    await conn.execute(insert(seat_sessions).values(**values))
            except IntegrityError:  # lost a race with the same refusal
                return False
        return True

    async def close(self, switch_id: str, seat: str, ended_at_us: int, reason: str) -> bool:
        """End the seat's open session on ``switch_id``; False when none was open.

        A session started after ``ended_at_us`` stays open (the logout is older than it).
        """
        ended = _us("ended_at_us", ended_at_us)
        if reason not in CLOSE_REASONS:
            raise ValueError(f"end reason must be one of {sorted(CLOSE_REASONS)}: {reason!r}")
        column = seat_sessions.c
        with wrap_driver_errors("closing a seat session"):
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(seat_sessions)
                    .where(
                        column.switch_id == switch_id,
                        column.seat == seat,
                        column.ended_at_us.is_(None),
                        column.started_at_us <= ended,
                    )
                    .values(ended_at_us=ended, end_reason=reason)
                )
        closed = int(result.rowcount) > 0
        if closed:
            log.debug("seat session closed", seat=seat, switch_id=switch_id, reason=reason)
        return closed

    async def open_sessions(self, switch_id: str | None = None) -> builtins.list[SeatSession]:
        """Every open session (of one switch, or all), by tenant, seat and start."""
        column = seat_sessions.c
        query = (
            select(seat_sessions)
            .where(column.ended_at_us.is_(None))
            .order_by(column.tenant, column.seat, column.started_at_us)
        )
        if switch_id is not None:
            query = query.where(column.switch_id == switch_id)
        with wrap_driver_errors("listing open seat sessions"):
            async with self._engine.connect() as conn:
                return [_session(row) for row in await conn.execute(query)]

    async def list(
        self, tenant: str, since_us: int | None = None, until_us: int | None = None
    ) -> builtins.list[SeatSession]:
        """The tenant's sessions present in ``[since_us, until_us)`` (open bounds: None).

        A session counts when it starts before ``until_us`` and has not ended by
        ``since_us``; a zero-length row (a refusal) when it lies in the range.
        """
        column = seat_sessions.c
        query = select(seat_sessions).where(column.tenant == tenant)
        if until_us is not None:
            query = query.where(column.started_at_us < _us("until_us", until_us))
        if since_us is not None:
            since = _us("since_us", since_us)
            query = query.where(
                or_(
                    column.ended_at_us.is_(None),
                    column.ended_at_us > since,
                    column.started_at_us >= since,
                )
            )
        query = query.order_by(column.started_at_us, column.seat, column.id)
        with wrap_driver_errors("listing seat sessions"):
            async with self._engine.connect() as conn:
                return [_session(row) for row in await conn.execute(query)]

    async def usage(
        self, tenant: str, start_us: int, end_us: int, tz: str = "UTC", *, now_us: int | None = None
    ) -> SeatUsage:
        """Peak seats, seat-days (local days of ``tz``) and seat-seconds of ``[start, end)``.

        An open session counts until ``now_us`` (the current time by default).
        """
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        now = time.time_ns() // 1000 if now_us is None else _us("now_us", now_us)
        sessions = await self.list(tenant, start_us, end_us)
        intervals = [
            SeatInterval(s.seat, s.started_at_us, now if s.ended_at_us is None else s.ended_at_us)
            for s in sessions
            if s.end_reason != "refused"
        ]
        return seat_usage(intervals, start_us, end_us, tz)

    @staticmethod
    async def _row(conn: AsyncConnection, switch_id: str, seat: str, started_us: int) -> Any:
        column = seat_sessions.c
        query = select(seat_sessions).where(
            column.switch_id == switch_id, column.seat == seat, column.started_at_us == started_us
        )
        return (await conn.execute(query)).first()

    @staticmethod
    async def _same_or_open(
        conn: AsyncConnection, switch_id: str, seat: str, started_us: int
    ) -> OpenResult | None:
        """What already stands for this login: its own row, or an open row of the seat."""
        column = seat_sessions.c
        query = select(column.started_at_us, column.ended_at_us).where(
            column.switch_id == switch_id,
            column.seat == seat,
            or_(column.started_at_us == started_us, column.ended_at_us.is_(None)),
        )
        rows = (await conn.execute(query)).all()
        if any(
            int(row.started_at_us) == started_us and row.ended_at_us is not None for row in rows
        ):
            return OpenResult.ENDED
        return OpenResult.ALREADY_OPEN if rows else None


def _us(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be an int of epoch microseconds >= 0: {value!r}")
    return value
