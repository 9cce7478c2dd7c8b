"""Tests for streams/clock.py: the deadline index and the partition clocks."""

from __future__ import annotations

from streams.clock import DeadlineIndex, PartitionClocks


class TestDeadlineIndex:
    def test_pop_due_returns_patients_due_earliest_first(self) -> None:
        """Patients whose deadline is at or before now come out, earliest first."""
        index = DeadlineIndex()
        index.schedule(0, "b", 20)
        index.schedule(0, "a", 10)
        index.schedule(0, "c", 30)
        assert index.pop_due(0, 20) == ["a", "b"]
        assert index.pop_due(0, 20) == []
        assert len(index) == 1

    def test_rescheduling_replaces_the_earlier_deadline(self) -> None:
        """A patient's new next deadline replaces the old one; only the new one fires."""
        index = DeadlineIndex()
        index.schedule(0, "a", 10)
        index.schedule(0, "a", 50)
        assert index.pop_due(0, 40) == []
        assert index.pop_due(0, 50) == ["a"]

    def test_none_removes_the_patient(self) -> None:
        """Scheduling None forgets the patient's deadline."""
        index = DeadlineIndex()
        index.schedule(0, "a", 10)
        index.schedule(0, "a", None)
        assert index.pop_due(0, 100) == []
        assert len(index) == 0

    def test_partitions_are_separate(self) -> None:
        """A partition's clock only fires its own patients."""
        index = DeadlineIndex()
        index.schedule(0, "a", 10)
        index.schedule(1, "b", 10)
        assert index.pop_due(1, 10) == ["b"]
        assert index.next_due(0) == 10
        assert index.partitions() == {0}

    def test_forget_drops_partitions(self) -> None:
        """Forgotten partitions have no deadlines left."""
        index = DeadlineIndex()
        index.schedule(0, "a", 10)
        index.schedule(1, "b", 10)
        index.forget([0])
        assert index.pop_due(0, 10) == []
        assert len(index) == 1

    def test_many_reschedules_stay_correct_after_compaction(self) -> None:
        """Heavy rescheduling (which compacts the heap) still fires each patient once."""
        index = DeadlineIndex()
        for round_ in range(50):
            for n in range(10):
                index.schedule(0, f"p{n}", 1000 - round_ * 10 + n)
        assert index.next_due(0) == 510
        assert index.pop_due(0, 10_000) == [f"p{n}" for n in range(10)]


class TestPartitionClocks:
    def test_moves_forward_only(self) -> None:
        """The clock returns the new time when it moves forward, None otherwise."""
        clocks = PartitionClocks()
        assert clocks.advance(0, 100, now=1000) == 100
        assert clocks.advance(0, 50, now=1000) is None
        assert clocks.advance(0, 100, now=1000) is None
        assert clocks.get(0) == 100

    def test_never_ahead_of_the_wall_clock(self) -> None:
        """An event stamped in the future moves the clock only to now."""
        clocks = PartitionClocks()
        assert clocks.advance(0, 5000, now=1000) == 1000
        assert clocks.advance(0, 6000, now=1000) is None
