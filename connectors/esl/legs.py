"""Which FreeSWITCH channel a call is billed on, from one channel's headers.

A FreeSWITCH call is several channels (loopback A and B, bridged SIP legs, callcenter
agent legs) and several of them carry ``variable_accountcode`` and ``variable_billsec``.
The call is billed once, on its *billing leg*:

* a loopback B-leg (``variable_loopback_leg=B``) belongs to its A partner
  (``variable_other_loopback_leg_uuid``), which is the billing leg;
* a leg created by a bridge or originate on behalf of another channel (it has
  ``variable_originator``, or ``Other-Type: originator``) is never a billing leg;
* any other channel is its own billing leg.

``billing_leg_uuid`` answers, for any channel's headers (an ESL event, or the fields
mod_xml_curl posts for a dialplan lookup), the Unique-ID of the leg the call is billed
on; the translator uses it for call ids and the authorization front ends use it for
reservation keys, so that a reservation made while the B-leg runs the dialplan is found
again when the A-leg is answered and ends.
"""

from __future__ import annotations

from collections.abc import Mapping


def is_loopback_b_leg(headers: Mapping[str, str]) -> bool:
    """True for the dialplan-running B half of a loopback pair."""
    return headers.get("variable_loopback_leg", "") == "B"


def is_originated_for_another(headers: Mapping[str, str]) -> bool:
    """True for a leg a bridge/originate created on behalf of another channel."""
    if headers.get("variable_originator"):
        return True
    return headers.get("Other-Type", "") == "originator"


def billing_leg_uuid(headers: Mapping[str, str]) -> str:
    """The Unique-ID of the leg this channel's call is billed on ("" when unknown)."""
    if is_loopback_b_leg(headers):
        partner = headers.get("variable_other_loopback_leg_uuid", "")
        if partner:
            return partner
    return headers.get("Unique-ID", "")
