"""``ratekeeper doctor``: check the configuration and every connection, one line each.

:func:`run_checks` runs every probe at once, each bounded by ``timeout`` and never raising:
a probe that fails, raises or hangs becomes one failed :class:`Check` naming what it was
doing. Probes only read, or bind a listening port and release it at once (the schema is
never migrated, a missing SQLite file never created). Checks, in order: ``config``,
``sql`` (newest Alembic revision), ``redis`` (>= 6.2, not a replica, the Lua library
loads), ``ami <id>`` (login, then the first event) / ``esl <id>`` (auth), ``mqtt`` and
``webhook`` when configured, ``listen http|fastagi|api`` (free, or held by a running
ratekeeper), ``decks`` (one at least) and ``accounts`` (every deck exists).
Secrets (switch secrets, URL passwords, the webhook secret) are masked in every detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import AccountStore
from balance.scripts import load_library
from connectors.ami.connection import AMIConnection
from connectors.ami.errors import AMIConnectionLost
from connectors.esl.client import ClientItem, ESLClient, ESLSettings
from connectors.esl.errors import ESLAuthenticationError, ESLConnectionLost
from connectors.mqtt.publisher import BrokerAddress
from daemon.embedded_redis import EmbeddedRedis
from daemon.notification_settings import MQTTSettings, WebhookSettings
from daemon.settings import ConfigError, Settings, SwitchSettings, redact_url
from daemon.webhook import WebhookTarget
from storage.decks import DeckStore
from storage.engine import make_engine
from storage.migrate import current_async, head

MIN_REDIS_VERSION = (6, 2)
SHOWN_ITEMS = 3  # missing accounts, decks ... listed before "(+N more)"
_MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check: its name, whether it passed, one line of detail."""

    name: str
    ok: bool
    detail: str


class _Failed(Exception):
    """A probe's failure, already worded for the operator (one line)."""


class _Step:
    """What a probe is doing now, named when it runs out of time."""

    def __init__(self) -> None:
        self.now = "starting"


Probe = Callable[[_Step], Awaitable[Check]]


async def run_checks(
    settings_or_error: Settings | ConfigError,
    *,
    timeout: float = 3.0,  # noqa: ASYNC109  (a bound per check, not on the whole call)
) -> list[Check]:
    """Every check, in a stable order; only ``config`` when the configuration is invalid."""
    if isinstance(settings_or_error, ConfigError):
        return [Check("config", False, _one_line("; ".join(settings_or_error.problems)))]
    settings = settings_or_error
    switches = len(settings.switches)
    checks = [Check("config", True, f"valid ({switches} switch{'es' * (switches != 1)})")]
    probes = _probes(settings, timeout)
    results = await asyncio.gather(*(_bounded(name, probe, timeout) for name, probe in probes))
    secrets = _secrets(settings)
    return checks + [Check(c.name, c.ok, _masked(c.detail, secrets)) for c in results]


def _probes(settings: Settings, timeout: float) -> list[tuple[str, Probe]]:
    probes: list[tuple[str, Probe]] = [
        ("sql", lambda step: _check_sql(step, settings)),
        ("redis", lambda step: _check_redis(step, settings)),
    ]
    for switch in settings.switches:
        if switch.kind == "asterisk":
            probes.append((f"ami {switch.id}", _ami_probe(switch, timeout)))
        else:
            probes.append((f"esl {switch.id}", _esl_probe(switch, timeout)))
    notifications = settings.notifications
    if (mqtt := notifications.mqtt) is not None:
        probes.append(("mqtt", lambda step: _check_mqtt(step, mqtt, timeout)))
    if (hook := notifications.webhook) is not None:
        probes.append(("webhook", lambda step: _check_webhook(step, hook)))
    auth = settings.authorization
    listeners = [
        ("http", auth.http_host, auth.http_port),
        ("fastagi", auth.fastagi_host, auth.fastagi_port),
        ("api", settings.api.host, settings.api.port),
    ]
    seen: dict[int, str] = {}
    for label, host, port in listeners:
        probes.append((f"listen {label}", _listener_probe(label, host, port, seen)))
        if port:
            seen.setdefault(port, label)
    probes.append(("decks", lambda step: _check_decks(step, settings)))
    probes.append(("accounts", lambda step: _check_accounts(step, settings)))
    return probes


