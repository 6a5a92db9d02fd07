"""Every Redis key template and TTL of the live state, in one place.

All keys of one account share the hash tag ``{<account_id>}`` so that every script,
which only touches the keys of one account, is valid on Redis Cluster::

    rk:{<account>}:account              hash  status, balance, credit_limit,
                                              concurrency_limit (-1 = none), reserved,
                                              trial_ends (ms, -1 = no trial), cps_limit,
                                              seat_limit (-1 = none), suspend_cut (1/0)
    rk:{<account>}:calls                hash  call_key -> micro-units reserved for the call
    rk:{<account>}:leases               zset  call_key -> lease expiry (ms, Redis clock)
    rk:{<account>}:cps                  zset  call_key -> admission time (ms): the calls
                                              admitted in the last second (CPS limit)
    rk:{<account>}:thresholds           hash  low-balance rule -> "1" while it has fired
    rk:{<account>}:settled:<call_key>   str   settled marker (``SETTLED_TTL_SECONDS``)
    rk:{<account>}:credited:<key>       str   top-up marker (``CREDIT_MARKER_TTL_SECONDS``)

Amounts are integer micro-units (see ``tariffs.money``).
"""

from __future__ import annotations

PREFIX = "rk"

DEFAULT_LEASE_TTL_SECONDS = 120
"""A reservation not extended or settled within this time is released by the next script."""

SETTLED_TTL_SECONDS = 3 * 86_400
"""How long ``settle`` remembers a call, so a repeated settlement is not charged twice."""

CREDIT_MARKER_TTL_SECONDS = 7 * 86_400
"""How long ``credit`` remembers an idempotency key."""

UNLIMITED = -1
"""``concurrency_limit`` stored for an account without a concurrency cap."""

_GLOB_SPECIALS = frozenset("*?[]\\")


def printable_word(value: str) -> bool:
    """No space, control or separator character in ``value`` (what a key part may hold).

    The same as ``not any(ch.isspace() or not ch.isprintable() for ch in value)`` for every
    code point (``str.isprintable`` is false for every other white space), at C speed: it
    runs on every authorization.
    """
    return value.isprintable() and " " not in value


def tag(account_id: str) -> str:
    """The key prefix of one account: ``rk:{<account_id>}:``."""
    return f"{PREFIX}:{{{account_id}}}:"


def account_key(account_id: str) -> str:
    """The account's hash: status, balance, credit limit, concurrency limit, reserved."""
    return tag(account_id) + "account"


def calls_key(account_id: str) -> str:
    """The account's live calls: call_key -> micro-units reserved."""
    return tag(account_id) + "calls"


def thresholds_key(account_id: str) -> str:
    """The account's low-balance threshold state: rule key -> "1" while it has fired."""
    return tag(account_id) + "thresholds"


def cps_key(account_id: str) -> str:
    """The account's admissions of the last second: call_key -> admission time (ms)."""
    return tag(account_id) + "cps"


def leases_key(account_id: str) -> str:
    """The account's call leases: call_key -> expiry in ms (Redis server clock)."""
    return tag(account_id) + "leases"


def settled_key(account_id: str, call_key: str) -> str:
    """Marker that a call was settled (debited once)."""
    return tag(account_id) + "settled:" + call_key


def credited_key(account_id: str, idempotency_key: str) -> str:
    """Marker that a top-up with this idempotency key was applied."""
    return tag(account_id) + "credited:" + idempotency_key


def account_pattern(account_id: str) -> str:
    """A SCAN MATCH pattern for every key of one account (glob characters escaped)."""
    escaped = "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in tag(account_id))
    return escaped + "*"


