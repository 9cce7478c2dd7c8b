"""In-memory stand-ins for the alert publisher's Kafka clients (unit tests only).

Integration tests (tests/streams/integration/) use a real broker instead.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka.errors import KafkaConnectionError, ProducerFenced

from streams.delivery import dedup_key_of

Record = tuple[int | None, bytes | None, bytes, list[tuple[str, bytes]]]


class FakeKafka:
    """Committed records per topic, transactional ids with epochs (for fencing)."""

    def __init__(self) -> None:
        self.log: dict[str, list[Record]] = defaultdict(list)
        self.epochs: dict[str, int] = {}
        self.fail_commits = 0
        self.started: list[str] = []

    async def producer(self, transactional_id: str | None) -> FakeProducer:
        if transactional_id is None:
            return FakeProducer(self, None, 0)
        self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1
        self.started.append(transactional_id)
        return FakeProducer(self, transactional_id, self.epochs[transactional_id])

    async def published_keys(self, topic: str, partition: int) -> set[str]:
        keys = {dedup_key_of(v, h) for p, _, v, h in self.log[topic] if p == partition}
        return {k for k in keys if k is not None}

    async def topic_for(self, provider: str) -> str | None:
        return None if " " in provider else f"t.alerts.provider.{provider}"

    def dedup_keys(self, topic: str) -> list[str | None]:
        return [dedup_key_of(v, h) for _, _, v, h in self.log[topic]]


class FakeProducer:
    def __init__(self, kafka: FakeKafka, transactional_id: str | None, epoch: int) -> None:
        self.kafka, self.id, self.epoch = kafka, transactional_id, epoch
        self.buffer: list[tuple[str, Record]] = []

    def _check(self) -> None:
        if self.id is not None and self.kafka.epochs[self.id] != self.epoch:
            raise ProducerFenced()

    async def begin_transaction(self) -> None:
        self._check()
        self.buffer = []

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        self._check()
        record = (partition, key, value, list(headers or []))
        if self.id is None:
            self.kafka.log[topic].append(record)
        else:
            self.buffer.append((topic, record))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def commit_transaction(self) -> None:
        self._check()
        if self.kafka.fail_commits:
            self.kafka.fail_commits -= 1
            raise KafkaConnectionError()
        for topic, record in self.buffer:
            self.kafka.log[topic].append(record)

    async def stop(self) -> None:
        pass
