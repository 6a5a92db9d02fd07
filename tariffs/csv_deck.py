"""Rate decks as CSV: one format, read with every problem reported, written back exactly.

The format (UTF-8, comma-separated, one header line, column order taken from the header)::

    prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,minimum_duration
    44,United Kingdom - fixed,0.012,0,60,60,0
    447,United Kingdom - mobile,0.085,0.01,30,6,0

- ``prefix`` (required): ASCII digits only, no '+', unique in the deck.
- ``destination`` (required): free text.
- ``rate`` (required): price per minute, >= 0, at most 6 decimals.
- ``connect_fee`` (default 0): charged once per answered call, >= 0, at most 6 decimals.
- ``initial_increment`` / ``subsequent_increment`` (default 60 / 60): whole seconds > 0.
- ``minimum_duration`` (default 0): whole seconds >= 0.

An optional column that is absent, or an empty cell in it, takes its default. Blank lines
are skipped; a UTF-8 byte-order mark is ignored. Unknown or repeated columns are refused,
and so is a header with no rate line after it.
:func:`parse_deck_csv` checks the whole file and raises :class:`DeckImportError` listing
EVERY bad line with its number and why; it returns a deck only when nothing is wrong.

Errors: :class:`DeckImportError` (code ``DECK_IMPORT``) under ``DeckError`` in the tree
drawn in :mod:`tariffs.ratedeck`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TextIO

from tariffs.deck import DeckInfo, Rate
from tariffs.money import MoneyError, parse_amount
from tariffs.prefix_index import is_valid_prefix
from tariffs.ratedeck import MAX_PRICE_DECIMALS, DeckError, RateDeck

COLUMNS = (
    "prefix",
    "destination",
    "rate",
    "connect_fee",
    "initial_increment",
    "subsequent_increment",
    "minimum_duration",
)
REQUIRED_COLUMNS = ("prefix", "destination", "rate")
_BLANK_REQUIRED = dict.fromkeys(REQUIRED_COLUMNS, "")
DEFAULTS = {
    "connect_fee": "0",
    "initial_increment": "60",
    "subsequent_increment": "60",
    "minimum_duration": "0",
}


@dataclass(frozen=True, slots=True)
class LineProblem:
    """One reason why one line of a deck file is bad (``field`` is None for the line)."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.field}" if self.field else "")
        return f"{where}: {self.message}"


class DeckImportError(DeckError):
    """A deck file with bad lines; ``problems`` holds every one of them, by line."""

    code = "DECK_IMPORT"

    def __init__(self, deck: str, problems: list[LineProblem]) -> None:
        lines = sorted({problem.line for problem in problems})
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"deck {deck!r}: {len(lines)} bad line(s), nothing imported:\n{listing}")
        self.deck = deck
        self.problems = tuple(problems)

    @property
    def lines(self) -> list[int]:
        """The numbers of the bad lines, ascending."""
        return sorted({problem.line for problem in self.problems})


