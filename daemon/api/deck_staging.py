"""Rate decks uploaded, then activated: a staged version beside the one in force (SQL).

An upload is stored whole, by ``storage.decks.DeckStore``, under the staging name
``<name>@pending`` (:data:`PENDING_SUFFIX`): the existing tables hold it, so no schema
change, and no account can be priced with it (an API deck name never holds ``@``).
Activation copies it over ``<name>`` with ``DeckStore.replace`` (one transaction: a
reader sees the old deck or the new one, never half of each), then drops the staged
copy. A new upload before activation replaces the staged one.

A version is the time its rows were written (``rate_decks.updated_at``, ISO 8601 UTC to
the microsecond). Activation gives the deck in force the version of the upload it
copied, so the version an operator reviewed is the one they see in force; the staged
copy is dropped only if it is still that version (an upload racing an activation stays
staged).

Caveat: ``DeckStore.load_all`` (the daemon's catalog, ``ratekeeper rates list``) also
returns the staged ``<name>@pending`` decks until they are activated.

Errors (stable codes)::

    DeckStagingError      DECK_STAGING_ERROR
    ├── UnknownDeck       UNKNOWN_DECK        no such deck (active or staged)
    ├── NoPendingVersion  NO_PENDING_VERSION  nothing uploaded to activate
    └── VersionMismatch   VERSION_MISMATCH    the staged version is not the one named
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.decks import STAGED_SUFFIX, DeckStore
from storage.engine import wrap_driver_errors
from storage.tables import accounts, rate_decks, rates
from tariffs.deck import DeckInfo, Rate

log = structlog.get_logger(__name__)

PENDING_SUFFIX = STAGED_SUFFIX
MAX_DECK_NAME = 64 - len(PENDING_SUFFIX)
"""The longest deck name the API uploads (its staged name must fit 64 characters)."""


class DeckStagingError(Exception):
    """Base of the staging errors."""

    code = "DECK_STAGING_ERROR"


class UnknownDeck(DeckStagingError):
    """No deck of that name, in force or staged."""

    code = "UNKNOWN_DECK"


class NoPendingVersion(DeckStagingError):
    """Nothing was uploaded for the deck since its last activation."""

    code = "NO_PENDING_VERSION"


class VersionMismatch(DeckStagingError):
    """The staged version is not the one the caller reviewed."""

    code = "VERSION_MISMATCH"


@dataclass(frozen=True, slots=True)
class DeckVersion:
    """One stored version of a deck: its rules, rate count and version."""

    currency: str
    rounding: str
    decimals: int
    rates: int
    version: str


@dataclass(frozen=True, slots=True)
class DeckSummary:
    """A deck: the version in force and the staged one (either may be None)."""

    name: str
    active: DeckVersion | None
    pending: DeckVersion | None


def pending_name(name: str) -> str:
    """The staging name of deck ``name``."""
    return name + PENDING_SUFFIX


def version_of(moment: datetime) -> str:
    """A version string: the UTC write time to the microsecond."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version(row: Any) -> DeckVersion:
    return DeckVersion(
        currency=row.currency,
        rounding=row.rounding,
        decimals=row.decimals,
        rates=int(row.rate_count),
        version=version_of(row.updated_at),
    )


