"""Asterisk ``CoreShowChannels`` items -> one ``LiveCall`` per Linkedid.

The billing leg is chosen as the translator chooses it: the channel running ``Dial`` or
``Queue`` (its ``Application``), else the call's first channel (Uniqueid = Linkedid), else
the oldest one. The call is answered when that leg is ``Up`` and in a bridge (a Dial
that connected), or, for a call without Dial, when the leg is ``Up``. ``Duration``
(HH:MM:SS since the channel was created) dates the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from connectors.live_calls import LiveCall

_DIALING_APPS = frozenset(("Dial", "Queue"))


def _seconds(duration: str) -> int:
    try:
        hours, minutes, seconds = (int(part) for part in duration.split(":"))
    except ValueError:
        return 0
    return hours * 3600 + minutes * 60 + seconds


def _billing_leg(channels: Sequence[Mapping[str, str]], linkedid: str) -> Mapping[str, str]:
    for chan in channels:
        if chan.get("Application") in _DIALING_APPS:
            return chan
    for chan in channels:
        if chan.get("Uniqueid") == linkedid:
            return chan
    return max(channels, key=lambda chan: _seconds(chan.get("Duration", "")))


def live_calls_from_listing(items: Sequence[Mapping[str, str]], now: Decimal) -> list[LiveCall]:
    """One ``LiveCall`` per Linkedid found among ``CoreShowChannel`` items."""
    by_call: dict[str, list[Mapping[str, str]]] = {}
    for item in items:
        uid = item.get("Uniqueid", "")
        if not uid:
            continue
        by_call.setdefault(item.get("Linkedid") or uid, []).append(item)
    calls: list[LiveCall] = []
    for linkedid, channels in by_call.items():
        leg = _billing_leg(channels, linkedid)
        dialing = leg.get("Application") in _DIALING_APPS
        up = leg.get("ChannelStateDesc") == "Up"
        answered = up and (bool(leg.get("BridgeId")) or not dialing)
        calls.append(
            LiveCall(
                call_id=linkedid,
                leg_id=leg.get("Uniqueid", ""),
                channel=leg.get("Channel", ""),
                account=leg.get("AccountCode", ""),
                caller=leg.get("CallerIDNum", ""),
                callee=leg.get("Exten", ""),
                started_at=now - _seconds(leg.get("Duration", "")),
                answered=answered,
            )
        )
    return calls