# --- plans: volume-tier counters and bundled minutes (balance.usage, balance.bundles) ---
#
#   rk:{<account>}:usage:<period>                   hash  loaded, calls, seconds
#   rk:{<account>}:counted:<call_key>               str   call counted (SETTLED_TTL_SECONDS)
#   rk:{<account>}:bundle:<bundle>:<period>         hash  allowance, used, reserved (seconds)
#   rk:{<account>}:bundle:<bundle>:<period>:calls   hash  call_key -> seconds reserved
#   rk:{<account>}:bundle:<bundle>:<period>:leases  zset  call_key -> lease expiry (ms)
#   rk:{<account>}:bundle_settled:<call_key>        str   bundle settled (SETTLED_TTL_SECONDS)
#
# <period> is YYYY-MM; a bundle name has no ':' (tariffs.bundles).

PERIOD_STATE_TTL_SECONDS = 70 * 86_400
"""How long a period's counters and bundle balances live after their last write."""


def usage_key(account_id: str, period: str) -> str:
    """The account's counters of one period: answered calls and billable seconds."""
    return tag(account_id) + "usage:" + period


def counted_key(account_id: str, call_key: str) -> str:
    """Marker that a call was counted in its period's counters."""
    return tag(account_id) + "counted:" + call_key


def bundle_key(account_id: str, bundle: str, period: str) -> str:
    """The account's abstract balance of one bundle in one period (seconds)."""
    return tag(account_id) + "bundle:" + bundle + ":" + period


def bundle_calls_key(account_id: str, bundle: str, period: str) -> str:
    """The bundle's live reservations: call_key -> seconds."""
    return bundle_key(account_id, bundle, period) + ":calls"


def bundle_leases_key(account_id: str, bundle: str, period: str) -> str:
    """The bundle's reservation leases: call_key -> expiry in ms (Redis server clock)."""
    return bundle_key(account_id, bundle, period) + ":leases"


def bundle_settled_key(account_id: str, call_key: str) -> str:
    """Marker that a call's bundle reservation was settled (its seconds used once)."""
    return tag(account_id) + "bundle_settled:" + call_key


# --- shared caps: resellers over all their customers, trunks (balance.caps) ---
#
#   rk:{caps}:slots:<scope>    zset  call_key -> slot expiry (ms): the scope's live calls
#   rk:{caps}:cps:<scope>      zset  call_key -> admission time (ms): last second's calls
#   rk:{caps}:call:<call_key>  hash  slots / cps -> the scope keys the call holds
#
# A scope spans tenants (``reseller:<id>``, ``trunk:<carrier>``), so its keys cannot carry
# a tenant's tag: every shared cap lives in the one ``{caps}`` slot, and one script checks
# all the scopes of a call at once.

CAPS_TAG = PREFIX + ":{caps}:"


def cap_slots_key(scope: str) -> str:
    """A shared scope's live calls: call_key -> slot expiry (ms)."""
    return CAPS_TAG + "slots:" + scope


def cap_cps_key(scope: str) -> str:
    """A shared scope's admissions of the last second: call_key -> time (ms)."""
    return CAPS_TAG + "cps:" + scope


def cap_call_key(call_key: str) -> str:
    """Which shared scopes one call holds (for its release)."""
    return CAPS_TAG + "call:" + call_key


# --- seats: live agent seats per tenant (balance.seats) ---
#
#   rk:{<tenant>}:seats        hash  seat -> "<switch_id>|<since_us>" (live seats)
#   rk:{<tenant>}:seat_holds   zset  seat -> hold expiry (ms, Redis clock): a pre-login
#                                    ask that reserved a seat for a login to come
#
# A seat is never live and held at once: a login converts its hold.

DEFAULT_SEAT_HOLD_TTL_SECONDS = 60
"""How long a pre-login ask (``SeatState.hold``) keeps a seat for the login to come."""


def seats_key(tenant: str) -> str:
    """The tenant's live seats: seat -> ``<switch_id>|<since_us>``."""
    return tag(tenant) + "seats"


def seat_holds_key(tenant: str) -> str:
    """The tenant's seat holds: seat -> hold expiry in ms (Redis server clock)."""
    return tag(tenant) + "seat_holds"
