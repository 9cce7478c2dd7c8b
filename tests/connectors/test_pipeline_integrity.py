"""Tests for the pipeline's ingest integrity on a real broker: duplicates by ids and
content, control id conflicts, the window rebuilt from the raw topic, the allow-list
before parsing, and bounded dead letters from unknown peers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from carebus.errors import PublishFailed
from carebus.settings import MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator, content_digest
from connectors.hl7 import Message, parse_message
from connectors.mllp.allowlist import Allowlist, Peer
from connectors.pipeline import (
    CONFLICT_HEADER,
    DIGEST_HEADER,
    RAW_STORED_HEADER,
    DeadLetterLimit,
    Pipeline,
)
from connectors.publish import Publisher, Record, request_limit_bytes
from connectors.window import rebuild_window
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration

PEER = Peer("mllp", "127.0.0.1", 40000)
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


class Recorder:
    """Counts the observer calls the tests look at (not a subclass of NullObserver: a
    compiled class cannot be subclassed by interpreted code)."""

    def __init__(self) -> None:
        self.conflicts: list[tuple[str | None, str | None]] = []
        self.duplicates = 0
        self.dropped: list[str | None] = []
        self.dead_letters = 0
        self.rejected = 0
        self.received = 0
        #: Set when the message_received calls reach ``received_target``.
        self.received_enough = asyncio.Event()
        self.received_target = 0

    def control_id_conflict(self, provider: str | None, message_type: str | None) -> None:
        self.conflicts.append((provider, message_type))

    def message_duplicated(self, provider: str | None, message_type: str | None) -> None:
        self.duplicates += 1

    def deadletter_dropped(self, reason: str | None) -> None:
        self.dropped.append(reason)

    def dead_lettered(self, provider: str | None, reason: str | None) -> None:
        self.dead_letters += 1

    def message_rejected(self, provider: str | None, message_type: str | None) -> None:
        self.rejected += 1

    def message_received(self, provider: str | None, message_type: str | None) -> None:
        self.received += 1
        if self.received == self.received_target:
            self.received_enough.set()

    def message_accepted(self, provider: str | None, message_type: str | None) -> None:
        pass

    def produce_error(self, topic: str) -> None:
        pass

    def ack_sent(self, ack_code: str, seconds: float) -> None:
        pass

    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HoldFirstSend(Publisher):
    """A real publisher whose first ``send`` pauses until released, as a full buffer or a
    topic it must learn makes it pause; then it goes on, or fails when told to."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = False

    async def send(
        self, records: Sequence[Record], *, timeout_s: float | None = None
    ) -> asyncio.Future[None]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await self.release.wait()
            if self.fail:
                raise PublishFailed("held send failed")
        return await super().send(records, timeout_s=timeout_s)


