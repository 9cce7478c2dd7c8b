"""Tests for streams/rules/faster_diagnosis_breach.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "faster-diagnosis-breach"


class TestFasterDiagnosisBreach:
    def test_no_outcome_in_28_days_alerts_hospital_and_referrer(self, engine: Engine) -> None:
        """Without an outcome H and the referrer are alerted at referral + 28 days."""
        feed = Feed()
        events = [feed.referral("G0001", "RX1", "2026-02-16 11:00")]
        alerts = fired(replay(engine, events, until="2026-03-31 09:00"), RULE)
        assert [(a.recipients, a.raised_at) for a in alerts] == [
            (("G0001", "RX1"), london("2026-03-16 11:00"))
        ]

    def test_late_outcome_stops_the_breach_but_not_the_warning(self, engine: Engine) -> None:
        """An outcome on day 25 comes after the 21-day warning but before the breach."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX1", "2026-03-13 11:00"),
        ]
        alerts = replay(engine, events, until="2026-03-31 09:00")
        assert [a.rule for a in alerts] == [
            "cancer-referral-not-booked",
            "cancer-referral-not-seen",
            "faster-diagnosis-at-risk",
        ]

    def test_closed_pathway_is_not_reopened_by_a_replayed_referral(self, engine: Engine) -> None:
        """Replaying the referral after its outcome document does not start a new clock."""
        feed = Feed()
        referral = feed.referral("G0001", "RX1", "2026-02-16 11:00")
        events = [referral, feed.document("RX1", "2026-02-18 11:00"), referral]
        assert replay(engine, events, until="2026-03-31 09:00") == []

    def test_resent_referral_with_same_referral_id_is_one_pathway(self, engine: Engine) -> None:
        """A referral re-sent with a new control id but the same RF1-6 keeps one pathway."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00", referral_id="R1"),
            feed.referral("G0001", "RX1", "2026-02-17 11:00", referral_id="R1"),
        ]
        alerts = fired(replay(engine, events, until="2026-03-31 09:00"), RULE)
        assert [a.evidence for a in alerts] == [("MSG0001",)]
