"""The composition root: builds every component from the settings and runs them.

Nothing else in the code base creates clients or servers. Start order: SQL (migrated),
Redis (rebuilt from SQL), tariffs, the authorization service and its listeners, the
settler, the session manager, then the switch connectors. Stop order is the reverse,
with authorization refused first and settlements drained last (shielded).

Under systemd (``Type=notify``, ``daemon/sd_notify.py``): READY=1 once SQL and Redis
are up (``start``) and every switch is connected (``ready``), or after
``startup_timeout`` with a STATUS naming the switches still not connected: a dead PBX
must not hold the unit in "activating" until systemd fails it, while the listeners and
the other switches can serve (the connector keeps reconnecting). SIGHUP reloads between
RELOADING=1 and READY=1; SIGTERM sends STOPPING=1 and drains. ``WATCHDOG=1`` comes from
``daemon/watchdog.py`` while every connector loop makes progress.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.bundles import BundleBalances, BundleService
from balance.caps import SharedCaps
from balance.denials import DenialCounter
from balance.ledger import Ledger
from balance.live import LiveState
from balance.rated_calls import RatedCallWriter
from balance.seat_sessions import SeatSessions
from balance.seats import SeatState
from balance.usage import TierService, UsageCounters, zones_of
from connectors.live_calls import LiveCall
from daemon.account_admin import AccountAdmin
from daemon.account_directory import AccountDirectory
from daemon.api.app import build_api
from daemon.api.ops import ops_router
from daemon.api.server import ApiServer, serve_api
from daemon.authorization_service import AuthorizationPolicy, AuthorizationService
from daemon.caps_policy import CapsPolicy, account_limits, seat_limit
from daemon.config_reload import apply_logging, read_change
from daemon.daemon_hooks import DaemonHooks
from daemon.embedded_redis import EmbeddedRedis
from daemon.event_loop import running_loop_name
from daemon.fastagi_server import FastAGIServer
from daemon.gc_tuning import freeze_startup_heap
from daemon.http_agent import agent_routes
from daemon.http_authorize import build_authorize_app, serve_authorize_http
from daemon.http_xml_curl import xml_curl_routes
from daemon.lcr_service import RouteSelector
from daemon.metrics import Metrics
from daemon.notification_settings import build_notifier
from daemon.notifications import Notifier, NullNotifier
from daemon.resync import ResyncReport, ResyncTarget, UntrackedPolicy, reconcile
from daemon.sd_notify import SystemdNotifier
from daemon.seat_manager import SeatManager
from daemon.sessions import SessionManager, SwitchControl
from daemon.settings import Settings
from daemon.settlement import Settler
from daemon.switches import Resyncer, SwitchConnector, build_connector
from daemon.tariff_catalog import TariffCatalog
from daemon.threshold_alerts import ThresholdAlerts
from daemon.watchdog import ProgressWatchdog
from storage.carriers import CarrierStore
from storage.decks import DeckStore
from storage.engine import make_engine
from storage.migrate import upgrade
from tariffs.ratedeck import RateDeck

log = structlog.get_logger(__name__)


@dataclass
class Resources:
    """Connections the daemon and the CLI share the construction of."""

    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    embedded_redis: EmbeddedRedis | None = None

    async def close(self) -> None:
        """Close the connections (and the private Redis server if this process owns it)."""
        await self.redis.aclose()
        await self.engine.dispose()
        if self.embedded_redis is not None:
            self.embedded_redis.close()


async def open_resources(settings: Settings, *, migrate: bool = True) -> Resources:
    """Open SQL (migrated to head) and Redis (URL, or the embedded private server)."""
    url = settings.database_url()
    if migrate:
        await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    embedded = None
    redis_url = settings.redis.url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.embedded_redis_path())
        redis_url = embedded.url
    client = aioredis.Redis.from_url(redis_url)
    return Resources(settings=settings, engine=engine, redis=client, embedded_redis=embedded)


async def rebuild_live_state(
    accounts: Iterable[Account],
    ledger: Ledger,
    live: LiveState,
    policy: CapsPolicy | None = None,
) -> int:
    """Reset every account's hot balance in Redis from the SQL ledger (keeps reservations)."""
    balances = await ledger.balances()
    policy = policy or CapsPolicy()
    limits = [account_limits(account, balances.get(account.id, 0), policy) for account in accounts]
    await live.rebuild(limits)
    return len(limits)


async def load_catalog(decks: DeckStore) -> TariffCatalog:
    """Every rate deck from SQL, indexed."""
    loaded = await decks.load_all()
    return TariffCatalog({name: RateDeck(info, rates) for name, (info, rates) in loaded.items()})


