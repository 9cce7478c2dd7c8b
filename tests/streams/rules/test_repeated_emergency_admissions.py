"""Tests for streams/rules/repeated_emergency_admissions.py."""

from __future__ import annotations

from streams.engine import Engine
from streams.view import StreamEvent
from tests.streams.events import Feed, fired, london, replay

RULE = "repeated-emergency-admissions"


def _admissions(feed: Feed, *days: str, kind: str = "E") -> list[StreamEvent]:
    return [feed.adt("A01", "RX1", f"{day} 03:00", admission_type=kind) for day in days]


class TestRepeatedEmergencyAdmissions:
    def test_third_emergency_admission_on_the_register_alerts_gps(self, engine: Engine) -> None:
        """The third emergency admission in 90 days of an EOL patient alerts the care team's GPs."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-02 09:00"),
            feed.adt("A04", "G0002", "2026-01-03 09:00"),
            *_admissions(feed, "2026-01-10", "2026-02-10", "2026-03-10"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("G0001", "G0002"), london("2026-03-10 03:00"), ("MSG0005", "MSG0003", "MSG0004"))
        ]

    def test_raised_for_each_later_admission(self, engine: Engine) -> None:
        """The fourth admission within 90 days raises it again."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-02 09:00"),
            *_admissions(feed, "2026-01-10", "2026-01-20", "2026-01-30", "2026-02-09"),
        ]
        assert len(fired(replay(engine, events), RULE)) == 2

    def test_without_eol_or_cancer_pathway_raises_nothing(self, engine: Engine) -> None:
        """Admissions of a patient neither on the register nor on a pathway raise nothing."""
        feed = Feed()
        events = [
            feed.adt("A04", "G0001", "2026-01-03 09:00"),
            *_admissions(feed, "2026-01-10", "2026-02-10", "2026-03-10"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_open_cancer_pathway_qualifies(self, engine: Engine) -> None:
        """A patient with an open suspected-cancer pathway qualifies like one on the register."""
        feed = Feed()
        events = [
            feed.referral("G0001", "RX2", "2026-01-02 09:00"),
            *_admissions(feed, "2026-01-10", "2026-02-10", "2026-03-10"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("G0001",)]

    def test_admissions_over_90_days_apart_do_not_count(self, engine: Engine) -> None:
        """The first admission 90 days and a minute earlier is outside the window."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2025-12-01 09:00"),
            feed.adt("A01", "RX1", "2026-01-01 02:59", admission_type="E"),
            feed.adt("A01", "RX1", "2026-02-10 03:00", admission_type="E"),
            feed.adt("A01", "RX1", "2026-04-01 04:00", admission_type="E"),  # 03:00 UTC
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_window_includes_admission_exactly_90_days_before(self, engine: Engine) -> None:
        """An admission exactly 90 elapsed days earlier (03:00 GMT to 04:00 BST) counts."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2025-12-01 09:00"),
            feed.adt("A01", "RX1", "2026-01-01 03:00", admission_type="E"),
            feed.adt("A01", "RX1", "2026-02-10 03:00", admission_type="E"),
            feed.adt("A01", "RX1", "2026-04-01 04:00", admission_type="E"),
        ]
        assert len(fired(replay(engine, events), RULE)) == 1

    def test_elective_admissions_do_not_count(self, engine: Engine) -> None:
        """Admissions whose PV1-4.1 is not an emergency type are not counted."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-02 09:00"),
            *_admissions(feed, "2026-01-10", "2026-02-10", kind="E"),
            *_admissions(feed, "2026-03-10", kind="R"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_a_replayed_admission_is_counted_once(self, engine: Engine) -> None:
        """The same admission message processed twice is one admission, not two."""
        feed = Feed()
        first, second = _admissions(feed, "2026-01-10", "2026-02-10")
        events = [feed.problem("PC1", "G0001", "2026-01-02 09:00"), first, second, second]
        assert fired(replay(engine, events), RULE) == []


class TestRepeatedEmergencyAdmissionsByEventTime:
    def test_later_stamped_admission_arriving_first_is_not_counted_before(
        self, engine: Engine
    ) -> None:
        """An emergency admission stamped after another is not one of its previous admissions,
        though it arrived first: the earlier one is only the second in 90 days."""
        feed = Feed()
        register = feed.problem("PC1", "G0001", "2026-01-02 09:00")
        first, second, third = _admissions(feed, "2026-01-10", "2026-02-10", "2026-03-10")
        assert fired(replay(engine, [register, first, third, second]), RULE) == []

    def test_an_admission_arriving_early_does_not_forget_history_a_late_one_needs(
        self, engine: Engine
    ) -> None:
        """An admission stamped weeks after another but arriving first does not make the
        admissions in the 90 days before the late-arriving one be forgotten."""
        feed = Feed()
        register = feed.problem("PC1", "G0001", "2026-01-02 09:00")
        first, second, third, far = _admissions(
            feed, "2026-01-10", "2026-02-10", "2026-03-20", "2026-04-15"
        )
        alerts = fired(replay(engine, [register, first, second, far, third]), RULE)
        assert [a.evidence for a in alerts] == [("MSG0004", "MSG0002", "MSG0003")]
