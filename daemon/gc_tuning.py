"""The garbage collector of a long-running daemon: what start-up loaded is frozen.

Rate decks, accounts, carriers and the compiled listeners live as long as the process,
and a full collection would walk all of them again, at a cost that grows with the decks
and lands on the authorization path as latency. Once start-up is done they are moved to
the permanent generation (``gc.freeze``): collections walk only what was allocated since.
Measured (``bench/bench_caps.py``): the full collections that the caps path's extra
allocations brought on cost more than the caps themselves. Objects frozen are still freed
by reference counting; only a reference cycle among them would outlive its use, so only
a process that is one daemon freezes (``ratekeeper run``, the benches), never a test
process that starts many.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object alive now; the number frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("start-up heap frozen", objects=frozen)
    return frozen
