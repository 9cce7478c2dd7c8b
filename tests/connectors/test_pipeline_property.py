"""Property: whatever bytes arrive, the pipeline answers accepted, duplicate or rejected.

On the real broker: arbitrary bytes, damaged real messages and messages with a junk
MSH-18 each end as one of the three outcomes, never as an exception (which the MLLP
edge would answer ``AE``, so the sender would resend it for ever). Each rejection has
a reason and a detail, and its raw bytes are on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carebus.settings import Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.mllp.allowlist import Peer
from connectors.pipeline import Outcome, Pipeline
from connectors.publish import Publisher
from tests.connectors.hl7.strategies import SEEDS, hostile, junk_charset, mutated
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration

PEER = Peer("mllp", "127.0.0.1", 40000)
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

#: Messages the translator accepts, to damage as well: some damage leaves them valid.
TRANSLATABLE = [adt(f"PROP{n}") for n in range(3)]


def inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        hostile(),
        mutated(TRANSLATABLE),
        junk_charset(TRANSLATABLE),
        st.sampled_from(TRANSLATABLE),  # accepted, then duplicates
        st.sampled_from(SEEDS),
    )


class TestAnyBytes:
    def test_every_input_is_accepted_duplicate_or_rejected_with_reason(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """For arbitrary and damaged input, submit returns accepted, duplicate or rejected
        (with reason and detail) and never raises; each rejection's raw bytes are dead-lettered."""
        loop = asyncio.new_event_loop()
        publisher = Publisher(ingest_settings)
        loop.run_until_complete(publisher.start([topics.raw, topics.events, topics.deadletter]))
        pipeline = Pipeline(publisher, topics, publish_timeout_s=30.0, dedup=Deduplicator(3600))
        outcomes: Counter[str] = Counter()
        rejected: Counter[bytes] = Counter()

        @settings(
            max_examples=150,
            deadline=None,
            database=None,  # each example must be submitted exactly once: counts are checked
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(inputs())
        def submit(raw: bytes) -> None:
            outcome: Outcome = loop.run_until_complete(pipeline.submit(raw, PEER, NOW))
            outcomes[outcome.status] += 1
            assert outcome.status in ("accepted", "duplicate", "rejected")
            if outcome.status == "rejected":
                assert outcome.error is not None
                assert outcome.error.reason
                assert outcome.error.detail
                rejected[raw] += 1
            else:
                assert outcome.error is None

        try:
            submit()
        finally:
            loop.run_until_complete(publisher.stop())
            loop.close()
        assert outcomes["rejected"] > 0
        assert outcomes["accepted"] > 0
        dead = reader.read(topics.deadletter)
        assert len(dead) == outcomes["rejected"]
        assert Counter(rec.value for rec in dead) == rejected
        assert all(rec.headers["carebus-reason"] for rec in dead)
        assert reader.end_offsets(topics.raw) == outcomes["accepted"]
