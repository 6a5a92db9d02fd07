"""The rate deck data model (pure data, no I/O).

A deck is a named list of rates in one currency with one rounding rule. A rate prices
a destination prefix: connect fee, price per minute, initial and subsequent increments
in seconds (60/60, 30/6, 1/1 ...) and a minimum billable duration in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Rounding(StrEnum):
    """How a call's cost is rounded to the deck's number of decimals."""

    UP = "up"
    HALF_UP = "half_up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of calls to one destination prefix."""

    prefix: str
    destination: str
    rate: Decimal  # price per minute
    connect_fee: Decimal = Decimal(0)
    initial_increment: int = 60  # seconds
    subsequent_increment: int = 60  # seconds
    minimum_duration: int = 0  # seconds billed at least, once answered


@dataclass(frozen=True, slots=True)
class DeckInfo:
    """A deck's identity and rules, without its rates."""

    name: str
    currency: str = "USD"
    rounding: Rounding = Rounding.UP
    decimals: int = 6  # decimals of a call's final cost (0..6)
