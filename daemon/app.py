"""The composition root: builds every component from the settings and runs them.

Nothing else in the code base creates clients or servers. Start order: SQL (migrated),
Redis (rebuilt from SQL), tariffs, the authorization service and its listeners, the
settler, the session manager, then the switch connectors. Stop order is the reverse,
with authorization refused first and settlements drained last (shielded).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.bundles import BundleBalances, BundleService
from balance.ledger import Ledger
from balance.live import AccountLimits, LiveState
from balance.rated_calls import RatedCallWriter
from balance.usage import TierService, UsageCounters, zones_of
from connectors.live_calls import LiveCall
from daemon.account_directory import AccountDirectory
from daemon.authorization_service import AuthorizationPolicy, AuthorizationService
from daemon.embedded_redis import EmbeddedRedis
from daemon.fastagi_server import FastAGIServer
from daemon.http_authorize import build_authorize_app, serve_authorize_http
from daemon.http_xml_curl import xml_curl_routes
from daemon.lcr_service import RouteSelector
from daemon.resync import ResyncReport, ResyncTarget, UntrackedPolicy, reconcile
from daemon.sessions import SessionManager, SwitchControl
from daemon.settings import Settings
from daemon.settlement import Settler
from daemon.switches import Resyncer, SwitchConnector, build_connector
from daemon.tariff_catalog import TariffCatalog
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
    accounts: Iterable[Account], ledger: Ledger, live: LiveState
) -> int:
    """Reset every account's hot balance in Redis from the SQL ledger (keeps reservations)."""
    balances = await ledger.balances()
    limits = [
        AccountLimits(
            account_id=account.id,
            status=account.status,
            balance_micros=balances.get(account.id, 0),
            credit_limit_micros=account.credit_limit_micros,
            concurrency_limit=account.concurrency_limit,
        )
        for account in accounts
    ]
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
    sessions: SessionManager | None = None
    settler: Settler | None = None
    service: AuthorizationService | None = None
    live: LiveState | None = None
    routes: RouteSelector | None = None
    directory: AccountDirectory | None = None
    tiers: TierService | None = None
    bundles: BundleService | None = None
    counters: UsageCounters | None = None
    connectors: list[SwitchConnector] = field(default_factory=list)
    _servers: list[Any] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Open everything and start serving."""
        settings = self.settings
        res = await open_resources(settings)
        self.resources = res
        account_store = AccountStore(res.engine)
        ledger = Ledger(res.engine)
        self.live = live = LiveState(res.redis, lease_ttl=settings.redis.lease_ttl)
        self.directory = directory = AccountDirectory(account_store)
        accounts = await directory.load()  # read once: live state, plans and the directory
        count = await rebuild_live_state(accounts, ledger, live)
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
        )
        self.settler = settler = Settler(
            RatedCallWriter(res.engine),
            live,
            batch_size=settings.database.batch_size,
            batch_delay=settings.database.batch_delay_ms / 1000,
            tiers=tiers,
            bundles=bundles,
            timezone_of=service.timezone,
        )
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
        default_switch = settings.switches[0].id if settings.switches else "default"
        peers = {peer: sw.id for sw in settings.switches for peer in sw.agi_peers}
        agi = FastAGIServer(
            service,
            host=auth.fastagi_host,
            port=auth.fastagi_port,
            switch_for_peer=lambda peer: peers.get(peer, default_switch),
            default_switch_id=default_switch,
        )
        await agi.start()
        self.fastagi_port = agi.port
        self._servers.append(agi)
        http = serve_authorize_http(
            build_authorize_app(
                service,
                default_switch_id=default_switch,
                extra_routes=xml_curl_routes(
                    service,
                    default_switch_id=default_switch,
                    contexts=auth.xml_curl_contexts,
                    authorized_context=auth.authorized_context,
                    accepting=lambda: service.accepting,
                ),
            ),
            auth.http_host,
            auth.http_port,
        )
        await http.start()
        self.http_port = http.port
        self._servers.append(http)
        for switch in settings.switches:
            connector = build_connector(
                switch,
                sessions.handle,
                resync=self._resyncer(sessions, switch.untracked_calls),
                authorizer=service,
            )
            controls[switch.id] = connector
            self.connectors.append(connector)
            connector.start()
        log.info(
            "ratekeeper started",
            accounts=count,
            decks=catalog.names(),
            http_port=self.http_port,
            fastagi_port=self.fastagi_port,
            switches=[s.id for s in settings.switches],
        )

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

    async def reload(self) -> None:
        """Re-read accounts, rate decks, carriers, margin guards and plans from SQL (SIGHUP).

        Each is read and indexed before it is swapped in; a failure keeps what was
        loaded. Live calls keep the price they started with.
        """
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
        if self.service is not None:
            self.service.accepting = False
        for server in reversed(self._servers):
            try:
                closer = getattr(server, "stop", None) or server.close
                await closer()
            except Exception as exc:
                log.warning("listener close failed", error=str(exc))
        for connector in self.connectors:
            await connector.close()
        if self.sessions is not None:
            await self.sessions.close()
        if self.settler is not None:
            await self.settler.close()
        if self.counters is not None:
            await self.counters.aclose()
        if self.bundles is not None:
            await self.bundles.balances.aclose()
        if self.resources is not None:
            await self.resources.close()
        self._stopped.set()
        log.info("ratekeeper stopped")

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully."""
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
        try:
            await stop.wait()
        finally:
            await asyncio.shield(self.stop())
