"""Tests for streams/clock.py: the deadline index, the partition clocks, the live clock."""

from __future__ import annotations

import json

from streams.clock import ClockWatch, DeadlineIndex, FeedClock, PartitionClocks
from streams.deadlines import HOUR, SECOND

#: feed_idle_minutes = 5
IDLE = 300 * SECOND
#: A wall clock (epoch µs) for these tests.
WALL = 1_780_000_000 * SECOND


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


class TestFeedClock:
    def test_without_watermarks_the_clock_is_the_wall_clock(self) -> None:
        """No provider known: the live clock is the wall clock."""
        assert FeedClock(IDLE).live(WALL) == WALL

    def test_the_clock_is_the_lowest_watermark_among_sending_providers(self) -> None:
        """Two providers sending: the clock is the watermark of the one further behind."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL - 1 * HOUR, WALL)
        clock.observe("G0001", "host:1", WALL - 6 * HOUR, WALL)
        assert clock.live(WALL) == WALL - 6 * HOUR
        assert clock.holding(WALL) == {"RX1": 1 * HOUR, "G0001": 6 * HOUR}

    def test_a_providers_watermark_is_the_latest_over_its_sources(self) -> None:
        """Two ingest processes store one provider's messages: the later one counts."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL - 3 * HOUR, WALL)
        clock.observe("RX1", "host:2", WALL - 1 * HOUR, WALL - 60 * SECOND)
        assert clock.live(WALL) == WALL - 1 * HOUR

    def test_a_watermark_never_moves_back_for_a_source(self) -> None:
        """An older record of the same source (a resend) changes nothing."""
        clock = FeedClock(IDLE)
        assert clock.observe("RX1", "host:1", WALL - 1 * HOUR, WALL)
        assert not clock.observe("RX1", "host:1", WALL - 2 * HOUR, WALL - SECOND)
        assert clock.live(WALL) == WALL - 1 * HOUR

    def test_a_provider_quiet_for_feed_idle_minutes_stops_holding_the_clock(self) -> None:
        """Once its last message is feed_idle_minutes old, a provider no longer counts."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL - 6 * HOUR, WALL)
        clock.observe("G0001", "host:1", WALL - 1 * HOUR, WALL + 200 * SECOND)
        assert clock.live(WALL + IDLE - 1) == WALL - 6 * HOUR
        assert clock.live(WALL + IDLE) == WALL - 1 * HOUR
        assert clock.holding(WALL + IDLE) == {"G0001": 1 * HOUR + IDLE}

    def test_when_every_provider_is_idle_the_clock_is_the_wall_clock(self) -> None:
        """No provider still sending: the live clock is the wall clock."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL - 6 * HOUR, WALL)
        assert clock.live(WALL + 10 * IDLE) == WALL + 10 * IDLE
        assert clock.holding(WALL + 10 * IDLE) == {}

    def test_a_future_stamped_watermark_never_takes_the_clock_past_the_wall_clock(
        self,
    ) -> None:
        """A provider whose messages are stamped tomorrow leaves the clock at the wall clock."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL + 24 * HOUR, WALL)
        assert clock.live(WALL) == WALL
        assert clock.holding(WALL) == {}

    def test_the_clock_never_moves_backwards(self) -> None:
        """A provider starting to send old event times does not take the clock back."""
        clock = FeedClock(IDLE)
        assert clock.live(WALL) == WALL
        clock.observe("RX1", "host:1", WALL - 6 * HOUR, WALL + SECOND)
        assert clock.live(WALL + SECOND) == WALL
        clock.observe("RX1", "host:1", WALL + 2 * SECOND, WALL + 2 * SECOND)
        assert clock.live(WALL + 3 * SECOND) == WALL + 2 * SECOND

    def test_a_provider_that_never_catches_up_holds_the_clock_back(self) -> None:
        """A provider that keeps sending old event times keeps the clock behind it."""
        clock = FeedClock(IDLE)
        for minute in range(0, 120, 1):
            now = WALL + minute * 60 * SECOND
            clock.observe("RX1", "host:1", now - 6 * HOUR, now)
            assert clock.live(now) == now - 6 * HOUR

    def test_restored_state_gives_the_same_clock(self) -> None:
        """to_dict, through JSON, then from_dict: the same clock at the same wall time."""
        clock = FeedClock(IDLE)
        clock.observe("RX1", "host:1", WALL - 6 * HOUR, WALL)
        clock.observe("RX1", "host:2", WALL - 5 * HOUR, WALL - 400 * SECOND)
        clock.observe("G0001", "host:1", WALL - 1 * HOUR, WALL - 10 * SECOND)
        before = clock.live(WALL)
        restored = FeedClock.from_dict(json.loads(json.dumps(clock.to_dict())), IDLE)
        assert restored.live(WALL) == before
        assert restored.floor == clock.floor
        assert restored.holding(WALL + IDLE - 10 * SECOND) == clock.holding(
            WALL + IDLE - 10 * SECOND
        )
        assert restored.to_dict() == clock.to_dict()

    def test_restored_floor_keeps_the_clock_from_moving_back(self) -> None:
        """The floor is state too: a restart does not take the clock back."""
        clock = FeedClock(IDLE)
        clock.live(WALL)
        restored = FeedClock.from_dict(clock.to_dict(), IDLE)
        restored.observe("RX1", "host:1", WALL - 6 * HOUR, WALL)
        assert restored.live(WALL) == WALL


class TestClockWatch:
    def test_an_episode_past_the_threshold_is_reported_once(self) -> None:
        """A provider held back past the threshold is raised once, however many ticks."""
        watch = ClockWatch(1 * HOUR)
        assert watch.check({"RX1": 30 * 60 * SECOND}) == ([], [])
        assert watch.check({"RX1": 1 * HOUR + 1}) == (["RX1"], [])
        for extra in range(1, 50):
            assert watch.check({"RX1": 1 * HOUR + extra * SECOND}) == ([], [])
        assert watch.flagged == {"RX1"}

    def test_coming_back_under_the_threshold_ends_the_episode(self) -> None:
        """Back under the threshold (or idle): reported once; a new episode is raised again."""
        watch = ClockWatch(1 * HOUR)
        watch.check({"RX1": 2 * HOUR})
        assert watch.check({}) == ([], ["RX1"])
        assert watch.check({}) == ([], [])
        assert watch.check({"RX1": 2 * HOUR}) == (["RX1"], [])
