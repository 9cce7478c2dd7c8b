"""Tests for streams/deadlines.py."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from streams.deadlines import DAY, Deadline, from_micros, to_micros


class TestMicros:
    def test_round_trip_is_exact(self) -> None:
        """Converting to microseconds and back gives the same instant, to the microsecond."""
        moment = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)
        assert from_micros(to_micros(moment)) == moment

    def test_round_trip_is_exact_before_the_epoch_and_below_a_second(self) -> None:
        """Negative and sub-second microsecond counts convert exactly both ways."""
        for micros in (-1, -1_000_001, 0, 1, 999_999, 1_772_600_767_000_123):
            assert to_micros(from_micros(micros)) == micros
        assert from_micros(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

    def test_a_day_is_24_elapsed_hours_across_the_clock_change(self) -> None:
        """Noon GMT plus one DAY is 13:00 BST the day the clocks go forward."""
        london = ZoneInfo("Europe/London")
        start = datetime(2026, 3, 28, 12, 0, tzinfo=london)
        assert from_micros(to_micros(start) + DAY) == datetime(2026, 3, 29, 13, 0, tzinfo=london)

    def test_naive_times_are_refused(self) -> None:
        """A time without an offset is a programming error, never guessed."""
        with pytest.raises(ValueError, match="timezone-aware"):
            to_micros(datetime(2026, 1, 1))


class TestDeadline:
    def test_list_form_round_trips(self) -> None:
        """A deadline's JSON list form reads back to an equal deadline."""
        deadline = Deadline(5, "hospice-handoff-missed", "discharge:RX1:V1")
        assert Deadline.from_list(deadline.to_list()) == deadline
