"""Tests that the worker absorbs an event applied twice (the listener may publish a
message's events again after a restart, with the same ids)."""

from __future__ import annotations

from streams.engine import Engine
from streams.state import PatientState
from streams.view import StreamEvent
from tests.streams.events import Feed, replay


def _story(feed: Feed) -> list[StreamEvent]:
    death = feed.demographics("A08", "HSP01", "2026-03-20 09:00")
    return [
        feed.adt("A04", "G0001", "2026-02-09 09:00"),
        feed.referral("G0001", "RX1", "2026-02-10 09:00"),
        feed.appointment("S12", "RX1", "2026-02-11 09:00", start="2026-04-01 09:00"),
        feed.adt("A01", "RX1", "2026-02-12 09:00"),
        feed.adt("A03", "RX1", "2026-02-13 11:00", discharge_destination="88"),
        death,
        feed.died(death),
        feed.order("RX1", "2026-03-21 09:00"),
    ]


class TestRepeatedEvent:
    def test_an_event_applied_twice_in_a_row_changes_nothing_more(self, engine: Engine) -> None:
        """Each event applied twice gives the same alerts and the same state as once."""
        once_state, twice_state = PatientState(Feed().key), PatientState(Feed().key)
        once = replay(engine, _story(Feed()), until="2026-04-30 00:00", state=once_state)
        doubled = [e for e in _story(Feed()) for e in (e, e)]
        twice = replay(engine, doubled, until="2026-04-30 00:00", state=twice_state)
        assert [a.dedup_key for a in twice] == [a.dedup_key for a in once]
        assert twice_state.to_dict() == once_state.to_dict()

    def test_an_event_applied_again_later_raises_nothing_new(self, engine: Engine) -> None:
        """A copy of an earlier event arriving after later ones raises no alert again."""
        story = _story(Feed())
        state = PatientState(Feed().key)
        first = replay(engine, story, state=state)
        again = replay(engine, [story[1], story[3]], state=state)
        assert first
        assert again == []
