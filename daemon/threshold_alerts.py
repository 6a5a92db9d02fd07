"""Low-balance alerts: one event per threshold crossing, checked as credit is used.

After every debit tick of a live call (the rate in force is known: "minutes left" is at
that rate) and after every rated call, the account's available credit (balance + credit
limit - reservations, read from its Redis hash) is checked against its thresholds by
``balance.thresholds.ThresholdWatcher``, whose armed state lives in Redis: a threshold
fires once when the credit falls to it and re-arms only when a top-up lifts the credit
above it, however many ticks and daemon instances see it meanwhile.

An account's thresholds are its own ``low_balance`` (JSON, e.g.
``[{"amount": "5.00"}, {"minutes": 10}]``) or else ``[notifications] low_balance``. An
account without thresholds costs nothing here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis

from balance import keys
from balance.thresholds import ThresholdRule, ThresholdWatcher, minutes_left
from daemon import notifications
from daemon.account_directory import AccountDirectory
from daemon.notification_settings import ThresholdSettings
from daemon.notifications import Notifier

log = structlog.get_logger(__name__)


def parse_rules(text: str) -> tuple[ThresholdRule, ...]:
    """An account's ``low_balance`` JSON as rules; ValueError naming what is wrong."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"low_balance: not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("low_balance: a JSON list of {amount} / {minutes} objects")
    try:
        return tuple(ThresholdSettings.model_validate(item).rule() for item in items)
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"low_balance: {exc}") from exc


class ThresholdAlerts:
    """Checks accounts' available credit against their thresholds; publishes crossings."""

    def __init__(
        self,
        redis: Redis,
        directory: AccountDirectory,
        notifier: Notifier,
        defaults: Sequence[ThresholdRule],
    ) -> None:
        self._redis = redis
        self._directory = directory
        self._notifier = notifier
        self.defaults = tuple(defaults)  # replaced on a configuration reload
        self._watcher = ThresholdWatcher(redis)
        self._parsed: dict[str, tuple[ThresholdRule, ...]] = {}
        self.fired = 0

    async def rules_for(self, account_id: str) -> tuple[ThresholdRule, ...]:
        """The account's thresholds (its own, else the defaults)."""
        account = await self._directory.get(account_id)
        if account is None or not account.low_balance:
            return self.defaults
        text = account.low_balance
        found = self._parsed.get(text)
        if found is None:
            try:
                found = parse_rules(text)
            except ValueError as exc:
                log.warning("bad low_balance of account", account=account_id, error=str(exc))
                found = self.defaults
            self._parsed[text] = found
        return found

    async def check(self, account_id: str, rate_micros_per_minute: int | None) -> int:
        """Check one account now; the number of thresholds that just fired."""
        rules = await self.rules_for(account_id)
        if not rules:
            return 0
        fields = await self._redis.hmget(
            keys.account_key(account_id), ["balance", "credit_limit", "reserved"]
        )
        if fields[0] is None:
            return 0
        available = int(fields[0]) + int(fields[1] or 0) - int(fields[2] or 0)
        crossed = await self._watcher.check(account_id, rules, available, rate_micros_per_minute)
        if crossed:
            account = await self._directory.get(account_id)
            currency = account.currency if account is not None else "XXX"
            left = minutes_left(available, rate_micros_per_minute)
            for rule in crossed:
                log.info("low balance", account=account_id, rule=rule.key, available=available)
                self._notifier.publish(
                    notifications.balance_threshold(
                        account_id,
                        rule=rule,
                        available_micros=available,
                        minutes_left=left,
                        currency=currency,
                    )
                )
            self.fired += len(crossed)
        return len(crossed)
