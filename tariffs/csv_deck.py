"""Rate decks as CSV: one format, read with every problem reported, written back exactly.

The format (UTF-8, comma-separated; column order taken from each header line)::

    [bands]
    band,days,from,to
    peak,mon-fri,08:00,18:00
    offpeak,mon-fri,00:00,08:00
    offpeak,mon-fri,18:00,24:00
    weekend,sat-sun,00:00,24:00
    [rates]
    prefix,destination,rate,connect_fee,initial_increment,intervals,max_cost,band
    44,United Kingdom - fixed,0.012,0,60,,,
    447,United Kingdom - mobile,,0.01,,0:0.085:30;30:0.06:6,1.50,
    33,France - fixed,0.02,0,30,,,peak
    33,France - fixed,0.01,0,30,,,

A file with no ``[section]`` line is a rates section alone (the format before bands:
every such file still reads the same). With sections, ``[bands]`` (optional) and
``[rates]`` each come once, a ``[...]`` line alone on its row (trailing empty cells,
as spreadsheets write them, are fine).

Bands section, one row per part of the week, all four columns required:

- ``band``: the name (a lower-case letter, then a-z, 0-9, ``_``, ``-``; 1-32);
- ``days``: ``mon``..``sun``, a range ``mon-fri`` (may wrap: ``fri-mon``), a list
  ``mon;wed;fri``, or ``all``;
- ``from`` / ``to``: ``HH:MM`` local time, ``from < to``, ``to`` up to ``24:00``.

Rows of one name add up; no two rows may cover the same minute; a band never crosses
midnight (write two rows). Bands are read in the ACCOUNT's time zone.

Rates section, one rate per row (a prefix may have several rows: one per band and
effective window):

- ``prefix`` (required): ASCII digits only, no '+'.
- ``destination`` (required): free text.
- ``rate`` (required column): price per minute, >= 0, at most 6 decimals; leave the
  cell empty when ``intervals`` is given.
- ``connect_fee`` (default 0): charged once per answered call (CGRateS ``fixed_fee``).
- ``initial_increment`` / ``subsequent_increment`` (default 60 / 60): whole seconds > 0;
  leave empty when ``intervals`` is given.
- ``minimum_duration`` (default 0): whole seconds >= 0 billed at least.
- ``intervals`` (default: none): interval rates ``start:rate:increment`` joined by ';',
  e.g. ``0:0.60:60;60:0.30:6`` = the first minute at 0.60/min in one 60 s block, then
  0.30/min per 6 s. Starts are seconds into the call, the first is 0, they increase.
- ``min_cost`` (default 0) / ``max_cost`` (default none): bounds of an answered call's
  cost, at most the deck's decimals; ``max_cost`` >= ``min_cost`` and >= ``connect_fee``.
- ``band`` (default: any time): the name of a band of the ``[bands]`` section.
- ``effective_from`` / ``effective_to`` (default: open): ISO 8601 date or date-time, e.g.
  ``2026-01-01`` or ``2026-01-01T08:00:00+01:00``; no offset means UTC. The rate applies
  to calls STARTING in ``[from, to)``. Windows of one prefix and band must not overlap.

An optional column that is absent, or an empty cell in it, takes its default. Blank lines
are skipped; a UTF-8 byte-order mark is ignored. Unknown or repeated columns are refused,
and so is a file with no rate line. The deck's currency (ISO 4217), rounding and decimals
are not in the file: they come with :class:`~tariffs.deck.DeckInfo` (the CLI's options).

:func:`parse_deck_csv` checks the whole file and raises :class:`DeckImportError` listing
EVERY bad line with its number and why; it returns a deck only when nothing is wrong.
:func:`dump_deck_csv` writes the bands section only when the deck has bands, and only
the optional columns some rate uses, so ``dump(parse(text)) == text`` for a file in
that canonical shape and ``parse(dump(deck)) == deck`` always.

Errors: :class:`DeckImportError` (code ``DECK_IMPORT``) under ``DeckError`` in the tree
drawn in :mod:`tariffs.ratedeck`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from tariffs.bands import TimeBand, format_clock, format_days, parse_clock, parse_days
from tariffs.deck import DeckInfo, Rate, RateInterval
from tariffs.deck_rules import band_problems, deck_problems, info_problems
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
"""The classic columns, always written."""
OPTIONAL_COLUMNS = ("intervals", "min_cost", "max_cost", "band", "effective_from", "effective_to")
"""The newer columns, written when some rate uses them."""
ALL_COLUMNS = COLUMNS + OPTIONAL_COLUMNS
REQUIRED_COLUMNS = ("prefix", "destination", "rate")
BAND_COLUMNS = ("band", "days", "from", "to")
BANDS, RATES = "[bands]", "[rates]"
_BLANK_REQUIRED = dict.fromkeys(REQUIRED_COLUMNS, "")
DEFAULTS = {
    "connect_fee": "0",
    "initial_increment": "60",
    "subsequent_increment": "60",
    "minimum_duration": "0",
    "intervals": "",
    "min_cost": "0",
    "max_cost": "",
    "band": "",
    "effective_from": "",
    "effective_to": "",
}

Row = tuple[int, list[str]]


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


# --- reading ------------------------------------------------------------------------------


def _rows(source: str | TextIO, problems: list[LineProblem]) -> list[Row]:
    """(line number, stripped cells) of every non-blank row; a CSV error ends the file."""
    stream = io.StringIO(source) if isinstance(source, str) else source
    reader = csv.reader(stream, strict=True)
    rows: list[Row] = []
    first = True
    try:
        for row in reader:
            if first and row:
                row[0] = row[0].removeprefix("\ufeff")
                first = False
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as exc:
        line = rows[-1][0] + 1 if rows else 1
        problems.append(LineProblem(line, None, f"bad CSV: {exc}"))
    return rows


def _section_name(cells: list[str]) -> str | None:
    head = cells[0].lower()
    if head.startswith("[") and head.endswith("]") and not any(cells[1:]):
        return head
    return None


def _sections(rows: list[Row], problems: list[LineProblem]) -> dict[str, list[Row]]:
    """The rows of each section; a file without section lines is all rates."""
    if not any(_section_name(cells) for _, cells in rows):
        return {RATES: rows}
    sections: dict[str, list[Row]] = {}
    current: list[Row] | None = None
    for line, cells in rows:
        name = _section_name(cells)
        if name is None:
            if current is None:
                problems.append(LineProblem(line, None, "a line before the first [section]"))
            else:
                current.append((line, cells))
        elif name not in (BANDS, RATES):
            problems.append(LineProblem(line, None, f"unknown section {name}: [bands] or [rates]"))
            current = None
        elif name in sections:
            problems.append(LineProblem(line, None, f"section {name} appears twice"))
            current = None
        else:
            current = sections[name] = []
    return sections


def _header_problems(line: int, header: list[str], known: tuple[str, ...],
                     required: tuple[str, ...]) -> list[LineProblem]:  # fmt: skip
    if not any(cell in known for cell in header):
        return [LineProblem(line, None, f"missing header: expected columns {','.join(known)}")]
    problems: list[LineProblem] = []
    seen: set[str] = set()
    for cell in header:
        if cell not in known:
            problems.append(LineProblem(line, cell, f"unknown column {cell!r}"))
        elif cell in seen:
            problems.append(LineProblem(line, cell, f"column {cell!r} appears twice"))
        seen.add(cell)
    for name in required:
        if name not in seen:
            problems.append(LineProblem(line, name, f"missing required column {name!r}"))
    return problems


def _records(
    rows: list[Row], known: tuple[str, ...], required: tuple[str, ...],
    problems: list[LineProblem],
) -> Iterator[tuple[int, dict[str, str]]]:  # fmt: skip
    """(line, {column: non-empty cell}) of each data row of a section with a header."""
    if not rows:
        return
    header_line, header = rows[0]
    header_issues = _header_problems(header_line, header, known, required)
    if header_issues:
        problems.extend(header_issues)
        return
    for line, row in rows[1:]:
        if len(row) != len(header):
            problems.append(
                LineProblem(line, None, f"wrong column count: {len(row)} instead of {len(header)}")
            )
            continue
        yield line, {name: cell for name, cell in zip(header, row, strict=True) if cell}


Prices = dict[str, tuple[Decimal, str | None]]
"""Price cells already read in this file: a deck repeats a few thousand prices."""


def _read_price(text: str) -> tuple[Decimal, str | None]:
    """A price cell: (value, None), or (0, why it is not a price)."""
    try:
        value = parse_amount(text, max_decimals=MAX_PRICE_DECIMALS, allow_negative=True)
    except MoneyError as exc:
        if "decimals" in str(exc):
            return Decimal(0), f"more than {MAX_PRICE_DECIMALS} decimals: {text!r}"
        return Decimal(0), f"not a price: {text!r}"
    if value < 0:
        return value, f"negative price: {text!r}"
    return value, None


class _Cells:
    """Reads the cells of one line into typed values, recording each problem."""

    def __init__(self, line: int, problems: list[LineProblem], prices: Prices) -> None:
        self.line = line
        self.problems = problems
        self.prices = prices
        self.count = 0

    def fail(self, field: str | None, message: str) -> None:
        self.problems.append(LineProblem(self.line, field, message))
        self.count += 1

    def price(self, name: str, text: str) -> Decimal:
        known = self.prices.get(text)
        if known is None:
            known = self.prices[text] = _read_price(text)
        value, problem = known
        if problem is not None:
            self.fail(name, problem)
        return value

    def seconds(self, name: str, text: str, *, allow_zero: bool) -> int:
        if not (text.isascii() and text.isdigit()):
            self.fail(name, f"not a whole number of seconds: {text!r}")
            return 1
        value = int(text)
        if value == 0 and not allow_zero:
            self.fail(name, "must be greater than zero: '0'")
        return value

    def moment(self, name: str, text: str) -> datetime | None:
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            self.fail(name, f"not an ISO 8601 date or date-time: {text!r}")
            return None
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)

    def intervals(self, text: str) -> tuple[RateInterval, ...]:
        intervals: list[RateInterval] = []
        for part in text.split(";"):
            pieces = [piece.strip() for piece in part.split(":")]
            if len(pieces) != 3:
                self.fail("intervals", f"bad interval {part.strip()!r}: start:rate:increment")
                continue
            start = self.seconds("intervals", pieces[0], allow_zero=True)
            rate = self.price("intervals", pieces[1])
            increment = self.seconds("intervals", pieces[2], allow_zero=False)
            intervals.append(RateInterval(start, rate, increment))
        return tuple(intervals)


def _agree(read: _Cells, rate: Rate, given: dict[str, str]) -> None:
    """With ``intervals``, a written rate or increment must say what the intervals say."""
    if "rate" in given and read.price("rate", given["rate"]) != rate.rate:
        read.fail("rate", f"{given['rate']!r} disagrees with the intervals ({rate.rate})")
    for name in ("initial_increment", "subsequent_increment"):
        if name in given and given[name] != str(getattr(rate, name)):
            read.fail(name, f"{given[name]!r} disagrees with the intervals ({getattr(rate, name)})")


def _parse_rate(
    line: int, given: dict[str, str], problems: list[LineProblem], prices: Prices
) -> Rate | None:
    """The rate of one line, or None when a cell is bad (each problem recorded)."""
    cells = _BLANK_REQUIRED | DEFAULTS | given
    read = _Cells(line, problems, prices)
    prefix = cells["prefix"]
    if not is_valid_prefix(prefix):
        read.fail("prefix", f"bad prefix {prefix!r}: ASCII digits only, no '+'")
    rules: dict[str, Any] = {
        "connect_fee": read.price("connect_fee", cells["connect_fee"]),
        "minimum_duration": read.seconds(
            "minimum_duration", cells["minimum_duration"], allow_zero=True
        ),
        "min_cost": read.price("min_cost", cells["min_cost"]),
        "max_cost": read.price("max_cost", cells["max_cost"]) if cells["max_cost"] else None,
        "band": cells["band"],
        "effective_from": read.moment("effective_from", cells["effective_from"]),
        "effective_to": read.moment("effective_to", cells["effective_to"]),
    }
    rate: Rate
    if cells["intervals"]:
        intervals = read.intervals(cells["intervals"])
        if not intervals:
            return None
        rate = Rate.from_intervals(prefix, cells["destination"], intervals, **rules)
        _agree(read, rate, given)
    else:
        rate = Rate(
            prefix,
            cells["destination"],
            read.price("rate", cells["rate"]),
            initial_increment=read.seconds(
                "initial_increment", cells["initial_increment"], allow_zero=False
            ),
            subsequent_increment=read.seconds(
                "subsequent_increment", cells["subsequent_increment"], allow_zero=False
            ),
            **rules,
        )
    return rate if read.count == 0 else None


def _parse_bands(rows: list[Row], problems: list[LineProblem]) -> tuple[list[TimeBand], list[int]]:
    bands: list[TimeBand] = []
    lines: list[int] = []
    for line, cells in _records(rows, BAND_COLUMNS, BAND_COLUMNS, problems):
        read = _Cells(line, problems, {})
        values = [cells.get(name, "") for name in BAND_COLUMNS]
        name, days_text, start_text, end_text = values
        try:
            days = parse_days(days_text)
        except ValueError as exc:
            read.fail("days", str(exc))
        for field, text in (("from", start_text), ("to", end_text)):
            try:
                parse_clock(text)
            except ValueError as exc:
                read.fail(field, str(exc))
        if read.count == 0:
            bands.append(TimeBand(name, days, parse_clock(start_text), parse_clock(end_text)))
            lines.append(line)
    checked = DeckInfo("bands", bands=tuple(bands))
    for index, message in band_problems(checked, lambda i: f"line {lines[i]}"):
        problems.append(LineProblem(lines[index], "band", message))
    return bands, lines


def parse_deck_csv(source: str | TextIO, info: DeckInfo) -> RateDeck:
    """Read a deck in the CSV format above; raise :class:`DeckImportError` on any bad line.

    ``info`` gives the name, currency, rounding and decimals; its bands are replaced by
    the file's ``[bands]`` section. A bad ``info`` raises :class:`DeckError` first.
    """
    info_issues = info_problems(info)
    if info_issues:
        raise DeckError(f"deck {info.name!r}: {'; '.join(info_issues)}")
    problems: list[LineProblem] = []
    rows = _rows(source, problems)
    if not rows and not problems:
        raise DeckImportError(info.name, [LineProblem(1, None, "empty file")])
    sections = _sections(rows, problems)
    bands, band_lines = _parse_bands(sections.get(BANDS, []), problems)
    info = replace(info, bands=tuple(bands))
    rate_rows = sections.get(RATES, [])
    rates: list[Rate] = []
    lines: list[int] = []
    prices: Prices = {}
    for line, given in _records(rate_rows, ALL_COLUMNS, REQUIRED_COLUMNS, problems):
        rate = _parse_rate(line, given, problems, prices)
        if rate is not None:
            rates.append(rate)
            lines.append(line)
    for problem in deck_problems(info, rates, lambda index: f"line {lines[index]}"):
        problems.append(LineProblem(lines[problem.index], problem.field, problem.message))
    if not problems and not rates:
        line = rate_rows[0][0] if rate_rows else (band_lines[-1] if band_lines else rows[-1][0])
        problems.append(LineProblem(line, None, "no rates after header"))
    if problems:
        problems.sort(key=lambda problem: problem.line)
        raise DeckImportError(info.name, problems)
    return RateDeck._from_checked(info, tuple(rates))  # the rules were checked just above


# --- writing ------------------------------------------------------------------------------


def _text(value: Decimal) -> str:
    return f"{value:f}"


def _moment(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _used(rate: Rate) -> set[str]:
    used = set()
    if rate.intervals:
        used.add("intervals")
    if rate.min_cost != 0:
        used.add("min_cost")
    if rate.max_cost is not None:
        used.add("max_cost")
    if rate.band:
        used.add("band")
    if rate.effective_from is not None:
        used.add("effective_from")
    if rate.effective_to is not None:
        used.add("effective_to")
    return used


def _cells(rate: Rate) -> dict[str, str]:
    interval_rate = bool(rate.intervals)
    return {
        "prefix": rate.prefix,
        "destination": rate.destination,
        "rate": "" if interval_rate else _text(rate.rate),
        "connect_fee": _text(rate.connect_fee),
        "initial_increment": "" if interval_rate else str(rate.initial_increment),
        "subsequent_increment": "" if interval_rate else str(rate.subsequent_increment),
        "minimum_duration": str(rate.minimum_duration),
        "intervals": ";".join(
            f"{i.start}:{_text(i.rate)}:{i.increment}" for i in rate.intervals
        ),
        "min_cost": "" if rate.min_cost == 0 else _text(rate.min_cost),
        "max_cost": "" if rate.max_cost is None else _text(rate.max_cost),
        "band": rate.band,
        "effective_from": _moment(rate.effective_from),
        "effective_to": _moment(rate.effective_to),
    }


def dump_deck_csv(deck: RateDeck) -> str:
    """The deck in the CSV format above (parses back to an equal deck)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if deck.info.bands:
        writer.writerow((BANDS,))
        writer.writerow(BAND_COLUMNS)
        for band in deck.info.bands:
            writer.writerow(
                (band.name, format_days(band.weekdays), format_clock(band.start),
                 format_clock(band.end))
            )  # fmt: skip
        writer.writerow((RATES,))
    used = set().union(*(_used(rate) for rate in deck.rates))
    columns = COLUMNS + tuple(name for name in OPTIONAL_COLUMNS if name in used)
    writer.writerow(columns)
    for rate in deck.rates:
        cells = _cells(rate)
        writer.writerow(tuple(cells[name] for name in columns))
    return out.getvalue()
