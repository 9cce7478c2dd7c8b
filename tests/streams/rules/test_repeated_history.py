"""Tests for streams/rules/repeated_history.py."""

from __future__ import annotations

from streams.engine import Engine
from tests.streams.events import Feed, fired, london, replay

RULE = "repeated-history"


class TestRepeatedHistory:
    def test_admission_by_a_new_provider_alerts_it(self, engine: Engine) -> None:
        """An A01 from a provider new to a patient another provider knows alerts the newcomer."""
        feed = Feed()
        events = [
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="19"),
            feed.adt("A01", "HSP01", "2026-02-13 08:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [(a.recipients, a.raised_at, a.evidence) for a in alerts] == [
            (("HSP01",), london("2026-02-13 08:00"), ("MSG0002",))
        ]

    def test_first_message_ever_raises_nothing(self, engine: Engine) -> None:
        """Nobody else knows the patient, so a first admission has no history elsewhere."""
        feed = Feed()
        assert fired(replay(engine, [feed.adt("A01", "RX1", "2026-02-09 09:00")]), RULE) == []

    def test_referral_sender_does_not_count_as_other_provider(self, engine: Engine) -> None:
        """A first-ever referral raises nothing: its own sender is not an earlier provider."""
        feed = Feed()
        assert (
            fired(replay(engine, [feed.referral("G0001", "RX1", "2026-02-16 11:00")]), RULE) == []
        )

    def test_referral_to_a_new_provider_alerts_that_provider(self, engine: Engine) -> None:
        """A referral to a provider new to the patient alerts the provider it is sent to."""
        feed = Feed()
        events = [
            feed.adt("A04", "G0001", "2026-02-01 09:00"),
            feed.referral("G0001", "RX1", "2026-02-16 11:00", priority="R"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("RX1",)]

    def test_provider_seen_within_365_days_raises_nothing(self, engine: Engine) -> None:
        """A provider that sent a message 365 days ago exactly still knows the patient."""
        feed = Feed()
        events = [
            feed.adt("A01", "HSP01", "2025-02-13 08:00"),
            feed.demographics("A08", "RX1", "2026-02-01 09:00"),
            feed.adt("A01", "HSP01", "2026-02-13 08:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_provider_last_seen_over_365_days_ago_is_new_again(self, engine: Engine) -> None:
        """A provider whose last message is 365 days and a minute old is alerted again."""
        feed = Feed()
        events = [
            feed.adt("A01", "HSP01", "2025-02-13 07:59"),
            feed.demographics("A08", "RX1", "2026-02-01 09:00"),
            feed.adt("A01", "HSP01", "2026-02-13 08:00"),
        ]
        assert [a.recipients for a in fired(replay(engine, events), RULE)] == [("HSP01",)]

    def test_provider_sent_a_referral_is_not_new(self, engine: Engine) -> None:
        """A provider that was sent a referral for the patient is not alerted when it admits."""
        feed = Feed()
        events = [
            feed.adt("A04", "G0001", "2026-02-01 09:00"),
            feed.referral("G0001", "RX1", "2026-02-16 11:00", priority="R"),
            feed.adt("A01", "RX1", "2026-02-20 11:00"),
        ]
        assert [a.evidence for a in fired(replay(engine, events), RULE)] == [("MSG0002",)]

    def test_other_providers_seen_long_ago_do_not_count(self, engine: Engine) -> None:
        """History older than 365 days elsewhere does not make a provider's admission an alert."""
        feed = Feed()
        events = [
            feed.adt("A01", "RX1", "2024-12-01 09:00"),
            feed.adt("A01", "HSP01", "2026-02-13 08:00"),
        ]
        assert fired(replay(engine, events), RULE) == []

    def test_only_the_listed_triggers_raise_it(self, engine: Engine) -> None:
        """A28 and A05 raise it for a new provider; an A08 or A03 does not."""
        feed = Feed()
        events = [
            feed.adt("A01", "RX1", "2026-02-01 09:00"),
            feed.demographics("A08", "G0001", "2026-02-02 09:00"),
            feed.adt("A03", "RX2", "2026-02-03 09:00"),
            feed.demographics("A28", "G0002", "2026-02-04 09:00"),
            feed.adt("A05", "HSP01", "2026-02-05 09:00"),
        ]
        alerts = fired(replay(engine, events), RULE)
        assert [a.recipients for a in alerts] == [("G0002",), ("HSP01",)]

    def test_replaying_the_message_raises_nothing_new(self, engine: Engine) -> None:
        """The same admission processed twice raises the alert once."""
        feed = Feed()
        first = feed.adt("A01", "RX1", "2026-02-01 09:00")
        second = feed.adt("A01", "HSP01", "2026-02-13 08:00")
        alerts = fired(replay(engine, [first, second, second]), RULE)
        assert len(alerts) == 1


class TestRepeatedHistoryByEventTime:
    def test_later_stamped_message_that_arrived_first_does_not_make_the_provider_known(
        self, engine: Engine
    ) -> None:
        """A booking from P stamped after P's registration but arriving first still lets the
        registration raise repeated-history, as in event-time order."""
        feed = Feed()
        gp = feed.adt("A04", "G0001", "2026-02-16 15:33")
        registration = feed.adt("A04", "CM01", "2026-02-23 13:30")
        booking = feed.appointment("S12", "CM01", "2026-02-23 13:31", start="2026-03-01 09:00")
        alerts = fired(replay(engine, [gp, booking, registration]), RULE)
        assert [(a.recipients, a.evidence) for a in alerts] == [(("CM01",), ("MSG0002",))]
        assert alerts == fired(replay(engine, [gp, registration, booking]), RULE)

    def test_later_stamped_referral_to_the_provider_does_not_count(self, engine: Engine) -> None:
        """A referral to P stamped after P's admission does not make P known at the admission."""
        feed = Feed()
        gp = feed.adt("A04", "G0001", "2026-02-01 09:00")
        admission = feed.adt("A01", "RX1", "2026-02-10 09:00")
        referral = feed.referral("G0001", "RX1", "2026-02-11 09:00", priority="R")
        alerts = fired(replay(engine, [gp, referral, admission]), RULE)
        # The referral arrived first and RX1 was new to the patient then: it alerts too.
        assert [(a.recipients, a.evidence) for a in alerts] == [
            (("RX1",), ("MSG0003",)),
            (("RX1",), ("MSG0002",)),
        ]

    def test_others_known_only_by_later_stamped_messages_do_not_count(self, engine: Engine) -> None:
        """A provider's first contact is not an alert when the only other contact is stamped
        after it, even though that contact arrived first."""
        feed = Feed()
        later = feed.adt("A04", "G0001", "2026-02-10 10:00")
        first = feed.adt("A01", "RX1", "2026-02-10 09:00")
        assert fired(replay(engine, [later, first]), RULE) == []

    def test_same_event_time_counts_when_it_arrived_first(self, engine: Engine) -> None:
        """A message from P with the very same event time, applied before, makes P known (the
        window includes its end); one arriving after cannot change an alert already raised."""
        feed = Feed()
        gp = feed.adt("A04", "G0001", "2026-02-01 09:00")
        booking = feed.appointment("S12", "CM01", "2026-02-23 13:30", start="2026-03-01 09:00")
        registration = feed.adt("A04", "CM01", "2026-02-23 13:30")
        assert fired(replay(engine, [gp, booking, registration]), RULE) == []
        assert len(fired(replay(engine, [gp, registration, booking]), RULE)) == 1
