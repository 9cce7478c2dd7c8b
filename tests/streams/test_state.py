"""Tests for streams/state.py."""

from __future__ import annotations

import json

import pytest

from streams.deadlines import DAY, Deadline
from streams.engine import Engine
from streams.state import (
    CONTACT_MEMORY,
    Death,
    Discharge,
    Pathway,
    PatientState,
    contact_between,
    remember_contact,
)
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
        """A state written in format 1 (before event-time histories) reads back field by field."""
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
        upgraded = state.to_dict()
        assert upgraded["v"] == 2
        assert upgraded["seen"] == {"G0001": [10], "RX1": [20]}
        assert upgraded["referred"] == {"RX1": [15]}
        assert upgraded["results"] == {"4548-4": {"RX1": [[18, 18, "M4"]]}}
        for field in raw.keys() - {"v", "seen", "referred", "results"}:
            assert upgraded[field] == raw[field], field

    def test_a_version_2_state_round_trips_exactly(self) -> None:
        """A format-2 dict (event-time histories) reads back into the same dict."""
        raw = PatientState("K").to_dict()
        raw["seen"] = {"G0001": [10, 20 * DAY], "RX1": [20]}
        raw["referred"] = {"RX1": [15]}
        raw["results"] = {"4548-4": {"RX1": [[18, 19, "M4"], [30, 40, "M7"]]}}
        assert PatientState.from_dict(raw).to_dict() == raw

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
        state.seen = {"A": [now - 365 * DAY], "B": [now - 365 * DAY - 1], "C": [now]}
        assert sorted(state.care_team(now)) == ["A", "C"]

    def test_care_team_is_judged_by_event_time(self) -> None:
        """A provider whose only messages are stamped after the moment is not yet in the team."""
        state = PatientState("K")
        now = 1_000 * DAY
        state.seen = {"A": [now + 1], "B": [now - 400 * DAY, now + DAY]}
        assert state.care_team(now) == []
        assert sorted(state.care_team(now + DAY)) == ["A", "B"]


class TestContactHistory:
    def test_in_order_contacts_keep_at_most_two_per_year(self) -> None:
        """Daily contacts in event-time order keep only the times that answer a 365-day window."""
        times: list[int] = []
        for day in range(0, 300):
            remember_contact(times, day * DAY)
        assert times == [0, 299 * DAY]

    def test_sparse_history_answers_every_window_like_the_full_one(self) -> None:
        """For any 365-day window, the kept times hold one in it exactly when the full set does."""
        full = sorted({(d * 37) % 390 * DAY for d in range(60)} | {5 * DAY + 1})
        shuffled = full[1::2] + full[::2]
        times: list[int] = []
        for t in shuffled:
            remember_contact(times, t)
        assert times == sorted(times) and len(times) < len(full)
        for end in range(-10, 800, 3):
            hi = end * DAY
            lo = hi - 365 * DAY
            assert contact_between(times, lo, hi) == any(lo <= t <= hi for t in full), end

    def test_contacts_older_than_the_memory_are_forgotten(self) -> None:
        """Times over CONTACT_MEMORY before the latest are dropped, and a late one that old too."""
        times: list[int] = []
        remember_contact(times, 0)
        remember_contact(times, CONTACT_MEMORY + 1)
        assert times == [CONTACT_MEMORY + 1]
        remember_contact(times, 0)
        assert times == [CONTACT_MEMORY + 1]


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
    def test_merge_unions_contacts_and_episodes(self) -> None:
        """The survivor keeps both records' contact times and gains the retired episodes."""
        survivor, retired = PatientState("S"), PatientState("R")
        survivor.seen = {"RX1": [10], "G0001": [50]}
        retired.seen = {"RX1": [20], "G0001": [300 * DAY], "HSP01": [5]}
        retired.pathways["p"] = Pathway(1, "RX1", "G0001", "M1")
        retired.deadlines = [Deadline(100, "faster-diagnosis-breach", "p")]
        retired.raised.add("x")
        survivor.absorb(retired)
        assert survivor.seen == {"RX1": [10, 20], "G0001": [50, 300 * DAY], "HSP01": [5]}
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
