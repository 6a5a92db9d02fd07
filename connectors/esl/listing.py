"""FreeSWITCH ``show channels as json`` rows -> one ``LiveCall`` per billing leg.

A row is one channel (all values strings): ``uuid``, ``direction``, ``created_epoch``,
``name``, ``state``, ``cid_num``, ``dest``, ``accountcode``, ``callstate`` (RINGING,
EARLY, ACTIVE, HELD, ...), ``call_uuid`` and the ``initial_*`` columns. The rows carry no
channel variables, so the billing leg is recognised from what they do carry: a loopback
B half (``loopback/...-b``) is never one, nor is a leg whose ``call_uuid`` names another
channel (a leg a bridge originated); and it must carry an ``accountcode``, as the
translator requires (connectors/esl/translator.py). ACTIVE and HELD calls are answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

from connectors.live_calls import LiveCall

_ANSWERED = frozenset(("ACTIVE", "HELD"))


def _is_billing_row(row: Mapping[str, str]) -> bool:
    uuid = row.get("uuid", "")
    if not uuid or not row.get("accountcode"):
        return False
    name = row.get("name", "")
    if name.startswith("loopback/") and name.endswith("-b"):
        return False
    call_uuid = row.get("call_uuid", "")
    return not call_uuid or call_uuid == uuid


def _epoch(text: str, default: Decimal) -> Decimal:
    try:
        return Decimal(text) if text else default
    except InvalidOperation:
        return default


def live_calls_from_rows(rows: Sequence[Mapping[str, str]], now: Decimal) -> list[LiveCall]:
    """One ``LiveCall`` per billing-leg row of a ``show channels as json`` answer."""
    calls: list[LiveCall] = []
    for row in rows:
        if not _is_billing_row(row):
            continue
        uuid = row["uuid"]
        calls.append(
            LiveCall(
                call_id=uuid,
                leg_id=uuid,
                channel=uuid,
                account=row.get("accountcode", ""),
                caller=row.get("initial_cid_num") or row.get("cid_num", ""),
                callee=row.get("initial_dest") or row.get("dest", ""),
                started_at=_epoch(row.get("created_epoch", ""), now),
                answered=row.get("callstate", "") in _ANSWERED,
            )
        )
    return calls
