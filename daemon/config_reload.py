"""SIGHUP re-reads the configuration file: what can change live changes at once.

Applied live: ``[logging] level``, the ``[caps]`` policy (trial caps, what a suspension
does to live calls, postpaid auto-suspension: every account's hot state in Redis is
reloaded with it), ``[seats] over_limit`` and the ``[notifications] low_balance``
defaults. Everything else (listeners, database, Redis, switches, MQTT / webhook, the
state directory) takes effect at the next restart: a change there is logged as such,
naming the sections, and the running values stay. A file that does not load keeps the
whole running configuration, with the error logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.logging_setup import configure_logging
from daemon.settings import ConfigError, Settings, load_settings

log = structlog.get_logger(__name__)

LIVE_SECTIONS = ("logging", "caps", "seats")
"""Sections applied at once (``notifications`` only for its ``low_balance`` defaults)."""

RESTART_SECTIONS = (
    "state_dir",
    "event_loop",
    "database",
    "redis",
    "authorization",
    "api",
    "switches",
)


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What a reload found: the new settings, the sections applied, those needing a restart."""

    settings: Settings
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def read_change(
    current: Settings,
    path: Path | None,
    *,
    loader: Callable[[Path | None], Settings] = load_settings,
) -> ConfigChange | None:
    """The new configuration compared with the running one; None when it does not load."""
    try:
        new = loader(path)
    except ConfigError as exc:
        log.error("configuration reload refused; the running configuration stays", error=str(exc))
        return None
    applied = [name for name in LIVE_SECTIONS if getattr(new, name) != getattr(current, name)]
    if new.notifications.low_balance != current.notifications.low_balance:
        applied.append("notifications.low_balance")
    restart = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(current, name)]
    if (new.notifications.mqtt, new.notifications.webhook) != (
        current.notifications.mqtt,
        current.notifications.webhook,
    ):
        restart.append("notifications")
    if restart:
        log.warning("configuration changed; takes effect at the next restart", sections=restart)
    return ConfigChange(new, tuple(applied), tuple(restart))


def apply_logging(new: Settings, current: Settings) -> None:
    """A new log level or format, at once."""
    if new.logging != current.logging:
        configure_logging(new.logging.level, new.logging.format)
