"""Routes: rate decks -- upload a CSV (staged), list, show or export, activate.

Only an operator key uploads and activates (403 for the others, before anything is
read). An upload is the deck file of ``ratekeeper rates import`` as the body
(``Content-Type: text/csv``), checked whole before anything is stored: a bad file is a
422 listing every bad line (``loc`` ``["body", "line 7", "rate"]``), and nothing is
stored. A good file becomes the deck's staged version, NOT in force
(``daemon.api.deck_staging``); ``POST /v1/decks/{name}/activate`` puts it in force in
one transaction, then tells the daemon (``on_decks_changed``) so calls are priced with
it at once. Calls already authorized keep the price they started with.

Problems name their line, column and rule; a cell they quote is shown only when short
(a price, a prefix): a longer one is replaced by ``<value>``, so a secret pasted in a
file never comes back in an answer.

A reseller or a customer key reads the decks its accounts are priced with (a deck it
does not see is 404, like an unknown one), never a staged version.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from balance.api_keys import Principal
from daemon.api.auth import Caller
from daemon.api.csv_export import CSV_MEDIA_TYPE, CSV_RESPONSE, Format, attachment, wants_csv
from daemon.api.deck_staging import (
    MAX_DECK_NAME,
    DeckSummary,
    NoPendingVersion,
    UnknownDeck,
    VersionMismatch,
)
from daemon.api.errors import ApiError, forbidden
from daemon.api.report_context import ReportContext, Reports
from daemon.api.report_schemas import DeckList, DeckOut
from daemon.api.schemas import Currency, ErrorOut, responses
from storage.decks import InvalidDeck
from tariffs.csv_deck import DeckImportError, dump_deck_csv, parse_deck_csv
from tariffs.deck import DeckInfo, Rounding
from tariffs.ratedeck import DeckError, RateDeck

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["decks"])

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
"""The largest deck file accepted (413 above)."""
MAX_LISTED_PROBLEMS = 100
_UPLOAD_TYPES = ("text/csv", "text/plain")
MAX_QUOTED = 16
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

_NAME_RULE = r"^[^@\s{}/]+$"
DeckName = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=_NAME_RULE, description="The deck's name."),
]
NewDeckName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_DECK_NAME,
        pattern=_NAME_RULE,
        description=f"The deck's name: 1-{MAX_DECK_NAME} characters, no '@', space or '/'.",
    ),
]
Version = Annotated[
    str | None,
    Query(max_length=40, description="Activate only if the upload is still this version."),
]


def require_operator(principal: Caller) -> Principal:
    """403 for any key but an operator's."""
    if principal.role != "operator":
        raise forbidden(f"a {principal.role} key cannot change rate decks")
    return principal


Operator = Annotated[Principal, Depends(require_operator)]


def deck_out(summary: DeckSummary, *, operator: bool) -> DeckOut:
    """The API view of a deck; the staged version for an operator only."""
    active = summary.active
    pending = summary.pending if operator else None
    return DeckOut(
        name=summary.name,
        currency=active.currency if active else None,
        rounding=active.rounding if active else None,
        decimals=active.decimals if active else None,
        rates=active.rates if active else 0,
        active_version=active.version if active else None,
        pending_version=pending.version if pending else None,
        pending_rates=pending.rates if pending else None,
        pending_currency=pending.currency if pending else None,
    )


def _unknown(name: str) -> ApiError:
    return ApiError(404, "UNKNOWN_DECK", f"unknown deck: {name!r}")


def _hidden(message: str) -> str:
    """A problem without the long cells it quotes: a price or a prefix is shown, anything
    longer than ``MAX_QUOTED`` characters (a key pasted by mistake) is ``<value>``."""
    return _QUOTED.sub(lambda m: m[0] if len(m[0]) <= MAX_QUOTED + 2 else "<value>", message)


