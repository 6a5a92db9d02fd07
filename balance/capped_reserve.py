"""A call's shared caps and its account's reservation in ONE script call.

``SharedCaps.acquire`` then ``LiveState.reserve`` is two script calls, two round trips
one after the other on the authorization path. On a single Redis server (what the daemon
connects to: no Cluster client) one script may touch the account's hash slot and the
``{caps}`` slot at once, so ``reserve_capped.lua`` runs both scripts' bodies (included,
unchanged) in one call: the shared caps admit the call first (a denial reserves nothing),
then the account reserves its first slice (a denial gives the shared slots and CPS
admissions back). The outcome is exactly that of the two calls in a row, without a
window between them.
"""

from __future__ import annotations

from collections.abc import Sequence

from balance.batching import BatchingRunner, bulk, evalsha_head, packed_evalsha
from balance.caps import CapAdmission, CapScope, SharedCaps, admission
from balance.live import LiveState, Reservation, reservation
from balance.scripts import load_script


class CappedReserve:
    """Admit a call on its shared caps and reserve its first slice, atomically."""

    def __init__(self, live: LiveState, caps: SharedCaps) -> None:
        self._live = live
        self._caps = caps
        self._script = load_script("reserve_capped")
        self._head = evalsha_head(self._script)
        self._lease_ttl = bulk(b"%d" % live.lease_ttl_ms)

    async def reserve(
        self,
        account_id: str,
        call_key: str,
        amount_micros: int,
        required: Sequence[CapScope],
        alternatives: Sequence[CapScope] = (),
    ) -> tuple[CapAdmission, Reservation]:
        """The shared caps' admission and the account's reservation of ``amount_micros``.

        A call the shared caps deny gets a reservation that is not ok, with their reason.
        Idempotent, as both operations are.
        """
        caps = self._caps
        if isinstance(caps.runner, BatchingRunner):  # the hot path: packed in one go
            account_keys = self._live.packed_reserve_keys(account_id, call_key, amount_micros)
            scopes, caps_keys, caps_args = caps.pack(call_key, required, alternatives)
            n = len(scopes)  # keys: reserve's 4, caps' 1 + 2n; arguments: 3, then 4 + 2n
            command = packed_evalsha(
                self._head,
                5 + 2 * n,
                7 + 2 * n,
                account_keys,
                caps_keys,
                bulk(call_key.encode()),
                bulk(b"%d" % amount_micros),
                self._lease_ttl,
                caps_args,
            )
            reply = await caps.run_packed(self._script, command)
        else:
            reserve_keys, reserve_args = self._live.reserve_arguments(
                account_id, call_key, amount_micros
            )
            scopes, keys_list, args_list = caps.arguments(call_key, required, alternatives)
            reply = await caps.run(
                self._script, [*reserve_keys, *keys_list], [*reserve_args, *args_list]
            )
        admitted = admission(reply[4:6], scopes, len(required))
        if not admitted.ok:
            return admitted, Reservation(False, admitted.reason, 0, 0)
        return admitted, reservation(reply)
