"""Tests for connectors/translate/time.py: HL7 date/times to UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from connectors.translate.time import parse_date, parse_dtm, to_millis


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


class TestParseDtm:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026", utc(2026, 1, 1)),
            ("202602", utc(2026, 2, 1)),
            ("20260209", utc(2026, 2, 9)),
            ("2026020909", utc(2026, 2, 9, 9)),
            ("202602090930", utc(2026, 2, 9, 9, 30)),
            ("20260209093015", utc(2026, 2, 9, 9, 30, 15)),
            ("20260209093015.1", utc(2026, 2, 9, 9, 30, 15, 100000)),
            ("20260209093015.1234", utc(2026, 2, 9, 9, 30, 15, 123000)),
        ],
    )
    def test_partial_precision_in_winter_is_gmt(self, text: str, expected: datetime) -> None:
        """Missing parts take their lowest value; local winter time equals UTC."""
        assert parse_dtm(text) == expected

    def test_summer_local_time_is_bst(self) -> None:
        """A July time without offset is British Summer Time, one hour ahead of UTC."""
        assert parse_dtm("20260709090000") == utc(2026, 7, 9, 8)
        assert parse_dtm("20260709") == utc(2026, 7, 8, 23)

    def test_clocks_change_on_the_last_sundays(self) -> None:
        """Local 00:30 on 29 March 2026 is GMT; 03:00 that day is already BST."""
        assert parse_dtm("20260329003000") == utc(2026, 3, 29, 0, 30)
        assert parse_dtm("20260329030000") == utc(2026, 3, 29, 2)
        assert parse_dtm("20261025003000") == utc(2026, 10, 24, 23, 30)
        assert parse_dtm("20261025030000") == utc(2026, 10, 25, 3)

    def test_ambiguous_and_skipped_local_hours(self) -> None:
        """The repeated hour reads as BST (first occurrence); the skipped hour as GMT."""
        assert parse_dtm("20261025013000") == utc(2026, 10, 25, 0, 30)
        assert parse_dtm("20260329013000") == utc(2026, 3, 29, 1, 30)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("20260709090000+0100", utc(2026, 7, 9, 8)),
            ("20260209090000-0500", utc(2026, 2, 9, 14)),
            ("20260209090000+0000", utc(2026, 2, 9, 9)),
            ("202602090900+0215", utc(2026, 2, 9, 6, 45)),
            ("20150624084727.655-0500", utc(2015, 6, 24, 13, 47, 27, 655000)),
        ],
    )
    def test_explicit_offsets_win(self, text: str, expected: datetime) -> None:
        """A UTC offset, at any precision, is used instead of Europe/London."""
        assert parse_dtm(text) == expected

    def test_results_are_utc(self) -> None:
        """Every result carries the UTC time zone."""
        assert parse_dtm("20260709090000+0100").tzinfo is UTC

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "26",
            "2026020",
            "20260230",
            "20261301",
            "20260209250000",
            "2026-02-09",
            "20260209090000+01",
            "20260209090000+2400",
            "20260209.5",
            "abc",
            "20260209090000 x",
        ],
    )
    def test_invalid_values_raise(self, text: str) -> None:
        """Anything that is not an HL7 date/time raises ValueError."""
        with pytest.raises(ValueError):
            parse_dtm(text)

    def test_surrounding_spaces_are_ignored(self) -> None:
        """Leading and trailing spaces, as some senders pad, do not matter."""
        assert parse_dtm(" 20260209 ") == utc(2026, 2, 9)


class TestParseDate:
    def test_date_as_written(self) -> None:
        """The calendar date is taken as written, even with a time and offset."""
        assert parse_date("19450312") == date(1945, 3, 12)
        assert parse_date("19300122000000+0215") == date(1930, 1, 22)

    @pytest.mark.parametrize("text", ["1945", "194503", "19450231", "x"])
    def test_needs_a_whole_valid_date(self, text: str) -> None:
        """Year-only, year-month, impossible dates and junk raise ValueError."""
        with pytest.raises(ValueError):
            parse_date(text)


class TestToMillis:
    def test_truncates_to_milliseconds_in_utc(self) -> None:
        """Microseconds below a millisecond are dropped; the result is in UTC."""
        moment = datetime(2026, 7, 9, 9, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
        assert to_millis(moment) == utc(2026, 7, 9, 8, 0, 0, 123000)

    def test_naive_means_utc(self) -> None:
        """A naive datetime is taken as UTC."""
        assert to_millis(datetime(2026, 1, 1, 12)) == utc(2026, 1, 1, 12)
