"""The daemon's start-up heap is frozen out of the collector's full collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon.gc_tuning import freeze_startup_heap


@pytest.fixture
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process starts many daemons: nothing of it stays frozen


@pytest.mark.usefixtures("_unfrozen")
def test_given_a_loaded_heap_when_frozen_then_every_live_object_leaves_the_collections() -> None:
    deck_like = [{"prefix": str(i)} for i in range(10_000)]  # what start-up loads

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() >= len(deck_like)
    walked = {id(obj) for obj in gc.get_objects()}  # what a full collection walks now
    assert len(walked) < frozen
    assert not any(id(row) in walked for row in deck_like)
