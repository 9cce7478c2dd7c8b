"""Durable publishing: an idempotent, acks=all aiokafka producer behind a small API.

:meth:`Publisher.send` enqueues records in order and returns one future that
completes when Kafka has acknowledged every one of them (acks=all), or fails with
:class:`~carebus.errors.PublishFailed`. aiokafka errors are translated here, at the
boundary: :class:`~carebus.errors.KafkaUnavailable` when the producer cannot start,
:class:`~carebus.errors.PublishFailed` when a record was not acknowledged.

Batching. Many concurrent callers share produce requests, so throughput comes from
concurrency, not from giving up durability. Records wait here, in one batch per
topic partition, while the previous request is in flight; when it has been
acknowledged, every waiting partition's batch goes in the next request
(``aiokafka``'s ``send_batch``). The first record after a quiet spell waits at most
``mllp.publish_linger_ms`` for company. This is the Java producer's way of
draining a broker's ready partitions together: aiokafka's own per-record ``send``
lingers each partition's batch separately, so records spread over many partitions
travel in many small requests, and the per-record futures cost more CPU than the
records themselves. Keys are partitioned as Kafka's default partitioner does
(:func:`connectors.partition.partition_for`).

Records waiting here are bounded by :data:`BUFFER_BYTES`: over it (Kafka down or
slow), :meth:`Publisher.send` waits for room, up to its ``timeout_s``.

The idempotent producer retries a batch until Kafka takes it, so a record whose
caller stopped waiting (a timeout while Kafka is down) may still be delivered
later; the returned future says when.

A record Kafka will never take because of its size is not retriable: it fails with
:class:`RecordTooLarge` (before anything of the call is enqueued when it is over the
producer's ``max_request_size``; from the future when the broker refuses it against
the topic's ``max.message.bytes``). The broker judges whole record batches, and
this publisher's batches of several records stay under :data:`BATCH_BYTES` (64 KiB),
far below any sane topic limit: a record refused while at most that size may only
have shared a batch with a large one, so it stays a retriable :class:`PublishFailed`.
``max_request_size`` is above ``mllp.max_frame_bytes`` plus headers, so every frame
the listener accepts can be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from carebus.errors import CarebusError, KafkaUnavailable, PublishFailed
from carebus.kafka import aiokafka_config
from carebus.log import get_logger
from carebus.settings import Settings
from connectors.partition import partition_for

log = get_logger(__name__)

Headers = tuple[tuple[str, bytes], ...]

#: Batch size: batches of several records never exceed it, so a record refused as
#: too large while over it was alone in its batch (see the module docstring).
BATCH_BYTES = 64 * 1024
#: Bytes of records waiting for a request before :meth:`Publisher.send` waits for room
#: (as the Java producer's ``buffer.memory``).
BUFFER_BYTES = 32 * 1_048_576
#: Room above ``mllp.max_frame_bytes`` in ``max_request_size`` for key, headers and
#: batch framing.
REQUEST_HEADROOM_BYTES = 128 * 1024
#: ``max_request_size`` is never below this (2 MiB).
MIN_REQUEST_BYTES = 2 * 1_048_576
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True)
class Record:
    """One Kafka record to publish.

    ``partition`` None (events, raw records, dead letters): the key's partition, as
    Kafka's default partitioner chooses it. A number: that partition (records that
    go to every partition of a topic, such as feed watermarks).
    """

    topic: str
    key: bytes
    value: bytes
    headers: Headers = ()
    partition: int | None = None

    @property
    def size(self) -> int:
        """An upper bound of the record's size in a batch (key, value, headers, framing)."""
        return int(
            DefaultRecordBatchBuilder.estimate_size_in_bytes(
                self.key, self.value, list(self.headers)
            )
        )


class RecordTooLarge(CarebusError):
    """Kafka will never take this record because of its size (not retriable)."""

    retriable = False

    def __init__(self, topic: str, size: int, limit: str) -> None:
        super().__init__(f"a {size}-byte record is too large for {topic} ({limit})")
        self.topic = topic
        self.size = size


