"""Build the management API app: routes, error answers, collaborators.

``build_api`` is what the composition root calls; ``new_app`` is the same app without
collaborators, enough to render the OpenAPI document (``daemon.api.openapi``).
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import AccountStore
from balance.api_keys import ApiKeyStore
from balance.denials import DenialCounter
from balance.ledger import Ledger
from balance.live import LiveState
from balance.seat_sessions import SeatSessions
from balance.seats import SeatState
from daemon.account_admin import AccountAdmin
from daemon.account_directory import AccountDirectory
from daemon.api import routes_accounts, routes_decks, routes_live, routes_money, routes_reports
from daemon.api.context import ApiContext
from daemon.api.deck_staging import DeckStaging
from daemon.api.errors import install_error_handlers
from daemon.api.listings import Listings
from daemon.api.report_context import DecksChanged, ReportContext
from daemon.api.scope import AccountScope

API_TITLE = "ratekeeper management API"
API_VERSION = "1.0.0"
API_DESCRIPTION = """\
Accounts, resellers' customers, top-ups and adjustments; an account's ledger, rated
calls, live calls, seats and denials; rate decks (upload, activate).

Authenticate with an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
An operator key sees every account; a reseller key sees its own account and its
descendants, and changes only its descendants; a customer key reads its own account.
An account out of the key's scope answers 404, like an unknown one.

Money is a decimal string in the account's currency (at most 6 decimals). Top-ups and
adjustments need an `Idempotency-Key` header: a retry gets the first answer (200
instead of 201, header `Idempotent-Replayed: true`).

Listings are keyset-paged (`limit`, `cursor` = the previous page's `next_cursor`);
`format=csv` or `Accept: text/csv` streams every matching row as CSV instead.

Errors: `{"code": "...", "detail": "..."}`; a 422 lists every bad field by name.
"""


def new_app() -> FastAPI:
    """The API's routes and error answers, without collaborators (for the OpenAPI doc)."""
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=API_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(routes_accounts.router)
    app.include_router(routes_money.router)
    app.include_router(routes_reports.router)
    app.include_router(routes_live.router)
    app.include_router(routes_decks.router)
    return app


def build_api(
    engine: AsyncEngine,
    live: LiveState,
    admin: AccountAdmin,
    *,
    keys: ApiKeyStore | None = None,
    directory: AccountDirectory | None = None,
    seats: SeatState | None = None,
    denials: DenialCounter | None = None,
    on_decks_changed: DecksChanged | None = None,
    default_rate_deck: str | None = None,
) -> FastAPI:
    """The management API on ``engine`` (SQL), ``live`` (Redis) and ``admin``.

    ``directory``: the daemon's account cache, told about every change at once.
    ``seats`` / ``denials``: the live seats and denial counts (without them their
    endpoints answer 503). ``on_decks_changed(name)``: awaited after a deck is put in
    force (the daemon reloads it into its catalog). ``default_rate_deck``: the deck of
    accounts without one (what a reseller or customer key may read).
    """
    app = new_app()
    app.state.api = ApiContext(
        accounts=AccountStore(engine),
        ledger=Ledger(engine),
        keys=keys or ApiKeyStore(engine),
        scope=AccountScope(engine),
        live=live,
        admin=admin,
        directory=directory,
    )
    app.state.reports = ReportContext(
        listings=Listings(engine),
        decks=DeckStaging(engine),
        sessions=SeatSessions(engine),
        seats=seats,
        denials=denials,
        on_decks_changed=on_decks_changed,
        default_rate_deck=default_rate_deck,
    )
    return app
