"""Tests for carebus/synth/feed.py: a seeded, ordered, streaming regional feed."""

from __future__ import annotations

import itertools
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from carebus.synth import Journey, SynthMessage, generate, journeys, merge, messages

from .conftest import PATIENTS, SEED, START


def _first(feed: Iterator[tuple[datetime, bytes]], n: int) -> list[tuple[datetime, bytes]]:
    return list(itertools.islice(feed, n))


class TestDeterminism:
    def test_same_seed_gives_the_same_bytes(self) -> None:
        """Two runs with the same seed, start and size produce identical feeds."""
        assert list(generate(3, START, patients=40)) == list(generate(3, START, patients=40))

    def test_another_seed_gives_another_feed(self) -> None:
        """Changing the seed changes the messages."""
        assert _first(generate(3, START), 50) != _first(generate(4, START), 50)

    def test_a_patient_does_not_depend_on_how_many_follow(self) -> None:
        """The first patients' messages are the same in a small and a large feed."""
        small = [m for m in messages(3, START, patients=5)]
        large = [m for m in messages(3, START, patients=50) if int(m.control_id[1:10]) < 5]
        assert small == large


class TestOrder:
    def test_messages_come_in_the_order_sent(self, feed: list[SynthMessage]) -> None:
        """Send times never go backwards across the interleaved journeys."""
        times = [m.time for m in feed]
        assert times == sorted(times)
        assert all(t.tzinfo is UTC for t in times)

    def test_journeys_interleave(self, feed: list[SynthMessage]) -> None:
        """Patients' messages are mixed together, not one patient after another."""
        patients = [m.control_id[1:10] for m in feed[:500]]
        changes = sum(1 for a, b in itertools.pairwise(patients) if a != b)
        assert changes > 250

    def test_every_message_is_sent_after_its_patient_arrives(self, planned: list[Journey]) -> None:
        """A journey's messages are all sent at or after its start, which merge relies on."""
        for journey in planned:
            assert all(step.sent >= journey.start for step in journey.steps)

    def test_whole_journeys_of_every_patient(
        self, planned: list[Journey], feed: list[SynthMessage]
    ) -> None:
        """With a patient count, the feed is every message of exactly that many journeys."""
        assert len(planned) == PATIENTS
        assert len(feed) == sum(len(j.steps) for j in planned)
        assert {m.control_id[1:10] for m in feed} == {f"{i:09d}" for i in range(PATIENTS)}


class TestStreaming:
    def test_takes_the_head_of_a_ten_million_message_feed(self) -> None:
        """The first messages of a huge feed come without planning the rest of it."""
        planned = 0

        def counted() -> Iterator[Journey]:
            nonlocal planned
            for journey in journeys(SEED, START):
                planned += 1
                yield journey

        head = list(itertools.islice(merge(counted()), 1000))
        assert len(head) == 1000
        last = head[-1].time
        arrived = itertools.takewhile(lambda j: j.start <= last, journeys(SEED, START))
        # Only the patients who had arrived by then, plus the one that showed it.
        assert planned == sum(1 for _ in arrived) + 1
        assert _first(generate(SEED, START, messages_limit=10_000_000), 3) == [
            (m.time, m.raw) for m in head[:3]
        ]

    def test_memory_is_bounded_by_journeys_in_progress(self) -> None:
        """Memory while streaming stays below the size of the messages produced."""
        feed = messages(SEED, START, arrivals_per_day=1)
        produced = 0
        tracemalloc.start()
        try:
            for message in itertools.islice(feed, 1500):
                produced += len(message.raw)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert produced > 700_000
        assert peak < produced / 2

    def test_limit_cuts_the_feed_exactly(self) -> None:
        """messages_limit gives exactly that many messages."""
        assert len(list(generate(SEED, START, messages_limit=123))) == 123

    def test_start_must_be_timezone_aware(self) -> None:
        """A naive start is refused rather than guessed."""
        with pytest.raises(ValueError, match="timezone-aware"):
            next(generate(SEED, datetime(2026, 1, 5)))


class TestArrivals:
    def test_arrival_rate_sets_how_fast_patients_come(self) -> None:
        """About arrivals_per_day patients start each day."""
        starts = [j.start for j in journeys(SEED, START, patients=601, arrivals_per_day=60)]
        days = (starts[-1] - starts[0]) / timedelta(days=1)
        assert 8 < days < 12

    def test_mix_of_journeys(self, planned: list[Journey]) -> None:
        """Cancer, end-of-life and routine journeys all occur, cancer the most."""
        kinds = Counter(j.kind for j in planned)
        assert set(kinds) == {"cancer", "end-of-life", "routine"}
        assert kinds["cancer"] > kinds["end-of-life"] > PATIENTS * 0.1


class TestNoise:
    def test_duplicates_repeat_the_original_bytes(self, feed: list[SynthMessage]) -> None:
        """A resend has the same MSH-10 and bytes as an earlier message, sent later."""
        first_seen: dict[str, SynthMessage] = {}
        duplicates = 0
        for message in feed:
            if message.duplicate:
                original = first_seen[message.control_id]
                assert original.raw == message.raw
                assert original.time < message.time
                duplicates += 1
            else:
                assert message.control_id not in first_seen
                first_seen[message.control_id] = message
        assert duplicates >= 10

    def test_malformed_messages_are_few_and_start_with_msh(self, feed: list[SynthMessage]) -> None:
        """Broken messages are a small share, each still starts a line with MSH."""
        broken = [m for m in feed if m.malformed]
        assert 0 < len(broken) < len(feed) * 0.02
        assert all(m.raw.startswith(b"MSH|^~\\&|") for m in broken)

    def test_no_real_looking_contact_details(self, feed: list[SynthMessage]) -> None:
        """Postcodes are in the non-existent ZZ area and phones in the drama range."""
        text = b"".join(m.raw for m in feed)
        assert text.count(b"^GBR^H") == text.count(b"^ZZ")
        assert text.count(b"^PRN^PH") == text.count(b"01632 960")


def test_feed_starts_at_start() -> None:
    """The first message is sent on the first patient's arrival day, not before start."""
    first_time, _ = next(generate(SEED, datetime(2026, 3, 2, 8, tzinfo=UTC)))
    assert datetime(2026, 3, 2, 8, tzinfo=UTC) <= first_time < datetime(2026, 3, 3, tzinfo=UTC)