async def _bounded(name: str, probe: Probe, seconds: float) -> Check:
    step = _Step()
    try:
        async with asyncio.timeout(seconds):
            return await probe(step)
    except TimeoutError:
        return Check(name, False, f"no answer within {seconds:g} s while {step.now}")
    except _Failed as exc:
        return Check(name, False, _one_line(str(exc)))
    except Exception as exc:
        return Check(name, False, _one_line(f"failed while {step.now}: {_reason(exc)}"))


async def _check_sql(step: _Step, settings: Settings) -> Check:
    engine = await _migrated_engine(step, settings)
    await engine.dispose()
    return Check("sql", True, f"{_shown_sql(settings)} at revision {head()} (newest)")


async def _migrated_engine(step: _Step, settings: Settings) -> AsyncEngine:
    """An engine on the configured database, whose schema is at the newest revision."""
    url = settings.database_url()
    parsed = make_url(url)
    database = parsed.database
    sqlite_file = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if sqlite_file and not await asyncio.to_thread(Path(str(database)).is_file):
        raise _Failed(f"no database file {database}: run `ratekeeper db upgrade`")
    engine = make_engine(url)
    try:
        step.now = f"reading the schema revision of {_shown_sql(settings)}"
        revision = await current_async(engine)
        newest = head()
        if revision != newest:
            raise _Failed(
                f"{_shown_sql(settings)}: schema at revision {revision or 'none'}, "
                f"newest is {newest}: run `ratekeeper db upgrade`"
            )
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def _dependent_engine(step: _Step, settings: Settings) -> AsyncEngine:
    try:
        return await _migrated_engine(step, settings)
    except Exception:
        raise _Failed("not checked: the database is not ready (see the sql line)") from None


async def _check_decks(step: _Step, settings: Settings) -> Check:
    engine = await _dependent_engine(step, settings)
    try:
        step.now = "listing the rate decks"
        names = await DeckStore(engine).names()
    finally:
        await engine.dispose()
    if not names:
        raise _Failed("no rate deck loaded: run `ratekeeper rates import FILE --deck NAME`")
    default = settings.authorization.default_rate_deck
    if default is not None and default not in names:
        raise _Failed(
            f"authorization.default_rate_deck {default!r} is not loaded (loaded: {_first(names)})"
        )
    return Check("decks", True, f"{len(names)} loaded: {_first(names)}")


async def _check_accounts(step: _Step, settings: Settings) -> Check:
    engine = await _dependent_engine(step, settings)
    try:
        step.now = "reading the accounts and rate decks"
        accounts = await AccountStore(engine).list()
        decks = set(await DeckStore(engine).names())
    finally:
        await engine.dispose()
    default = settings.authorization.default_rate_deck
    resellers = {account.parent_id for account in accounts if account.parent_id}
    missing: list[str] = []
    for account in accounts:
        if account.status == "closed":
            continue
        deck = account.rate_deck or default
        if deck is None and account.id not in resellers:
            missing.append(f"{account.id} (no deck, no authorization.default_rate_deck)")
        elif deck is not None and deck not in decks:
            missing.append(f"{account.id} -> {deck!r}")
    if missing:
        raise _Failed(f"{len(missing)} account(s) with a missing rate deck: {_first(missing)}")
    return Check("accounts", True, f"{len(accounts)} account(s), every rate deck loaded")


def _shown_sql(settings: Settings) -> str:
    url = make_url(settings.database_url())
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database}"
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


async def _check_redis(step: _Step, settings: Settings) -> Check:
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    try:
        if url is None:
            step.now = f"starting the embedded Redis under {settings.state_dir}"
            embedded = await asyncio.to_thread(EmbeddedRedis, settings.embedded_redis_path())
            url = embedded.url
        shown = ("embedded " if embedded else "") + redact_url(url)
        client = aioredis.Redis.from_url(url)
        try:
            return await _probe_redis(step, client, shown)
        except RedisConnectionError as exc:
            raise _Failed(f"unreachable at {shown}: {_reason(exc)}") from exc
        except RedisError as exc:
            raise _Failed(f"{shown} while {step.now}: {exc}") from exc
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.close)


