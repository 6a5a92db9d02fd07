"""``ratekeeper doctor`` against real SQL, Redis and MQTT, and replayed AMI / ESL switches.

Every problem is named on its own line, the exit code says whether all is well, and no
secret (switch secrets, URL passwords) ever reaches the output.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from balance.accounts import Account, AccountStore
from daemon.cli import root
from daemon.cli_doctor import doctor
from daemon.doctor import Check, run_checks
from daemon.settings import load_settings
from storage.decks import DeckStore
from storage.engine import make_engine
from storage.migrate import upgrade_async
from tariffs.csv_deck import parse_deck_csv
from tariffs.deck import DeckInfo, Rounding
from tests.integration.mqtt_fixtures import mqtt_url  # noqa: F401
from tests.support.ami_replay import DEFAULT_BANNER, DEFAULT_LOGIN_OK, AMIReplayServer
from tests.support.esl_replay import ESLReplayServer

REPO = Path(__file__).resolve().parents[2]
AMI_SECRET = f"ami-{uuid.uuid4().hex[:10]}"
ESL_SECRET = f"esl-{uuid.uuid4().hex[:10]}"
WRONG_SECRET = f"wrong-{uuid.uuid4().hex[:10]}"
URL_PASSWORD = f"pw-{uuid.uuid4().hex[:10]}"
SECRETS = (AMI_SECRET, ESL_SECRET, WRONG_SECRET, URL_PASSWORD)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli() -> typer.Typer:
    """The root callback of ``ratekeeper`` with ``doctor`` registered."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(root)
    app.command("doctor")(doctor)
    return app


async def run_doctor(config: Path, *args: str) -> tuple[int, str]:
    """Run ``ratekeeper doctor`` in a thread (the replay servers live on this loop)."""
    argv = ["--config", str(config), "doctor", "--timeout", "5", *args]
    result = await asyncio.to_thread(CliRunner().invoke, cli(), argv)
    return result.exit_code, result.stdout


def lines_by_name(out: str) -> dict[str, tuple[str, str]]:
    """``{name: (status, detail)}`` from the ``STATUS name  detail`` lines."""
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        status, rest = line[:5].strip(), line[5:]
        name, _, detail = rest.partition("  ")
        assert name not in found, f"two lines for {name!r}: {out}"
        found[name] = (status, detail)
    return found


def toml_config(
    tmp_path: Path,
    *,
    sql_url: str,
    redis_url: str | None,
    switches: Sequence[dict[str, object]] = (),
    http_port: int | None = None,
    extra: str = "",
) -> Path:
    """A configuration file; the listener ports are free ones unless given."""
    text = f'state_dir = "{tmp_path / "state"}"\n[database]\nurl = "{sql_url}"\n'
    if redis_url is not None:
        text += f'[redis]\nurl = "{redis_url}"\n'
    text += (
        f"[authorization]\nhttp_port = {http_port or free_port()}\n"
        f"fastagi_port = {free_port()}\n[api]\nport = {free_port()}\n"
    )
    for switch in switches:
        text += "[[switches]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in switch.items())
    path = tmp_path / "ratekeeper.toml"
    path.write_text(text + extra)
    return path


def ami(switch_id: str, port: int, secret: str) -> dict[str, object]:
    """An asterisk switch entry."""
    return {
        "id": switch_id,
        "kind": "asterisk",
        "port": port,
        "username": "billing",
        "secret": secret,
    }


def esl(switch_id: str, port: int, secret: str) -> dict[str, object]:
    """A freeswitch switch entry."""
    return {"id": switch_id, "kind": "freeswitch", "port": port, "secret": secret}


async def migrated_with(sql_url: str, *, deck: str, account_deck: str) -> str:
    """Migrate the database, load ``deck`` and create an account on ``account_deck``."""
    engine = make_engine(sql_url)
    try:
        await upgrade_async(engine)
        info = DeckInfo(name=deck, currency="USD", rounding=Rounding.UP, decimals=6)
        parsed = parse_deck_csv((REPO / "config/decks/example.csv").read_text(), info)
        await DeckStore(engine).replace(parsed.info, list(parsed.rates))
        account_id = f"doc-{uuid.uuid4().hex[:8]}"
        await AccountStore(engine).create(Account(id=account_id, rate_deck=account_deck))
    finally:
        await engine.dispose()
    return account_id


@pytest.fixture
async def ami_port(fixtures_dir: Path) -> AsyncIterator[int]:
    """A replayed Asterisk accepting ``billing`` / AMI_SECRET (two connections' worth)."""
    stream = (fixtures_dir / "asterisk" / "answered_local_call.ami").read_bytes()
    server = AMIReplayServer([stream, stream], secret=AMI_SECRET)
    try:
        yield await server.start()
    finally:
        await server.close()