def _body_error(message: str, *where: str) -> RequestValidationError:
    loc = ("body", *where)
    return RequestValidationError([{"loc": loc, "msg": _hidden(message), "type": "deck_file"}])


def _line_errors(exc: DeckImportError) -> RequestValidationError:
    errors: list[dict[str, Any]] = []
    for problem in exc.problems[:MAX_LISTED_PROBLEMS]:
        loc = ("body", f"line {problem.line}", *((problem.field,) if problem.field else ()))
        errors.append({"loc": loc, "msg": _hidden(problem.message), "type": "deck_line"})
    hidden = len(exc.problems) - MAX_LISTED_PROBLEMS
    if hidden > 0:
        errors.append({"loc": ("body",), "msg": f"and {hidden} more", "type": "deck_line"})
    return RequestValidationError(errors)


async def _visible(principal: Principal, reports: ReportContext) -> set[str] | None:
    """The deck names the key sees (None: every deck)."""
    if principal.role == "operator" or principal.account_id is None:
        return None
    return await reports.decks.used_by(
        principal.account_id,
        descendants=principal.role == "reseller",
        default_deck=reports.default_rate_deck,
    )


async def _summary(name: str, principal: Principal, reports: ReportContext) -> DeckSummary:
    visible = await _visible(principal, reports)
    if visible is not None and name not in visible:
        raise _unknown(name)
    try:
        summary = await reports.decks.summary(name)
    except UnknownDeck as exc:
        raise _unknown(name) from exc
    if summary.active is None and principal.role != "operator":
        raise _unknown(name)
    return summary


async def _read_upload(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _UPLOAD_TYPES:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send the deck as 'Content-Type: text/csv'")
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "DECK_TOO_LARGE", f"a deck file is at most {MAX_UPLOAD_BYTES} bytes")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise too_large
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _body_error("the deck file is not UTF-8 text") from exc


async def _deck_info(
    name: str,
    reports: ReportContext,
    currency: str | None,
    rounding: Rounding | None,
    decimals: int | None,
) -> DeckInfo:
    """The upload's rules: those given, else the deck's current ones (a new deck: the
    currency is required)."""
    try:
        summary: DeckSummary | None = await reports.decks.summary(name)
    except UnknownDeck:
        summary = None
    current = None if summary is None else summary.active or summary.pending
    if currency is None and current is None:
        raise RequestValidationError(
            [{"loc": ("query", "currency"), "msg": "required for a new deck", "type": "missing"}]
        )
    return DeckInfo(
        name=name,
        currency=currency or (current.currency if current else "USD"),
        rounding=rounding or (Rounding(current.rounding) if current else Rounding.UP),
        decimals=decimals if decimals is not None else (current.decimals if current else 6),
    )


@router.post(
    "/decks/{name}",
    status_code=201,
    response_model=DeckOut,
    responses={
        **responses(401, 403),
        413: {"model": ErrorOut, "description": "The file is too large (`DECK_TOO_LARGE`)."},
        415: {"model": ErrorOut, "description": "Not `text/csv` (`UNSUPPORTED_MEDIA_TYPE`)."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The deck file (the format of `ratekeeper rates import`).",
        }
    },
    summary="Upload a rate deck (staged, not yet in force)",
)
async def upload_deck(
    name: NewDeckName,
    principal: Operator,
    reports: Reports,
    request: Request,
    currency: Annotated[
        Currency | None, Query(description="Required for a new deck; else kept.")
    ] = None,
    rounding: Annotated[Rounding | None, Query(description="Default: kept, or `up`.")] = None,
    decimals: Annotated[
        int | None, Query(ge=0, le=6, description="Of a call's cost. Default: kept, or 6.")
    ] = None,
) -> DeckOut:
    """Checked whole: a bad line is a 422 naming it, and nothing is stored. A new upload
    replaces one not yet activated."""
    text = await _read_upload(request)
    info = await _deck_info(name, reports, currency, rounding, decimals)
    try:
        parsed = await asyncio.to_thread(parse_deck_csv, text, info)
    except DeckImportError as exc:
        raise _line_errors(exc) from exc
    except DeckError as exc:
        raise _body_error(str(exc)) from exc
    try:
        summary = await reports.decks.stage(parsed.info, list(parsed.rates))
    except InvalidDeck as exc:
        raise _body_error(str(exc)) from exc
    log.info(
        "api deck uploaded", deck=name, rates=len(parsed.rates), key_prefix=principal.key_prefix
    )
    return deck_out(summary, operator=True)


