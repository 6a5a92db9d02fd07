"""Low-balance thresholds: one notification per crossing, not one per debit tick.

A :class:`ThresholdRule` is either an amount (``amount_micros``: the available credit falls
to or below it) or a number of minutes (``minutes``: the minutes left at the current rate
fall to or below it). A rule *fires* once when it is reached and re-arms only when the
credit rises above it again (a top-up)::

    available   9.00   6.00   4.99   4.50   3.00   20.00  4.00      rule: amount 5.00
    fires        -      -     yes     -      -      -     yes
    state      armed  armed  fired  fired  fired  armed  fired

Minutes left are ``available / rate per minute`` rounded down (``ROUND_FLOOR``, in
``Decimal``): 10.9 minutes left is 10. A minutes rule cannot be evaluated without a
positive rate; it then keeps its state.

:func:`crossed` is the pure rule; :class:`ThresholdWatcher` keeps the state of each account
in Redis (``rk:{<account>}:thresholds``, a hash of the rules that fired) and updates it
with one Lua script (``balance/lua/thresholds.lua``), so two concurrent checks never both
fire the same crossing.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from redis.asyncio import Redis

from balance.keys import thresholds_key
from balance.scripts import DirectRunner, ScriptRunner, load_script
from tariffs.money import from_micros

ThresholdState = frozenset[str]
"""The keys of the rules that fired and have not re-armed yet."""

REACHED, NOT_REACHED, UNKNOWN = "1", "0", "?"


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """A low-balance threshold: ``amount_micros`` of credit or ``minutes`` left (one of)."""

    amount_micros: int | None = None
    minutes: int | None = None

    def __post_init__(self) -> None:
        if (self.amount_micros is None) == (self.minutes is None):
            raise ValueError(
                "a threshold rule needs exactly one of amount_micros and minutes, got "
                f"amount_micros={self.amount_micros!r}, minutes={self.minutes!r}"
            )
        for name in ("amount_micros", "minutes"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"threshold {name} must be an int >= 0, got {value!r}")

    @property
    def key(self) -> str:
        """Stable identity of the rule in the state: ``amount:<micros>`` or ``minutes:<n>``."""
        if self.amount_micros is not None:
            return f"amount:{self.amount_micros}"
        return f"minutes:{self.minutes}"

    def describe(self) -> dict[str, Any]:
        """JSON-safe form: ``{"amount": "5.000000"}`` or ``{"minutes": 10}``."""
        if self.amount_micros is not None:
            return {"amount": str(from_micros(self.amount_micros))}
        return {"minutes": self.minutes}


def minutes_left(available_micros: int, rate_micros_per_minute: int | None) -> int | None:
    """Whole minutes the credit lasts at this rate (rounded down); None without a rate > 0."""
    if rate_micros_per_minute is None or rate_micros_per_minute <= 0:
        return None
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        ratio = Decimal(available_micros) / Decimal(rate_micros_per_minute)
        return int(ratio.to_integral_value(rounding=ROUND_FLOOR))


def reached(
    rule: ThresholdRule, available_micros: int, rate_micros_per_minute: int | None
) -> bool | None:
    """Whether the credit is at or below ``rule``; None when it cannot be told (no rate)."""
    if rule.amount_micros is not None:
        return available_micros <= rule.amount_micros
    left = minutes_left(available_micros, rate_micros_per_minute)
    if left is None or rule.minutes is None:
        return None
    return left <= rule.minutes


def _unique(rules: Iterable[ThresholdRule]) -> list[ThresholdRule]:
    seen: dict[str, ThresholdRule] = {}
    for rule in rules:
        seen.setdefault(rule.key, rule)
    return list(seen.values())


def crossed(
    rules: Sequence[ThresholdRule],
    previous_state: ThresholdState,
    available_micros: int,
    rate_micros_per_minute: int | None,
) -> tuple[ThresholdState, list[ThresholdRule]]:
    """The new state and the rules that fire now (reached, and not fired before)."""
    state = set(previous_state) & {rule.key for rule in rules}
    fired: list[ThresholdRule] = []
    for rule in _unique(rules):
        now = reached(rule, available_micros, rate_micros_per_minute)
        if now is True and rule.key not in state:
            state.add(rule.key)
            fired.append(rule)
        elif now is False:
            state.discard(rule.key)
    return frozenset(state), fired


class ThresholdWatcher:
    """Keeps each account's threshold state in Redis; ``check`` fires each crossing once."""

    def __init__(self, redis: Redis, runner: ScriptRunner | None = None) -> None:
        self._redis = redis
        self._runner: ScriptRunner = runner or DirectRunner(redis)
        self._script = load_script("thresholds")

    async def check(
        self,
        account: str,
        rules: Sequence[ThresholdRule],
        available_micros: int,
        rate_micros_per_minute: int | None,
    ) -> list[ThresholdRule]:
        """The rules of ``account`` that were crossed by this change of available credit."""
        unique = _unique(rules)
        args: list[str | int] = []
        for rule in unique:
            now = reached(rule, available_micros, rate_micros_per_minute)
            args += [rule.key, UNKNOWN if now is None else REACHED if now else NOT_REACHED]
        reply = await self._runner.run(self._script, [thresholds_key(account)], args)
        fired = {_text(key) for key in reply or ()}
        return [rule for rule in unique if rule.key in fired]

    async def state(self, account: str) -> ThresholdState:
        """The keys of the rules of ``account`` that fired and have not re-armed."""
        fields = await self._redis.hkeys(thresholds_key(account))
        return frozenset(_text(field) for field in fields)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
