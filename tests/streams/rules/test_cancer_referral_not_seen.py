"""Tests for streams/rules/cancer_referral_not_seen.py."""

from __future__ import annotations

import pytest

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "cancer-referral-not-seen"


class TestCancerReferralNotSeen:
    def test_booked_but_not_seen_alerts_after_14_days(self, engine: Engine) -> None:
        """A booking alone does not meet it: H and the referrer hear at referral + 14 days."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX1", "2026-02-17 11:00", start="2026-03-10 11:00"),
        ]
        alerts = replay(engine, events, until="2026-03-03 00:00")
        assert [(a.rule, a.recipients, a.raised_at) for a in alerts] == [
            (RULE, ("G0001", "RX1"), london("2026-03-02 11:00"))
        ]

    @pytest.mark.parametrize("trigger", ["A01", "A04"])
    def test_attendance_at_the_hospital_meets_it(self, engine: Engine, trigger: str) -> None:
        """An ADT^A01 or A04 from H within 14 days raises nothing."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.adt(trigger, "RX1", "2026-03-02 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_attendance_elsewhere_does_not_count(self, engine: Engine) -> None:
        """An A04 from another hospital does not meet the pathway's 14-day clock."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.adt("A04", "RX2", "2026-02-20 11:00"),
        ]
        assert len(fired(replay(engine, events, until="2026-03-31 09:00"), RULE)) == 1

    def test_attendance_before_the_referral_does_not_count(self, engine: Engine) -> None:
        """An earlier visit to H (before the referral) is not the pathway's first attendance."""
        feed = Feed()
        events = [
            feed.adt("A04", "RX1", "2026-02-10 11:00"),
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
        ]
        assert len(fired(replay(engine, events, until="2026-03-31 09:00"), RULE)) == 1

    def test_not_raised_before_the_deadline(self, engine: Engine) -> None:
        """One minute before referral + 14 days the deadline has not fired."""
        feed = Feed()
        events = [feed.referral("G0001", "RX1", "2026-02-16 11:00")]
        assert fired(replay(engine, events, until="2026-03-02 10:59"), RULE) == []
