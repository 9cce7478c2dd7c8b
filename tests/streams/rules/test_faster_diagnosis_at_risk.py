"""Tests for streams/rules/faster_diagnosis_at_risk.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "faster-diagnosis-at-risk"


class TestFasterDiagnosisAtRisk:
    def test_no_outcome_in_21_days_alerts_the_hospital(self, engine: Engine) -> None:
        """Without an outcome document H alone is alerted at referral + 21 days."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.appointment("S12", "RX1", "2026-02-19 11:00", start="2026-02-25 11:00"),
            feed.adt("A04", "RX1", "2026-02-25 11:00"),
        ]
        alerts = fired(replay(engine, events, until="2026-03-31 09:00"), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("RX1",), london("2026-03-09 11:00"), ("MSG0001",))
        ]

    def test_outcome_from_any_provider_meets_it(self, engine: Engine) -> None:
        """An MDM^T02 outcome document from any provider within 21 days raises nothing."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX2", "2026-03-06 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_outcome_exactly_at_the_deadline_meets_it(self, engine: Engine) -> None:
        """An outcome document at exactly referral + 21 days is in time."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX1", "2026-03-09 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-03-31 09:00"), RULE) == []

    def test_other_document_types_do_not_count(self, engine: Engine) -> None:
        """A T02 whose TXA-2.1 is not an outcome document type leaves the clock running."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX1", "2026-02-20 11:00", document_type="CLINIC-LETTER"),
        ]
        assert len(fired(replay(engine, events, until="2026-03-31 09:00"), RULE)) == 1

    def test_only_a_t02_counts(self, engine: Engine) -> None:
        """An MDM^T01 (notification without content) does not close the pathway."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX1", "2026-02-16 11:00"),
            feed.document("RX1", "2026-02-20 11:00", trigger="T01"),
        ]
        assert len(fired(replay(engine, events, until="2026-03-31 09:00"), RULE)) == 1

    def test_across_the_clock_change_the_deadline_is_21_elapsed_days(self, engine: Engine) -> None:
        """Referral at 11:00 GMT on 16 March falls due at 12:00 BST on 6 April."""
        feed = Feed()
        alerts = fired(
            replay(engine, [feed.referral("G0001", "RX1", "2026-03-16 11:00")], until="2026-05-01"),
            RULE,
        )
        assert [a.raised_at for a in alerts] == [london("2026-04-06 12:00")]
