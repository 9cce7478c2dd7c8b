"""Tests for streams/rules/base.py: the helpers the rules share."""

from __future__ import annotations

from streams.deadlines import DAY, Deadline, from_micros
from streams.observe import PATHWAY
from streams.region import Region
from streams.rules.base import message_alert, pathway_clock
from streams.state import Pathway, PatientState
from streams.view import EventView
from tests.streams.events import Feed

REF = "pathway:G0001:R1"


def _state() -> PatientState:
    """A patient with one open pathway: referred by G0001 to RX1 at time 0."""
    state = PatientState("9434765919")
    state.pathways[REF] = Pathway(start=0, hospital="RX1", referrer="G0001", control_id="M1")
    return state


class TestPathwayClock:
    def test_an_unmet_open_pathway_alerts_at_the_deadline(self, region: Region) -> None:
        """The alert names the referral in its key and evidence and is raised at the due time."""
        rule = pathway_clock("test-clock", delay=DAY, met=None, tell_referrer=True, summary="S")
        assert (rule.episode, rule.delay) == (PATHWAY, DAY)
        assert rule.on_deadline is not None
        (alert,) = rule.on_deadline(Deadline(DAY, rule.id, REF), _state(), region)
        assert alert.recipients == ("G0001", "RX1")
        assert alert.dedup_key == "test-clock:9434765919:G0001:M1"
        assert alert.evidence == ("M1",)
        assert alert.raised_at == from_micros(DAY)
        assert (alert.rule, alert.summary) == ("test-clock", "S")

    def test_a_met_or_closed_pathway_raises_nothing(self, region: Region) -> None:
        """When ``met`` says so, or the pathway is gone (closed), the clock raises nothing."""
        rule = pathway_clock(
            "test-clock", delay=DAY, met=lambda p: p.booked, tell_referrer=True, summary="S"
        )
        assert rule.on_deadline is not None
        state = _state()
        state.pathways[REF].booked = True
        assert rule.on_deadline(Deadline(DAY, rule.id, REF), state, region) == []
        assert rule.on_deadline(Deadline(DAY, rule.id, REF), PatientState("K"), region) == []

    def test_without_the_referrer_only_the_hospital_is_told(self, region: Region) -> None:
        """tell_referrer=False sends the alert to the hospital alone."""
        rule = pathway_clock("test-clock", delay=DAY, met=None, tell_referrer=False, summary="S")
        assert rule.on_deadline is not None
        (alert,) = rule.on_deadline(Deadline(DAY, rule.id, REF), _state(), region)
        assert alert.recipients == ("RX1",)


class TestMessageAlert:
    def test_alert_of_a_message_is_raised_at_its_time_with_its_control_id_first(self) -> None:
        """The message's control id leads the evidence; nobody named means the sender is told."""
        view = EventView.of(Feed().adt("A01", "RX1", "2026-02-01 09:00", control_id="M9"))
        alert = message_alert(
            "test-rule", PatientState("K"), view, recipients=(), evidence=("M2", "M9"), summary="S"
        )
        assert alert.recipients == ("RX1",)
        assert alert.evidence == ("M9", "M2")
        assert alert.dedup_key == "test-rule:K:RX1:M9"
        assert alert.raised_at == view.header["event_time"]
