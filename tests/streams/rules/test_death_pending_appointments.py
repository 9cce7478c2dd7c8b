"""Tests for streams/rules/death_pending_appointments.py."""

from __future__ import annotations

from streams.engine import Engine
from streams.view import StreamEvent
from tests.streams.events import Feed, fired, london, replay

RULE = "death-pending-appointments"


def _death(
    feed: Feed, at: str = "2026-02-19 09:00", died: str = "2026-02-18 23:00"
) -> list[StreamEvent]:
    message = feed.demographics("A08", "HSP01", at)
    return [message, feed.died(message, death_time=died)]


class TestDeathPendingAppointments:
    def test_provider_holding_a_later_appointment_is_alerted(self, engine: Engine) -> None:
        """A booked appointment after the time of death alerts its provider at the death message."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10 09:00", start="2026-03-01 09:00"),
            *_death(feed),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("RX1",), london("2026-02-19 09:00"), ("MSG0002", "MSG0001"))
        ]

    def test_one_alert_per_provider(self, engine: Engine) -> None:
        """Two providers holding appointments get one alert each, however many they hold."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A1", start="2026-03-01 09:00"),
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A2", start="2026-03-02 09:00"),
            feed.appointment("S12", "CM01", "2026-02-11", filler_id="B1", start="2026-03-03 09:00"),
            *_death(feed),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, len(a.evidence)) for a in alerts] == [(("CM01",), 2), (("RX1",), 3)]
        assert len({a.dedup_key for a in alerts}) == 2

    def test_cancelled_appointments_are_not_pending(self, engine: Engine) -> None:
        """Appointments cancelled (S15) or deleted (S17) by filler id are not pending."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A1", start="2026-03-01 09:00"),
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A2", start="2026-03-02 09:00"),
            feed.appointment("S15", "RX1", "2026-02-12", filler_id="A1"),
            feed.appointment("S17", "RX1", "2026-02-12", filler_id="A2"),
            *_death(feed),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_appointments_before_the_time_of_death_are_not_pending(self, engine: Engine) -> None:
        """An appointment starting at or before the time of death (PID-29) is not pending."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A1", start="2026-02-18 10:00"),
            feed.appointment("S12", "RX1", "2026-02-10", filler_id="A2", start="2026-02-18 23:00"),
            *_death(feed),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_appointment_between_death_and_its_notification_is_pending(
        self, engine: Engine
    ) -> None:
        """An appointment after PID-29 but before the death message's event time still counts."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10", start="2026-02-19 08:00"),
            *_death(feed),
        ]
        assert len(fired(replay(engine, events), RULE)) == 1

    def test_rescheduled_appointment_uses_its_new_start(self, engine: Engine) -> None:
        """An S13 moving the appointment before the death leaves nothing pending."""
        feed = Feed()
        events = [
            feed.appointment("S12", "RX1", "2026-02-10", start="2026-03-01 09:00"),
            feed.appointment("S13", "RX1", "2026-02-11", start="2026-02-12 09:00"),
            *_death(feed),
        ]
        assert fired(replay(engine, events), RULE) == []