def request_limit_bytes(settings: Settings) -> int:
    """The producer's ``max_request_size``: above the largest frame the listener accepts."""
    return max(MIN_REQUEST_BYTES, settings.mllp.max_frame_bytes + REQUEST_HEADROOM_BYTES)


class _Delivery:
    """One :meth:`Publisher.send` call: its future and how many records are unacknowledged."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining


class _Batch:
    """Records for one topic partition, waiting for (or in) a produce request."""

    __slots__ = ("builder", "deliveries", "partition", "topic")

    def __init__(self, topic: str, partition: int, builder: BatchBuilder) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.deliveries: list[_Delivery] = []  # one entry per record

    def append(self, record: Record, delivery: _Delivery) -> bool:
        """Add ``record``; False when the batch is full (the first record always fits)."""
        added = self.builder.append(
            timestamp=None, key=record.key, value=record.value, headers=list(record.headers)
        )
        if added is None:
            return False
        self.deliveries.append(delivery)
        return True

    def acknowledged(self) -> None:
        for delivery in self.deliveries:
            delivery.remaining -= 1
            if delivery.remaining == 0 and not delivery.future.done():
                delivery.future.set_result(None)

    def failed(self, error: Callable[[], CarebusError], on_error: Callable[[str], None]) -> None:
        for delivery in self.deliveries:
            if not delivery.future.done():
                on_error(self.topic)
                delivery.future.set_exception(error())


class Publisher:
    """An idempotent acks=all producer; start it, send, stop it."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_error: Callable[[str], None] | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        self._settings = settings
        self._on_error = on_error or _ignore
        self._max_request_bytes = max(max_request_bytes or 0, request_limit_bytes(settings))
        self._linger_s = settings.mllp.publish_linger_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._topics: tuple[str, ...] = ()
        self._replacing: asyncio.Lock | None = None
        self._running = False
        # Waiting records: per topic partition, its batches in order.
        self._waiting: dict[tuple[str, int], deque[_Batch]] = {}
        self._waiting_bytes = 0
        self._room: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None

    def producer_config(self) -> dict[str, Any]:
        """The aiokafka producer keyword arguments (idempotent, acks=all).

        aiokafka does not linger: the publisher hands it whole batches (see the
        module docstring).
        """
        return {
            **aiokafka_config(self._settings),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 0,
            "max_batch_size": BATCH_BYTES,
            "max_request_size": self._max_request_bytes,
        }

    async def start(self, topics: Sequence[str] = (), *, timeout_s: float = 15.0) -> None:
        """Connect to Kafka and learn where ``topics`` live (so that they must exist).

        :class:`KafkaUnavailable` when Kafka cannot be reached or a topic is missing.
        """
        self._topics = tuple(topics)
        self._producer = await self._connect(timeout_s)
        self._running = True

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.producer_config())

    async def _connect(self, timeout_s: float) -> AIOKafkaProducer:
        """A started producer that knows the topics; on any failure or cancellation
        part-way, the producer is stopped (no connection left behind) and the error raised.
        """
        producer = self._new_producer()
        try:
            return await self._start_producer(producer, timeout_s)
        except BaseException:
            # Also on cancellation: the stop must run to the end, whoever cancels us.
            await asyncio.shield(_quietly_stop(producer, 1.0))
            raise

    async def _start_producer(
        self, producer: AIOKafkaProducer, timeout_s: float
    ) -> AIOKafkaProducer:
        servers = self._settings.bootstrap_servers
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot connect a producer to {servers}") from exc
        for topic in self._topics:
            try:
                await asyncio.wait_for(producer.partitions_for(topic), timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                raise KafkaUnavailable(
                    f"topic {topic} is not available at {servers} (run 'carebus topics')"
                ) from exc
        return producer

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is waiting (up to ``timeout_s``) and disconnect.

        Records not acknowledged by then fail with :class:`PublishFailed`.
        """
        self._running = False
        flusher = self._flusher
        if flusher is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(flusher), timeout_s)
            flusher.cancel()
        self._fail_waiting(_stopped)
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, timeout_s)

    async def send(
        self, records: Sequence[Record], *, timeout_s: float | None = None
    ) -> asyncio.Future[None]:
        """Enqueue ``records`` in order; the future completes once Kafka acknowledged all.

        The future fails with :class:`PublishFailed`, or :class:`RecordTooLarge` when
        the broker refused a record for its size. Enqueueing itself raises
        :class:`PublishFailed` when the publisher is not running or has had no room
        for the records within ``timeout_s`` (None: wait as long as it takes), and
        :class:`RecordTooLarge`, with none of them enqueued, when one is over
        ``max_request_size``.
        """
        size = 0
        for record in records:
            one = record.size
            if one > self._max_request_bytes:
                raise RecordTooLarge(
                    record.topic, one, f"max_request_size {self._max_request_bytes}"
                )
            size += one
        if self._waiting_bytes and self._waiting_bytes + size > BUFFER_BYTES:
            await self._wait_for_room(size, timeout_s)
        producer = self._producer
        if not self._running or producer is None:
            raise PublishFailed("the producer is not running")
        cluster = producer.client.cluster
        counts = []
        for record in records:
            partitions = cluster.partitions_for_topic(record.topic)
            count = len(partitions) if partitions else await self._learn(record.topic)
            if record.partition is not None and not 0 <= record.partition < count:
                raise PublishFailed(
                    f"{record.topic} has no partition {record.partition} (it has {count})"
                )
            counts.append(count)
        loop = asyncio.get_running_loop()
        delivery = _Delivery(loop.create_future(), len(records))
        if not records:
            delivery.future.set_result(None)
            return delivery.future
        for record, count in zip(records, counts, strict=True):
            partition = record.partition
            if partition is None:
                partition = partition_for(record.key, count)
            self._append(producer, record, partition, delivery)
        self._waiting_bytes += size
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return delivery.future

    async def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (from the producer's metadata).

        :class:`PublishFailed` when the publisher is not running or the topic is unknown.
        """
        producer = self._producer
        if not self._running or producer is None:
            raise PublishFailed("the producer is not running")
        partitions = producer.client.cluster.partitions_for_topic(topic)
        return len(partitions) if partitions else await self._learn(topic)

    async def publish(self, records: Sequence[Record]) -> None:
        """Send ``records`` and wait until Kafka acknowledged each one (unbounded wait)."""
        await (await self.send(records))

    async def _learn(self, topic: str) -> int:
        """The partition count of a topic the producer has no metadata for yet."""
        producer = self._producer
        try:
            if producer is None:
                raise KafkaError("no producer")
            partitions = await producer.partitions_for(topic)
        except KafkaError as exc:
            self._on_error(topic)
            raise PublishFailed(f"no partitions known for {topic}") from exc
        return len(partitions)

    def _append(
        self, producer: AIOKafkaProducer, record: Record, partition: int, delivery: _Delivery
    ) -> None:
        key = (record.topic, partition)
        batches = self._waiting.get(key)
        if batches is None:
            batches = self._waiting[key] = deque()
        elif batches[-1].append(record, delivery):
            return
        batch = _Batch(record.topic, partition, producer.create_batch())
        batch.append(record, delivery)
        batches.append(batch)

    async def _wait_for_room(self, size: int, timeout_s: float | None) -> None:
        self._room = self._room or asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                while self._waiting_bytes and self._waiting_bytes + size > BUFFER_BYTES:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            raise PublishFailed(f"Kafka did not take records within {timeout_s:g}s") from None
        if not self._running:
            raise PublishFailed("the producer is not running")

    async def _flush(self) -> None:
        """Hand the waiting batches to Kafka, one request at a time, until none wait."""
        try:
            if self._linger_s > 0:
                await asyncio.sleep(self._linger_s)
            while self._waiting:
                await self._request(self._take())
        finally:
            self._flusher = None

    def _take(self) -> list[_Batch]:
        """The first waiting batch of every topic partition (per partition, in order)."""
        taken = []
        for key in list(self._waiting):
            batches = self._waiting[key]
            taken.append(batches.popleft())
            if not batches:
                del self._waiting[key]
        self._waiting_bytes = (
            sum(b.builder.size() for q in self._waiting.values() for b in q) if self._waiting else 0
        )
        if self._room is not None:
            self._room.set()
        return taken

    async def _request(self, batches: list[_Batch]) -> None:
        """Send ``batches`` and settle their records once Kafka answered for all."""
        try:
            producer = await self._healthy_producer()
            sent: list[tuple[_Batch, asyncio.Future[Any]]] = []
            for batch in batches:
                try:
                    future = await producer.send_batch(
                        batch.builder, batch.topic, partition=batch.partition
                    )
                except KafkaError as refused:
                    batch.failed(functools.partial(_error, batch, refused), self._on_error)
                    continue
                future.add_done_callback(mark_seen)  # answered even if no one waits now
                sent.append((batch, future))
            if sent:
                await asyncio.wait([future for _, future in sent])
            for batch, future in sent:
                err = None if future.cancelled() else future.exception()
                if future.cancelled() or err is not None:
                    batch.failed(functools.partial(_error, batch, err), self._on_error)
                else:
                    batch.acknowledged()
        except Exception as exc:  # no caller may wait for ever
            if isinstance(exc, PublishFailed):
                reason = str(exc)
            else:
                log.error("produce request failed", error=type(exc).__name__)
                reason = f"Kafka did not take the records ({type(exc).__name__})"
            for batch in batches:
                batch.failed(functools.partial(PublishFailed, reason), self._on_error)
        except BaseException:  # a cancelled flush (the publisher stopping)
            for batch in batches:
                batch.failed(_stopped, self._on_error)
            raise

    def _fail_waiting(self, error: Callable[[], CarebusError]) -> None:
        waiting, self._waiting = self._waiting, {}
        self._waiting_bytes = 0
        for batches in waiting.values():
            for batch in batches:
                batch.failed(error, self._on_error)
        if self._room is not None:
            self._room.set()

    async def _healthy_producer(self) -> AIOKafkaProducer:
        """The running producer, replaced first if its sender task died (a fatal error)."""
        producer = self._producer
        if producer is None:
            raise PublishFailed("the producer is not running")
        if not _sender_dead(producer):
            return producer
        self._replacing = self._replacing or asyncio.Lock()
        async with self._replacing:
            if self._producer is producer:
                log.error("kafka producer failed; starting a new one")
                asyncio.get_running_loop().create_task(_quietly_stop(producer, 5.0))
                self._producer = None
                try:
                    self._producer = await self._connect(self._settings.kafka.request_timeout_s)
                except KafkaUnavailable as exc:
                    raise PublishFailed("the producer failed and cannot be restarted") from exc
        if self._producer is None:
            raise PublishFailed("the producer is not running")
        return self._producer


def _error(batch: _Batch, exc: BaseException | None) -> PublishFailed | RecordTooLarge:
    """What a batch's records fail with when Kafka did not acknowledge it."""
    topic = batch.topic
    if isinstance(exc, _TOO_LARGE):
        size = batch.builder.size()
        if size > BATCH_BYTES:  # alone in its batch: this record itself is too large
            return RecordTooLarge(topic, size, "the topic's max.message.bytes")
        log.error(
            "kafka refused a small record as too large; is the topic's "
            "max.message.bytes below the producer batch size?",
            topic=topic,
            size=size,
            batch_bytes=BATCH_BYTES,
        )
    name = type(exc).__name__ if exc is not None else "cancelled"
    failure = PublishFailed(f"Kafka did not acknowledge a record on {topic} ({name})")
    failure.__cause__ = exc
    return failure


def mark_seen(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen: whoever waited for it may have given
    up (a cancelled flush, a caller past its deadline), and asyncio would log it."""
    if not future.cancelled():
        future.exception()


def _stopped() -> PublishFailed:
    """What records not acknowledged when the publisher stops fail with."""
    return PublishFailed("the publisher stopped")


def _ignore(_topic: str) -> None:
    """No produce-error hook."""


def _sender_dead(producer: AIOKafkaProducer) -> bool:
    """True when aiokafka's background sender stopped (it then never delivers again)."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return isinstance(task, asyncio.Task) and task.done()


async def _quietly_stop(producer: AIOKafkaProducer, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except TimeoutError:
        log.warning("producer stop timed out; unacknowledged records were dropped")
    except (KafkaError, OSError) as exc:
        log.warning("producer stop failed", error=type(exc).__name__)
