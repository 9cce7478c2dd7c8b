"""Tests for connectors/dedup.py: recognising resends within a window."""

from __future__ import annotations

import asyncio

from connectors.dedup import Deduplicator


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestDeduplicator:
    def test_remembered_key_is_duplicate_within_window(self) -> None:
        """A key published within the window is a duplicate; after it, it is not."""
        clock = Clock()
        dedup = Deduplicator(60, clock=clock)
        dedup.remember(("RXA", "1"))
        clock.now += 59
        assert dedup.is_duplicate(("RXA", "1"))
        assert not dedup.is_duplicate(("RXB", "1"))
        clock.now += 2
        assert not dedup.is_duplicate(("RXA", "1"))

    def test_memory_is_bounded(self) -> None:
        """Beyond max_entries the oldest keys are forgotten."""
        dedup = Deduplicator(3600, max_entries=3, clock=Clock())
        for n in range(5):
            dedup.remember(("RXA", str(n)))
        assert len(dedup) == 3
        assert not dedup.is_duplicate(("RXA", "0"))
        assert dedup.is_duplicate(("RXA", "4"))

    async def test_successful_attempt_is_remembered(self) -> None:
        """A tracked publish that succeeds makes its key a duplicate and leaves no doubt."""
        dedup = Deduplicator(60)
        attempt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dedup.track(("RXA", "7"), attempt)
        assert dedup.in_doubt(("RXA", "7")) is attempt
        assert not dedup.is_duplicate(("RXA", "7"))
        attempt.set_result(None)
        await asyncio.sleep(0)
        assert dedup.is_duplicate(("RXA", "7"))
        assert dedup.in_doubt(("RXA", "7")) is None

    async def test_failed_attempt_is_forgotten(self) -> None:
        """A tracked publish that fails leaves the key free to be published again."""
        dedup = Deduplicator(60)
        attempt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dedup.track(("RXA", "8"), attempt)
        attempt.set_exception(RuntimeError("boom"))
        await asyncio.sleep(0)
        assert not dedup.is_duplicate(("RXA", "8"))
        assert dedup.in_doubt(("RXA", "8")) is None
