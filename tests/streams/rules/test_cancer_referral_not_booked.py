"""Tests for streams/rules/cancer_referral_not_booked.py."""

from __future__ import annotations

from streams.engine import Engine
from streams.state import PatientState
from tests.streams.events import Feed, fired, london, replay

RULE = "cancer-referral-not-booked"


class TestCancerReferralNotBooked:
    def test_unbooked_referral_alerts_hospital_and_referrer_after_7_days(
        self, engine: Engine
    ) -> None:
        """No booking from H within 7 days alerts H and the referrer at referral + 7 days."""
        feed = Feed()
        events = [feed.referral("G0001", "RX1", "2026-02-16 11:00")]
        alerts = fired(replay(engine, events, until="2026-03-31 09:00"), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("G0001", "RX1"), london("2026-02-23 11:00"), ("MSG0001",))
        ]

    def test_booking_by_the_hospital_meets_it(self, engine: Engine) -> None:
        """An SIU^S12 from H within 7 days raises nothing."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX1", "2026-02-19 11:00", start="2026-02-25 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_booking_exactly_at_the_deadline_meets_it(self, engine: Engine) -> None:
        """A booking whose event time is exactly referral + 7 days meets the deadline."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX1", "2026-02-23 11:00", start="2026-02-25 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_booking_a_minute_late_does_not(self, engine: Engine) -> None:
        """A booking a minute after the deadline comes after the alert, raised at the deadline."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX1", "2026-02-23 11:01", start="2026-02-25 11:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [a.raised_at for a in alerts] == [london("2026-02-23 11:00")]

    def test_booking_by_another_provider_does_not_count(self, engine: Engine) -> None:
        """Only a booking from the provider the referral went to meets it."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX2", "2026-02-17 11:00", start="2026-02-25 11:00"),
        ]
        assert len(fired(replay(engine, events, until="2026-02-24 00:00"), RULE)) == 1

    def test_routine_referral_starts_no_pathway(self, engine: Engine) -> None:
        """A referral whose priority is not a suspected-cancer priority raises nothing."""
        feed = Feed()
        events = [feed.referral("G0001", "RX1", "2026-02-16 11:00", priority="R")]
        assert replay(engine, events, until="2026-03-31 09:00") == []

    def test_outcome_document_closes_the_pathway(self, engine: Engine) -> None:
        """A pathway closed by its outcome document before the deadline raises nothing."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX1", "2026-02-20 11:00"),
        ]
        assert replay(engine, events, until="2026-03-31 09:00") == []

    def test_death_closes_the_pathway(self, engine: Engine) -> None:
        """A pathway closed by the patient's death raises no deadline alert."""
        feed = Feed()
        admit = feed.adt("A03", "RX1", "2026-02-18 11:00", discharge_destination="79")
        events = [feed.referral("G0001", "RX1", "2026-02-16 11:00"), admit, feed.died(admit)]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_deadline_is_elapsed_time_across_the_clock_change(self, engine: Engine) -> None:
        """Referral 10:00 GMT on 25 March is due 11:00 BST on 1 April (7 x 24 elapsed hours)."""
        feed = Feed()
        events = [feed.referral("G0001", "RX1", "2026-03-25 10:00")]
        alerts = fired(replay(engine, events, until="2026-04-30 09:00"), RULE)
        assert [a.to_dict()["raised_at"] for a in alerts] == ["2026-04-01T10:00:00+00:00"]
        assert alerts[0].raised_at == london("2026-04-01 11:00")

    def test_booking_in_the_last_wall_clock_hour_meets_it(self, engine: Engine) -> None:
        """A booking at 10:30 BST on 1 April is before the 11:00 BST deadline and meets it."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-03-25 10:00"),
            feed.appointment("S12", "RX1", "2026-04-01 10:30", start="2026-04-08 10:00"),
        ]
        assert fired(replay(engine, events, until="2026-04-30 09:00"), RULE) == []

    def test_replayed_referral_does_not_alert_twice(self, engine: Engine) -> None:
        """Reprocessing the referral after the alert (same state) raises nothing new."""
        feed = Feed()
        referral = feed.referral("G0001", "RX1", "2026-02-16 11:00")
        state = PatientState(feed.key)
        first = replay(engine, [referral], until="2026-02-24 00:00", state=state)
        again = replay(engine, [referral], until="2026-03-31 00:00", state=state)
        assert len(fired(first, RULE)) == 1
        assert fired(again, RULE) == []
