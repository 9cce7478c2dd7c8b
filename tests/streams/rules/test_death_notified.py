"""Tests for streams/rules/death_notified.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "death-notified"


class TestDeathNotified:
    def test_first_death_message_alerts_the_rest_of_the_care_team(self, engine: Engine) -> None:
        """Every care-team provider but the sender hears of the death at the event time."""
        feed = Feed()
        events = [
            feed.adt("A04", "G0001", "2026-02-09 09:00"),
            feed.appointment("S12", "RX1", "2026-02-10 09:00", start="2026-03-01 09:00"),
        ]
        death = feed.demographics("A08", "HSP01", "2026-02-19 09:00")
        events += [death, feed.died(death, death_time="2026-02-18 23:00")]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("G0001", "RX1"), london("2026-02-19 09:00"), ("MSG0003",))
        ]

    def test_later_death_messages_raise_nothing(self, engine: Engine) -> None:
        """Only the first message that shows the patient dead notifies."""
        feed = Feed()
        first = feed.demographics("A08", "HSP01", "2026-02-19 09:00")
        second = feed.adt("A03", "RX1", "2026-02-19 10:00", discharge_destination="79")
        events = [
            feed.adt("A04", "G0001", "2026-02-09 09:00"),
            first,
            feed.died(first),
            second,
            feed.died(second),
        ]
        assert len(fired(replay(engine, events), RULE)) == 1

    def test_sender_alone_in_the_care_team_is_the_fallback(self, engine: Engine) -> None:
        """With nobody else in the care team the alert falls back to the sending provider."""
        feed = Feed()
        death = feed.adt("A03", "RX1", "2026-02-19 10:00", discharge_destination="79")
        alerts = fired(replay(engine, [death, feed.died(death)]), RULE)
        assert [a.recipients for a in alerts] == [("RX1",)]

    def test_providers_outside_the_year_are_not_told(self, engine: Engine) -> None:
        """A provider last heard from more than 365 days ago is not in the care team."""
        feed = Feed()
        death = feed.demographics("A08", "HSP01", "2026-02-19 09:00")
        events = [
            feed.adt("A04", "G0002", "2025-01-01 09:00"),
            feed.adt("A04", "G0001", "2026-02-09 09:00"),
            death,
            feed.died(death),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("G0001",)]
