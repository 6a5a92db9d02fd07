"""What the reporting routes (ledger, rated calls, decks, live calls, seats, denials) use.

Built once by ``build_api`` beside ``ApiContext`` and found on
``request.app.state.reports`` through :func:`report_context`: no module-level clients.
The live seats and the denial counts need Redis clients of their own; an API built
without them answers their endpoints 503 ``NOT_CONFIGURED``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from balance.denials import DenialCounter
from balance.seat_sessions import SeatSessions
from balance.seats import SeatState
from daemon.api.deck_staging import DeckStaging
from daemon.api.errors import ApiError
from daemon.api.listings import Listings

DecksChanged = Callable[[str], Awaitable[object]]
"""Told the name of a deck just put in force (the daemon reloads it into its catalog)."""


@dataclass(frozen=True, slots=True)
class ReportContext:
    """The reporting routes' collaborators."""

    listings: Listings
    decks: DeckStaging
    sessions: SeatSessions
    seats: SeatState | None = None
    denials: DenialCounter | None = None
    on_decks_changed: DecksChanged | None = None
    default_rate_deck: str | None = None

    def seat_state(self) -> SeatState:
        """The live seats; 503 when the API was built without them."""
        if self.seats is None:
            raise _not_configured("live seats")
        return self.seats

    def denial_counter(self) -> DenialCounter:
        """The denial counts; 503 when the API was built without them."""
        if self.denials is None:
            raise _not_configured("denial counts")
        return self.denials


def _not_configured(what: str) -> ApiError:
    return ApiError(503, "NOT_CONFIGURED", f"{what} are not configured on this API")


def report_context(request: Request) -> ReportContext:
    """The ``ReportContext`` of the app serving ``request``."""
    context = getattr(request.app.state, "reports", None)
    if not isinstance(context, ReportContext):
        raise RuntimeError("the management API app was built without build_api()")
    return context


Reports = Annotated[ReportContext, Depends(report_context)]
