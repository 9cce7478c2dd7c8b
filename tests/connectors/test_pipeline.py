"""Tests for connectors/pipeline.py: the ordered durability promise, on a real broker."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from kafka.admin import NewTopic

from carebus.admin import admin_client
from carebus.settings import Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.mllp.allowlist import Allowlist, Peer
from connectors.pipeline import DEADLETTER_KEEP_BYTES, Pipeline
from connectors.publish import Publisher
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration

PEER = Peer("mllp", "127.0.0.1", 40000)
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def publisher(ingest_settings: Settings, topics: TopicNames) -> AsyncIterator[Publisher]:
    pub = Publisher(ingest_settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    try:
        yield pub
    finally:
        await pub.stop()


@pytest.fixture
def pipeline(publisher: Publisher, topics: TopicNames) -> Pipeline:
    return Pipeline(publisher, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600))


class TestAccepted:
    async def test_raw_then_events_are_on_kafka_when_submit_returns(
        self, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An accepted message's raw record and events are readable as soon as submit returns."""
        raw = adt("ACC1")
        outcome = await pipeline.submit(raw, PEER, NOW)
        assert (outcome.status, outcome.control_id, outcome.sending_facility) == (
            "accepted",
            "ACC1",
            "RXA01",
        )
        assert outcome.events == 1
        assert reader.end_offsets(topics.raw) == 1
        assert reader.end_offsets(topics.events) == 1
        [rec] = reader.read(topics.raw)
        assert rec.value == raw
        assert rec.key == b"RXA01|ACC1"
        assert rec.headers["carebus-sender"] == b"RXA01"
        assert rec.headers["carebus-peer"] == b"127.0.0.1:40000"
        assert rec.headers["carebus-control-id"] == b"ACC1"
        assert rec.headers["carebus-source"] == b"mllp"
        assert rec.headers["carebus-received-time"] == NOW.isoformat().encode()
        assert rec.headers["carebus-raw-sha256"] == hashlib.sha256(raw).hexdigest().encode()
        [event] = reader.read(topics.events)
        assert event.key == b"9434765919"
        assert event.headers["carebus-schema"] == b"carebus.events.Encounter"
        [(schema, record)] = reader.events(topics.events)
        assert schema == "carebus.events.Encounter"
        assert record["header"]["control_id"] == "ACC1"  # type: ignore[index]
        assert reader.end_offsets(topics.deadletter) == 0

    async def test_duplicate_is_not_published_twice(
        self, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """The same (sending facility, control id) again is a duplicate and not republished."""
        first = await pipeline.submit(adt("DUP1"), PEER, NOW)
        again = await pipeline.submit(adt("DUP1"), PEER, NOW)
        other_facility = await pipeline.submit(adt("DUP1", facility="RXB02"), PEER, NOW)
        assert [first.status, again.status, other_facility.status] == [
            "accepted",
            "duplicate",
            "accepted",
        ]
        assert reader.end_offsets(topics.raw) == 2
        assert reader.end_offsets(topics.events) == 2


class TestRejected:
    async def test_untranslatable_goes_to_dead_letter_with_reason(
        self, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An unsupported message type is dead-lettered with its reason; nothing else is written."""
        raw = adt("REJ1").replace(b"ADT^A01^ADT_A01", b"ZZZ^Z01")
        outcome = await pipeline.submit(raw, PEER, NOW)
        assert outcome.status == "rejected"
        assert outcome.error is not None and outcome.error.reason == "unsupported-message-type"
        [rec] = reader.read(topics.deadletter)
        assert rec.value == raw
        assert rec.key == b"RXA01|REJ1"
        assert rec.headers["carebus-reason"] == b"unsupported-message-type"
        assert rec.headers["carebus-detail"]
        assert rec.headers["carebus-control-id"] == b"REJ1"
        assert reader.end_offsets(topics.raw) == 0
        assert reader.end_offsets(topics.events) == 0

    async def test_garbage_is_dead_lettered_by_origin(
        self, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Bytes that are not HL7 are dead-lettered as unparseable, keyed by their origin."""
        outcome = await pipeline.submit(b"not hl7 at all", PEER, NOW, origin="file:x.hl7#3")
        assert outcome.status == "rejected"
        [rec] = reader.read(topics.deadletter)
        assert rec.value == b"not hl7 at all"
        assert rec.key == b"file:x.hl7#3"
        assert rec.headers["carebus-reason"] == b"unparseable"

    async def test_sender_not_allowed(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A peer sending as a facility the allow-list does not give it is rejected."""
        allowlist = Allowlist.from_mapping(
            {"peers": [{"ip": "127.0.0.1", "facilities": ["RXA01"]}]}
        )
        pipeline = Pipeline(publisher, topics, publish_timeout_s=10.0, allowlist=allowlist)
        ok = await pipeline.submit(adt("AL1"), PEER, NOW)
        refused = await pipeline.submit(adt("AL2", facility="RXB02"), PEER, NOW)
        assert ok.status == "accepted"
        assert refused.status == "rejected"
        assert refused.error is not None and refused.error.reason == "sender-not-allowed"
        [rec] = reader.read(topics.deadletter)
        assert rec.headers["carebus-reason"] == b"sender-not-allowed"
        assert reader.end_offsets(topics.raw) == 1

    async def test_allow_list_does_not_apply_to_the_drop_folder(
        self, publisher: Publisher, topics: TopicNames
    ) -> None:
        """Files dropped in the folder are trusted as any facility (folder permissions rule)."""
        allowlist = Allowlist.from_mapping({"peers": [{"ip": "10.0.0.0/8", "facilities": ["X"]}]})
        pipeline = Pipeline(publisher, topics, publish_timeout_s=10.0, allowlist=allowlist)
        outcome = await pipeline.submit(adt("AL3"), Peer("file", "/drop"), NOW)
        assert outcome.status == "accepted"


def _limited_topics(
    settings: Settings, prefix: str, *, raw_limit: int, deadletter_limit: int
) -> tuple[Settings, TopicNames]:
    """Raw, events and dead-letter topics with small record limits (max.message.bytes)."""
    settings = settings.replace(topics=dataclasses.replace(settings.topics, prefix=prefix))
    names = TopicNames.from_settings(settings.topics)
    limits = {names.raw: raw_limit, names.events: 1_048_588, names.deadletter: deadletter_limit}
    with admin_client(settings) as admin:
        admin.create_topics(
            [
                NewTopic(name, 1, 1, topic_configs={"max.message.bytes": str(limit)})
                for name, limit in limits.items()
            ]
        )
    return settings, names


def _big_adt(control_id: str, size: int) -> bytes:
    """An ADT message padded with a note segment to about ``size`` bytes."""
    raw = adt(control_id)
    return raw + b"NTE|1||" + b"x" * (size - len(raw) - 8) + b"\r"


class TestTooLarge:
    async def test_raw_record_refused_as_too_large_is_rejected_and_dead_lettered(
        self, kafka_isolated: Settings
    ) -> None:
        """A message the raw topic refuses for its size is rejected for good, dead-lettered
        whole, and leaves no events behind."""
        settings, names = _limited_topics(
            kafka_isolated,
            f"{kafka_isolated.topics.prefix}-big",
            raw_limit=150_000,
            deadletter_limit=1_048_588,
        )
        raw = _big_adt("BIG1", 200_000)
        pub = Publisher(settings)
        await pub.start([names.raw, names.events, names.deadletter])
        reader = TopicReader(settings)
        try:
            pipeline = Pipeline(pub, names, publish_timeout_s=10.0, dedup=Deduplicator(3600))
            outcome = await pipeline.submit(raw, PEER, NOW)
            again = await pipeline.submit(raw, PEER, NOW)
            small = await pipeline.submit(adt("SMALL1"), PEER, NOW)
            assert outcome.status == "rejected"
            assert outcome.error is not None
            assert outcome.error.reason == "message-too-large"
            assert not outcome.error.retriable
            assert again.status == "rejected"  # a resend is refused again, not a duplicate
            assert small.status == "accepted"
            letters = reader.read(names.deadletter)
            assert [r.value for r in letters] == [raw, raw]
            assert letters[0].headers["carebus-reason"] == b"message-too-large"
            assert "carebus-truncated" not in letters[0].headers
            assert [r.key for r in reader.read(names.raw)] == [b"RXA01|SMALL1"]
            assert reader.end_offsets(names.events) == 1
        finally:
            reader.close()
            await pub.stop()

    async def test_dead_letter_too_large_keeps_a_truncated_copy(
        self, kafka_isolated: Settings
    ) -> None:
        """When the dead-letter topic refuses the raw bytes too, it gets their start, the
        full size and why."""
        settings, names = _limited_topics(
            kafka_isolated,
            f"{kafka_isolated.topics.prefix}-big2",
            raw_limit=150_000,
            deadletter_limit=150_000,
        )
        raw = _big_adt("BIG2", 200_000)
        pub = Publisher(settings)
        await pub.start([names.raw, names.events, names.deadletter])
        reader = TopicReader(settings)
        try:
            pipeline = Pipeline(pub, names, publish_timeout_s=10.0)
            outcome = await pipeline.submit(raw, PEER, NOW)
            assert outcome.status == "rejected"
            assert outcome.error is not None and outcome.error.reason == "message-too-large"
            [letter] = reader.read(names.deadletter)
            assert letter.value == raw[:DEADLETTER_KEEP_BYTES]
            assert letter.headers["carebus-raw-size"] == str(len(raw)).encode()
            assert letter.headers["carebus-truncated"].startswith(b"record-too-large: ")
            assert letter.headers["carebus-reason"] == b"message-too-large"
            sha = hashlib.sha256(raw).hexdigest().encode()
            assert letter.headers["carebus-raw-sha256"] == sha
            assert reader.end_offsets(names.raw) == 0
            assert reader.end_offsets(names.events) == 0
        finally:
            reader.close()
            await pub.stop()

    async def test_largest_frame_is_published(
        self, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A message as large as mllp.max_frame_bytes (1 MiB) fits the producer and topics."""
        raw = _big_adt("MAX1", 1_048_576)
        outcome = await pipeline.submit(raw, PEER, NOW)
        assert outcome.status == "accepted"
        [rec] = reader.read(topics.raw)
        assert rec.value == raw
        assert reader.end_offsets(topics.events) == 1
