"""Close a replayed switch connection the way a switch does: without losing data in flight.

A server that closes its socket while the client's commands are still arriving makes the
kernel answer them with a reset, and a reset discards whatever the client had received
but not yet read: the tail of the recording. So the replay servers half-close first and
wait for the client to hang up (reading what it still sends) before they close.
"""

from __future__ import annotations

import asyncio

LINGER_SECONDS = 10.0
"""How long a replay server waits for the client's end after its own (a hang guard)."""


async def linger(
    writer: asyncio.StreamWriter, listener: asyncio.Task[None], within: float = LINGER_SECONDS
) -> None:
    """Send EOF, then wait until ``listener`` (reading the client) ends or ``within`` passes."""
    if writer.can_write_eof() and not writer.transport.is_closing():
        writer.write_eof()
    await asyncio.wait({listener}, timeout=within)
