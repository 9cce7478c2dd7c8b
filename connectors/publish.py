"""Durable publishing: an idempotent, acks=all aiokafka producer behind a small API.

:meth:`Publisher.send` enqueues records in order and returns one future that
completes when Kafka has acknowledged every one of them (acks=all), or fails with
:class:`~carebus.errors.PublishFailed`. Many concurrent callers share producer
batches (``linger_ms``), so throughput comes from concurrency, not from giving up
durability. aiokafka errors are translated here, at the boundary:
:class:`~carebus.errors.KafkaUnavailable` when the producer cannot start,
:class:`~carebus.errors.PublishFailed` when a record was not acknowledged.

The idempotent producer retries a record until Kafka takes it, so a record whose
caller stopped waiting (a timeout while Kafka is down) may still be delivered
later; the returned future says when.

A record Kafka will never take because of its size is not retriable: it fails with
:class:`RecordTooLarge` (before anything of the call is enqueued when it is over the
producer's ``max_request_size``; from the future when the broker refuses it against
the topic's ``max.message.bytes``). The broker judges whole record batches, and
this producer's batches of several records stay under :data:`BATCH_BYTES` (64 KiB),
far below any sane topic limit: a record refused while at most that size may only
have shared a batch with a large one, so it stays a retriable :class:`PublishFailed`.
``max_request_size`` is above ``mllp.max_frame_bytes`` plus headers, so every frame
the listener accepts can be sent.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from carebus.errors import CarebusError, KafkaUnavailable, PublishFailed
from carebus.kafka import aiokafka_config
from carebus.log import get_logger
from carebus.settings import Settings
from connectors.partition import KeyPartitioner

log = get_logger(__name__)

Headers = tuple[tuple[str, bytes], ...]

#: Producer batch size: batches of several records never exceed it, so a record
#: refused as too large while over it was alone in its batch (see the module docstring).
BATCH_BYTES = 64 * 1024
#: Room above ``mllp.max_frame_bytes`` in ``max_request_size`` for key, headers and
#: batch framing.
REQUEST_HEADROOM_BYTES = 128 * 1024
#: ``max_request_size`` is never below this (2 MiB).
MIN_REQUEST_BYTES = 2 * 1_048_576
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers = ()

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
        self._on_error = on_error
        self._max_request_bytes = max(max_request_bytes or 0, request_limit_bytes(settings))
        self._producer: AIOKafkaProducer | None = None
        self._topics: tuple[str, ...] = ()
        self._replacing: asyncio.Lock | None = None

    def producer_config(self) -> dict[str, Any]:
        """The aiokafka producer keyword arguments (idempotent, acks=all, small linger)."""
        return {
            **aiokafka_config(self._settings),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self._settings.kafka.producer_linger_ms,
            "max_batch_size": BATCH_BYTES,
            "max_request_size": self._max_request_bytes,
            "partitioner": KeyPartitioner(),
        }

    async def start(self, topics: Sequence[str] = (), *, timeout_s: float = 15.0) -> None:
        """Connect to Kafka and learn where ``topics`` live (so that they must exist).

        :class:`KafkaUnavailable` when Kafka cannot be reached or a topic is missing.
        """
        self._topics = tuple(topics)
        self._producer = await self._connect(timeout_s)

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
        """Flush what is pending (up to ``timeout_s``) and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, timeout_s)

    async def send(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Enqueue ``records`` in order; the future completes once Kafka acknowledged all.

        The future fails with :class:`PublishFailed`, or :class:`RecordTooLarge` when
        the broker refused a record for its size. Enqueueing itself raises
        :class:`PublishFailed` when the producer is not running or cannot take the
        records, and :class:`RecordTooLarge`, with none of them enqueued, when one is
        over ``max_request_size``.
        """
        for record in records:
            size = record.size
            if size > self._max_request_bytes:
                raise RecordTooLarge(
                    record.topic, size, f"max_request_size {self._max_request_bytes}"
                )
        producer = await self._healthy_producer()
        futures: list[asyncio.Future[Any]] = []
        topic = ""
        try:
            for record in records:
                topic = record.topic
                sent = await producer.send(
                    record.topic, record.value, record.key, headers=list(record.headers)
                )
                futures.append(sent)
        except KafkaError as exc:
            raise self._failed(topic, exc) from exc
        return self._all_delivered(records, futures)

    async def publish(self, records: Sequence[Record]) -> None:
        """Send ``records`` and wait until Kafka acknowledged each one (unbounded wait)."""
        await (await self.send(records))

    def _all_delivered(
        self, records: Sequence[Record], futures: list[asyncio.Future[Any]]
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        remaining = len(futures)
        if not remaining:
            done.set_result(None)
            return done

        def settle(fut: asyncio.Future[Any], *, record: Record) -> None:
            nonlocal remaining
            if done.done():
                return
            exc = None if fut.cancelled() else fut.exception()
            if fut.cancelled() or exc is not None:
                failure = self._failed(record.topic, exc, size=record.size)
                failure.__cause__ = exc
                done.set_exception(failure)
                return
            remaining -= 1
            if remaining == 0:
                done.set_result(None)

        for record, fut in zip(records, futures, strict=True):
            fut.add_done_callback(functools.partial(settle, record=record))
        return done

    def _failed(
        self, topic: str, exc: BaseException | None, *, size: int = 0
    ) -> PublishFailed | RecordTooLarge:
        if self._on_error is not None:
            self._on_error(topic)
        if isinstance(exc, _TOO_LARGE):
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
        return PublishFailed(f"Kafka did not acknowledge a record on {topic} ({name})")

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
