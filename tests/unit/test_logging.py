"""Logging: JSON or console output, stdlib routed through structlog, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from daemon.logging_setup import (
    LoggingConfigError,
    configure_logging,
    is_sensitive_key,
    redact_secrets,
)

LOGGER = "daemon.logging_setup"  # its own DEBUG "logging configured" line


class TtyStream(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging and bound context after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_given_json_format_when_logging_then_lines_carry_context_level_and_iso_time() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    structlog.contextvars.bind_contextvars(call_id="c-1", account="acme")

    structlog.get_logger("daemon.session").info("call answered", billsec=12)

    [line] = json_lines(out)
    assert line["event"] == "call answered"
    assert (line["call_id"], line["account"], line["billsec"]) == ("c-1", "acme", 12)
    assert (line["level"], line["logger"]) == ("info", "daemon.session")
    assert str(line["timestamp"]).endswith("Z")
    assert "T" in str(line["timestamp"])


def test_given_a_secret_bound_in_the_context_when_logging_json_then_it_never_appears() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    structlog.contextvars.bind_contextvars(call_id="c-2", ami_secret="s3cr3t-ctx")

    log = structlog.get_logger("daemon.x")
    log.info("login", password="s3cr3t-pw", headers={"Authorization": "Bearer s3cr3t-tok"})
    log.warning("secret str", key=SecretStr("s3cr3t-obj"))
    logging.getLogger("uvicorn.error").warning("from stdlib", extra={"token": "s3cr3t-std"})

    text = out.getvalue()
    assert "s3cr3t" not in text
    first, second, third = [line for line in json_lines(out) if line["logger"] != LOGGER]
    assert first["ami_secret"] == first["password"] == "***"
    assert first["headers"] == {"Authorization": "***"}
    assert second["key"] == "***"
    assert (third["ami_secret"], third["token"], third["call_id"]) == ("***", "***", "c-2")


def test_given_stdlib_loggers_when_logging_then_they_use_the_same_json_renderer() -> None:
    out = io.StringIO()
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(io.StringIO()))
    configure_logging("INFO", "json", stream=out)

    logging.getLogger("uvicorn.access").info("GET %s %d", "/authorize", 200)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")

    access, migration = json_lines(out)
    assert access["event"] == "GET /authorize 200"
    assert access["logger"] == "uvicorn.access"
    assert migration["level"] == "info"
    assert logging.getLogger("uvicorn.access").handlers == []


def test_given_level_warning_when_logging_info_then_it_is_dropped() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)

    structlog.get_logger("daemon.x").info("quiet")
    logging.getLogger("alembic").info("quiet too")
    structlog.get_logger("daemon.x").error("loud")

    assert [line["event"] for line in json_lines(out)] == ["loud"]


def test_given_auto_format_when_the_stream_is_a_tty_then_console_else_json() -> None:
    tty = TtyStream()
    configure_logging("INFO", "auto", stream=tty)
    structlog.get_logger("daemon.x").info("hello console", call_id="c-3")
    console = tty.getvalue()
    assert "hello console" in console
    assert "call_id" in console
    with pytest.raises(json.JSONDecodeError):
        json.loads(console.splitlines()[0])

    pipe = io.StringIO()
    configure_logging("INFO", "auto", stream=pipe)
    structlog.get_logger("daemon.x").info("hello json")
    assert json_lines(pipe)[0]["event"] == "hello json"
    assert "hello json" not in tty.getvalue()


def test_given_configure_twice_when_logging_then_only_the_last_stream_gets_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=first)
    configure_logging("INFO", "json", stream=second)

    structlog.get_logger("daemon.x").info("once")

    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once"]


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "json"), ("INFO", "xml")])
def test_given_a_bad_level_or_format_when_configuring_then_the_value_is_named(
    level: str, fmt: str
) -> None:
    with pytest.raises(LoggingConfigError, match="LOUD" if level == "LOUD" else "xml"):
        configure_logging(level, fmt, stream=io.StringIO())


def test_given_the_redaction_processor_when_capturing_then_secret_keys_are_masked() -> None:
    structlog.contextvars.bind_contextvars(call_id="c-4", api_key="k-123")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact_secrets]) as logs:
        structlog.get_logger().info(
            "topup",
            account="acme",
            amount="10.00",
            authorization_reason="OK",
            items=[{"secret": "x"}, "plain"],
        )

    [entry] = logs
    assert entry["api_key"] == "***"
    assert entry["items"] == [{"secret": "***"}, "plain"]
    assert (entry["account"], entry["authorization_reason"]) == ("acme", "OK")
    assert entry["call_id"] == "c-4"


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("secret", True),
        ("ami_secret", True),
        ("Authorization", True),
        ("X-Auth-Token", True),
        ("db_password", True),
        ("API_KEY", True),
        ("authorization_reason", False),
        ("account", False),
        ("tokens_used", False),
    ],
)
def test_given_a_key_when_checked_then_secret_like_names_are_sensitive(
    key: str, sensitive: bool
) -> None:
    assert is_sensitive_key(key) is sensitive
