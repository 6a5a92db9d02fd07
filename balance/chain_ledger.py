"""The ledger side of reseller chains: who pays whom for one rated call.

A customer's rate deck is its RETAIL price, set by its reseller; the reseller's own deck
is its WHOLESALE price, from the platform or from ITS reseller (``daemon.reseller_chain``
prices each level). A rated call carries its chain as :class:`ChainCharge` values, one
per reseller level (1 = the customer's reseller), and the call's ledger transaction
(``txn_key`` ``call:{switch}:{call}``) then moves the money level by level::

    customer      -R    call:{switch}:{call}:charge      (the retail cost, cost_micros)
    reseller 1    +R    call:{switch}:{call}:sold:1      (the retail it sold)
    reseller 1    -W1   call:{switch}:{call}:charge:1    (its wholesale cost)
    reseller 2    +W1   call:{switch}:{call}:sold:2
    reseller 2    -W2   call:{switch}:{call}:charge:2
    sys:revenue   +W2   call:{switch}:{call}:revenue     (the platform's price)

Every entry is of kind ``charge`` with the call's ``rated_call_id``; entries of 0 are
left out; the transaction sums to zero. Without a chain it is exactly the two entries of
a plain call (customer ``-cost``, ``sys:revenue`` ``+cost``). So each reseller's balance
is its top-ups + the retail it sold - the wholesale it bought, and ``Ledger.audit`` (the
customer's charge entries debit the call's cost) holds unchanged. The wholesale costs are
also stored per level in ``rated_call_charges`` (``storage.chain_tables``) for margins.

``balance.rated_calls`` writes all of it in the rated call's own transaction, only for a
call that transaction newly inserted: replays never charge any level twice.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.ledger import SYS_REVENUE
from storage.chain_tables import rated_call_charges
from storage.engine import wrap_driver_errors
from storage.tables import rated_calls

MAX_ACCOUNT_ID = 64


@dataclass(frozen=True, slots=True)
class ChainCharge:
    """What the reseller of one level paid for a call (its wholesale cost, micro-units)."""

    level: int  # 1 = the customer's reseller, 2 = that reseller's reseller, ...
    account_id: str
    cost_micros: int
    deck: str = ""  # the reseller's own deck that priced it
    rate_micros: int = 0  # per minute, for display


Chain = tuple[ChainCharge, ...]
Key = tuple[str, str]  # (switch_id, call_id)
EntryRow = tuple[str, str, str, int, int, str]
"""(idempotency_key, txn_key, account_id, amount_micros, rated_call_id, description)."""
ChargeRow = tuple[int, int, str, int, str, int]
"""(rated_call_id, level, account_id, cost_micros, deck, rate_micros)."""


def chain_problem(chain: Sequence[ChainCharge]) -> tuple[str, str] | None:
    """(field, why) of the first invalid part of a chain, or None when it is valid."""
    if not isinstance(chain, tuple):
        return "chain", f"a tuple of ChainCharge, got {type(chain).__name__}"
    for expected, charge in enumerate(chain, start=1):
        if not isinstance(charge, ChainCharge):
            return "chain", f"a tuple of ChainCharge, got {charge!r}"
        if charge.level != expected:
            return "chain", f"levels must be 1, 2, ... in order, got {charge.level!r}"
        account = charge.account_id
        if not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_ID:
            return "chain", f"level {expected} account_id: 1-64 characters, got {account!r}"
        for name in ("cost_micros", "rate_micros"):
            if type(getattr(charge, name)) is not int:
                return "chain", f"level {expected} {name}: an int, got {getattr(charge, name)!r}"
        if not isinstance(charge.deck, str) or len(charge.deck) > 64:
            return "chain", f"level {expected} deck: at most 64 characters, got {charge.deck!r}"
    return None


def call_entries(
    rated_call_id: int,
    switch_id: str,
    call_id: str,
    account_id: str,
    cost_micros: int,
    description: str,
    chain: Iterable[ChainCharge] = (),
) -> builtins.list[EntryRow]:
    """The ledger entries of one newly written call (see the module docstring)."""
    txn = f"call:{switch_id}:{call_id}"
    rows: builtins.list[EntryRow] = []
    if cost_micros:
        rows.append((f"{txn}:charge", txn, account_id, -cost_micros, rated_call_id, description))
    price = cost_micros  # what the level below paid to this level
    for charge in chain:
        level, payer, cost = charge.level, charge.account_id, charge.cost_micros
        if price:
            rows.append((f"{txn}:sold:{level}", txn, payer, price, rated_call_id, description))
        if cost:
            rows.append((f"{txn}:charge:{level}", txn, payer, -cost, rated_call_id, description))
        price = cost
    if price:
        rows.append((f"{txn}:revenue", txn, SYS_REVENUE, price, rated_call_id, description))
    return rows


def rows_for_new_calls(
    new: Iterable[Sequence[Any]], chains: Mapping[Key, Chain]
) -> tuple[builtins.list[EntryRow], builtins.list[ChargeRow]]:
    """Entries and ``rated_call_charges`` rows of newly written calls.

    ``new`` yields (id, switch_id, call_id, account_id, cost_micros, destination) rows.
    """
    entries: builtins.list[EntryRow] = []
    charges: builtins.list[ChargeRow] = []
    for rated_call_id, switch_id, call_id, account_id, cost, destination in new:
        chain = chains.get((switch_id, call_id), ())
        entries.extend(
            call_entries(rated_call_id, switch_id, call_id, account_id, cost, destination, chain)
        )
        if cost or any(c.cost_micros for c in chain):
            charges.extend(
                (rated_call_id, c.level, c.account_id, c.cost_micros, c.deck, c.rate_micros)
                for c in chain
            )
    return entries, charges


async def chain_of(engine: AsyncEngine, switch_id: str, call_id: str) -> Chain:
    """The stored reseller levels of one rated call (empty: no chain, or not rated)."""
    rc, ch = rated_calls, rated_call_charges
    query = (
        select(ch.c.level, ch.c.account_id, ch.c.cost_micros, ch.c.deck, ch.c.rate_micros)
        .select_from(ch.join(rc, rc.c.id == ch.c.rated_call_id))
        .where(rc.c.switch_id == switch_id, rc.c.call_id == call_id)
        .order_by(ch.c.level)
    )
    with wrap_driver_errors("reading a rated call's chain"):
        async with engine.connect() as conn:
            rows = await conn.execute(query)
            return tuple(ChainCharge(r.level, r.account_id, r.cost_micros, r.deck,
                                     r.rate_micros) for r in rows)  # fmt: skip
