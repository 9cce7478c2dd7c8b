"""Tests for streams/rules/eol_discharge.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "eol-discharge"


class TestEolDischarge:
    def test_discharge_on_the_register_alerts_the_community_team(self, engine: Engine) -> None:
        """The care team's GP, hospice and community providers hear of the discharge."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-10 09:00"),
            feed.demographics("A08", "CM01", "2026-01-11 09:00"),
            feed.demographics("A08", "CC01", "2026-01-11 10:00"),
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
            feed.adt("A03", "RX1", "2026-02-05 15:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("CM01", "G0001"), london("2026-02-05 15:00"), ("MSG0005",))
        ]

    def test_without_community_providers_the_sender_is_told(self, engine: Engine) -> None:
        """With no GP, hospice or community provider in the team the sender is told."""
        feed = Feed()
        events = [
            feed.problem("PC1", "RX1", "2026-01-10 09:00"),
            feed.adt("A03", "RX1", "2026-02-05 15:00"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("RX1",)]

    def test_not_on_the_register_raises_nothing(self, engine: Engine) -> None:
        """A discharge of a patient not on the register raises nothing."""
        feed = Feed()
        events = [
            feed.adt("A04", "G0001", "2026-01-10 09:00"),
            feed.adt("A03", "RX1", "2026-02-05 15:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_discharge_from_a_non_hospital_raises_nothing(self, engine: Engine) -> None:
        """An A03 from a hospice (or an unknown provider) is not a hospital discharge."""
        feed = Feed()
        events = [
            feed.problem("PC1", "G0001", "2026-01-10 09:00"),
            feed.adt("A03", "HSP01", "2026-02-05 15:00"),
            feed.adt("A03", "ZZZ99", "2026-02-06 15:00"),
        ]
        assert fired(replay(engine, events), RULE) == []
