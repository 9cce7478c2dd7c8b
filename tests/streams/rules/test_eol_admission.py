"""Tests for streams/rules/eol_admission.py."""

from __future__ import annotations

from streams.engine import Engine
from streams.view import StreamEvent
from tests.streams.events import Feed, fired, london, replay

RULE = "eol-admission"


def _team(feed: Feed) -> list[StreamEvent]:
    """A care team: GP, hospice, community, council and another hospital; GP registers EOL."""
    return [
        feed.adt("A04", "G0001", "2026-01-05 09:00"),
        feed.demographics("A08", "HSP01", "2026-01-06 09:00"),
        feed.demographics("A08", "CM01", "2026-01-07 09:00"),
        feed.demographics("A08", "CC01", "2026-01-08 09:00"),
        feed.adt("A04", "RX2", "2026-01-09 09:00"),
        feed.problem("PC1", "G0001", "2026-01-10 09:00"),
    ]


class TestEolAdmission:
    def test_admission_on_the_register_alerts_hospital_and_community_team(
        self, engine: Engine
    ) -> None:
        """The admitting hospital and the care team's GP, hospice and community are alerted."""
        feed = Feed()
        events = [*_team(feed), feed.adt("A01", "RX1", "2026-02-01 09:00")]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at) for a in alerts] == [
            (("CM01", "G0001", "HSP01", "RX1"), london("2026-02-01 09:00"))
        ]

    def test_not_on_the_register_raises_nothing(self, engine: Engine) -> None:
        """An admission of a patient never put on the register raises nothing."""
        feed = Feed()
        events = [*_team(feed)[:-1], feed.adt("A01", "RX1", "2026-02-01 09:00")]
        assert fired(replay(engine, events), RULE) == []

    def test_taken_off_the_register_raises_nothing(self, engine: Engine) -> None:
        """A PPR^PC3 with the register code takes the patient off the register."""
        feed = Feed()
        events = [
            *_team(feed),
            feed.problem("PC3", "G0001", "2026-01-20 09:00"),
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_pc2_with_the_code_puts_the_patient_on(self, engine: Engine) -> None:
        """A PPR^PC2 (problem updated) with the register code also puts the patient on it."""
        feed = Feed()
        events = [
            feed.problem("PC2", "G0001", "2026-01-10 09:00"),
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("G0001", "RX1")]

    def test_other_problem_codes_do_not_register(self, engine: Engine) -> None:
        """A problem code outside eol_register_codes does not put the patient on the register."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-10 09:00", code="38341003"),
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_admission_by_a_hospice_is_not_a_hospital_admission(self, engine: Engine) -> None:
        """Only an A01 from a provider of kind hospital raises it."""
        feed = Feed()
        events = [*_team(feed), feed.adt("A01", "HSP01", "2026-02-01 09:00")]
        assert fired(replay(engine, events), RULE) == []

    def test_care_team_members_older_than_a_year_are_left_out(self, engine: Engine) -> None:
        """A hospice last heard from over 365 days ago is no longer in the care team."""
        feed = Feed()
        events = [
            feed.demographics("A08", "HSP01", "2024-12-01 09:00"),
            feed.problem("PC1", "G0001", "2026-01-10 09:00"),
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("G0001", "RX1")]


class TestCareTeamByEventTime:
    def test_provider_first_heard_from_after_the_admission_is_not_told(
        self, engine: Engine
    ) -> None:
        """A community team whose only message is stamped after the admission is not in the
        care team at the admission, though that message arrived first."""
        feed = Feed()
        register = feed.problem("PC1", "G0001", "2026-01-10 09:00")
        admission = feed.adt("A01", "RX1", "2026-02-01 09:00")
        community = feed.demographics("A08", "CM01", "2026-02-01 09:05")
        alerts = fired(replay(engine, [register, community, admission]), RULE)
        assert [a.recipients for a in alerts] == [("G0001", "RX1")]
        assert alerts == fired(replay(engine, [register, admission, community]), RULE)