class DeckStaging:
    """Upload (stage), list and activate rate decks."""

    def __init__(self, engine: AsyncEngine, store: DeckStore | None = None) -> None:
        self._engine = engine
        self._store = store or DeckStore(engine)

    async def summaries(self, names: Collection[str] | None = None) -> list[DeckSummary]:
        """Every deck (or those of ``names`` that exist), by name."""
        counts = (
            select(rates.c.deck, func.count().label("rate_count")).group_by(rates.c.deck).subquery()
        )
        query = select(rate_decks, func.coalesce(counts.c.rate_count, 0).label("rate_count"))
        query = query.select_from(rate_decks.outerjoin(counts, counts.c.deck == rate_decks.c.name))
        if names is not None:
            wanted = [*names, *(pending_name(n) for n in names)]
            query = query.where(rate_decks.c.name.in_(wanted))
        with wrap_driver_errors("listing rate decks"):
            async with self._engine.connect() as conn:
                rows = list(await conn.execute(query))
        active: dict[str, DeckVersion] = {}
        pending: dict[str, DeckVersion] = {}
        for row in rows:
            if row.name.endswith(PENDING_SUFFIX):
                pending[row.name.removesuffix(PENDING_SUFFIX)] = _version(row)
            else:
                active[row.name] = _version(row)
        return [
            DeckSummary(name, active.get(name), pending.get(name))
            for name in sorted(set(active) | set(pending))
        ]

    async def summary(self, name: str) -> DeckSummary:
        """One deck; :class:`UnknownDeck` when neither in force nor staged."""
        found = await self.summaries([name])
        if not found:
            raise UnknownDeck(f"unknown deck: {name!r}")
        return found[0]

    async def stage(self, info: DeckInfo, deck_rates: list[Rate]) -> DeckSummary:
        """Store an upload as the deck's staged version (not in force)."""
        await self._store.replace(replace(info, name=pending_name(info.name)), deck_rates)
        log.info("rate deck staged", deck=info.name, rates=len(deck_rates))
        return await self.summary(info.name)

    async def load(self, name: str, *, pending: bool = False) -> tuple[DeckInfo, list[Rate]]:
        """The version in force (or the staged one) with its rates, named ``name``."""
        found = await self._store.load(pending_name(name) if pending else name)
        if found is None:
            raise UnknownDeck(f"unknown deck: {name!r}")
        info, deck_rates = found
        return replace(info, name=name), deck_rates

    async def activate(self, name: str, version: str | None = None) -> DeckSummary:
        """Put the staged version in force (only if it is ``version``, when given)."""
        written = await self._written_at(pending_name(name))
        staged = None if written is None else await self._store.load(pending_name(name))
        if written is None or staged is None:
            await self.summary(name)  # UnknownDeck when there is no such deck at all
            raise NoPendingVersion(f"deck {name!r} has no uploaded version to activate")
        if version is not None and version_of(written) != version:
            raise VersionMismatch(
                f"deck {name!r}: the uploaded version is {version_of(written)}, not {version}"
            )
        if await self._written_at(pending_name(name)) != written:  # re-uploaded meanwhile
            raise VersionMismatch(f"deck {name!r}: a new version was uploaded meanwhile")
        info, deck_rates = staged
        await self._store.replace(replace(info, name=name), deck_rates)
        await self._settle(name, written)
        log.info("rate deck activated", deck=name, version=version_of(written))
        return await self.summary(name)

    async def _written_at(self, stored_name: str) -> datetime | None:
        query = select(rate_decks.c.updated_at).where(rate_decks.c.name == stored_name)
        with wrap_driver_errors("reading a rate deck"):
            async with self._engine.connect() as conn:
                value = (await conn.execute(query)).scalar_one_or_none()
        return value if isinstance(value, datetime) else None

    async def _settle(self, name: str, written: datetime) -> None:
        """Give the deck in force the staged version, and drop that staged copy."""
        staged = pending_name(name)
        with wrap_driver_errors(f"activating deck {name!r}"):
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(rate_decks).where(rate_decks.c.name == name).values(updated_at=written)
                )
                still = await conn.execute(
                    select(rate_decks.c.name).where(
                        rate_decks.c.name == staged, rate_decks.c.updated_at == written
                    )
                )
                if still.first() is not None:
                    await conn.execute(delete(rates).where(rates.c.deck == staged))
                    await conn.execute(delete(rate_decks).where(rate_decks.c.name == staged))

    async def used_by(
        self, account_id: str, *, descendants: bool, default_deck: str | None
    ) -> set[str]:
        """The decks ``account_id`` (and with ``descendants`` every account under it) is
        priced with; an account without a deck of its own uses ``default_deck``."""
        ids: Select[Any] = select(accounts.c.id).where(accounts.c.id == account_id)
        if descendants:
            tree = ids.cte("deck_subtree", recursive=True)
            tree = tree.union_all(select(accounts.c.id).where(accounts.c.parent_id == tree.c.id))
            ids = select(tree.c.id)
        query = select(accounts.c.rate_deck).where(accounts.c.id.in_(ids)).distinct()
        with wrap_driver_errors("reading the decks of accounts"):
            async with self._engine.connect() as conn:
                decks = {row.rate_deck for row in await conn.execute(query)}
        used = {deck for deck in decks if deck}
        if None in decks and default_deck:
            used.add(default_deck)
        return used
