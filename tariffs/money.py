"""Money: ``Decimal`` in Python, integer micro-units (10^-6 of the currency) in SQL and Redis.

Every conversion between the two goes through this module, with explicit rounding.
Floats are refused everywhere: a float reaching these functions is a bug.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000
MICRO = Decimal("0.000001")
_MAX_ABS_MICROS = 2**53  # exact in a Lua double


class MoneyError(ValueError):
    """An amount that is not a valid money value (names the offending text)."""


def to_micros(amount: Decimal, rounding: str = ROUND_HALF_UP) -> int:
    """Convert a Decimal amount to integer micro-units, rounding explicitly."""
    if isinstance(amount, float) or not isinstance(amount, Decimal):
        raise MoneyError(f"amount must be a Decimal, not {type(amount).__name__}: {amount!r}")
    if not amount.is_finite():
        raise MoneyError(f"amount is not finite: {amount}")
    micros = int((amount * MICROS_PER_UNIT).quantize(Decimal(1), rounding=rounding))
    if abs(micros) >= _MAX_ABS_MICROS:
        raise MoneyError(f"amount out of range: {amount}")
    return micros


def from_micros(micros: int) -> Decimal:
    """Convert integer micro-units to a Decimal amount (exact, 6 decimals)."""
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise MoneyError(f"micro-units must be an int, not {type(micros).__name__}: {micros!r}")
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(MICRO)


def parse_amount(text: str, *, max_decimals: int = 6, allow_negative: bool = True) -> Decimal:
    """Parse a user-supplied amount strictly: digits only, at most ``max_decimals`` decimals."""
    raw = text.strip()
    try:
        value = Decimal(raw)
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"amount is not finite: {text!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_decimals:
        raise MoneyError(f"too many decimals (max {max_decimals}): {text!r}")
    if not allow_negative and value < 0:
        raise MoneyError(f"amount must not be negative: {text!r}")
    to_micros(value)  # range check
    return value


def format_money(micros: int, currency: str = "") -> str:
    """Human display of micro-units, e.g. ``12.345600 USD``."""
    text = f"{from_micros(micros):f}"
    return f"{text} {currency}".strip()