def _rows(source: str | TextIO) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row."""
    stream = io.StringIO(source) if isinstance(source, str) else source
    reader = csv.reader(stream, strict=True)
    first = True
    for row in reader:
        if first and row:
            row[0] = row[0].removeprefix("\ufeff")
            first = False
        if any(cell.strip() for cell in row):
            yield reader.line_num, [cell.strip() for cell in row]


def _header_problems(line: int, header: list[str]) -> list[LineProblem]:
    if not any(cell in COLUMNS for cell in header):
        return [LineProblem(line, None, f"missing header: expected columns {','.join(COLUMNS)}")]
    problems: list[LineProblem] = []
    seen: set[str] = set()
    for cell in header:
        if cell not in COLUMNS:
            problems.append(LineProblem(line, cell, f"unknown column {cell!r}"))
        elif cell in seen:
            problems.append(LineProblem(line, cell, f"column {cell!r} appears twice"))
        seen.add(cell)
    for required in REQUIRED_COLUMNS:
        if required not in seen:
            problems.append(LineProblem(line, required, f"missing required column {required!r}"))
    return problems


def _price(line: int, name: str, text: str, problems: list[LineProblem]) -> Decimal:
    try:
        value = parse_amount(text, max_decimals=MAX_PRICE_DECIMALS, allow_negative=True)
    except MoneyError as exc:
        if "decimals" in str(exc):
            message = f"more than {MAX_PRICE_DECIMALS} decimals: {text!r}"
        else:
            message = f"not a price: {text!r}"
        problems.append(LineProblem(line, name, message))
        return Decimal(0)
    if value < 0:
        problems.append(LineProblem(line, name, f"negative price: {text!r}"))
    return value


def _seconds(
    line: int, name: str, text: str, problems: list[LineProblem], *, allow_zero: bool
) -> int:
    if not (text.isascii() and text.isdigit()):
        problems.append(LineProblem(line, name, f"not a whole number of seconds: {text!r}"))
        return 1
    value = int(text)
    if value == 0 and not allow_zero:
        problems.append(LineProblem(line, name, "must be greater than zero: '0'"))
    return value


def _parse_rate(line: int, cells: dict[str, str], problems: list[LineProblem]) -> Rate:
    prefix = cells["prefix"]
    if not is_valid_prefix(prefix):
        problems.append(
            LineProblem(line, "prefix", f"bad prefix {prefix!r}: ASCII digits only, no '+'")
        )
    return Rate(
        prefix=prefix,
        destination=cells["destination"],
        rate=_price(line, "rate", cells["rate"], problems),
        connect_fee=_price(line, "connect_fee", cells["connect_fee"], problems),
        initial_increment=_seconds(
            line, "initial_increment", cells["initial_increment"], problems, allow_zero=False
        ),
        subsequent_increment=_seconds(
            line, "subsequent_increment", cells["subsequent_increment"], problems, allow_zero=False
        ),
        minimum_duration=_seconds(
            line, "minimum_duration", cells["minimum_duration"], problems, allow_zero=True
        ),
    )


def parse_deck_csv(source: str | TextIO, info: DeckInfo) -> RateDeck:
    """Read a deck in the CSV format above; raise :class:`DeckImportError` on any bad line."""
    rows = _rows(source)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise DeckImportError(info.name, [LineProblem(1, None, "empty file")]) from None
    except csv.Error as exc:
        raise DeckImportError(info.name, [LineProblem(1, None, f"bad CSV: {exc}")]) from exc
    problems = _header_problems(header_line, header)
    if problems:
        raise DeckImportError(info.name, problems)
    rates: list[Rate] = []
    first_line: dict[str, int] = {}
    line = header_line
    try:
        for line, row in rows:
            if len(row) != len(header):
                problems.append(
                    LineProblem(
                        line, None, f"wrong column count: {len(row)} instead of {len(header)}"
                    )
                )
                continue
            given = {name: cell for name, cell in zip(header, row, strict=True) if cell}
            cells = _BLANK_REQUIRED | DEFAULTS | given
            before = len(problems)
            rate = _parse_rate(line, cells, problems)
            prefix = rate.prefix
            if prefix in first_line:
                message = f"duplicate prefix {prefix!r} (first on line {first_line[prefix]})"
                problems.append(LineProblem(line, "prefix", message))
            elif is_valid_prefix(prefix):
                first_line[prefix] = line
            if len(problems) == before:
                rates.append(rate)
    except csv.Error as exc:
        problems.append(LineProblem(line + 1, None, f"bad CSV: {exc}"))
    if problems:
        raise DeckImportError(info.name, problems)
    if not rates:
        raise DeckImportError(info.name, [LineProblem(header_line, None, "no rates after header")])
    return RateDeck(info, rates)


def _text(value: Decimal) -> str:
    return f"{value:f}"


def dump_deck_csv(deck: RateDeck) -> str:
    """The deck in the CSV format above, every column written (parses back identically)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for rate in deck.rates:
        writer.writerow(
            (
                rate.prefix,
                rate.destination,
                _text(rate.rate),
                _text(rate.connect_fee),
                rate.initial_increment,
                rate.subsequent_increment,
                rate.minimum_duration,
            )
        )
    return out.getvalue()
