"""Helpers for the ingest tests (MLLP, pipeline, file-drop, HTTP) on a real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

import schemas
from carebus import broker
from carebus.kafka import kafka_python_config
from carebus.settings import BrokerSettings, KafkaSettings, Settings, TopicSettings
from carebus.topics import TopicNames, apply, declared_topics
from schemas.codec import decode


def adt(
    control_id: str,
    *,
    facility: str = "RXA01",
    nhs_number: str = "9434765919",
    trigger: str = "A01",
    ack_modes: tuple[str, str] = ("", ""),
) -> bytes:
    """A small ADT message the translator accepts (synthetic, test data only)."""
    accept, app = ack_modes
    return (
        f"MSH|^~\\&|PAS|{facility}|CAREBUS|REGION|20260301093000||ADT^{trigger}^ADT_A01|"
        f"{control_id}|P|2.5.1|||{accept}|{app}\r"
        f"EVN|{trigger}|20260301093000\r"
        f"PID|1||{nhs_number}^^^NHS^NH~M123^^^{facility}^MR||TEST^PATIENT||19700101|F\r"
        f"PV1|1|I|WARD1^^^{facility}||||||||||||||||V{control_id}\r"
    ).encode()


async def start_throwaway(
    home: BrokerSettings, prefix: str, **sections: Any
) -> tuple[Settings, TopicNames]:
    """Start the ``throwaway_broker`` ``home`` with fresh data; settings for it (5 s
    requests, one partition a topic, ``sections`` besides) and its ingest topics."""
    await asyncio.to_thread(broker.start, home, reset=True)
    settings = Settings(
        broker=home,
        kafka=KafkaSettings(request_timeout_s=5.0),
        topics=TopicSettings(prefix=f"{prefix}-{uuid.uuid4().hex[:8]}", partitions=1),
        **sections,
    )
    return settings, create_ingest_topics(settings)


def create_ingest_topics(settings: Settings) -> TopicNames:
    """Create the raw, events and dead-letter topics of the settings' prefix."""
    names = TopicNames.from_settings(settings.topics)
    wanted = {names.raw, names.events, names.deadletter}
    apply(settings, [s for s in declared_topics(settings.topics) if s.name in wanted])
    return names


@dataclass(frozen=True)
class Rec:
    """A record read back from Kafka."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, bytes]
    partition: int = -1
    offset: int = -1

    @property
    def is_feed(self) -> bool:
        """A feed record (a watermark), not an event: its schema is in FEED_SCHEMAS."""
        schema = self.headers.get("carebus-schema", b"").decode("ascii", "replace")
        return schema in schemas.FEED_SCHEMAS


class TopicReader:
    """Reads whole topics from the beginning (every partition)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = KafkaConsumer(
            **kafka_python_config(settings), enable_auto_commit=False, group_id=None
        )

    def close(self) -> None:
        self._consumer.close()

    def end_offsets(self, topic: str) -> int:
        """How many records the topic holds now (high watermarks summed, one request)."""
        parts = self._partitions(topic)
        return sum(self._consumer.end_offsets(parts).values())

    def read(self, topic: str, timeout_s: float = 10.0) -> list[Rec]:
        """Every record the topic holds now."""
        parts = self._partitions(topic)
        ends = self._consumer.end_offsets(parts)
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        out: list[Rec] = []
        want = sum(ends.values())
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            batch = self._consumer.poll(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    headers = {k: v for k, v in (r.headers or [])}
                    out.append(Rec(r.topic, r.key, r.value, headers, r.partition, r.offset))
        return out

    def events(self, topic: str) -> list[tuple[str, dict[str, object]]]:
        """The decoded events on an events topic (feed watermarks skipped)."""
        return [decode(r.value) for r in self.read(topic) if not r.is_feed]

    def event_count(self, topic: str) -> int:
        """How many events the events topic holds now (feed watermarks not counted)."""
        return sum(not r.is_feed for r in self.read(topic))

    def _partitions(self, topic: str) -> list[TopicPartition]:
        found = self._consumer.partitions_for_topic(topic)
        assert found, f"topic {topic} does not exist"
        return [TopicPartition(topic, p) for p in sorted(found)]
