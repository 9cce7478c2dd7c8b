"""Tests for schemas/jsonform.py: the JSON form of records."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

from schemas.jsonform import dumps, jsonable


class TestJsonable:
    def test_timestamps_are_iso_8601_with_offset(self) -> None:
        """Whole-second times have no fraction; others show milliseconds."""
        assert jsonable(datetime(2026, 3, 2, 14, 5, tzinfo=UTC)) == "2026-03-02T14:05:00+00:00"
        assert (
            jsonable(datetime(2026, 3, 2, 14, 5, 0, 120000, tzinfo=UTC))
            == "2026-03-02T14:05:00.120+00:00"
        )

    def test_keeps_the_offset_it_is_given(self) -> None:
        """A non-UTC aware time keeps its offset (records hold UTC, but nothing is lost)."""
        moment = datetime(2026, 7, 1, 9, tzinfo=timezone(timedelta(hours=1)))
        assert jsonable(moment) == "2026-07-01T09:00:00+01:00"

    def test_dates_and_nested_values(self) -> None:
        """Dates become YYYY-MM-DD inside nested dicts and lists; other values stay."""
        value = {"a": [{"d": date(1945, 3, 12)}, None, 3, True], "b": "x"}
        assert jsonable(value) == {"a": [{"d": "1945-03-12"}, None, 3, True], "b": "x"}


class TestDumps:
    def test_one_line_with_schema_and_record(self) -> None:
        """dumps gives one JSON line holding the schema name and the record."""
        line = dumps("carebus.alerts.Alert", {"raised_at": datetime(2026, 1, 1, tzinfo=UTC)})
        assert "\n" not in line
        assert json.loads(line) == {
            "schema": "carebus.alerts.Alert",
            "record": {"raised_at": "2026-01-01T00:00:00+00:00"},
        }

    def test_non_ascii_is_escaped(self) -> None:
        """Output is ASCII whatever the terminal's encoding; the text survives a JSON round trip."""
        line = dumps("s", {"name": "Zoë"})
        assert line.isascii()
        assert json.loads(line)["record"]["name"] == "Zoë"
