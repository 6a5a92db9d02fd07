"""Time bands: named parts of the week (peak, offpeak, weekend ...) in local time.

A band is one or more rows of ``TimeBand(name, weekdays, start, end)``: the band holds a
local moment when its weekday (Monday = 0) is in ``weekdays`` and its minute of the day
is in ``[start, end)`` (minutes, ``0 <= start < end <= 1440``; 1440 is 24:00). Rows of
one name add up (offpeak = Mon-Fri 00:00-08:00 + Mon-Fri 18:00-24:00 + Sat-Sun all day).
Bands of one deck never overlap, so a moment is in at most one band; a band never
crosses midnight (write two rows).

The moment is the call's start in the ACCOUNT's time zone (an IANA name, "UTC" by
default): a deck shared by accounts in Paris and New York has its peak at 08:00 local
time for each. :class:`BandCalendar` turns a deck's rows into a week of 10,080 minutes
for an O(1) lookup.

Text forms (the CSV deck uses them): days are ``mon``..``sun``, a range ``mon-fri``
(ranges may wrap: ``fri-mon``) or a list joined by ``;`` (``mon;wed;fri``), or ``all``;
times are ``HH:MM`` from ``00:00`` to ``24:00``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
ALL_DAY = (0, MINUTES_PER_DAY)
WEEKDAYS = (0, 1, 2, 3, 4)
WEEKEND = (5, 6)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CLOCK_RE = re.compile(r"^([0-9]{2}):([0-9]{2})$")


@dataclass(frozen=True, slots=True)
class TimeBand:
    """One row of a band: on these weekdays (Monday = 0), from ``start`` to ``end`` minutes."""

    name: str
    weekdays: tuple[int, ...]
    start: int = 0  # minute of the day, inclusive
    end: int = MINUTES_PER_DAY  # minute of the day, exclusive (1440 = 24:00)

    def minutes_of_week(self) -> Iterator[int]:
        """Every minute of the week (0 = Monday 00:00) this row covers."""
        return (
            day * MINUTES_PER_DAY + minute
            for day in self.weekdays
            for minute in range(self.start, self.end)
        )


def band_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid band name (lower-case letter, then a-z 0-9 _ -), or None."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return (
            f"bad band name {name!r}: 1-32 characters, a lower-case letter first, "
            "then a-z, 0-9, '_' or '-'"
        )
    return None


def band_row_problems(band: TimeBand) -> list[str]:
    """Every reason why one band row is invalid on its own."""
    problems: list[str] = []
    name_problem = band_name_problem(band.name)
    if name_problem:
        problems.append(name_problem)
    days = band.weekdays
    if (
        not isinstance(days, tuple)
        or not days
        or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6 for d in days)
    ):
        problems.append(f"weekdays must be a non-empty tuple of 0 (Monday) .. 6, not {days!r}")
    start, end = band.start, band.end
    if not (isinstance(start, int) and isinstance(end, int)) or not (
        0 <= start < end <= MINUTES_PER_DAY
    ):
        problems.append(
            f"times must satisfy 00:00 <= from < to <= 24:00, not "
            f"{format_clock(start) if isinstance(start, int) else start!r}-"
            f"{format_clock(end) if isinstance(end, int) else end!r}"
        )
    return problems


def band_overlaps(bands: Sequence[TimeBand]) -> list[tuple[int, int]]:
    """(later, earlier) index pairs of rows that cover a common minute of the week."""
    owner: dict[int, int] = {}
    overlaps: list[tuple[int, int]] = []
    for index, band in enumerate(bands):
        if band_row_problems(band):
            continue
        hit: int | None = None
        for minute in band.minutes_of_week():
            first = owner.setdefault(minute, index)
            if first != index and hit is None:
                hit = first
        if hit is not None:
            overlaps.append((index, hit))
    return overlaps


class BandCalendar:
    """A deck's bands over one week: which band (or none) holds a local moment."""

    __slots__ = ("_names", "_week")

    def __init__(self, bands: Sequence[TimeBand]) -> None:
        names = sorted({band.name for band in bands})
        self._names: tuple[str, ...] = ("", *names)
        number = {name: i for i, name in enumerate(self._names)}
        week = bytearray(MINUTES_PER_WEEK)  # 0 = no band
        for band in bands:
            for minute in band.minutes_of_week():
                week[minute] = number[band.name]
        self._week = bytes(week)

    @property
    def names(self) -> tuple[str, ...]:
        """The band names, sorted (without the empty "no band" name)."""
        return self._names[1:]

    def band_at(self, local: datetime) -> str:
        """The band holding a local moment (its wall-clock fields are used), or ""."""
        minute = local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute
        return self._names[self._week[minute]]


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ValueError`` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_time(at: datetime, tz: str) -> datetime:
    """``at`` (aware) as wall-clock time in the IANA zone ``tz``."""
    if tz == "UTC":
        return at.astimezone(UTC)
    return at.astimezone(zone(tz))


# --- text forms -------------------------------------------------------------------------


def parse_days(text: str) -> tuple[int, ...]:
    """``mon-fri`` / ``sat;sun`` / ``fri-mon`` / ``all`` -> sorted weekday numbers."""
    cleaned = text.strip().lower()
    if cleaned == "all":
        return EVERY_DAY
    days: set[int] = set()
    for part in cleaned.split(";"):
        first, dash, last = part.strip().partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            raise ValueError(f"bad days {text!r}: use mon..sun, a range mon-fri, ';' or all")
        begin = DAY_NAMES.index(first)
        stop = DAY_NAMES.index(last) if dash else begin
        day = begin
        days.add(day)
        while day != stop:
            day = (day + 1) % 7
            days.add(day)
    return tuple(sorted(days))


def format_days(weekdays: Sequence[int]) -> str:
    """The shortest text :func:`parse_days` reads back as ``weekdays``."""
    days = sorted(set(weekdays))
    if days == list(EVERY_DAY):
        return "all"
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) == 1:
            parts.append(DAY_NAMES[run[0]])
        else:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
    return ";".join(parts)


def parse_clock(text: str) -> int:
    """``HH:MM`` (00:00 .. 24:00) -> minutes of the day."""
    match = _CLOCK_RE.match(text.strip())
    if match is None:
        raise ValueError(f"bad time {text!r}: use HH:MM, 00:00 to 24:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours * 60 + minutes > MINUTES_PER_DAY:
        raise ValueError(f"bad time {text!r}: use HH:MM, 00:00 to 24:00")
    return hours * 60 + minutes


def format_clock(minutes: int) -> str:
    """Minutes of the day -> ``HH:MM`` (1440 -> ``24:00``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
