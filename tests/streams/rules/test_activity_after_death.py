"""Tests for streams/rules/activity_after_death.py."""

from __future__ import annotations

from streams.engine import Engine
from streams.view import StreamEvent
from tests.streams.events import Feed, fired, london, replay

RULE = "activity-after-death"


def _dead(feed: Feed) -> list[StreamEvent]:
    message = feed.adt("A03", "RX1", "2026-02-19 09:00", discharge_destination="79")
    return [message, feed.died(message, death_time="2026-02-18 23:00")]


class TestActivityAfterDeath:
    def test_booking_after_death_alerts_the_sender(self, engine: Engine) -> None:
        """An SIU^S12 after the time of death alerts its sender at its event time."""
        feed = Feed()
        events = [
            *_dead(feed),
            feed.appointment("S12", "CM01", "2026-02-20 09:00", start="2026-03-01"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("CM01",), london("2026-02-20 09:00"), ("MSG0002", "MSG0001"))
        ]

    def test_new_order_and_referral_after_death_alert(self, engine: Engine) -> None:
        """A new order (NW) and a referral after death each alert their sender."""
        feed = Feed()
        events = [
            *_dead(feed),
            feed.order("G0001", "2026-02-20 09:00"),
            feed.referral("G0001", "RX2", "2026-02-21 09:00", priority="R"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.evidence[0]) for a in alerts] == [
            (("G0001",), "MSG0002"),
            (("G0001",), "MSG0003"),
        ]

    def test_activity_dated_before_the_death_raises_nothing(self, engine: Engine) -> None:
        """A booking whose event time is before the time of death (sent late) is not after death."""
        feed = Feed()
        events = [
            *_dead(feed),
            feed.appointment("S12", "CM01", "2026-02-18 22:00", start="2026-03-01"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_other_activity_raises_nothing(self, engine: Engine) -> None:
        """Cancellations, order cancels and results after death are not new activity."""
        feed = Feed()
        events = [
            *_dead(feed),
            feed.appointment("S15", "CM01", "2026-02-20 09:00"),
            feed.order("G0001", "2026-02-20 10:00", control="CA"),
            feed.result("RX1", "2026-02-20 11:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_living_patient_raises_nothing(self, engine: Engine) -> None:
        """Bookings for a patient not shown dead raise nothing."""
        feed = Feed()
        events = [feed.appointment("S12", "CM01", "2026-02-20 09:00", start="2026-03-01")]
        assert fired(replay(engine, events), RULE) == []
