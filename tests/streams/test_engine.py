"""Tests for streams/engine.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.alert import Alert
from streams.engine import Engine
from streams.region import Region
from streams.rules import RULES
from streams.rules.base import Rule
from streams.state import PatientState
from streams.view import ENCOUNTER, REFERRAL, EventView
from tests.streams.events import Feed, london, replay

SPEC_RULE_IDS = {
    "identity-unverified",
    "repeated-history",
    "repeated-test",
    "cancer-referral-not-booked",
    "cancer-referral-not-seen",
    "faster-diagnosis-at-risk",
    "faster-diagnosis-breach",
    "eol-admission",
    "eol-discharge",
    "hospice-handoff-missed",
    "repeated-emergency-admissions",
    "death-notified",
    "death-pending-appointments",
    "activity-after-death",
}


class TestRuleTable:
    def test_all_fourteen_spec_rules_are_listed_once(self) -> None:
        """The RULES table holds exactly the fourteen rule ids of the spec."""
        ids = [r.id for r in RULES]
        assert sorted(ids) == sorted(SPEC_RULE_IDS)

    def test_every_rule_reacts_to_something(self) -> None:
        """Each rule has either an event handler with schemas or a deadline with an episode."""
        for rule in RULES:
            assert (rule.on_event is not None and rule.schemas) or (
                rule.on_deadline is not None and rule.episode and rule.delay > 0
            ), rule.id

    def test_duplicate_rule_ids_are_refused(self, region: Region) -> None:
        """An engine built with two rules of the same id is a programming error."""
        with pytest.raises(ValueError, match="unique"):
            Engine(region, rules=(*RULES, RULES[0]))


def _recorder(name: str, calls: list[tuple[str, str]]) -> Rule:
    """A rule that records which events (schema, trigger) it was asked about."""

    def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
        calls.append((name, f"{view.schema}^{view.trigger}"))
        return []

    return Rule(id=name, schemas=frozenset({ENCOUNTER, REFERRAL}), on_event=check)


class TestDispatch:
    def test_rules_see_only_their_schemas_and_triggers_in_table_order(self, region: Region) -> None:
        """A check runs for its schemas and named triggers (any when none), in RULES order."""
        calls: list[tuple[str, str]] = []
        anything = _recorder("any", calls)
        admissions = replace(_recorder("a01", calls), triggers=frozenset({"A01"}))
        engine = Engine(region, rules=(admissions, anything))
        feed = Feed()
        state = PatientState(feed.key)
        for event in (
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
            feed.adt("A03", "RX1", "2026-02-02 09:00"),
            feed.referral("G0001", "RX1", "2026-02-03 09:00"),
            feed.problem("PC1", "G0001", "2026-02-04 09:00"),
        ):
            engine.process(state, event)
        assert calls == [
            ("a01", "Encounter^A01"),
            ("any", "Encounter^A01"),
            ("any", "Encounter^A03"),
            ("any", "Referral^I12"),
        ]

    def test_an_event_no_rule_wants_is_still_recorded(self, region: Region) -> None:
        """Events that reach no check still update the state (here: the care team)."""
        engine = Engine(region, rules=())
        feed = Feed()
        state = PatientState(feed.key)
        assert engine.process(state, feed.problem("PC1", "G0001", "2026-02-04 09:00")) == []
        assert state.eol
        assert list(state.seen) == ["G0001"]


class TestProcess:
    def test_due_deadlines_fire_before_the_event_is_applied(self, engine: Engine) -> None:
        """A deadline due before an event's time fires first, then the event's own alerts."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
            feed.adt("A01", "HSP01", "2026-02-14 08:00"),
        ]
        assert [a.rule for a in replay(engine, events)] == [
            "hospice-handoff-missed",
            "repeated-history",
        ]

    def test_reprocessing_the_same_messages_raises_nothing_new(self, engine: Engine) -> None:
        """Replaying a whole story into the same state raises no alert a second time."""
        feed = Feed()
        death = feed.demographics("A08", "HSP01", "2026-03-20 09:00")
        events = [
            feed.adt("A04", "G0001", "2026-02-09 09:00"),
            feed.referral("G0001", "RX1", "2026-02-10 09:00"),
            feed.appointment("S12", "RX1", "2026-02-11 09:00", start="2026-04-01 09:00"),
            death,
            feed.died(death),
            feed.order("RX1", "2026-03-21 09:00"),
        ]
        state = PatientState(feed.key)
        first = replay(engine, events, until="2026-04-30 00:00", state=state)
        again = replay(engine, events, until="2026-04-30 00:00", state=state)
        assert len(first) >= 5
        assert again == []
        assert len({a.dedup_key for a in first}) == len(first)

    def test_alerts_carry_the_state_key(self, engine: Engine) -> None:
        """Alerts name the patient that owns the state (the survivor after a merge)."""
        feed = Feed("RX1:MRN1", verified=False)
        state = PatientState("9434765919")
        alerts = replay(engine, [feed.adt("A01", "RX1", "2026-02-01 09:00")], state=state)
        assert [a.patient for a in alerts] == ["9434765919"]


class TestDeadlines:
    def test_fire_due_includes_a_deadline_exactly_now(self, engine: Engine) -> None:
        """fire_due fires deadlines at or before the given moment."""
        feed = Feed()
        state = PatientState(feed.key)
        engine.process(
            state, feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88")
        )
        assert engine.fire_due(state, london("2026-02-13 10:59")) == []
        assert [a.rule for a in engine.fire_due(state, london("2026-02-13 11:00"))] == [
            "hospice-handoff-missed"
        ]
        assert engine.fire_due(state, london("2026-02-20 11:00")) == []

    def test_next_deadline_is_the_earliest_pending(self, engine: Engine) -> None:
        """next_deadline is the earliest pending deadline, and None when nothing is pending."""
        feed = Feed()
        state = PatientState(feed.key)
        assert engine.next_deadline(state) is None
        engine.process(state, feed.referral("G0001", "RX1", "2026-02-16 11:00"))
        assert engine.next_deadline(state) == london("2026-02-23 11:00")
        engine.process(state, feed.document("RX1", "2026-02-17 11:00"))
        assert engine.next_deadline(state) is None

    def test_hospice_discharge_is_forgotten_after_its_deadline(self, engine: Engine) -> None:
        """Once its only deadline has fired, a discharge episode leaves the state."""
        feed = Feed()
        state = PatientState(feed.key)
        events = [feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88")]
        replay(engine, events, until="2026-02-14 00:00", state=state)
        assert state.discharges == {}
        assert state.deadlines == []


class TestAbsorb:
    def test_retired_pathway_fires_for_the_survivor(self, engine: Engine) -> None:
        """After a merge the retired identifier's open pathway raises alerts for the survivor."""
        local = Feed("RX1:MRN1", verified=False)
        retired = PatientState(local.key)
        engine.process(retired, local.referral("G0001", "RX1", "2026-02-16 11:00"))
        survivor = PatientState("9434765919")
        engine.absorb(survivor, retired)
        alerts = engine.fire_due(survivor, london("2026-02-23 11:00"))
        assert [(a.rule, a.patient) for a in alerts] == [
            ("cancer-referral-not-booked", "9434765919")
        ]
