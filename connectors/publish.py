"""Durable publishing: an idempotent, acks=all aiokafka producer behind a small API.

:meth:`Publisher.publish` enqueues records in order and returns only when Kafka has
acknowledged every one of them (acks=all). Many concurrent callers share producer
batches (``linger_ms``), so throughput comes from concurrency, not from giving up
durability. aiokafka errors are translated here, at the boundary:
:class:`~carebus.errors.KafkaUnavailable` when the producer cannot start,
:class:`~carebus.errors.PublishFailed` when a record was not acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from carebus.errors import KafkaUnavailable, PublishFailed
from carebus.kafka import aiokafka_config
from carebus.log import get_logger
from carebus.settings import Settings

log = get_logger(__name__)

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers = ()


class Publisher:
    """An idempotent acks=all producer; start it, publish, stop it."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_error: Callable[[str], None] | None = None,
        max_request_bytes: int = 2 * 1_048_576,
    ) -> None:
        self._settings = settings
        self._on_error = on_error
        self._max_request_bytes = max_request_bytes
        self._producer: AIOKafkaProducer | None = None

    def producer_config(self) -> dict[str, Any]:
        """The aiokafka producer keyword arguments (idempotent, acks=all, small linger)."""
        return {
            **aiokafka_config(self._settings),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self._settings.kafka.producer_linger_ms,
            "max_batch_size": 256 * 1024,
            "max_request_size": self._max_request_bytes,
        }

    async def start(self, topics: Sequence[str] = (), *, timeout_s: float = 15.0) -> None:
        """Connect to Kafka and learn where ``topics`` live (so that they must exist).

        :class:`KafkaUnavailable` when Kafka cannot be reached or a topic is missing.
        """
        producer = AIOKafkaProducer(**self.producer_config())
        servers = self._settings.bootstrap_servers
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _quietly_stop(producer, 1.0)
            raise KafkaUnavailable(f"cannot connect a producer to {servers}") from exc
        for topic in topics:
            try:
                await asyncio.wait_for(producer.partitions_for(topic), timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                await _quietly_stop(producer, 1.0)
                raise KafkaUnavailable(
                    f"topic {topic} is not available at {servers} (run 'carebus topics')"
                ) from exc
        self._producer = producer

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending (up to ``timeout_s``) and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, timeout_s)

    async def publish(self, records: Sequence[Record]) -> None:
        """Enqueue ``records`` in order and wait until Kafka acknowledged each one.

        Raises :class:`PublishFailed` when any record was not acknowledged. Callers
        bound the wait themselves; a record may still be delivered after they stop
        waiting (the idempotent producer retries until it succeeds).
        """
        producer = self._producer
        if producer is None:
            raise PublishFailed("the producer is not running")
        futures = []
        topic = ""
        try:
            for record in records:
                topic = record.topic
                futures.append(
                    await producer.send(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=list(record.headers),
                    )
                )
            for record, fut in zip(records, futures, strict=False):
                topic = record.topic
                await fut
        except KafkaError as exc:
            if self._on_error is not None:
                self._on_error(topic)
            raise PublishFailed(
                f"Kafka did not acknowledge a record on {topic} ({type(exc).__name__})"
            ) from exc


async def _quietly_stop(producer: AIOKafkaProducer, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except TimeoutError:
        log.warning("producer stop timed out; unacknowledged records were dropped")
    except (KafkaError, OSError) as exc:
        log.warning("producer stop failed", error=type(exc).__name__)
