"""Tests for streams/rules/hospice_handoff_missed.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "hospice-handoff-missed"


class TestHospiceHandoffMissed:
    def test_no_hospice_admission_within_24_hours_alerts(self, engine: Engine) -> None:
        """A discharge to a hospice with no hospice A01 alerts the hospital at discharge + 24 h."""
        feed = Feed()
        events = [
            feed.adt("A01", "RX1", "2026-02-09 09:00"),
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
        ]
        alerts = fired(replay(engine, events, until="2026-02-15 09:00"), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("RX1",), london("2026-02-13 11:00"), ("MSG0002",))
        ]

    def test_care_team_hospices_are_told_too(self, engine: Engine) -> None:
        """Hospices in the care team are recipients alongside the discharging hospital."""
        feed = Feed()
        events = [
            feed.demographics("A08", "HSP01", "2026-02-01 09:00"),
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
        ]
        alerts = fired(replay(engine, events, until="2026-02-15 09:00"), RULE)
        assert [a.recipients for a in alerts] == [("HSP01", "RX1")]

    def test_hospice_admission_meets_it(self, engine: Engine) -> None:
        """A hospice A01 the next morning raises nothing."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-02-13 08:00"),
        ]
        assert fired(replay(engine, events, until="2026-02-15 09:00"), RULE) == []

    def test_admission_exactly_at_24_hours_meets_it(self, engine: Engine) -> None:
        """The window includes its end: a hospice A01 at exactly discharge + 24 h is in time."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-02-13 11:00"),
        ]
        assert fired(replay(engine, events, until="2026-02-15 09:00"), RULE) == []

    def test_admission_a_minute_late_does_not(self, engine: Engine) -> None:
        """A hospice A01 at discharge + 24 h + 1 min comes after the alert."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-02-13 11:01"),
        ]
        assert [a.raised_at for a in fired(replay(engine, events), RULE)] == [
            london("2026-02-13 11:00")
        ]

    def test_admission_by_a_non_hospice_does_not_count(self, engine: Engine) -> None:
        """An A01 from another hospital is not the hospice admission."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            feed.adt("A01", "RX2", "2026-02-12 18:00"),
        ]
        assert len(fired(replay(engine, events, until="2026-02-15 09:00"), RULE)) == 1

    def test_other_destinations_raise_nothing(self, engine: Engine) -> None:
        """A discharge whose PV1-37.1 is not a hospice destination starts no clock."""
        feed = Feed()
        events = [feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="19")]
        assert replay(engine, events, until="2026-02-15 09:00") == []

    def test_discharge_by_a_non_hospital_raises_nothing(self, engine: Engine) -> None:
        """Only a hospital (by region kind) discharging to a hospice starts the clock."""
        feed = Feed()
        events = [feed.adt("A03", "ZZZ99", "2026-02-12 11:00", discharge_destination="88")]
        assert fired(replay(engine, events, until="2026-02-15 09:00"), RULE) == []

    def test_death_before_the_deadline_cancels_it(self, engine: Engine) -> None:
        """A patient shown dead within the 24 hours gets no hand-off alert."""
        feed = Feed()
        death = feed.demographics("A08", "G0001", "2026-02-12 20:00")
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            death,
            feed.died(death),
        ]
        assert fired(replay(engine, events, until="2026-02-15 09:00"), RULE) == []

    def test_spring_clock_change_deadline_is_24_elapsed_hours(self, engine: Engine) -> None:
        """Discharged 12:00 GMT on 28 March: due 13:00 BST on 29 March, so 12:30 BST is in time."""
        feed = Feed()
        late = [feed.adt("A03", "RX1", "2026-03-28 12:00", discharge_destination="88")]
        alerts = fired(replay(engine, late, until="2026-03-30 12:00"), RULE)
        assert [a.to_dict()["raised_at"] for a in alerts] == ["2026-03-29T12:00:00+00:00"]
        feed = Feed()
        in_time = [
            feed.adt("A03", "RX1", "2026-03-28 12:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-03-29 12:30"),
        ]
        assert fired(replay(engine, in_time, until="2026-03-30 12:00"), RULE) == []

    def test_autumn_clock_change_deadline_is_24_elapsed_hours(self, engine: Engine) -> None:
        """Discharged 12:00 BST on 24 October: due 11:00 GMT on 25 October, so 11:30 is late."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-10-24 12:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-10-25 11:30"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [a.raised_at for a in alerts] == [london("2026-10-25 11:00")]