@dataclass
class Daemon:
    """The running daemon: every component, wired once."""

    settings: Settings
    resources: Resources | None = None
    http_port: int = 0
    fastagi_port: int = 0
    api_port: int = 0
    sessions: SessionManager | None = None
    settler: Settler | None = None
    service: AuthorizationService | None = None
    live: LiveState | None = None
    routes: RouteSelector | None = None
    directory: AccountDirectory | None = None
    tiers: TierService | None = None
    bundles: BundleService | None = None
    counters: UsageCounters | None = None
    caps: SharedCaps | None = None
    metrics: Metrics = field(default_factory=Metrics)
    notifier: Notifier = field(default_factory=NullNotifier)
    hooks: DaemonHooks | None = None
    denials: DenialCounter | None = None
    api_server: ApiServer | None = None
    seats: SeatManager | None = None
    admin: AccountAdmin | None = None
    connectors: list[SwitchConnector] = field(default_factory=list)
    systemd: SystemdNotifier = field(default_factory=SystemdNotifier.from_environment)
    startup_timeout: float = 30.0  # seconds READY=1 waits for the switches (module doc)
    config_path: Path | None = None  # the --config file, re-read on SIGHUP
    reload_config_file: bool = False  # re-read the default file on SIGHUP (no --config)
    _watchdog: ProgressWatchdog | None = None
    _ready_sent: bool = False
    _stopping: bool = False
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _servers: list[Any] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _seat_state: SeatState | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Open everything and start serving."""
        settings = self.settings
        res = await open_resources(settings)
        self.resources = res
        self.metrics.watch(self)
        account_store = AccountStore(res.engine)
        ledger = Ledger(res.engine)
        self.live = live = LiveState(res.redis, lease_ttl=settings.redis.lease_ttl)
        self.directory = directory = AccountDirectory(account_store)
        accounts = await directory.load()  # read once: live state, plans and the directory
        count = await rebuild_live_state(accounts, ledger, live, settings.caps.policy())
        self.counters = counters = UsageCounters(res.redis)
        self.tiers = tiers = TierService(res.engine, counters)
        self.bundles = bundles = BundleService(
            res.engine, BundleBalances(res.redis, lease_ttl=settings.redis.lease_ttl)
        )
        await tiers.reload()
        await bundles.reload()
        zones = zones_of(accounts)
        await tiers.rebuild(zones)
        await bundles.rebuild(zones)
        catalog = await load_catalog(DeckStore(res.engine))
        self.routes = routes = RouteSelector(catalog, CarrierStore(res.engine))
        await routes.reload()
        auth = settings.authorization
        self.admin = AccountAdmin(res.engine, live, settings.caps.policy())
        self.notifier = build_notifier(settings.notifications)
        await self.notifier.start()
        self.hooks = hooks = DaemonHooks(
            metrics=self.metrics,
            notifier=self.notifier,
            directory=directory,
            admin=self.admin,
            thresholds=ThresholdAlerts(
                res.redis, directory, self.notifier, settings.notifications.threshold_rules()
            ),
            connectors=lambda: self.connectors,
            logoff_seats=settings.seats.over_limit == "logoff",
        )
        self.caps = caps = SharedCaps(
            res.redis,
            slot_ttl=settings.redis.lease_ttl,
            call_ttl=auth.max_call_duration + settings.redis.lease_ttl,
        )
        self.service = service = AuthorizationService(
            directory,
            catalog,
            live,
            AuthorizationPolicy(
                debit_interval=auth.debit_interval,
                max_call_duration=auth.max_call_duration,
                default_rate_deck=auth.default_rate_deck,
            ),
            routes=routes,
            tiers=tiers,
            bundles=bundles,
            caps=caps,
            caps_policy=settings.caps.policy(),
        )
        service.metrics = self.metrics
        self.denials = denials = DenialCounter(res.redis)
        service.on_denial = hooks.denial_recorder(denials)
        self.settler = settler = Settler(
            RatedCallWriter(res.engine),
            live,
            batch_size=settings.database.batch_size,
            batch_delay=settings.database.batch_delay_ms / 1000,
            # SQLite has one writer at a time: a second batch would only wait for the lock
            concurrency=(
                settings.database.write_concurrency
                if res.engine.dialect.name == "postgresql"
                else 1
            ),
            tiers=tiers,
            bundles=bundles,
            timezone_of=service.timezone,
            caps=caps,
            after_settle=hooks.after_settle,
        )
        settler.metrics = self.metrics
        settler.start()
        controls: dict[str, SwitchControl] = {}
        self.sessions = sessions = SessionManager(
            authorizer=service,
            live=live,
            settler=settler,
            controls=controls,
            debit_interval=auth.debit_interval,
            authorize_unknown_calls=auth.unauthorized_calls == "authorize",
            bundles=bundles,
        )
        sessions.on_cut = hooks.on_cut
        sessions.on_lag = self.metrics.observe_debit_lag
        if hooks.publishing:
            sessions.on_debit = hooks.on_debit
        policy = settings.caps.policy()

        async def seat_limit_of(tenant: str) -> int | None:
            account = await directory.get(tenant)
            if account is None:
                raise LookupError(tenant)
            return seat_limit(account, policy)

        self._seat_state = SeatState(res.redis, hold_ttl=settings.seats.hold_ttl)
        self.seats = seats = SeatManager(
            self._seat_state,
            SeatSessions(res.engine),
            seat_limit=seat_limit_of,
            logoff=hooks.logoff_seat,
            notify=hooks.notify,
        )
        await seats.restore()
        dispatch = hooks.dispatcher(sessions, seats)
        default_switch = settings.switches[0].id if settings.switches else "default"
        peers = {peer: sw.id for sw in settings.switches for peer in sw.agi_peers}
        agi = FastAGIServer(
            service,
            host=auth.fastagi_host,
            port=auth.fastagi_port,
            switch_for_peer=lambda peer: peers.get(peer, default_switch),
            default_switch_id=default_switch,
            agent_authorizer=seats.authorize_agent,
        )
        await agi.start()
        self.fastagi_port = agi.port
        self._servers.append(agi)
        http = serve_authorize_http(
            build_authorize_app(
                service,
                default_switch_id=default_switch,
                extra_routes=[
                    *xml_curl_routes(
                        service,
                        default_switch_id=default_switch,
                        contexts=auth.xml_curl_contexts,
                        authorized_context=auth.authorized_context,
                        accepting=lambda: service.accepting,
                    ),
                    *agent_routes(seats.authorize_agent),
                ],
            ),
            auth.http_host,
            auth.http_port,
        )
        await http.start()
        self.http_port = http.port
        self._servers.append(http)
        # the operator's listener, apart from the switch-facing one: management API,
        # /metrics, /health
        api_app = build_api(
            res.engine,
            live,
            self.admin,
            directory=directory,
            seats=self._seat_state,
            denials=self.denials,
            default_rate_deck=auth.default_rate_deck,
            on_decks_changed=lambda name: service.catalog.reload(DeckStore(res.engine), name),
        )
        api_app.include_router(ops_router(self))
        self.api_server = api = serve_api(api_app, settings.api.host, settings.api.port)
        await api.start()
        self.api_port = api.port
        self._servers.append(api)
        for switch in settings.switches:
            connector = build_connector(
                switch,
                dispatch,
                resync=self._resyncer(sessions, switch.untracked_calls),
                authorizer=service,
                seat_rules=settings.seats.rules(),
            )
            connector.on_item = self.metrics.switch_events(switch.id)
            controls[switch.id] = connector
            self.connectors.append(connector)
            connector.start()
        self._tasks.append(
            asyncio.create_task(
                self._refresh_accounts(directory, settings.caps.accounts_refresh_interval),
                name="accounts-refresh",
            )
        )
        self._tasks.append(
            asyncio.create_task(
                self.metrics.follow_seats(SeatSessions(res.engine)), name="seat-census"
            )
        )
        if self.systemd.watchdog_interval is not None:
            self._watchdog = ProgressWatchdog(
                self.systemd, lambda: self.connectors, interval=self.systemd.watchdog_interval
            )
            self._watchdog.start()
        log.info(
            "ratekeeper started",
            accounts=count,
            decks=catalog.names(),
            http_port=self.http_port,
            fastagi_port=self.fastagi_port,
            switches=[s.id for s in settings.switches],
            event_loop=running_loop_name(),
        )

    @staticmethod
    async def _refresh_accounts(directory: AccountDirectory, interval: float) -> None:
        """Follow the accounts changed in SQL by the CLI or the API (caps, trials, ...)."""
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await directory.refresh()
            except Exception as exc:  # SQL down: try again next time
                log.warning("accounts refresh failed", error=str(exc))
                continue
            if changed:
                log.debug("accounts refreshed", changed=len(changed))

    @staticmethod
    def _resyncer(sessions: SessionManager, policy: UntrackedPolicy) -> Resyncer:
        async def resync(
            switch_id: str,
            listing: Sequence[LiveCall],
            target: ResyncTarget,
            lost_at: Decimal,
            candidates: set[str],
        ) -> ResyncReport:
            return await reconcile(
                switch_id,
                listing,
                sessions=sessions,
                target=target,
                deliver=sessions.handle,
                policy=policy,
                lost_at=lost_at,
                candidates=candidates,
            )

        return resync

    async def ready(self) -> list[str]:
        """Wait for every switch (up to ``startup_timeout``), then send READY=1.

        Returns the ids of the switches still not connected (named in the STATUS line).
        """
        try:
            async with asyncio.timeout(self.startup_timeout):
                await asyncio.gather(*(c.wait_connected() for c in self.connectors))
        except TimeoutError:
            pass
        missing = [c.switch_id for c in self.connectors if not c.connected]
        if missing:
            log.warning("ready without every switch", not_connected=missing)
        if not self._stopping:
            self._ready_sent = True
            self.systemd.ready(self._serving_status(missing))
        return missing

    def _serving_status(self, missing: Sequence[str] = ()) -> str:
        switches = len(self.connectors)
        if missing:
            return f"serving; switches not connected (retrying): {', '.join(missing)}"
        return f"serving; {switches} switch{'es' if switches != 1 else ''} connected"

    async def reload(self) -> None:
        """Re-read accounts, rate decks, carriers, margin guards and plans from SQL (SIGHUP).

        Each is read and indexed before it is swapped in; a failure keeps what was
        loaded. Live calls keep the price they started with and go on being debited.
        Reloads run one at a time, between RELOADING=1 and READY=1 once the daemon has
        announced itself ready.
        """
        if self.resources is None or self.service is None or self._stopping:
            return
        async with self._reload_lock:
            announce = self._ready_sent and not self._stopping
            if announce:
                self.systemd.reloading("reloading the configuration, rate decks, accounts")
            try:
                await self._reload_config()
                await self._reload_from_sql()
            finally:
                if announce and not self._stopping:
                    missing = [c.switch_id for c in self.connectors if not c.connected]
                    self.systemd.ready(self._serving_status(missing))

    async def _reload_config(self) -> None:
        """Re-read the configuration file; apply what can change live (config_reload)."""
        if self.config_path is None and not self.reload_config_file:
            return
        change = read_change(self.settings, self.config_path)
        if change is None or not change.applied:
            return
        new, old = change.settings, self.settings
        apply_logging(new, old)
        # the live sections are taken over; the others stay until a restart
        self.settings = old.model_copy(
            update={
                "logging": new.logging,
                "caps": new.caps,
                "seats": new.seats,
                "notifications": old.notifications.model_copy(
                    update={"low_balance": new.notifications.low_balance}
                ),
            }
        )
        policy = new.caps.policy()
        if self.service is not None:
            self.service.caps_policy = policy
        if self.admin is not None:
            self.admin.policy = policy
        if self.hooks is not None:
            self.hooks.reconfigure(
                logoff_seats=new.seats.over_limit == "logoff",
                thresholds=new.notifications.threshold_rules(),
            )
        if "caps" in change.applied and self.directory is not None and self.live is not None:
            assert self.resources is not None
            accounts = await self.directory.load()
            await rebuild_live_state(accounts, Ledger(self.resources.engine), self.live, policy)
        log.info("configuration reloaded", applied=list(change.applied))

    async def _reload_from_sql(self) -> None:
        if self.resources is None or self.service is None:
            return
        try:
            decks = await self.service.catalog.reload(DeckStore(self.resources.engine))
            if self.routes is not None:
                await self.routes.reload()
            if self.directory is not None:
                await self.directory.load()
            if self.tiers is not None:
                await self.tiers.reload()
            if self.bundles is not None:
                await self.bundles.reload()
        except Exception:
            log.exception("reload failed; the previous configuration stays in force")
            return
        log.info("reloaded", decks=decks)

    async def stop(self) -> None:
        """Drain: refuse authorizations, stop listeners and connectors, finish settlements."""
        self._stopping = True
        self.systemd.stopping("draining: authorizations refused, settlements finishing")
        if self._watchdog is not None:
            self._watchdog.draining()
        if self.service is not None:
            self.service.accepting = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for server in reversed(self._servers):
            try:
                closer = getattr(server, "stop", None) or server.close
                await closer()
            except Exception as exc:
                log.warning("listener close failed", error=str(exc))
        for connector in self.connectors:
            await connector.close()
        if self.hooks is not None:
            await self.hooks.aclose()
        if self.denials is not None:
            await self.denials.aclose()
        if self._seat_state is not None:
            await self._seat_state.aclose()
        if self.sessions is not None:
            await self.sessions.close()
        if self.settler is not None:
            await self.settler.close()
        await self.notifier.aclose()  # after the last settlements: their events go out
        if self.counters is not None:
            await self.counters.aclose()
        if self.caps is not None:
            await self.caps.aclose()
        if self.bundles is not None:
            await self.bundles.balances.aclose()
        if self.resources is not None:
            await self.resources.close()
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        self.systemd.close()
        self._stopped.set()
        log.info("ratekeeper stopped")

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully; READY=1 once ready, SIGHUP
        reloads (module doc)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(self.reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await self.start()
        freeze_startup_heap()  # the process is this daemon's: its start-up heap stays
        announcing = asyncio.create_task(self.ready(), name="ready")
        try:
            await stop.wait()
        finally:
            pending = [announcing, *reloads]  # stopping: a reload in flight is abandoned
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.shield(self.stop())
