"""Settings: the example file, defaults < file < environment, and the error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from daemon.settings import (
    ConfigError,
    ConfigFileError,
    ConfigValidationError,
    Settings,
    default_state_dir,
    load_settings,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "ratekeeper.toml"


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """A clean environment whose state directory is a temporary one."""
    return {"STATE_DIRECTORY": str(tmp_path / "state"), "HOME": str(tmp_path / "home")}


@pytest.fixture
def no_default(tmp_path: Path) -> Path:
    """A default config path that does not exist."""
    return tmp_path / "etc" / "ratekeeper.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ratekeeper.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str], default: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ, default_path=default)
    assert str(info.value) == "\n".join(info.value.problems)
    return list(info.value.problems)


ASTERISK = """
[[switches]]
id = "pbx-1"
kind = "asterisk"
username = "rk"
secret = "file-secret"
"""


def test_given_the_example_file_when_loaded_then_every_value_is_as_documented(
    environ: dict[str, str], no_default: Path
) -> None:
    settings = load_settings(EXAMPLE, environ=environ, default_path=no_default)

    assert settings.state_dir == Path(environ["STATE_DIRECTORY"])
    assert settings.database.url is None
    assert (settings.database.batch_size, settings.database.batch_delay_ms) == (500, 20)
    assert settings.uses_embedded_redis()
    assert settings.redis.lease_ttl == 120
    auth = settings.authorization
    assert (auth.http_host, auth.http_port, auth.fastagi_port) == ("127.0.0.1", 7080, 4573)
    assert (auth.debit_interval, auth.max_call_duration) == (30, 10800)
    assert auth.unauthorized_calls == "authorize"
    assert auth.default_rate_deck is None
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 7081)
    assert (settings.logging.level, settings.logging.format) == ("INFO", "auto")
    assert settings.notifications.mqtt is None  # events out are off in the example
    assert settings.notifications.low_balance == []
    [switch] = settings.switches
    assert (switch.id, switch.kind, switch.host, switch.port) == (
        "pbx-1",
        "asterisk",
        "127.0.0.1",
        5038,
    )
    assert switch.username == "ratekeeper"
    assert switch.secret.get_secret_value() == "change-me"
    assert (switch.ping_interval, switch.ping_timeout) == (20, 10)
    assert (switch.reconnect_min, switch.reconnect_max) == (0.5, 30)
    assert switch.agi_peers == ["127.0.0.1"]


def test_given_the_schema_when_reading_the_example_then_every_key_is_documented() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#? ?(\w+) = ", text, flags=re.MULTILINE))
    sections = set(re.findall(r"^\[+([\w.]+)\]+", text, flags=re.MULTILINE))
    expected: set[str] = set()
    for name, field in Settings.model_fields.items():
        nested = field.annotation
        if name == "switches":
            from daemon.settings import SwitchSettings

            nested = SwitchSettings
        if isinstance(nested, type) and hasattr(nested, "model_fields"):
            assert name in sections
            for sub, sub_field in nested.model_fields.items():
                inner = sub_field.annotation
                if isinstance(inner, type) and hasattr(inner, "model_fields"):
                    assert f"{name}.{sub}" in sections  # a sub-table: [caps.trial]
                    expected |= set(inner.model_fields)
                else:
                    expected.add(sub)
        else:
            expected.add(name)
    assert expected - documented == set()


def test_given_no_file_when_loaded_then_embedded_defaults_are_used(
    environ: dict[str, str], no_default: Path
) -> None:
    settings = load_settings(environ=environ, default_path=no_default)

    state = Path(environ["STATE_DIRECTORY"])
    assert settings.database_url() == f"sqlite+aiosqlite:///{state / 'ratekeeper.db'}"
    assert settings.uses_embedded_redis()
    assert settings.embedded_redis_path().is_relative_to(state)
    assert settings.switches == []
    assert settings.authorization.debit_interval == 30


def test_given_the_default_file_exists_when_no_path_is_given_then_it_is_read(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    default = write(tmp_path, "[redis]\nurl = 'redis://10.0.0.5:6379/1'\n")

    settings = load_settings(environ=environ, default_path=default)

    assert settings.redis.url == "redis://10.0.0.5:6379/1"
    assert not settings.uses_embedded_redis()


def test_given_a_missing_explicit_file_when_loaded_then_the_error_names_it(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigFileError) as info:
        load_settings(missing, environ=environ, default_path=no_default)

    assert str(info.value) == f"{missing}: configuration file not found"
    assert info.value.code == "CONFIG_FILE"


def test_given_an_unknown_nested_key_when_loaded_then_the_dotted_key_is_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[redis]\nulr = 'redis://x'\n")

    assert problems_of(path, environ, no_default) == [f"{path}: unknown key 'redis.ulr'"]


def test_given_an_unknown_top_level_key_or_switch_key_when_loaded_then_both_are_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "debug = true\n" + ASTERISK + "pasword = 'x'\n")

    assert sorted(problems_of(path, environ, no_default)) == [
        f"{path}: unknown key 'debug'",
        f"{path}: unknown key 'switches[0].pasword'",
    ]


def test_given_a_mistyped_value_when_loaded_then_the_key_and_reason_are_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[authorization]\ndebit_interval = 'thirty'\n")

    [problem] = problems_of(path, environ, no_default)

    assert problem.startswith(
        f"{path}: authorization.debit_interval: Input should be a valid integer"
    )


def test_given_several_problems_when_loaded_then_all_are_listed_one_per_line(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(
        tmp_path,
        "[authorization]\ndebit_interval = 0\nunauthorized_calls = 'drop'\n"
        "[logging]\nlevel = 'LOUD'\nformat = 'xml'\n",
    )

    problems = problems_of(path, environ, no_default)

    keys = sorted(p.split(": ")[1] for p in problems)
    assert keys == [
        "authorization.debit_interval",
        "authorization.unauthorized_calls",
        "logging.format",
        "logging.level",
    ]
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_given_a_toml_syntax_error_when_loaded_then_the_file_and_line_are_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[redis]\nlease_ttl = 60\nurl = \n")

    with pytest.raises(ConfigFileError) as info:
        load_settings(path, environ=environ, default_path=no_default)

    assert str(info.value).startswith(f"{path}: line 3, column ")


def test_given_file_and_environment_when_loaded_then_environment_wins(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[authorization]\ndebit_interval = 30\n" + ASTERISK)
    environ |= {
        "RATEKEEPER_AUTHORIZATION__DEBIT_INTERVAL": "60",
        "RATEKEEPER_DATABASE__URL": "postgresql://rk@db/rk",
        "RATEKEEPER_SWITCHES__PBX_1__SECRET": "env-secret",
        "RATEKEEPER_STATE_DIR": str(tmp_path / "elsewhere"),
        "PATH": "/usr/bin",
    }

    settings = load_settings(path, environ=environ, default_path=no_default)

    assert settings.authorization.debit_interval == 60
    assert settings.database_url() == "postgresql+asyncpg://rk@db/rk"
    assert settings.switch("pbx-1").secret.get_secret_value() == "env-secret"
    assert settings.switch("pbx-1").username == "rk"
    assert settings.state_dir == tmp_path / "elsewhere"


def test_given_switches_as_json_in_the_environment_when_loaded_then_they_replace_the_file(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, ASTERISK)
    switches = [{"id": "fs-1", "kind": "freeswitch", "secret": "ClueCon"}]
    environ["RATEKEEPER_SWITCHES"] = json.dumps(switches)

    settings = load_settings(path, environ=environ, default_path=no_default)

    assert [(s.id, s.port) for s in settings.switches] == [("fs-1", 8021)]


def test_given_a_bad_environment_value_when_loaded_then_the_variable_is_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[redis]\nlease_ttl = 60\n")
    environ["RATEKEEPER_REDIS__LEASE_TTL"] = "soon"

    [problem] = problems_of(path, environ, no_default)

    assert problem.startswith("environment RATEKEEPER_REDIS__LEASE_TTL: redis.lease_ttl: ")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("RATEKEEPER_REDIS__ULR", "unknown setting"),
        ("RATEKEEPER_REDISURL", "unknown setting"),
        ("RATEKEEPER_SWITCHES__PBX_9__SECRET", "no switch whose id is spelt 'PBX_9'"),
        ("RATEKEEPER_LOGGING__LEVEL__X", "logging.level has no sub-keys"),
        ("RATEKEEPER_SWITCHES__PBX_1__AGI_PEERS", "agi_peers must be JSON here"),
    ],
)
def test_given_an_unusable_ratekeeper_variable_when_loaded_then_it_is_an_error_naming_it(
    tmp_path: Path, environ: dict[str, str], no_default: Path, name: str, why: str
) -> None:
    path = write(tmp_path, ASTERISK)
    environ[name] = "10.0.0.1"

    with pytest.raises(ConfigValidationError) as info:
        load_settings(path, environ=environ, default_path=no_default)

    assert str(info.value).startswith(f"environment {name}: {why}")
    assert info.value.code == "CONFIG_INVALID"


def test_given_test_suite_variables_when_loaded_then_they_are_not_settings(
    environ: dict[str, str], no_default: Path
) -> None:
    environ["RATEKEEPER_TEST_REDIS_URL"] = "redis://127.0.0.1:6379/0"

    settings = load_settings(environ=environ, default_path=no_default)

    assert settings.uses_embedded_redis()


def test_given_duplicate_switch_ids_when_loaded_then_they_are_rejected(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, ASTERISK + ASTERISK.replace("asterisk", "freeswitch"))

    assert problems_of(path, environ, no_default) == [
        f"{path}: switches: duplicate switch id 'pbx-1'"
    ]


def test_given_switch_kinds_when_loaded_then_ports_default_per_kind_and_asterisk_needs_a_user(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    fs = "[[switches]]\nid = 'fs-1'\nkind = 'freeswitch'\nsecret = 's'\n"
    settings = load_settings(
        write(tmp_path, ASTERISK + fs), environ=environ, default_path=no_default
    )
    assert [s.port for s in settings.switches] == [5038, 8021]

    path = write(tmp_path, ASTERISK.replace('username = "rk"\n', ""))
    assert problems_of(path, environ, no_default) == [
        f"{path}: switches[0]: username is required for an asterisk switch"
    ]


def test_given_secrets_when_printed_then_they_never_appear(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, ASTERISK + "[redis]\nurl = 'redis://rk:url-secret@10.0.0.5:6379/0'\n")
    settings = load_settings(path, environ=environ, default_path=no_default)

    shown = [repr(settings), settings.model_dump_json(), json.dumps(settings.redacted())]

    for text in shown:
        assert "file-secret" not in text
        assert "url-secret" not in text
    assert settings.redacted()["switches"][0]["secret"] == "***"
    assert settings.redacted()["redis"]["url"] == "redis://rk:***@10.0.0.5:6379/0"
    assert settings.redis.url == "redis://rk:url-secret@10.0.0.5:6379/0"


def test_given_no_systemd_dir_when_resolving_state_dir_then_system_then_xdg_then_home(
    tmp_path: Path,
) -> None:
    writable = tmp_path / "var" / "ratekeeper"
    writable.parent.mkdir()
    unusable = tmp_path / "missing" / "ratekeeper"
    home = {"HOME": str(tmp_path / "home")}

    assert default_state_dir({"STATE_DIRECTORY": "/a:/b"}, system_dir=writable) == Path("/a")
    assert default_state_dir(home, system_dir=writable) == writable
    assert default_state_dir(home | {"XDG_STATE_HOME": "/xdg"}, system_dir=unusable) == Path(
        "/xdg/ratekeeper"
    )
    assert default_state_dir(home, system_dir=unusable) == (
        tmp_path / "home" / ".local" / "state" / "ratekeeper"
    )


def test_given_leases_shorter_than_two_debits_when_loaded_then_both_keys_are_named(
    tmp_path: Path, environ: dict[str, str], no_default: Path
) -> None:
    path = write(tmp_path, "[redis]\nlease_ttl = 59\n[authorization]\ndebit_interval = 30\n")

    problems = problems_of(path, environ, no_default)

    assert len(problems) == 1
    assert "redis.lease_ttl (59 s)" in problems[0]
    assert "authorization.debit_interval (30 s)" in problems[0]
    ok = write(tmp_path, "[redis]\nlease_ttl = 60\n[authorization]\ndebit_interval = 30\n")
    assert load_settings(ok, environ=environ, default_path=no_default).redis.lease_ttl == 60
