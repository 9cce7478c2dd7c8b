"""Tests for streams/view.py."""

from __future__ import annotations

from datetime import datetime

import pytest

from streams.deadlines import to_micros
from streams.view import ENCOUNTER, EventView, StreamEvent
from tests.streams.events import Feed, london


class TestEventView:
    def test_fields_are_read_once_from_the_record(self) -> None:
        """The view holds the short schema, trigger, sender, control id, time in micros and ref."""
        event = Feed().adt("A01", "RX1", "2026-02-01 09:00", control_id="M1")
        view = EventView.of(event)
        assert (view.schema, view.trigger, view.sender, view.control_id) == (
            ENCOUNTER,
            "A01",
            "RX1",
            "M1",
        )
        assert view.time == to_micros(london("2026-02-01 09:00"))
        assert view.ref == "RX1:M1"
        assert view.patient_key == event.record["patient"]["key"]
        assert view.message_type == "ADT"

    def test_missing_header_codes_read_as_empty(self) -> None:
        """A null sending facility or control id reads as an empty string, as does the ref."""
        event = Feed().adt("A01", "RX1", "2026-02-01 09:00")
        header = {**event.record["header"], "sending_facility": None, "control_id": None}
        view = EventView(event.schema, {**event.record, "header": header})
        assert (view.sender, view.control_id, view.ref) == ("", "", ":")

    def test_a_naive_event_time_is_refused(self) -> None:
        """An event time without an offset is a malformed event (ValueError), never guessed."""
        event = Feed().adt("A01", "RX1", "2026-02-01 09:00")
        header = {**event.record["header"], "event_time": datetime(2026, 2, 1, 9)}
        with pytest.raises(ValueError, match="timezone-aware"):
            EventView.of(StreamEvent(event.schema, event.key, {**event.record, "header": header}))
