"""HTTP errors of the management API: one JSON shape, stable codes, no echoed input.

Every error body is ``{"code": "...", "detail": ...}``. ``detail`` is a sentence, or for
422 a list of ``{"field", "loc", "msg", "type"}`` naming each bad field. Pydantic's
``input`` and ``ctx`` are dropped, so a body never echoes what was sent (a pasted secret
stays out of error bodies). Storage and Redis failures are 503 with a generic sentence:
their messages stay in the log.

Errors raised by the routes::

    ApiError            status + code      e.g. 403 FORBIDDEN, 404 UNKNOWN_ACCOUNT
    └── FieldError      422 VALIDATION_ERROR  a check made after parsing (names the field)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from balance.live import LiveStateError
from storage.engine import StorageError

log = structlog.get_logger(__name__)

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
}


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, stable ``code``, a sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


class FieldError(ApiError):
    """A field valid in shape but refused after a lookup (wrong currency, unknown parent)."""

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(422, "VALIDATION_ERROR", f"{field}: {message}")
        self.field = field
        self.message = message
        self.kind = kind


def unknown_account(account_id: str) -> ApiError:
    """404 for an account that does not exist or is out of the caller's scope."""
    return ApiError(404, "UNKNOWN_ACCOUNT", f"unknown account: {account_id!r}")


def forbidden(detail: str) -> ApiError:
    """403: the caller may see the resource but not do this."""
    return ApiError(403, "FORBIDDEN", detail)


def _field_name(loc: Sequence[Any], kind: str) -> str:
    if kind == "json_invalid":
        return "body"
    rest = [str(part) for part in loc[1:]]
    return ".".join(rest) if rest else str(loc[0]) if loc else "body"


def _validation_items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "field": _field_name(error.get("loc", ()), str(error.get("type", ""))),
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def _body(code: str, detail: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail}


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if isinstance(exc, FieldError):
        item = {"field": exc.field, "loc": ["body", exc.field], "msg": exc.message,
                "type": exc.kind}  # fmt: skip
        return JSONResponse(_body(exc.code, [item]), status_code=422)
    return JSONResponse(_body(exc.code, exc.detail), status_code=exc.status, headers=exc.headers)


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(_body("VALIDATION_ERROR", _validation_items(exc.errors())), status_code=422)


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return JSONResponse(
        _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _on_storage(request: Request, exc: Exception) -> JSONResponse:
    log.error("api storage failure", path=request.url.path, error=str(exc))
    return JSONResponse(_body("STORAGE_UNAVAILABLE", "the database is unavailable"), 503)


async def _on_live(request: Request, exc: Exception) -> JSONResponse:
    log.error("api live state failure", path=request.url.path, error=str(exc))
    return JSONResponse(_body("LIVE_STATE_UNAVAILABLE", "the live state is unavailable"), 503)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("api request failed", path=request.url.path, error=type(exc).__name__)
    return JSONResponse(_body("INTERNAL_ERROR", "internal error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error answers on ``app``."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(StorageError, _on_storage)
    app.add_exception_handler(LiveStateError, _on_live)
    app.add_exception_handler(Exception, _on_unexpected)
