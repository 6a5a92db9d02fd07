"""Agent seats through the real daemon: recorded agent streams, seat limits, logoffs.

The recorded Asterisk (agent_seats.ami) and FreeSWITCH (callcenter_agents.esl) streams are
replayed over TCP into the daemon. Within the tenant's seat limit the seats are tracked
live in Redis and their sessions written to SQL; past it, the seat is refused and logged
off on its switch with the switch's own command (AMI QueueRemove, ESL callcenter_config).
The pre-login ask (HTTP ``/v1/authorize/agent`` and FastAGI ``authorize_agent``) lets
exactly the seat limit through when many agents ask at once.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import httpx

from balance.accounts import AccountStore
from balance.seat_sessions import SeatSessions
from daemon.app import open_resources
from daemon.demo import local_freeswitch
from daemon.settings import SeatSettings, Settings
from daemon.simulator.agi_client import AgiResult, run_fastagi
from tests.support.ami_replay import AMIReplayServer
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)
from tests.support.esl_replay import ESLReplayServer

SEAT_RULES = SeatSettings(tenant_by_queue={"support": "tenant-a"})


async def _set_seat_limit(settings: Settings, account: str, limit: int | None) -> None:
    res = await open_resources(settings)
    try:
        await AccountStore(res.engine).update(account, seat_limit=limit)
    finally:
        await res.close()


async def _sessions(settings: Settings, tenant: str) -> list[tuple[str, int, int | None, str]]:
    res = await open_resources(settings, migrate=False)
    try:
        rows = await SeatSessions(res.engine).list(tenant)
        return sorted((r.seat, r.started_at_us, r.ended_at_us, r.end_reason) for r in rows)
    finally:
        await res.close()


async def test_given_seat_limit_one_when_the_agent_stream_logs_two_seats_then_one_is_logged_off(
    sql_url: str, redis_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    stream = (fixtures_dir / "asterisk" / "agent_seats.ami").read_bytes()
    server = AMIReplayServer([stream], keep_open=True)
    port = await server.start()
    base = make_settings(tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=port)
    settings = base.model_copy(update={"seats": SEAT_RULES})
    await provision(settings, {"tenant-a": Decimal("100")})
    await _set_seat_limit(settings, "tenant-a", 1)
    try:
        async with running_daemon(settings) as daemon:
            await eventually(lambda: any(a.get("Action") == "QueueRemove" for a in server.received))
            await eventually(lambda: daemon.metrics.seat_refusals.labels("tenant-a")._value.get())
            await asyncio.sleep(0.3)  # the rest of the stream (the logoffs) is processed
            refused = daemon.metrics.seat_refusals.labels("tenant-a")._value.get()
    finally:
        await server.close()
    rows = await _sessions(settings, "tenant-a")

    removes = [a for a in server.received if a.get("Action") == "QueueRemove"]
    assert [(a["Queue"], a["Interface"]) for a in removes] == [("support", "Local/1002@agents/n")]
    assert not any(a.get("Action") == "AgentLogoff" for a in server.received)
    assert refused == 1
    # the first seat in, from its first presence to its last absence; the second refused
    assert rows == [
        ("Agent:1001", 1795630748361765, 1795630767885014, "logoff"),
        ("Local/1002@agents/n", 1795630748864503, 1795630748864503, "refused"),
    ]


async def test_given_no_free_seat_when_the_callcenter_stream_logs_an_agent_in_then_logged_out(
    sql_url: str, redis_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    recorded = (fixtures_dir / "freeswitch" / "callcenter_agents.esl").read_bytes()
    # the switch stays connected after the recording (the reply to the recorder's `exit`
    # and the closing notice left out), so the daemon's logoff has a connection to go on
    stream = recorded[: recorded.index(b"Content-Type: command/reply\nReply-Text: +OK bye")]
    server = ESLReplayServer([stream], password="ClueCon", keep_open=True)
    port = await server.start()
    switch_id = unique_switch_id()
    base = make_settings(tmp_path, sql_url, redis_url, switch_id=switch_id, ami_port=1)
    fs = local_freeswitch(
        switch_id, port, "ClueCon", ping_interval=30, reconnect_min=0.05, reconnect_max=0.2
    )
    settings = base.model_copy(
        update={
            "switches": [fs],
            "seats": SeatSettings(tenant_by_domain={"default": "tenant-a"}),
        }
    )
    await provision(settings, {"tenant-a": Decimal("100")})
    await _set_seat_limit(settings, "tenant-a", 0)
    logoff = "api callcenter_config agent set status 1001@default 'Logged Out'"
    try:
        async with running_daemon(settings):
            await eventually(lambda: logoff in server.received)
    finally:
        await server.close()
    rows = await _sessions(settings, "tenant-a")

    assert server.received.count(logoff) == 1  # refused once, not on every status change
    assert [(seat, reason) for seat, _, _, reason in rows] == [("1001@default", "refused")]


async def test_given_seat_limit_when_agents_ask_at_once_over_http_and_fastagi_then_limit_pass(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    tenant = f"seats-{uuid.uuid4().hex[:8]}"
    base = make_settings(tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=1)
    await provision(base, {tenant: Decimal("1")})
    await _set_seat_limit(base, tenant, 3)
    async with running_daemon(base) as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}/v1/authorize/agent"
        async with httpx.AsyncClient() as client:
            http_answers = [
                client.get(url, params={"account": tenant, "agent": f"PJSIP/{100 + i}"})
                for i in range(5)
            ]
            agi_answers = [
                run_fastagi(
                    "127.0.0.1",
                    daemon.fastagi_port,
                    [
                        ("agi_network_script", "authorize_agent"),
                        ("agi_uniqueid", f"17956300{i}.1"),
                        ("agi_accountcode", tenant),
                        ("agi_arg_1", f"Agent:{200 + i}"),
                    ],
                )
                for i in range(5)
            ]
            http_results = await asyncio.gather(*http_answers)
            agi_results: list[AgiResult] = await asyncio.gather(*agi_answers)
            again = await client.get(url, params={"account": tenant, "agent": "PJSIP/100"})
            bad = await client.get(url, params={"account": tenant})
            text = await client.get(
                url, params={"account": tenant, "agent": "PJSIP/999", "format": "text"}
            )

    allowed = [r.json()["allowed"] for r in http_results]
    allowed += [r.variables.get("AGENT_AUTH_RESULT") == "ALLOW" for r in agi_results]
    assert sum(allowed) == 3
    reasons = {r.json()["reason"] for r in http_results if not r.json()["allowed"]}
    reasons |= {r.variables["AGENT_AUTH_REASON"] for r in agi_results}
    assert reasons <= {"SEAT_LIMIT", "OK"} and "SEAT_LIMIT" in reasons
    assert bad.status_code == 400 and "agent" in bad.json()["error"]
    assert text.text == "result=DENY\nreason=SEAT_LIMIT\n"
    # an agent that already holds its seat is let in again (idempotent)
    if http_results[0].json()["allowed"]:
        assert again.json()["allowed"]
