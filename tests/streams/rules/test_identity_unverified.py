"""Tests for streams/rules/identity_unverified.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "identity-unverified"


class TestIdentityUnverified:
    def test_message_without_nhs_number_alerts_the_sender(self, engine: Engine) -> None:
        """A message whose patient has no valid NHS number alerts its sender at the event time."""
        feed = Feed("RX1:MRN0101", verified=False)
        alerts = fired(replay(engine, [feed.adt("A01", "RX1", "2026-02-09 09:00")]), RULE)
        assert [(a.patient, a.recipients, a.raised_at) for a in alerts] == [
            ("RX1:MRN0101", ("RX1",), london("2026-02-09 09:00"))
        ]
        assert alerts[0].evidence == ("MSG0001",)

    def test_valid_nhs_number_raises_nothing(self, engine: Engine) -> None:
        """A patient identified by a valid NHS number raises no identity alert."""
        feed = Feed()
        assert fired(replay(engine, [feed.adt("A01", "RX1", "2026-02-09 09:00")]), RULE) == []

    def test_once_per_sending_provider_and_local_identifier(self, engine: Engine) -> None:
        """Further messages from the same sender for the same identifier raise nothing more."""
        feed = Feed("RX1:MRN0101", verified=False)
        events = [
            feed.adt("A01", "RX1", "2026-02-09 09:00"),
            feed.adt("A03", "RX1", "2026-02-10 09:00"),
            feed.demographics("A08", "RX2", "2026-02-11 09:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [a.recipients for a in alerts] == [("RX1",), ("RX2",)]

    def test_death_event_of_the_same_message_does_not_repeat_it(self, engine: Engine) -> None:
        """The PatientDied event that follows a family event is not a second identity alert."""
        feed = Feed("RX1:MRN0101", verified=False)
        discharge = feed.adt("A03", "RX1", "2026-02-09 09:00", discharge_destination="79")
        alerts = fired(replay(engine, [discharge, feed.died(discharge)]), RULE)
        assert len(alerts) == 1