@pytest.fixture
async def esl_port(fixtures_dir: Path) -> AsyncIterator[int]:
    """A replayed FreeSWITCH accepting ESL_SECRET (two connections' worth)."""
    stream = (fixtures_dir / "freeswitch" / "answered_call.esl").read_bytes()
    server = ESLReplayServer([stream, stream], password=ESL_SECRET)
    try:
        yield await server.start()
    finally:
        await server.close()


@pytest.fixture
async def webhook_host() -> AsyncIterator[int]:
    """A TCP server standing for the webhook host; yields its port."""

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def assert_no_secret(out: str) -> None:
    for secret in SECRETS:
        assert secret not in out


# --- all well -------------------------------------------------------------------------------


async def test_given_every_service_up_when_doctor_runs_then_every_line_ok_and_exit_0(
    sql_url: str,
    redis_url: str,
    mqtt_url: str,  # noqa: F811
    ami_port: int,
    esl_port: int,
    webhook_host: int,
    tmp_path: Path,
) -> None:
    await migrated_with(sql_url, deck="retail", account_deck="retail")
    config = toml_config(
        tmp_path,
        sql_url=sql_url,
        redis_url=redis_url,
        switches=[
            ami("pbx-1", ami_port, AMI_SECRET),
            esl("fs-1", esl_port, ESL_SECRET),
        ],
        extra=(
            f'[notifications.mqtt]\nurl = "{mqtt_url}"\n'
            f'[notifications.webhook]\nurl = "http://127.0.0.1:{webhook_host}/hook"\n'
        ),
    )

    code, out = await run_doctor(config)

    lines = lines_by_name(out)
    assert list(lines) == [
        "config",
        "sql",
        "redis",
        "ami pbx-1",
        "esl fs-1",
        "mqtt",
        "webhook",
        "listen http",
        "listen fastagi",
        "listen api",
        "decks",
        "accounts",
    ], out
    assert all(status == "OK" for status, _ in lines.values()), out
    assert code == 0, out
    assert "Lua scripts load" in lines["redis"][1]
    assert "logged in as 'billing'" in lines["ami pbx-1"][1]
    assert lines["decks"][1] == "1 loaded: retail"
    assert_no_secret(out)

    code, out = await run_doctor(config, "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [row["name"] for row in rows] == list(lines)
    assert all(row["ok"] is True and row["detail"] for row in rows)
    assert_no_secret(out)


async def test_given_no_redis_url_when_checked_then_embedded_redis_starts(
    tmp_path: Path, sql_url: str
) -> None:
    settings = load_settings(toml_config(tmp_path, sql_url=sql_url, redis_url=None))

    checks = {check.name: check for check in await run_checks(settings, timeout=20)}

    assert checks["redis"].ok, checks["redis"]
    assert "at embedded unix://" in checks["redis"].detail


# --- one line per problem -------------------------------------------------------------------


async def test_given_broken_services_when_doctor_runs_then_each_problem_named_in_one_line(
    sql_url: str,
    ami_port: int,
    esl_port: int,
    bound_port: int,
    tmp_path: Path,
) -> None:
    account = await migrated_with(sql_url, deck="retail", account_deck="no-such-deck")
    closed = free_port()
    config = toml_config(
        tmp_path,
        sql_url=sql_url,
        redis_url=f"redis://:{URL_PASSWORD}@127.0.0.1:{closed}/0",
        switches=[
            ami("pbx-1", ami_port, WRONG_SECRET),
            esl("fs-1", esl_port, WRONG_SECRET),
            ami("pbx-2", closed, AMI_SECRET),
        ],
        http_port=bound_port,
        extra=(
            f'[notifications.mqtt]\nurl = "mqtt://rk:{URL_PASSWORD}@127.0.0.1:{closed}"\n'
            f'[notifications.webhook]\nurl = "https://127.0.0.1:{closed}/hook"\n'
        ),
    )

    code, out = await run_doctor(config)

    assert code == 1, out
    lines = lines_by_name(out)
    failed = {name for name, (status, _) in lines.items() if status == "FAIL"}
    assert failed == {
        "redis",
        "ami pbx-1",
        "esl fs-1",
        "ami pbx-2",
        "mqtt",
        "webhook",
        "listen http",
        "accounts",
    }, out
    assert lines["redis"][1].startswith(f"unreachable at redis://:***@127.0.0.1:{closed}/0")
    assert lines["ami pbx-1"][1].startswith(
        f"login refused for user 'billing' at 127.0.0.1:{ami_port}"
    )
    assert lines["esl fs-1"][1].startswith(f"auth refused at 127.0.0.1:{esl_port}")
    assert lines["ami pbx-2"][1] == f"cannot connect to 127.0.0.1:{closed}: connection refused"
    assert f"mqtt://rk:***@127.0.0.1:{closed}" in lines["mqtt"][1]
    assert lines["webhook"][1].endswith(f"127.0.0.1:{closed}: connection refused")
    assert lines["listen http"][1].startswith(f"127.0.0.1:{bound_port} in use by ")
    assert lines["accounts"][1] == (
        f"1 account(s) with a missing rate deck: {account} -> 'no-such-deck'"
    )
    assert lines["sql"][0] == "OK" and lines["decks"][0] == "OK"
    assert_no_secret(out)


async def test_given_unknown_config_key_when_doctor_runs_then_one_failed_config_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ratekeeper.toml"
    config.write_text(f'[redis]\nulr = "redis://:{URL_PASSWORD}@x"\n')

    code, out = await run_doctor(config)

    assert code == 1
    assert out == f"FAIL config  {config}: unknown key 'redis.ulr'\n"
    assert_no_secret(out)


async def test_given_unmigrated_database_when_doctor_runs_then_sql_asks_for_db_upgrade(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = toml_config(tmp_path, sql_url=sql_url, redis_url=redis_url)

    code, out = await run_doctor(config)

    assert code == 1, out
    lines = lines_by_name(out)
    assert lines["sql"][0] == "FAIL"
    assert lines["sql"][1].endswith("run `ratekeeper db upgrade`"), out
    for name in ("decks", "accounts"):
        assert lines[name] == ("FAIL", "not checked: the database is not ready (see the sql line)")
    assert lines["redis"][0] == "OK"
    if sql_url.startswith("sqlite"):  # the doctor never creates the database file
        database = tmp_path / "ratekeeper.db"
        assert not database.exists()
        database.touch()  # an empty SQLite database
        [sql] = [check for check in await run_checks(load_settings(config)) if check.name == "sql"]
        assert not sql.ok
        assert "schema at revision none, newest is " in sql.detail, sql


async def test_given_empty_database_when_checked_then_no_deck_named(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    engine = make_engine(sql_url)
    try:
        await upgrade_async(engine)
    finally:
        await engine.dispose()
    settings = load_settings(toml_config(tmp_path, sql_url=sql_url, redis_url=redis_url))

    checks = {check.name: check for check in await run_checks(settings)}

    assert checks["sql"].ok
    assert not checks["decks"].ok
    assert checks["decks"].detail.startswith("no rate deck loaded")
    assert checks["accounts"] == Check("accounts", True, "0 account(s), every rate deck loaded")


async def test_given_switch_that_never_answers_when_checked_then_fail_within_the_bound(
    sql_url: str, tmp_path: Path
) -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        settings = load_settings(
            toml_config(
                tmp_path,
                sql_url=sql_url,
                redis_url=f"redis://127.0.0.1:{free_port()}/0",
                switches=[ami("pbx-1", port, AMI_SECRET)],
            )
        )
        checks = {check.name: check for check in await run_checks(settings, timeout=0.5)}
    finally:
        server.close()
        await server.wait_closed()

    assert not checks["ami pbx-1"].ok
    assert f"127.0.0.1:{port}" in checks["ami pbx-1"].detail


async def test_given_ami_user_without_events_when_checked_then_fail_names_read_permission(
    sql_url: str, tmp_path: Path
) -> None:
    login_only = DEFAULT_BANNER + DEFAULT_LOGIN_OK  # accepted, then not one event
    server = AMIReplayServer([login_only], secret=AMI_SECRET)
    port = await server.start()
    try:
        settings = load_settings(
            toml_config(
                tmp_path,
                sql_url=sql_url,
                redis_url=f"redis://127.0.0.1:{free_port()}/0",
                switches=[ami("pbx-1", port, AMI_SECRET)],
            )
        )
        checks = {check.name: check for check in await run_checks(settings, timeout=0.5)}
    finally:
        await server.close()

    check = checks["ami pbx-1"]
    assert not check.ok
    assert check.detail.startswith("no answer within 0.5 s while waiting for the first event")
    assert "read = call,cdr,agent,system" in check.detail


async def test_given_port_held_by_running_ratekeeper_when_checked_then_ok_saying_so(
    sql_url: str, tmp_path: Path
) -> None:
    program = tmp_path / "ratekeeper"  # what the console script looks like in argv
    program.write_text(
        "import socket, sys, time\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(program),
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(await proc.stdout.readline())
        settings = load_settings(
            toml_config(
                tmp_path,
                sql_url=sql_url,
                redis_url=f"redis://127.0.0.1:{free_port()}/0",
                http_port=port,
            )
        )
        checks = {check.name: check for check in await run_checks(settings)}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()

    assert checks["listen http"] == Check(
        "listen http", True, f"127.0.0.1:{port} held by a running ratekeeper (pid {proc.pid})"
    )
