"""``Daemon.reload`` (what SIGHUP runs): decks, carriers and accounts re-read from SQL,
swapped in for the next authorization; a failed reload keeps the previous ones."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from daemon.app import Daemon, open_resources
from storage.decks import DeckStore
from tariffs.deck import Rate
from tests.support.daemon_harness import DECK, make_settings, provision, running_daemon
from tests.support.daemon_harness import unique_switch_id as unique


async def _rate(daemon: Daemon, account: str, call_id: str) -> str:
    url = f"http://127.0.0.1:{daemon.http_port}/v1/authorize"
    params = {"account": account, "callee": "15551234567", "call_id": call_id}
    async with httpx.AsyncClient() as client:
        body = (await client.get(url, params=params)).json()
    assert body["result"] == "ALLOW"
    return str(body["rate"])


async def test_given_deck_replaced_in_sql_when_reloaded_then_next_call_gets_new_price(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"reload-{unique()}"
    settings = make_settings(tmp_path, sql_url, redis_url, switch_id=unique(), ami_port=1)
    await provision(settings, {account: Decimal("10")})
    async with running_daemon(settings) as daemon:
        before = await _rate(daemon, account, "c1")
        res = await open_resources(settings, migrate=False)
        try:
            new = Rate("1", "North America", Decimal("1.20"), Decimal("0"), 1, 1, 0)
            await DeckStore(res.engine).replace(DECK, [new])
        finally:
            await res.close()
        unchanged = await _rate(daemon, account, "c2")  # not yet reloaded
        await daemon.reload()
        after = await _rate(daemon, account, "c3")

    assert (before, unchanged, after) == ("0.600000", "0.600000", "1.200000")


async def test_given_a_changed_config_file_when_sighup_then_live_sections_apply_and_others_wait(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    """SIGHUP re-reads the file: the caps policy applies at once (in Redis too), a new
    listener port waits for a restart, and a broken file changes nothing."""
    import structlog.testing

    from balance import keys as live_keys
    from daemon.settings import load_settings

    account = f"cfg-{unique()}"
    path = tmp_path / "ratekeeper.toml"

    def write(suspended_live_calls: str, http_port: int, extra: str = "") -> None:
        path.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            f'[database]\nurl = "{sql_url}"\n'
            f'[redis]\nurl = "{redis_url}"\n'
            f"[api]\nport = 0\n"
            f"[authorization]\nhttp_port = {http_port}\nfastagi_port = 0\n"
            f'[caps]\nsuspended_live_calls = "{suspended_live_calls}"\n{extra}'
        )

    write("cut", 0)
    settings = load_settings(path)
    await provision(settings, {account: Decimal("5")})
    daemon = Daemon(settings, config_path=path)
    await daemon.start()
    try:
        assert daemon.live is not None
        hot = live_keys.account_key(account)
        redis = daemon.resources.redis  # type: ignore[union-attr]
        assert await redis.hget(hot, "suspend_cut") == b"1"

        write("keep", 7999)
        with structlog.testing.capture_logs() as logs:
            await daemon.reload()
        assert daemon.settings.caps.suspended_live_calls == "keep"
        assert await redis.hget(hot, "suspend_cut") == b"0"  # the hot state follows
        assert daemon.settings.authorization.http_port == 0  # a listener waits
        restart = [e for e in logs if e["event"].startswith("configuration changed")]
        assert restart and restart[0]["sections"] == ["authorization"]

        write("cut", 0, extra="no_such_key = 1\n")
        with structlog.testing.capture_logs() as logs:
            await daemon.reload()
        assert daemon.settings.caps.suspended_live_calls == "keep"  # nothing half-applied
        refused = [e for e in logs if e["event"].startswith("configuration reload refused")]
        assert refused and "no_such_key" in refused[0]["error"]
    finally:
        await daemon.stop()