@pytest.fixture
async def holding(ingest_settings: Settings, topics: TopicNames) -> AsyncIterator[HoldFirstSend]:
    pub = HoldFirstSend(ingest_settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    try:
        yield pub
    finally:
        await pub.stop()


@pytest.fixture
async def publisher(ingest_settings: Settings, topics: TopicNames) -> AsyncIterator[Publisher]:
    pub = Publisher(ingest_settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    try:
        yield pub
    finally:
        await pub.stop()


def _lims(control_id: str) -> bytes:
    """A message of another system of the same facility (MSH-3 LIMS) reusing an id."""
    return adt(control_id).replace(b"MSH|^~\\&|PAS|", b"MSH|^~\\&|LIMS|", 1)


def _event_ids(reader: TopicReader, topic: str) -> list[str]:
    return [str(record["header"]["event_id"]) for _, record in reader.events(topic)]  # type: ignore[index]


class TestDuplicates:
    async def test_a_resend_with_a_new_msh7_and_crlf_is_a_duplicate(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Same MSH-3/4/10 and content, restamped MSH-7 and other line endings: AA, not stored."""
        observer = Recorder()
        pipeline = Pipeline(
            publisher, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), observer=observer
        )
        raw = adt("RS1")
        resent = raw.replace(b"|20260301093000||", b"|20260301094500||", 1).replace(b"\r", b"\r\n")
        first = await pipeline.submit(raw, PEER, NOW)
        again = await pipeline.submit(resent, PEER, NOW)
        assert (first.status, again.status) == ("accepted", "duplicate")
        assert observer.duplicates == 1
        [rec] = reader.read(topics.raw)
        assert rec.headers[DIGEST_HEADER] == content_digest(raw).encode()
        assert CONFLICT_HEADER not in rec.headers
        assert reader.end_offsets(topics.events) == 1


class TestControlIdConflict:
    async def test_same_ids_different_content_is_stored_and_marked(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A second message with the same MSH-4 and MSH-10 but other content is accepted and
        stored, its raw record and events carry the conflict header naming the first
        one's digest, it is counted, and a resend of either is then a duplicate."""
        observer = Recorder()
        pipeline = Pipeline(
            publisher, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), observer=observer
        )
        pas, lims = adt("CF1"), _lims("CF1")
        results = [(await pipeline.submit(raw, PEER, NOW)).status for raw in (pas, lims, pas, lims)]
        assert results == ["accepted", "accepted", "duplicate", "duplicate"]
        first, second = reader.read(topics.raw)
        assert (first.value, second.value) == (pas, lims)
        assert CONFLICT_HEADER not in first.headers
        assert second.headers[CONFLICT_HEADER] == content_digest(pas).encode()
        assert second.headers[DIGEST_HEADER] == content_digest(lims).encode()
        events = reader.read(topics.events)
        assert len(events) == 2
        assert [CONFLICT_HEADER in e.headers for e in events] == [False, True]
        assert observer.conflicts == [("RXA01", "ADT")]
        assert observer.duplicates == 2


OTHER_PEER = Peer("mllp", "127.0.0.1", 40001)


class TestInFlight:
    async def test_a_resend_while_the_first_copy_is_being_enqueued_is_a_duplicate(
        self, holding: HoldFirstSend, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A resend on another connection, checked while the first copy is still paused in
        the publisher's send, waits for it and is answered duplicate: one copy is stored."""
        observer = Recorder()
        observer.received_target = 2
        pipeline = Pipeline(
            holding, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), observer=observer
        )
        raw = adt("IF1")
        resent = raw.replace(b"|20260301093000||", b"|20260301094500||", 1)
        first = asyncio.create_task(pipeline.submit(raw, PEER, NOW))
        await holding.entered.wait()
        second = asyncio.create_task(pipeline.submit(resent, OTHER_PEER, NOW))
        await observer.received_enough.wait()  # the resend has been checked and is waiting
        holding.release.set()
        outcomes = await asyncio.gather(first, second)
        assert [o.status for o in outcomes] == ["accepted", "duplicate"]
        assert reader.end_offsets(topics.raw) == 1
        assert reader.end_offsets(topics.events) == 1

    async def test_other_content_with_the_same_ids_in_flight_is_marked_as_a_conflict(
        self, holding: HoldFirstSend, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A message with the first one's ids but other content, checked while the first is
        still paused in send, is stored with the conflict header naming the first's digest."""
        observer = Recorder()
        observer.received_target = 2
        pipeline = Pipeline(
            holding, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), observer=observer
        )
        pas, lims = adt("IF2"), _lims("IF2")
        first = asyncio.create_task(pipeline.submit(pas, PEER, NOW))
        await holding.entered.wait()
        second = asyncio.create_task(pipeline.submit(lims, OTHER_PEER, NOW))
        await observer.received_enough.wait()
        holding.release.set()
        outcomes = await asyncio.gather(first, second)
        assert [o.status for o in outcomes] == ["accepted", "accepted"]
        stored = {rec.value: rec for rec in reader.read(topics.raw)}
        assert CONFLICT_HEADER not in stored[pas].headers
        assert stored[lims].headers[CONFLICT_HEADER] == content_digest(pas).encode()
        assert observer.conflicts == [("RXA01", "ADT")]

    async def test_resends_waiting_for_a_copy_that_failed_store_it_once(
        self, holding: HoldFirstSend, topics: TopicNames, reader: TopicReader
    ) -> None:
        """When the copy two resends wait for fails to be enqueued, its sender gets the
        failure, one resend stores the message and the other is then its duplicate."""
        observer = Recorder()
        observer.received_target = 3
        pipeline = Pipeline(
            holding, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), observer=observer
        )
        raw = adt("IF3")
        first = asyncio.create_task(pipeline.submit(raw, PEER, NOW))
        await holding.entered.wait()
        resends = [
            asyncio.create_task(pipeline.submit(raw, peer, NOW)) for peer in (OTHER_PEER, PEER)
        ]
        await observer.received_enough.wait()
        holding.fail = True
        holding.release.set()
        with pytest.raises(PublishFailed):
            await first
        outcomes = await asyncio.gather(*resends)
        assert sorted(o.status for o in outcomes) == ["accepted", "duplicate"]
        assert reader.end_offsets(topics.raw) == 1
        assert reader.end_offsets(topics.events) == 1

    async def test_resends_of_a_restored_message_republish_its_events_once(
        self,
        ingest_settings: Settings,
        publisher: Publisher,
        holding: HoldFirstSend,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """A second resend of a restored message, checked while the first is still
        republishing its events, waits for it: both are duplicates, the events go once."""
        raw = adt("IF4")
        headers = (("carebus-sender", b"RXA01"), ("carebus-control-id", b"IF4"))
        await publisher.publish([Record(topics.raw, b"RXA01|IF4", raw, headers)])
        dedup = Deduplicator(3600)
        await rebuild_window(ingest_settings, topics.raw, dedup)
        observer = Recorder()
        observer.received_target = 2
        pipeline = Pipeline(holding, topics, publish_timeout_s=10.0, dedup=dedup, observer=observer)
        first = asyncio.create_task(pipeline.submit(raw, PEER, NOW))
        await holding.entered.wait()
        second = asyncio.create_task(pipeline.submit(raw, OTHER_PEER, NOW))
        await observer.received_enough.wait()
        holding.release.set()
        outcomes = await asyncio.gather(first, second)
        assert [(o.status, o.events) for o in outcomes] == [("duplicate", 1), ("duplicate", 0)]
        assert reader.end_offsets(topics.events) == 1
        assert reader.end_offsets(topics.raw) == 1


class TestWindowRebuilt:
    async def test_a_resend_after_a_restart_is_a_duplicate_and_its_events_are_republished(
        self,
        ingest_settings: Settings,
        publisher: Publisher,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """A new process's window, rebuilt from the raw topic, answers a resend duplicate
        without a second raw record, after publishing the events again with the same
        ids (the raw record alone does not prove they were stored)."""
        before = Pipeline(publisher, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600))
        assert (await before.submit(adt("RB1"), PEER, NOW)).status == "accepted"
        dedup = Deduplicator(3600)
        assert await rebuild_window(ingest_settings, topics.raw, dedup) == 1
        observer = Recorder()
        after = Pipeline(publisher, topics, publish_timeout_s=10.0, dedup=dedup, observer=observer)
        later = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
        resent = adt("RB1").replace(b"|20260301093000||", b"|20260301100000||", 1)
        outcome = await after.submit(resent, PEER, later)
        assert outcome.status == "duplicate"
        assert outcome.events == 1
        assert reader.end_offsets(topics.raw) == 1
        ids = _event_ids(reader, topics.events)
        assert len(ids) == 2 and ids[0] == ids[1]  # the same event, same id
        first, republished = reader.events(topics.events)
        assert republished == first  # same MSH-7 and received time: the same event
        again = await after.submit(resent, PEER, later)  # confirmed now: nothing republished
        assert (again.status, again.events) == ("duplicate", 0)
        assert reader.end_offsets(topics.events) == 2
        assert observer.duplicates == 2

    async def test_a_raw_record_without_its_events_gets_them_on_the_resend(
        self,
        ingest_settings: Settings,
        publisher: Publisher,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """A process killed after Kafka took the raw record but not the events: the resend
        to the restarted listener stores the events and is answered duplicate."""
        raw = adt("RB2")
        headers = (
            ("carebus-sender", b"RXA01"),
            ("carebus-control-id", b"RB2"),
            ("carebus-received-time", NOW.isoformat().encode()),
            (DIGEST_HEADER, content_digest(raw).encode()),
        )
        await publisher.publish([Record(topics.raw, b"RXA01|RB2", raw, headers)])
        dedup = Deduplicator(3600)
        await rebuild_window(ingest_settings, topics.raw, dedup)
        pipeline = Pipeline(publisher, topics, publish_timeout_s=10.0, dedup=dedup)
        outcome = await pipeline.submit(raw, PEER, datetime.now(UTC))
        assert outcome.status == "duplicate"
        assert reader.end_offsets(topics.raw) == 1
        [(_, event)] = reader.events(topics.events)
        assert event["header"]["control_id"] == "RB2"  # type: ignore[index]

    async def test_a_restored_message_whose_events_cannot_be_made_is_dead_lettered(
        self,
        ingest_settings: Settings,
        publisher: Publisher,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """A resend is never failed for ever: if the restored message no longer translates,
        it is answered duplicate (its raw record is stored) with no events, and the gap is
        on the dead-letter topic (translation-failed, saying the raw record is stored)."""
        raw = adt("RB5")
        headers = (("carebus-sender", b"RXA01"), ("carebus-control-id", b"RB5"))
        await publisher.publish([Record(topics.raw, b"RXA01|RB5", raw, headers)])
        dedup = Deduplicator(3600)
        await rebuild_window(ingest_settings, topics.raw, dedup)

        def broken(message: Message, raw: bytes, received_time: datetime) -> list[Any]:
            raise RuntimeError("translator defect")

        observer = Recorder()
        pipeline = Pipeline(
            publisher,
            topics,
            publish_timeout_s=10.0,
            dedup=dedup,
            translate=broken,
            observer=observer,
        )
        outcome = await pipeline.submit(raw, PEER, NOW)
        assert (outcome.status, outcome.events) == ("duplicate", 0)
        [letter] = reader.read(topics.deadletter)
        assert letter.value == raw
        assert letter.headers["carebus-reason"] == b"translation-failed"
        assert letter.headers[RAW_STORED_HEADER] == topics.raw.encode()
        assert letter.headers["carebus-control-id"] == b"RB5"
        assert (observer.dead_letters, observer.rejected, observer.duplicates) == (1, 0, 1)
        again = await pipeline.submit(raw, PEER, NOW)  # confirmed: no second dead letter
        assert again.status == "duplicate"
        assert reader.end_offsets(topics.deadletter) == 1

    async def test_restored_events_too_large_for_kafka_are_dead_lettered_not_raised(
        self,
        ingest_settings: Settings,
        publisher: Publisher,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """When Kafka refuses a restored message's re-made events as too large, the resend
        is answered duplicate (never an error the sender would resend for ever) and the
        message is dead-lettered as message-too-large, saying its raw record is stored."""
        raw = adt("RB6")
        headers = (("carebus-sender", b"RXA01"), ("carebus-control-id", b"RB6"))
        await publisher.publish([Record(topics.raw, b"RXA01|RB6", raw, headers)])
        dedup = Deduplicator(3600)
        await rebuild_window(ingest_settings, topics.raw, dedup)
        huge = b"x" * (request_limit_bytes(ingest_settings) + 1)
        pipeline = Pipeline(
            publisher, topics, publish_timeout_s=10.0, dedup=dedup, encode=lambda s, r: huge
        )
        outcome = await pipeline.submit(raw, PEER, NOW)
        assert (outcome.status, outcome.events) == ("duplicate", 0)
        [letter] = reader.read(topics.deadletter)
        assert letter.headers["carebus-reason"] == b"message-too-large"
        assert letter.headers[RAW_STORED_HEADER] == topics.raw.encode()
        assert reader.end_offsets(topics.events) == 0
        assert reader.end_offsets(topics.raw) == 1

    async def test_records_without_the_digest_header_are_digested_from_their_value(
        self, ingest_settings: Settings, publisher: Publisher, topics: TopicNames
    ) -> None:
        """Raw records written before the digest header existed still fill the window."""
        raw = adt("RB3")
        headers = (("carebus-sender", b"RXA01"), ("carebus-control-id", b"RB3"))
        await publisher.publish([Record(topics.raw, b"RXA01|RB3", raw, headers)])
        dedup = Deduplicator(3600)
        assert await rebuild_window(ingest_settings, topics.raw, dedup) == 1
        assert dedup.check(("RXA01", "RB3"), content_digest(raw))[0] == "unconfirmed"

    async def test_at_most_max_entries_of_the_newest_are_read(
        self, ingest_settings: Settings, publisher: Publisher, topics: TopicNames
    ) -> None:
        """The rebuild is bounded by duplicate_max_entries, keeping the newest records."""
        pipeline = Pipeline(publisher, topics, publish_timeout_s=10.0)
        for n in range(4):
            await pipeline.submit(adt(f"RB4-{n}"), PEER, NOW)
        partitions = ingest_settings.topics.partitions
        dedup = Deduplicator(3600, max_entries=partitions)  # one a partition
        restored = await rebuild_window(ingest_settings, topics.raw, dedup)
        assert 1 <= restored <= partitions
        assert len(dedup) <= partitions


def _counting_parse() -> tuple[list[bytes], object]:
    calls: list[bytes] = []

    def parse(raw: bytes, fallback: str) -> Message:
        calls.append(raw)
        return parse_message(raw, fallback_charset=fallback)

    return calls, parse


class TestAllowListBeforeParsing:
    async def test_a_peer_that_may_not_send_is_rejected_unparsed(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """The allow-list is checked from the header read: a refused peer's message is never
        parsed, and its dead letter keeps the headers and digest, not the body."""
        calls, parse = _counting_parse()
        allowlist = Allowlist.from_mapping({"peers": [{"ip": "10.0.0.0/8", "facilities": ["X"]}]})
        pipeline = Pipeline(
            publisher,
            topics,
            publish_timeout_s=10.0,
            allowlist=allowlist,
            parse=parse,  # type: ignore[arg-type]
        )
        raw = adt("NA1")
        outcome = await pipeline.submit(raw, PEER, NOW)
        garbage = await pipeline.submit(b"\x00not hl7", PEER, NOW)
        assert outcome.status == garbage.status == "rejected"
        assert outcome.error is not None and outcome.error.reason == "sender-not-allowed"
        assert outcome.control_id == "NA1"
        assert garbage.error is not None and garbage.error.reason == "sender-not-allowed"
        assert calls == []
        letter, _ = reader.read(topics.deadletter)
        assert letter.value == b""
        assert letter.headers["carebus-raw-sha256"] == hashlib.sha256(raw).hexdigest().encode()
        assert letter.headers["carebus-raw-size"] == str(len(raw)).encode()
        assert letter.headers["carebus-body-dropped"] == b"sender-not-allowed"
        assert letter.headers["carebus-control-id"] == b"NA1"
        assert reader.end_offsets(topics.raw) == 0

    async def test_an_allowed_peer_is_parsed_once(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A peer allowed its facility is parsed once; as another facility it is refused
        unparsed; an allowed peer's garbage is still parsed, and rejected as unparseable."""
        calls, parse = _counting_parse()
        allowlist = Allowlist.from_mapping(
            {"peers": [{"ip": "127.0.0.1", "facilities": ["RXA01"]}]}
        )
        pipeline = Pipeline(
            publisher,
            topics,
            publish_timeout_s=10.0,
            allowlist=allowlist,
            parse=parse,  # type: ignore[arg-type]
        )
        ok = await pipeline.submit(adt("NA2"), PEER, NOW)
        other = await pipeline.submit(adt("NA3", facility="RXB02"), PEER, NOW)
        garbage = await pipeline.submit(b"not hl7", PEER, NOW)
        assert ok.status == "accepted"
        assert other.error is not None and other.error.reason == "sender-not-allowed"
        assert garbage.error is not None and garbage.error.reason == "unparseable"
        assert len(calls) == 2
        refused, unparseable = reader.read(topics.deadletter)
        assert refused.value == b""
        assert unparseable.value == b"not hl7"  # an allowed peer's dead letter keeps its body


class TestDeadLetterLimit:
    async def test_over_the_limit_rejections_are_answered_but_not_dead_lettered(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Past a peer's budget, rejections are still rejected (AR) but write no dead letter
        and are counted; another peer has its own budget; the budget refills with time."""
        clock = Clock()
        observer = Recorder()
        pipeline = Pipeline(
            publisher,
            topics,
            publish_timeout_s=10.0,
            observer=observer,
            deadletter_limit=DeadLetterLimit(2, clock=clock),
        )
        outcomes = [await pipeline.submit(b"junk %d" % n, PEER, NOW) for n in range(5)]
        assert [o.status for o in outcomes] == ["rejected"] * 5
        assert all(o.error is not None and o.error.reason == "unparseable" for o in outcomes)
        assert reader.end_offsets(topics.deadletter) == 2
        assert observer.dropped == ["unparseable"] * 3
        assert observer.rejected == 5
        other = Peer("mllp", "127.0.0.2", 40000)
        assert (await pipeline.submit(b"junk", other, NOW)).status == "rejected"
        assert reader.end_offsets(topics.deadletter) == 3
        clock.now += 30.0  # 2 a minute: one more after 30 s
        await pipeline.submit(b"junk again", PEER, NOW)
        await pipeline.submit(b"junk again", PEER, NOW)
        assert reader.end_offsets(topics.deadletter) == 4
        assert len(observer.dropped) == 4

    async def test_the_drop_folder_has_no_limit(
        self, publisher: Publisher, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Files are trusted like the folder: every rejected file is dead-lettered."""
        pipeline = Pipeline(
            publisher,
            topics,
            publish_timeout_s=10.0,
            deadletter_limit=DeadLetterLimit(1, clock=Clock()),
        )
        for n in range(3):
            await pipeline.submit(b"junk", Peer("file", "/drop"), NOW, origin=f"file:x#{n}")
        assert reader.end_offsets(topics.deadletter) == 3

    def test_the_setting_is_on_by_default(self) -> None:
        """mllp.deadletters_per_peer_per_min is on by default, far above a real feed's."""
        assert MllpSettings().deadletters_per_peer_per_min >= 600
