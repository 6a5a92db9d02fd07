"""The composition root: builds every component from the settings and runs them.

Nothing else in the code base creates clients or servers. Start order: SQL (migrated),
Redis (rebuilt from SQL), tariffs, the authorization service and its listeners, the
settler, the session manager, then the switch connectors. Stop order is the reverse,
with authorization refused first and settlements drained last (shielded).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.bundles import BundleBalances, BundleService
from balance.caps import SharedCaps
from balance.ledger import Ledger
from balance.live import LiveState
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from balance.seat_sessions import SeatSessions
from balance.seats import SeatState
from balance.usage import TierService, UsageCounters, zones_of
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event
from connectors.live_calls import LiveCall
from daemon import notifications
from daemon.account_admin import AccountAdmin
from daemon.account_directory import AccountDirectory
from daemon.authorization import AuthorizationDecision, AuthorizationRequest
from daemon.authorization_service import AuthorizationPolicy, AuthorizationService
from daemon.caps_policy import CapsPolicy, account_limits, seat_limit
from daemon.connector_types import EventHandler
from daemon.embedded_redis import EmbeddedRedis
from daemon.fastagi_server import FastAGIServer
from daemon.http_agent import agent_routes
from daemon.http_authorize import build_authorize_app, serve_authorize_http
from daemon.http_xml_curl import xml_curl_routes
from daemon.lcr_service import RouteSelector
from daemon.metrics import Metrics
from daemon.notification_settings import build_notifier
from daemon.notifications import Notifier, NullNotifier
from daemon.resync import ResyncReport, ResyncTarget, UntrackedPolicy, reconcile
from daemon.seat_manager import SeatManager
from daemon.sessions import CallSession, SessionManager, SwitchControl
from daemon.settings import Settings
from daemon.settlement import Settler
from daemon.switches import Resyncer, SwitchConnector, build_connector
from daemon.tariff_catalog import TariffCatalog
from daemon.threshold_alerts import ThresholdAlerts
from storage.carriers import CarrierStore
from storage.decks import DeckStore
from storage.engine import make_engine
from storage.migrate import upgrade
from tariffs.money import to_micros
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
    thresholds: ThresholdAlerts | None = None
    seats: SeatManager | None = None
    admin: AccountAdmin | None = None
    connectors: list[SwitchConnector] = field(default_factory=list)
    _servers: list[Any] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _side_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _seat_state: SeatState | None = None
    _trials_announced: set[str] = field(default_factory=set)
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
        self.thresholds = ThresholdAlerts(
            res.redis, directory, self.notifier, settings.notifications.threshold_rules()
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
        if self.notifier.enabled:
            service.on_denial = self._on_denial
        self.settler = settler = Settler(
            RatedCallWriter(res.engine),
            live,
            batch_size=settings.database.batch_size,
            batch_delay=settings.database.batch_delay_ms / 1000,
            tiers=tiers,
            bundles=bundles,
            timezone_of=service.timezone,
            caps=caps,
            after_settle=self._after_settle,
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
        sessions.on_cut = self._on_cut
        if self.notifier.enabled:
            sessions.on_debit = self._on_debit
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
            logoff=self._logoff_seat,
            notify=self._notify,
        )
        await seats.restore()
        dispatch = self._dispatcher(sessions, seats)
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
        for switch in settings.switches:
            connector = build_connector(
                switch,
                dispatch,
                resync=self._resyncer(sessions, switch.untracked_calls),
                authorizer=service,
                seat_rules=settings.seats.rules(),
            )
            controls[switch.id] = connector
            self.connectors.append(connector)
            connector.start()
        self._tasks.append(
            asyncio.create_task(
                self._refresh_accounts(directory, settings.caps.accounts_refresh_interval),
                name="accounts-refresh",
            )
        )
        log.info(
            "ratekeeper started",
            accounts=count,
            decks=catalog.names(),
            http_port=self.http_port,
            fastagi_port=self.fastagi_port,
            switches=[s.id for s in settings.switches],
        )

    def _on_cut(self, session: CallSession, reason: str) -> None:
        """A live call was cut: counted by reason, published."""
        self.metrics.count_cut(reason)
        if not self.notifier.enabled:
            return
        talked = 0.0 if not session.answered_clock else time.monotonic() - session.answered_clock
        self.notifier.publish(
            notifications.call_cut(
                session.account,
                switch_id=session.switch_id,
                call_id=session.call_id,
                reason=reason,
                seconds=max(0, int(talked)),
            )
        )
        if reason == "TRIAL_EXPIRED":
            self._trial_over(session.account)

    def _on_denial(self, request: AuthorizationRequest, decision: AuthorizationDecision) -> None:
        """A denied authorization, published (and a trial's end, once)."""
        reason = decision.reason.value
        self.notifier.publish(
            notifications.denial(
                request.account,
                switch_id=request.switch_id,
                call_id=request.call_id,
                caller=request.caller,
                callee=request.callee,
                reason=reason,
            )
        )
        if reason == "TRIAL_EXPIRED":
            self._trial_over(request.account)

    def _trial_over(self, account_id: str) -> None:
        """Publish an account's trial expiry once per process."""
        if account_id in self._trials_announced:
            return
        self._trials_announced.add(account_id)
        ended = datetime.now(UTC)
        if self.directory is not None:
            cached = self.directory.cached(account_id)
            if cached is not None and cached.trial_ends_at is not None:
                ended = cached.trial_ends_at
        self.notifier.publish(
            notifications.trial_expired(account_id, plan="trial", trial_ended_at=ended)
        )

    async def _on_debit(self, session: CallSession) -> None:
        """After a debit tick: low-balance thresholds at the call's rate."""
        if self.thresholds is not None and session.priced is not None:
            rate = to_micros(session.priced.rate.rate)
            await self.thresholds.check(session.account, rate)

    @staticmethod
    def _dispatcher(sessions: SessionManager, seats: SeatManager) -> EventHandler:
        """Seat events to the seat manager, everything else to the session manager."""

        async def dispatch(event: Event) -> None:
            if isinstance(event, AgentLoggedIn | AgentLoggedOut):
                await seats.handle(event)
            else:
                await sessions.handle(event)

        return dispatch

    async def _logoff_seat(self, switch_id: str, seat: str) -> None:
        """Log a seat past its tenant's limit off its switch (``seats.over_limit``).

        The command goes out in a task of its own: the event stream that reported the
        login never waits for the switch's answer.
        """
        if self.settings.seats.over_limit != "logoff":
            return
        connector = next((c for c in self.connectors if c.switch_id == switch_id), None)
        if connector is None:
            log.error("no connector to log the seat off", switch_id=switch_id, seat=seat)
            return
        task = asyncio.create_task(connector.logoff_seat(seat), name=f"seat-logoff:{seat}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _after_settle(self, record: RatedCallRecord, is_new: bool) -> None:
        """A call was rated: published, low-balance thresholds checked, and a postpaid
        account at its credit limit suspended."""
        if not is_new or self.directory is None or self.admin is None:
            return
        if self.notifier.enabled:
            self.notifier.publish(notifications.call_rated(record))
            if self.thresholds is not None:
                await self.thresholds.check(record.account_id, record.rate_micros or None)
        account = await self.directory.get(record.account_id)
        if account is None or account.billing != "postpaid":
            return
        suspended = await self.admin.check_postpaid(record.account_id)
        if suspended is not None:
            log.warning("postpaid account suspended at its credit limit", account=suspended.id)
            self.directory.put(suspended)
            self._notify(
                "account_suspended",
                suspended.id,
                {"reason": suspended.status_reason, "call_id": record.call_id},
            )

    def _notify(self, kind: str, tenant: str, payload: dict[str, object]) -> None:
        """An event of a component (seats, suspensions) for metrics and the notifier."""
        if kind == "seat_refused":
            self.metrics.seat_refusals.labels(tenant or "-").inc()
        notifier = self.notifier
        if not notifier.enabled:
            return
        if kind.startswith("seat_"):
            state = {"seat_logged_in": "logged_in", "seat_logged_out": "logged_out"}.get(
                kind, "refused"
            )
            limit = payload.get("limit")
            notifier.publish(
                notifications.seat(
                    tenant,
                    switch_id=str(payload.get("switch_id", "")),
                    agent=str(payload.get("seat", "")),
                    state=state,
                    seats_in_use=int(str(payload.get("live_seats", 0))),
                    seat_limit=int(str(limit)) if limit is not None and limit != -1 else None,
                )
            )
        elif kind == "account_suspended":
            reason = str(payload.get("reason", ""))
            notifier.publish(notifications.account_suspended(tenant, reason=reason))

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
        for side in list(self._side_tasks):
            side.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        if self._seat_state is not None:
            await self._seat_state.aclose()
        await self.notifier.aclose()
        if self.sessions is not None:
            await self.sessions.close()
        if self.settler is not None:
            await self.settler.close()
        if self.counters is not None:
            await self.counters.aclose()
        if self.caps is not None:
            await self.caps.aclose()
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
