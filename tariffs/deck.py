"""The rate deck data model (pure data, no I/O).

A deck (:class:`DeckInfo`) is a named list of rates in one currency, with one rounding
rule to N decimals and optional time bands (:mod:`tariffs.bands`). A :class:`Rate`
prices one destination prefix, in CGRateS words:

- ``connect_fee``: the ``fixed_fee`` charged once per answered call;
- interval rates: successive :class:`RateInterval` ``(start, rate, increment)``; from
  ``start`` seconds into the call the price is ``rate`` per minute (the ``unit`` is
  always 60 s: the ``recurrent_fee`` of one increment is ``rate * increment / 60``) and
  the call is billed in ``increment`` seconds. The classic ``initial_increment`` /
  ``subsequent_increment`` rate is the two-interval case ``(0, rate, initial)``,
  ``(initial, rate, subsequent)``: construct it with ``Rate(prefix, destination, rate,
  ...)``, and an interval rate with :meth:`Rate.from_intervals`;
- ``minimum_duration``: seconds billed at least, once answered;
- ``min_cost`` / ``max_cost``: bounds of an answered call's cost (``max_cost`` None =
  no cap; a capped call goes on free, CGRateS' ``*free`` max-cost strategy);
- ``effective_from`` / ``effective_to``: the window (aware datetimes, from inclusive,
  to exclusive, None = open) in which the rate applies to a call STARTING in it;
- ``band``: the time band the rate is limited to ("" = any time).

Validation lives in :mod:`tariffs.deck_rules`, the engine in :mod:`tariffs.rating`, the
lookup in :mod:`tariffs.ratedeck`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tariffs.bands import TimeBand

UNIT_SECONDS = 60
"""Every price is per minute: the ``unit`` of a CGRateS interval rate, fixed here."""


class Rounding(StrEnum):
    """How a call's cost is rounded to the deck's number of decimals."""

    UP = "up"
    HALF_UP = "half_up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class RateInterval:
    """From ``start`` seconds into the call: ``rate`` per minute, billed per ``increment`` s."""

    start: int  # interval_start, seconds
    rate: Decimal  # price per minute (unit = 60 s)
    increment: int  # seconds


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of calls to one destination prefix (in one band and date window)."""

    prefix: str
    destination: str
    rate: Decimal  # price per minute (the first interval's price with explicit intervals)
    connect_fee: Decimal = Decimal(0)
    initial_increment: int = 60  # seconds
    subsequent_increment: int = 60  # seconds
    minimum_duration: int = 0  # seconds billed at least, once answered
    intervals: tuple[RateInterval, ...] = ()  # () = the classic two intervals
    min_cost: Decimal = Decimal(0)
    max_cost: Decimal | None = None  # None = no cap
    effective_from: datetime | None = None  # inclusive; None = since ever
    effective_to: datetime | None = None  # exclusive; None = for ever
    band: str = ""  # "" = at any time

    @classmethod
    def from_intervals(
        cls, prefix: str, destination: str, intervals: Sequence[RateInterval], **rules: Any
    ) -> Rate:
        """A rate priced in ``intervals``; ``rate`` and the increments are derived from them.

        ``rate`` is the first interval's price, ``initial_increment`` its increment and
        ``subsequent_increment`` the last interval's increment (a summary for records
        and displays; the engine reads the intervals). ``rules`` are the other fields.
        """
        given = tuple(intervals)
        if not given:
            raise ValueError(f"prefix {prefix!r}: at least one interval is needed")
        return cls(
            prefix,
            destination,
            given[0].rate,
            initial_increment=given[0].increment,
            subsequent_increment=given[-1].increment,
            intervals=given,
            **rules,
        )

    @property
    def rate_intervals(self) -> tuple[RateInterval, ...]:
        """The intervals the call is priced in (the classic pair when none were given)."""
        if self.intervals:
            return self.intervals
        return (
            RateInterval(0, self.rate, self.initial_increment),
            RateInterval(self.initial_increment, self.rate, self.subsequent_increment),
        )

    @property
    def conditional(self) -> bool:
        """True when the rate applies only in a band or a date window."""
        return bool(self.band) or self.effective_from is not None or self.effective_to is not None

    def in_force(self, at: datetime) -> bool:
        """True when a call starting at ``at`` (aware) is in the effective window."""
        start, end = self.effective_from, self.effective_to
        return (start is None or start <= at) and (end is None or at < end)


@dataclass(frozen=True, slots=True)
class DeckInfo:
    """A deck's identity and rules, without its rates."""

    name: str
    currency: str = "USD"
    rounding: Rounding = Rounding.UP
    decimals: int = 6  # decimals of a call's final cost (0..6)
    bands: tuple[TimeBand, ...] = ()  # the deck's time bands (rows; a name may repeat)
