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
