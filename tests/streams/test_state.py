"""Tests for streams/state.py."""

from __future__ import annotations

import json

import pytest

from streams.deadlines import DAY, Deadline
from streams.engine import Engine
from streams.state import Death, Discharge, Pathway, PatientState
from tests.streams.events import Feed, london, replay


def _busy_state(engine: Engine) -> PatientState:
    """A state with something in every field."""
    feed = Feed()
    state = PatientState(feed.key)
    events = [
        feed.adt("A04", "G0001", "2026-01-02 09:00"),
        feed.problem("PC1", "G0001", "2026-01-03 09:00"),
        feed.result("RX1", "2026-01-04 09:00"),
        feed.adt("A01", "RX1", "2026-01-05 09:00", admission_type="E"),
        feed.appointment("S12", "RX1", "2026-01-06 09:00", start="2026-03-01 09:00"),
        feed.referral("G0001", "RX2", "2026-01-07 09:00"),
        feed.adt("A03", "RX1", "2026-01-08 09:00", discharge_destination="88"),
        feed.document("RX2", "2026-01-08 10:00", document_type="OTHER"),
    ]
    replay(engine, events, state=state)
    state.closed.add("pathway:G0001:OLD")
    return state


class TestSerialisation:
    def test_round_trip_through_json(self, engine: Engine) -> None:
        """to_dict gives JSON types only and from_dict rebuilds an equal state."""
        state = _busy_state(engine)
        text = json.dumps(state.to_dict())
        again = PatientState.from_dict(json.loads(text))
        assert again == state
        assert again.to_dict() == state.to_dict()
        assert again.pathways and again.discharges and again.deadlines and again.results

    def test_round_tripped_state_behaves_the_same(self, engine: Engine) -> None:
        """A state rebuilt from JSON fires the same deadlines as the original."""
        state = _busy_state(engine)
        again = PatientState.from_dict(json.loads(json.dumps(state.to_dict())))
        now = london("2026-03-01 00:00")
        assert engine.fire_due(again, now) == engine.fire_due(state, now)

    def test_death_round_trips(self) -> None:
        """The death record survives serialisation."""
        state = PatientState("K")
        state.death = Death(time=1, event_time=2, sender="RX1", control_id="M1")
        assert PatientState.from_dict(state.to_dict()).death == state.death

    def test_a_stored_version_1_state_still_loads(self) -> None:
        """A state written in format 1 (what the worker's table holds) reads back field by field."""
        raw = {
            "v": 1,
            "key": "9434765919",
            "seen": {"G0001": 10, "RX1": 20},
            "referred": {"RX1": 15},
            "eol": True,
            "eol_changed": 12,
            "death": None,
            "appointments": {"F1": ["RX1", 99, "M3"]},
            "results": {"4548-4": {"RX1": [18, "M4"]}},
            "emergencies": {"RX1:M5": [20, "M5"]},
            "pathways": {"pathway:G0001:R1": [15, "RX1", "G0001", "M2", True, False]},
            "discharges": {"discharge:RX1:V1": [21, "RX1", "M6"]},
            "deadlines": [[15 + 7 * DAY, "cancer-referral-not-booked", "pathway:G0001:R1"]],
            "raised": ["identity-unverified:RX1:M:RX1"],
            "closed": ["pathway:G0001:OLD"],
        }
        state = PatientState.from_dict(raw)
        assert state.pathways["pathway:G0001:R1"] == Pathway(
            start=15, hospital="RX1", referrer="G0001", control_id="M2", booked=True
        )
        assert state.discharges["discharge:RX1:V1"] == Discharge(21, "RX1", "M6")
        assert state.deadlines == [
            Deadline(15 + 7 * DAY, "cancer-referral-not-booked", "pathway:G0001:R1")
        ]
        assert state.to_dict() == raw

    def test_unknown_format_is_refused(self) -> None:
        """A state dict of another format version is an error, not silently misread."""
        raw = PatientState("K").to_dict()
        raw["v"] = 99
        with pytest.raises(ValueError, match="format"):
            PatientState.from_dict(raw)

    def test_repr_hides_the_patient_key(self) -> None:
        """The repr of a state never shows the key (it may be an NHS number)."""
        assert "9434765919" not in repr(PatientState("9434765919"))


class TestCareTeam:
    def test_care_team_is_the_last_365_days_inclusive(self) -> None:
        """Providers seen exactly 365 days before are in the team; a microsecond more is out."""
        state = PatientState("K")
        now = 1_000 * DAY
        state.seen = {"A": now - 365 * DAY, "B": now - 365 * DAY - 1, "C": now}
        assert sorted(state.care_team(now)) == ["A", "C"]


class TestDeadlineBook:
    def test_deadlines_stay_sorted_and_pop_in_order(self) -> None:
        """Deadlines come out earliest first, only those due at or before the moment."""
        state = PatientState("K")
        for due in (30, 10, 20):
            state.add_deadline(Deadline(due, "r", f"e{due}"))
        state.add_deadline(Deadline(10, "r", "e10"))
        assert [d.due for d in state.pop_due(20)] == [10, 20]
        assert [d.due for d in state.deadlines] == [30]


class TestAbsorb:
    def test_merge_keeps_latest_contacts_and_unions_episodes(self) -> None:
        """The survivor keeps the latest contact per provider and gains the retired episodes."""
        survivor, retired = PatientState("S"), PatientState("R")
        survivor.seen = {"RX1": 10, "G0001": 50}
        retired.seen = {"RX1": 20, "G0001": 40, "HSP01": 5}
        retired.pathways["p"] = Pathway(1, "RX1", "G0001", "M1")
        retired.deadlines = [Deadline(100, "faster-diagnosis-breach", "p")]
        retired.raised.add("x")
        survivor.absorb(retired)
        assert survivor.seen == {"RX1": 20, "G0001": 50, "HSP01": 5}
        assert "p" in survivor.pathways
        assert survivor.deadlines == [Deadline(100, "faster-diagnosis-breach", "p")]
        assert survivor.raised == {"x"}

    def test_merge_with_a_dead_patient_closes_episodes(self) -> None:
        """When either record shows death the merged record keeps no open episode."""
        survivor, retired = PatientState("S"), PatientState("R")
        survivor.death = Death(5, 5, "RX1", "M9")
        retired.discharges["d"] = Discharge(1, "RX1", "M1")
        retired.deadlines = [Deadline(100, "hospice-handoff-missed", "d")]
        survivor.absorb(retired)
        assert survivor.discharges == {}
        assert survivor.deadlines == []

    def test_merge_keeps_the_later_register_change(self) -> None:
        """The end-of-life flag comes from whichever record changed it last."""
        survivor, retired = PatientState("S"), PatientState("R")
        survivor.eol, survivor.eol_changed = False, 10
        retired.eol, retired.eol_changed = True, 20
        survivor.absorb(retired)
        assert survivor.eol is True
