"""Tests for streams/rules/repeated_test.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "repeated-test"


class TestRepeatedTest:
    def test_order_after_recent_result_elsewhere_alerts_the_orderer(self, engine: Engine) -> None:
        """A new order for a test another provider resulted 30 days ago alerts the orderer."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-01-10 09:00"),
            feed.order("RX2", "2026-02-09 09:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("RX2",), london("2026-02-09 09:00"), ("MSG0002", "MSG0001"))
        ]

    def test_result_from_the_same_provider_raises_nothing(self, engine: Engine) -> None:
        """Re-ordering a test the same provider resulted is not a repeated test across providers."""
        feed = Feed()
        events = [feed.result("RX1", "2026-01-10 09:00"), feed.order("RX1", "2026-02-09 09:00")]
        assert fired(replay(engine, events), RULE) == []

    def test_interval_includes_its_end(self, engine: Engine) -> None:
        """A result observed exactly 90 days (12:00 GMT to 13:00 BST) before is within it."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-01-01 12:00"),
            feed.order("RX2", "2026-04-01 13:00"),  # 12:00 UTC: 90 elapsed days
        ]
        assert len(fired(replay(engine, events), RULE)) == 1

    def test_result_older_than_the_interval_raises_nothing(self, engine: Engine) -> None:
        """A result observed 90 days and a minute before the order does not count."""
        feed = Feed()
        events = [feed.result("RX1", "2026-01-01 11:59"), feed.order("RX2", "2026-04-01 13:00")]
        assert fired(replay(engine, events), RULE) == []

    def test_observation_time_not_message_time_is_compared(self, engine: Engine) -> None:
        """The window runs from OBR-7, so a late-sent result of an old sample does not count."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-03-01 09:00", observed="2025-12-01 09:00"),
            feed.order("RX2", "2026-03-10 09:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_only_final_results_count(self, engine: Engine) -> None:
        """A preliminary result (OBR-25 = P) does not make a new order a repeat."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-01-10 09:00", status="P"),
            feed.order("RX2", "2026-02-09"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_unlisted_codes_never_raise_it(self, engine: Engine) -> None:
        """A test code without a retest interval in the region config never raises it."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-01-10 09:00", code="718-7"),
            feed.order("RX2", "2026-01-11 09:00", code="718-7"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_only_new_orders_raise_it(self, engine: Engine) -> None:
        """An order message whose ORC-1 is not NW (a cancellation) raises nothing."""
        feed = Feed()
        events = [feed.result("RX1", "2026-01-10"), feed.order("RX2", "2026-01-11", control="CA")]
        assert fired(replay(engine, events), RULE) == []

    def test_interval_is_elapsed_time_across_the_clock_change(self, engine: Engine) -> None:
        """A one-day interval is 24 elapsed hours: 12:00 GMT to 12:30 BST next day is 23.5 h."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-03-28 12:00", code="2345-7"),
            feed.order("RX2", "2026-03-29 12:30", code="2345-7"),
        ]
        assert len(fired(replay(engine, events), RULE)) == 1

    def test_wall_clock_day_across_the_clock_change_is_too_late(self, engine: Engine) -> None:
        """12:00 GMT to 13:30 BST next day is 24.5 elapsed hours: outside a one-day interval."""
        feed = Feed()
        events = [
            feed.result("RX1", "2026-03-28 12:00", code="2345-7"),
            feed.order("RX2", "2026-03-29 13:30", code="2345-7"),
        ]
        assert fired(replay(engine, events), RULE) == []


class TestRepeatedTestByEventTime:
    def test_result_reported_after_the_order_does_not_count_though_it_arrived_first(
        self, engine: Engine
    ) -> None:
        """A result whose message is stamped after the order is not before it, even when it
        arrived first and its OBR-7 lies in the window."""
        feed = Feed()
        result = feed.result("RX1", "2026-02-10 09:00", observed="2026-02-08 09:00")
        order = feed.order("RX2", "2026-02-09 09:00")
        assert fired(replay(engine, [result, order]), RULE) == []
        assert fired(replay(engine, [order, result]), RULE) == []

    def test_a_later_result_arriving_first_does_not_hide_an_earlier_one(
        self, engine: Engine
    ) -> None:
        """A provider's result in the window still counts when a later-stamped result of the
        same provider and code arrived before the order."""
        feed = Feed()
        earlier = feed.result("RX1", "2026-01-20 09:00")
        later = feed.result("RX1", "2026-02-20 09:00")
        order = feed.order("RX2", "2026-02-09 09:00")
        alerts = fired(replay(engine, [earlier, later, order]), RULE)
        assert [a.evidence for a in alerts] == [("MSG0003", "MSG0001")]
        assert alerts == fired(replay(engine, [earlier, order, later]), RULE)
