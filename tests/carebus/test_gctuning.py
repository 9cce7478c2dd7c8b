"""Tests for carebus/gctuning.py: cheaper cyclic garbage collection."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from carebus.gctuning import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Undo the tuning after the test (the test process keeps collecting as usual)."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class TestTuneGc:
    def test_start_up_objects_are_frozen_and_young_collections_are_rarer(
        self, restored_gc: None
    ) -> None:
        """Everything alive at the call leaves collection, and gen-0 runs every 50,000."""
        gc.unfreeze()
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (50_000, 20, 100)