async def _probe_redis(step: _Step, client: aioredis.Redis, shown: str) -> Check:
    step.now = f"connecting to Redis at {shown}"
    version = str((await client.info("server")).get("redis_version", "0"))
    if _version(version) < MIN_REDIS_VERSION:
        needed = ".".join(map(str, MIN_REDIS_VERSION))
        raise _Failed(f"redis {version} at {shown}: {needed} or newer is needed")
    replication = await client.info("replication")
    if replication.get("role") not in (None, "master"):
        master = f"{replication.get('master_host')}:{replication.get('master_port')}"
        raise _Failed(f"{shown} is a read-only replica of {master}: point redis.url at the master")
    library = load_library()
    for name, script in library.items():
        step.now = f"loading the Lua script {name}"
        sha = await client.script_load(script.source)
        if sha != script.sha:
            raise _Failed(f"{shown}: Lua script {name} loaded as {sha}, expected {script.sha}")
    return Check("redis", True, f"redis {version} at {shown}, {len(library)} Lua scripts load")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", text)[:3])


def _ami_probe(switch: SwitchSettings, timeout: float) -> Probe:
    async def probe(step: _Step) -> Check:
        where = f"{switch.host}:{switch.port}"
        user = switch.username or ""
        first_event = asyncio.Event()
        step.now = f"connecting to {where}"
        try:
            conn = await AMIConnection.open(
                switch.host, switch.port, timeout, lambda _message: first_event.set()
            )
        except AMIConnectionLost as exc:
            raise _Failed(f"cannot connect to {where}: {_reason(exc)}") from exc
        try:
            step.now = f"logging in as {user!r} at {where}"
            secret = switch.secret.get_secret_value()
            fields: dict[str, object] = {"Username": user, "Secret": secret, "Events": "on"}
            response, _ = await conn.request("Login", "rk-doctor-login", fields)
            if response.get("Response") != "Success":
                why = response.get("Message", "?")
                raise _Failed(f"login refused for user {user!r} at {where} ({why})")
            step.now = (
                f"waiting for the first event after login at {where} (give {user!r} "
                "read = call,cdr,agent,system in manager.conf)"
            )
            event = asyncio.ensure_future(first_event.wait())
            waiters: set[asyncio.Future[Any]] = {event, conn.lost}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                event.cancel()
            if not first_event.is_set():
                raise _Failed(f"{where} closed the connection after the login of {user!r}")
            return Check(f"ami {switch.id}", True, f"logged in as {user!r} at {where}, events on")
        finally:
            await conn.close()

    return probe


def _esl_probe(switch: SwitchSettings, timeout: float) -> Probe:
    async def ignore(_item: ClientItem) -> None:
        return None

    async def probe(step: _Step) -> Check:
        where = f"{switch.host}:{switch.port}"
        password = switch.secret.get_secret_value()
        settings = ESLSettings(
            switch.host, switch.port, password, connect_timeout=timeout, command_timeout=timeout
        )
        client = ESLClient(settings, ignore, switch.id)
        try:
            step.now = f"connecting to {where}"
            await client.connect()
            step.now = f"authenticating at {where}"
            await client.login()
        except ESLAuthenticationError as exc:
            raise _Failed(f"auth refused at {where}: wrong password (secret)") from exc
        except ESLConnectionLost as exc:
            raise _Failed(f"cannot connect to {where}: {_reason(exc)}") from exc
        finally:
            await client.close()
        return Check(f"esl {switch.id}", True, f"authenticated at {where}, events subscribed")

    return probe


