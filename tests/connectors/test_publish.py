"""Tests for connectors/publish.py: the idempotent acks=all producer wrapper."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import NewTopic

from carebus import broker
from carebus.admin import admin_client
from carebus.errors import KafkaUnavailable, PublishFailed
from carebus.settings import BrokerSettings, KafkaSettings, MllpSettings, Settings
from carebus.topics import TopicNames
from connectors import publish
from connectors.partition import partition_for
from connectors.publish import Publisher, Record, RecordTooLarge
from tests.connectors.ingest_helpers import TopicReader, start_throwaway


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestPublisher:
    def test_producer_is_idempotent_with_acks_all(self) -> None:
        """The producer is configured for durability: idempotent, acks=all."""
        config = Publisher(Settings()).producer_config()
        assert config["acks"] == "all"
        assert config["enable_idempotence"] is True

    async def test_unreachable_kafka_is_kafka_unavailable(self) -> None:
        """Starting against an address where nothing listens raises KafkaUnavailable."""
        settings = Settings(
            kafka=KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{_unused_port()}", request_timeout_s=2.0
            )
        )
        with pytest.raises(KafkaUnavailable):
            await Publisher(settings).start(timeout_s=3.0)

    async def test_publish_before_start_fails(self) -> None:
        """Publishing without a running producer is a PublishFailed, not a crash."""
        with pytest.raises(PublishFailed):
            await Publisher(Settings()).publish([Record("t", b"k", b"v")])

    @pytest.mark.integration
    async def test_missing_topic_is_reported_at_start(self, kafka_isolated: Settings) -> None:
        """A topic that does not exist is reported when the publisher starts."""
        topics = TopicNames.from_settings(kafka_isolated.topics)
        with pytest.raises(KafkaUnavailable, match="carebus topics"):
            await Publisher(kafka_isolated).start([topics.raw], timeout_s=3.0)

    @pytest.mark.integration
    async def test_publish_returns_after_records_are_readable(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """publish returns once every record is acknowledged, in order, with headers."""
        pub = Publisher(ingest_settings)
        await pub.start([topics.raw])
        try:
            await pub.publish(
                [Record(topics.raw, b"k", f"v{n}".encode(), (("h", b"1"),)) for n in range(3)]
            )
            assert reader.end_offsets(topics.raw) == 3
        finally:
            await pub.stop()
        records = reader.read(topics.raw)
        assert [r.value for r in records] == [b"v0", b"v1", b"v2"]
        assert records[0].headers == {"h": b"1"}


@pytest.mark.integration
class TestExplicitPartition:
    async def test_a_record_with_a_partition_goes_there_whatever_its_key(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A record naming its partition lands on it; one naming none goes by its key."""
        pub = Publisher(ingest_settings)
        await pub.start([topics.events])
        try:
            assert await pub.partition_count(topics.events) == 2
            key = b"same-key"
            by_key = partition_for(key, 2)
            other = 1 - by_key
            await pub.publish(
                [
                    Record(topics.events, key, b"named", partition=other),
                    Record(topics.events, key, b"keyed"),
                ]
            )
        finally:
            await pub.stop()
        where = {r.value: r.partition for r in reader.read(topics.events)}
        assert where == {b"named": other, b"keyed": by_key}

    async def test_a_partition_the_topic_lacks_fails_with_nothing_sent(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A partition outside the topic is a PublishFailed; no record of the call is sent."""
        pub = Publisher(ingest_settings)
        await pub.start([topics.events])
        try:
            with pytest.raises(PublishFailed, match="no partition 2"):
                await pub.send(
                    [Record(topics.events, b"k", b"ok"), Record(topics.events, b"k", b"x", (), 2)]
                )
            await pub.publish([Record(topics.events, b"k", b"after")])
        finally:
            await pub.stop()
        assert [r.value for r in reader.read(topics.events)] == [b"after"]


class Recording(Publisher):
    """A publisher that keeps each producer it makes, to check they were closed."""

    made: list[AIOKafkaProducer]

    def _new_producer(self) -> AIOKafkaProducer:
        producer = super()._new_producer()
        self.made = [*getattr(self, "made", []), producer]
        return producer


def _closed(producer: AIOKafkaProducer) -> bool:
    """Stopped, with no connection left open."""
    conns = producer.client._conns.values()
    return bool(producer._closed) and not any(conn.connected() for conn in conns)


class TestConnectCleanup:
    async def test_cancelled_start_stops_its_producer(self) -> None:
        """A start cancelled while the producer is still connecting leaves no producer open."""
        with socket.socket() as silent:  # takes TCP connections, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            silent.settimeout(30.0)
            address = f"127.0.0.1:{silent.getsockname()[1]}"
            pub = Recording(Settings(kafka=KafkaSettings(bootstrap_servers=address)))
            starting = asyncio.create_task(pub.start(timeout_s=30.0))
            conn, _ = await asyncio.to_thread(silent.accept)  # the producer is connecting
            with conn:
                assert not starting.done()
                starting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await starting
        [producer] = pub.made
        assert _closed(producer)

    @pytest.mark.integration
    async def test_cancelled_while_waiting_for_topic_stops_its_producer(
        self, kafka_isolated: Settings
    ) -> None:
        """Cancelled after connecting, while waiting for a topic: the connections are closed."""
        topics = TopicNames.from_settings(kafka_isolated.topics)
        pub = Recording(kafka_isolated)
        starting = asyncio.create_task(pub.start([topics.raw], timeout_s=30.0))

        async def connected() -> None:
            while not getattr(pub, "made", None) or not pub.made[0].client._conns:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(connected(), 30)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert _closed(pub.made[0])

    @pytest.mark.integration
    async def test_missing_topic_stops_its_producer(self, kafka_isolated: Settings) -> None:
        """A start that fails part-way (a missing topic) closes the producer it had connected."""
        topics = TopicNames.from_settings(kafka_isolated.topics)
        pub = Recording(kafka_isolated)
        with pytest.raises(KafkaUnavailable):
            await pub.start([topics.raw], timeout_s=2.0)
        assert _closed(pub.made[0])


def _limited_topic(settings: Settings, max_message_bytes: int) -> str:
    name = f"{settings.topics.prefix}.limited-{uuid.uuid4().hex[:6]}"
    with admin_client(settings) as admin:
        config = {"max.message.bytes": str(max_message_bytes)}
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
    return name


class TestRecordSize:
    def test_request_limit_is_above_the_largest_frame(self) -> None:
        """max_request_size leaves room for key and headers above mllp.max_frame_bytes."""
        for frame in (1_048_576, 4 * 1_048_576):
            settings = Settings(mllp=MllpSettings(max_frame_bytes=frame))
            limit = Publisher(settings).producer_config()["max_request_size"]
            record = Record("t", b"F" * 40 + b"|" + b"C" * 199, b"x" * frame, _big_headers())
            assert limit >= record.size + 64 * 1024

    async def test_over_request_limit_is_too_large_before_anything_is_sent(self) -> None:
        """A record over max_request_size raises RecordTooLarge at once, not a retriable error."""
        pub = Publisher(Settings())
        limit = pub.producer_config()["max_request_size"]
        with pytest.raises(RecordTooLarge) as raised:
            await pub.send([Record("t", b"k", b"v"), Record("t", b"k", b"x" * limit)])
        assert not raised.value.retriable
        assert raised.value.size > limit

    @pytest.mark.integration
    async def test_broker_refusal_of_a_large_record_is_too_large(
        self, kafka_isolated: Settings
    ) -> None:
        """A large record the topic refuses (max.message.bytes) fails as RecordTooLarge."""
        topic = _limited_topic(kafka_isolated, 100_000)
        pub = Publisher(kafka_isolated)
        await pub.start([topic])
        try:
            with pytest.raises(RecordTooLarge) as raised:
                await pub.publish([Record(topic, b"k", b"x" * 150_000)])
            assert raised.value.topic == topic
            await pub.publish([Record(topic, b"k", b"small")])  # the producer still works
        finally:
            await pub.stop()

    @pytest.mark.integration
    async def test_refused_small_record_stays_retriable(self, kafka_isolated: Settings) -> None:
        """A record no bigger than a batch may only have shared a batch: PublishFailed (AE)."""
        topic = _limited_topic(kafka_isolated, 1_000)
        pub = Publisher(kafka_isolated)
        await pub.start([topic])
        try:
            with pytest.raises(PublishFailed):
                await pub.publish([Record(topic, b"k", b"x" * 2_000)])
        finally:
            await pub.stop()


def _big_headers() -> tuple[tuple[str, bytes], ...]:
    names = ("sender", "peer", "received-time", "control-id", "raw-sha256", "source")
    return tuple((f"carebus-{n}", b"v" * 200) for n in names)


class Instrumented(Publisher):
    """A publisher whose producer calls ``before(topic, partition)`` ahead of each batch.

    ``before`` may return an awaitable: the batch is sent once it is done, which lets a
    test hold a produce request in flight until it has queued what it needs.
    """

    def __init__(
        self, settings: Settings, before: Callable[[str, int], Awaitable[None] | None]
    ) -> None:
        super().__init__(settings)
        self.before = before

    def _new_producer(self) -> AIOKafkaProducer:
        producer = super()._new_producer()
        send_batch = producer.send_batch

        async def instrumented(batch: Any, topic: str, *, partition: int) -> Any:
            held = self.before(topic, partition)
            if held is not None:
                await held
            return await send_batch(batch, topic, partition=partition)

        producer.send_batch = instrumented  # type: ignore[method-assign]
        return producer


class HoldFirst:
    """A ``before`` hook that records each batch and holds the first until released."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.first_sent = asyncio.Event()
        self.release = asyncio.Event()

    def __call__(self, topic: str, partition: int) -> Awaitable[None] | None:
        self.batches.append((topic, partition))
        if len(self.batches) > 1:
            return None
        self.first_sent.set()
        return self.release.wait()


@pytest.mark.integration
class TestBatching:
    async def test_records_sent_together_share_one_batch_per_partition(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Records sent while none is in flight go to Kafka as one batch per partition."""
        batches: list[tuple[str, int]] = []
        pub = Instrumented(ingest_settings, lambda *batch: batches.append(batch))
        await pub.start([topics.events])
        keys = [f"943476{n:04d}".encode() for n in range(60)]
        try:
            sent = [await pub.send([Record(topics.events, key, b"v")]) for key in keys]
            await asyncio.gather(*sent)
        finally:
            await pub.stop()
        count = ingest_settings.topics.partitions
        assert sorted(batches) == sorted({(topics.events, partition_for(k, count)) for k in keys})
        assert reader.end_offsets(topics.events) == len(keys)

    async def test_a_partition_keeps_its_order_across_requests(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Records of one key sent while earlier ones are in flight land in the order sent."""
        hook = HoldFirst()
        pub = Instrumented(ingest_settings, hook)
        await pub.start([topics.events])
        try:
            first = await pub.send([Record(topics.events, b"9434765919", b"0")])
            await asyncio.wait_for(hook.first_sent.wait(), 30)  # "0" is in a request now
            later = [
                await pub.send([Record(topics.events, b"9434765919", b"%d" % n)])
                for n in range(1, 200)
            ]
            assert not first.done() and not any(f.done() for f in later)
            hook.release.set()
            await asyncio.gather(first, *later)
        finally:
            hook.release.set()
            await pub.stop()
        assert len(hook.batches) > 1
        assert [r.value for r in reader.read(topics.events)] == [b"%d" % n for n in range(200)]

    async def test_a_full_buffer_makes_senders_wait_not_fail(
        self,
        ingest_settings: Settings,
        topics: TopicNames,
        reader: TopicReader,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Over the buffer limit, send waits until records leave for Kafka; nothing is lost."""
        monkeypatch.setattr(publish, "BUFFER_BYTES", 1_000)
        pub = Publisher(ingest_settings)
        await pub.start([topics.events])

        async def one(n: int) -> None:
            await (await pub.send([Record(topics.events, b"k%d" % n, b"x" * 400)], timeout_s=30))

        try:
            await asyncio.gather(*(one(n) for n in range(40)))
        finally:
            await pub.stop()
        assert reader.end_offsets(topics.events) == 40


def _first_fails() -> Callable[[str, int], None]:
    """A ``before`` hook that fails the first batch with an unexpected error."""
    calls: list[tuple[str, int]] = []

    def before(topic: str, partition: int) -> None:
        calls.append((topic, partition))
        if len(calls) == 1:
            raise RuntimeError("unexpected client failure")

    return before


@pytest.mark.integration
class TestUnexpectedFailure:
    async def test_fails_that_request_and_keeps_publishing(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An unexpected client error fails its request's records (retriable); later ones go."""
        pub = Instrumented(ingest_settings, _first_fails())
        await pub.start([topics.events])
        try:
            with pytest.raises(PublishFailed, match="RuntimeError") as raised:
                await pub.publish([Record(topics.events, b"k", b"lost")])
            assert raised.value.retriable
            await pub.publish([Record(topics.events, b"k", b"kept")])
        finally:
            await pub.stop()
        assert [r.value for r in reader.read(topics.events)] == [b"kept"]


@pytest.mark.integration
@pytest.mark.slow
class TestKafkaDown:
    async def test_no_room_is_publish_failed_and_stop_fails_the_rest(
        self, throwaway_broker: BrokerSettings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Kafka down: a full buffer fails send after its timeout; stop fails what waits."""
        settings, topics = await start_throwaway(throwaway_broker, "down")
        requests = asyncio.Semaphore(0)
        pub = Instrumented(settings, lambda *_: requests.release())
        await pub.start([topics.events])
        try:
            await pub.publish([Record(topics.events, b"k", b"up")])
            await requests.acquire()
            await asyncio.to_thread(broker.stop, throwaway_broker)
            monkeypatch.setattr(publish, "BUFFER_BYTES", 1_000)
            in_flight = await pub.send([Record(topics.events, b"k", b"x" * 400)])
            # Taken from the buffer into a request (that Kafka, down, does not answer):
            await asyncio.wait_for(requests.acquire(), 30)
            waiting = await pub.send([Record(topics.events, b"k", b"x" * 400)])
            with pytest.raises(PublishFailed, match=r"within 0\.5s"):
                await pub.send([Record(topics.events, b"k", b"x" * 900)], timeout_s=0.5)
            assert not in_flight.done() and not waiting.done()
        finally:
            await pub.stop(timeout_s=1.0)
        for future in (in_flight, waiting):
            with pytest.raises(PublishFailed):
                future.result()
