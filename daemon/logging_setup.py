"""Logging: structlog for our code, stdlib (uvicorn, alembic, ...) through the same renderer.

``configure_logging`` is called once by the composition root, from ``[logging]``. Every
line carries an ISO-8601 UTC timestamp, the level, the logger name and whatever callers
bound with ``structlog.contextvars.bind_contextvars`` (``call_id``, ``account``, per task).
The output is JSON lines when ``fmt == "json"`` or when ``fmt == "auto"`` and the stream
is not a terminal (journald, files, pipes), and the console renderer on a terminal.

Values under keys named like secrets (``secret``, ``password``, ``api_key``, ``token``,
``authorization``, ... or ending in ``_secret``, ``_token``, ...) become ``"***"``, at any
depth of dicts and lists, whether logged directly or bound in the context.

Errors: a bad level or format raises ``LoggingConfigError`` (code ``LOGGING_CONFIG``),
a ``ValueError`` naming the value.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
SENSITIVE_NAMES = frozenset(
    {
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "token",
        "authorization",
        "credentials",
        "private_key",
        "cookie",
    }
)
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
FORMATS = ("auto", "json", "console")
# stdlib loggers that install handlers of their own: they must propagate to ours instead.
ADOPTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic")
_HANDLER_NAME = "ratekeeper"


class LoggingConfigError(ValueError):
    """An unknown log level or format (the message names it)."""

    code = "LOGGING_CONFIG"


def is_sensitive_key(key: object) -> bool:
    """True for ``secret``, ``ami_secret``, ``X-Auth-Token``, ``Authorization``, ..."""
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    if name in SENSITIVE_NAMES:
        return True
    return any(name.endswith("_" + word) for word in SENSITIVE_NAMES)


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if is_sensitive_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace the values of secret-like keys with ``"***"``."""
    for key in list(event_dict):
        if key == "event":
            continue
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _json_default(value: object) -> str:
    return str(value)


def _wants_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def shared_processors() -> list[Processor]:
    """Processors applied to structlog and stdlib records alike, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``.

    Safe to call again: the handler installed by a previous call is replaced.
    """
    numeric = LEVELS.get(level.upper())
    if numeric is None:
        raise LoggingConfigError(f"unknown log level {level!r}, expected one of {list(LEVELS)}")
    if fmt not in FORMATS:
        raise LoggingConfigError(f"unknown log format {fmt!r}, expected one of {list(FORMATS)}")
    out = sys.stderr if stream is None else stream
    as_json = _wants_json(fmt, out)

    final: list[Processor] = [redact_secrets]
    if as_json:
        final += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=json.dumps, default=_json_default),
        ]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=not _wants_json("auto", out)))

    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared_processors(), structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ADOPTED_LOGGERS:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
        adopted.setLevel(logging.NOTSET)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    structlog.get_logger(__name__).debug(
        "logging configured", level=level.upper(), format="json" if as_json else "console"
    )