async def _check_mqtt(step: _Step, mqtt: MQTTSettings, seconds: float) -> Check:
    address = BrokerAddress.parse(mqtt.url)
    shown = redact_url(mqtt.url)
    client = aiomqtt.Client(
        address.host,
        address.port,
        username=address.username,
        password=address.password,
        identifier=f"ratekeeper-doctor-{socket.gethostname()}-{os.getpid()}",
        tls_context=ssl.create_default_context() if address.tls else None,
        timeout=seconds,
    )
    step.now = f"connecting to the MQTT broker at {shown}"
    try:
        async with client:
            pass
    except aiomqtt.MqttError as exc:
        raise _Failed(f"broker at {shown} refused or unreachable: {_reason(exc)}") from exc
    return Check("mqtt", True, f"broker accepted CONNECT at {shown}")


async def _check_webhook(step: _Step, hook: WebhookSettings) -> Check:
    target = WebhookTarget.parse(hook.url)
    shown = f"{urlsplit(hook.url).scheme}://{_hostport(target.host, target.port)}"
    step.now = f"connecting to {shown}"
    context = ssl.create_default_context() if target.tls else None
    try:
        _reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
    except (OSError, ssl.SSLError) as exc:
        raise _Failed(f"unreachable at {shown}: {_reason(exc)}") from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Check("webhook", True, f"host reachable at {shown}")


def _listener_probe(label: str, host: str, port: int, seen: dict[int, str]) -> Probe:
    other = seen.get(port) if port else None

    async def probe(step: _Step) -> Check:
        name, where = f"listen {label}", _hostport(host, port)
        if port == 0:
            return Check(name, True, f"{host}: port 0, the system picks a free port")
        if other is not None:
            raise _Failed(f"{where}: port {port} is also configured for listen {other}")
        step.now = f"binding {where}"
        problem = _bind_and_release(host, port)
        if problem is None:
            return Check(name, True, f"{where} free")
        if problem.errno != errno.EADDRINUSE:
            raise _Failed(f"cannot bind {where}: {_reason(problem)}")
        step.now = f"looking for the process holding {where}"
        holder = await asyncio.to_thread(_port_holder, port)
        if holder is not None and _is_ratekeeper(holder[1]):
            return Check(name, True, f"{where} held by a running ratekeeper (pid {holder[0]})")
        if holder is not None:
            program = Path(holder[1][0]).name if holder[1] else "?"
            raise _Failed(f"{where} in use by {program} (pid {holder[0]})")
        raise _Failed(f"{where} in use by another process (run as root to name it)")

    return probe


def _bind_and_release(host: str, port: int) -> OSError | None:
    """Bind ``host:port`` like the daemon's servers (SO_REUSEADDR) and close at once."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return exc
    return None


def _port_holder(port: int) -> tuple[int, list[str]] | None:
    """(pid, argv) of the process listening on TCP ``port``, when /proc shows it."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":")[-1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir() if sockets else ():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                return int(proc.name), [arg.decode(errors="replace") for arg in argv if arg]
        except OSError:
            continue
    return None


def _is_ratekeeper(argv: Sequence[str]) -> bool:
    """The ``ratekeeper`` console script (run directly or by its Python), or ``-m daemon.cli``."""
    return any(Path(arg).name == "ratekeeper" for arg in argv[:2]) or "daemon.cli" in argv[:3]


def _reason(exc: BaseException) -> str:
    """The OS error behind ``exc`` (a client library's error) in words, else its first line."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError | TimeoutError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed: {cause.reason or cause}"
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN_ITEMS])
    more = len(items) - SHOWN_ITEMS
    return shown + (f" (+{more} more)" if more > 0 else "")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _secrets(settings: Settings) -> list[str]:
    """Every secret of the configuration, masked wherever it would show."""
    found = [switch.secret.get_secret_value() for switch in settings.switches]
    mqtt, hook = settings.notifications.mqtt, settings.notifications.webhook
    if hook is not None and hook.secret is not None:
        found.append(hook.secret.get_secret_value())
    urls = [settings.database.url, settings.redis.url, mqtt and mqtt.url, hook and hook.url]
    for url in urls:
        with contextlib.suppress(ValueError):
            password = urlsplit(url or "").password or ""
            found += [password, unquote(password)]
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def _masked(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
