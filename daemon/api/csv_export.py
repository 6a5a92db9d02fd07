"""CSV answers of the management API: negotiated, streamed batch by batch, formula-safe.

A listing answers CSV when asked by ``format=csv`` or by an ``Accept`` header naming
``text/csv`` (``format=json`` wins over the header). The body is a header line, then one
line per row, written as each batch of rows arrives: the answer never holds more than
one batch. The first batch is read before the answer starts, so a failing database is
still a clean 503; a failure later ends the stream early (and is logged).

A cell a spreadsheet would run as a formula (starting ``=``, ``@``, a tab, a carriage
return, or ``+`` / ``-`` when not a number) is written with a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal

import structlog
from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

log = structlog.get_logger(__name__)

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_RESPONSE = {
    "description": "With `format=csv` or `Accept: text/csv`: every matching row as CSV.",
    "content": {"text/csv": {"schema": {"type": "string"}}},
}
"""The OpenAPI description of a listing's CSV answer (merge into its 200 response)."""

Format = Literal["json", "csv"]
_NUMBER = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?$")
_FORMULA_START = ("=", "@", "\t", "\r")
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def wants_csv(request: Request, fmt: Format | None) -> bool:
    """Whether the caller asked for CSV (``format`` first, else the ``Accept`` header)."""
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == "text/csv" for part in accept.split(","))


def attachment(filename: str) -> dict[str, str]:
    """The ``Content-Disposition`` header of a download named ``filename`` (made safe)."""
    return {"Content-Disposition": f'attachment; filename="{_FILENAME_UNSAFE.sub("_", filename)}"'}


def safe_cell(value: Any) -> str:
    """One cell's text: None is empty, a would-be formula gets a leading quote."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(_FORMULA_START) or (text[:1] in "+-" and text and not _NUMBER.match(text)):
        return "'" + text
    return text


def csv_lines(columns: Sequence[str], items: Iterable[BaseModel]) -> str:
    """The CSV lines of ``items`` (JSON-mode values of ``columns``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for item in items:
        values = item.model_dump(mode="json")
        writer.writerow([safe_cell(values[column]) for column in columns])
    return buffer.getvalue()


def csv_header(columns: Sequence[str]) -> str:
    """The header line."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(columns)
    return buffer.getvalue()


async def _body(
    columns: Sequence[str],
    first: Sequence[BaseModel],
    rest: AsyncIterator[Sequence[BaseModel]],
    what: str,
) -> AsyncIterator[str]:
    yield csv_header(columns)
    if first:
        yield csv_lines(columns, first)
    try:
        async for batch in rest:
            yield csv_lines(columns, batch)
    except Exception as exc:  # the status line is sent: all we can do is stop and say so
        log.error("csv export ended early", export=what, error=type(exc).__name__)
        raise


async def stream_csv(
    columns: Sequence[str],
    batches: AsyncIterator[Sequence[BaseModel]],
    filename: str,
) -> StreamingResponse:
    """A streamed CSV answer of every batch (the first read now: its errors are clean)."""
    first: Sequence[BaseModel] = ()
    async for batch in batches:
        first = batch
        break
    return StreamingResponse(
        _body(columns, first, batches, filename),
        media_type=CSV_MEDIA_TYPE,
        headers=attachment(filename),
    )