@router.post(
    "/decks/{name}/activate",
    response_model=DeckOut,
    responses={
        **responses(401, 403),
        404: {"model": ErrorOut, "description": "No such deck (`UNKNOWN_DECK`)."},
        409: {
            "model": ErrorOut,
            "description": "Nothing uploaded, or another version (`NO_PENDING_VERSION`, "
            "`VERSION_MISMATCH`).",
        },
    },
    summary="Put a deck's uploaded version in force",
)
async def activate_deck(
    name: DeckName, principal: Operator, reports: Reports, version: Version = None
) -> DeckOut:
    """Atomic: a call is priced with the old deck or the new one, never a mix. With
    ``version``, only if the upload is still that one."""
    try:
        summary = await reports.decks.activate(name, version)
    except UnknownDeck as exc:
        raise _unknown(name) from exc
    except (NoPendingVersion, VersionMismatch) as exc:
        raise ApiError(409, exc.code, str(exc)) from exc
    log.info("api deck activated", deck=name, key_prefix=principal.key_prefix)
    if reports.on_decks_changed is not None:
        try:
            await reports.on_decks_changed(name)
        except Exception as exc:  # in force in SQL: the next reload (SIGHUP) picks it up
            log.error("deck activated but not reloaded", deck=name, error=str(exc))
    return deck_out(summary, operator=True)


@router.get("/decks", response_model=DeckList, responses=responses(401), summary="List rate decks")
async def list_decks(principal: Caller, reports: Reports) -> DeckList:
    """Operator: every deck with its staged version; reseller and customer: the decks
    their accounts are priced with."""
    visible = await _visible(principal, reports)
    operator = principal.role == "operator"
    summaries = await reports.decks.summaries(visible)
    items = [deck_out(s, operator=operator) for s in summaries if operator or s.active]
    return DeckList(items=items)


@router.get(
    "/decks/{name}",
    response_model=DeckOut,
    responses={
        200: {**CSV_RESPONSE, "description": "With CSV asked: the deck file."},
        **responses(401),
        404: {"model": ErrorOut, "description": "No such deck, or not the key's (`UNKNOWN_DECK`)."},
    },
    summary="Show a rate deck, or export it as CSV",
)
async def show_deck(
    name: DeckName,
    principal: Caller,
    reports: Reports,
    request: Request,
    fmt: Annotated[Format | None, Query(alias="format")] = None,
    version: Annotated[
        Literal["active", "pending"], Query(description="CSV of the staged version: operator.")
    ] = "active",
) -> DeckOut | Response:
    """The deck's rules, rate count and versions; as CSV, the deck file itself."""
    summary = await _summary(name, principal, reports)
    operator = principal.role == "operator"
    if not wants_csv(request, fmt):
        return deck_out(summary, operator=operator)
    pending = version == "pending"
    if (pending and (not operator or summary.pending is None)) or (
        not pending and summary.active is None
    ):
        raise _unknown(name)
    try:
        info, deck_rates = await reports.decks.load(name, pending=pending)
    except UnknownDeck as exc:  # activated or dropped meanwhile
        raise _unknown(name) from exc
    text = await asyncio.to_thread(lambda: dump_deck_csv(RateDeck(info, deck_rates)))
    return Response(text, media_type=CSV_MEDIA_TYPE, headers=attachment(f"{name}.csv"))
