"""The live clock on a real broker: a feed's watermark holds deadlines back, not the wall clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

import schemas.codec
from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.app import control_topic_name
from streams.control import partition_for
from tests.streams.integration.live import (
    Workers,
    example_events,
    producer,
    read_topic,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

PATIENT = "9434797373"  # E1: discharged to a hospice 2026-02-12 11:00, handoff due 02-13 11:00
PARTITIONS = 2


@pytest.fixture
def workers(kafka: Settings, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Workers]:
    settings = worker_settings(kafka, unique_topic_prefix, tmp_path / "data")
    w = Workers(settings, tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


def watermark(provider: str, event_time: datetime, received: datetime) -> bytes:
    return schemas.codec.encode(
        "carebus.events.FeedWatermark",
        {
            "provider": provider,
            "source": "test-listener:1",
            "event_time": event_time,
            "last_received": received,
            "emitted_at": received,
        },
    )


def send_watermark(s: Settings, provider: str, event_time: datetime, received: datetime) -> None:
    """One FeedWatermark to every partition of the events topic, as the ingest side does."""
    topic = TopicNames.from_settings(s.topics).events
    p = producer(s)
    try:
        for partition in range(PARTITIONS):
            p.send(
                topic,
                key=provider.encode(),
                value=watermark(provider, event_time, received),
                partition=partition,
                headers=[("carebus-schema", b"carebus.events.FeedWatermark")],
            )
        p.flush(30)
    finally:
        p.close()


def send_events(s: Settings, events: list[tuple[str, bytes]]) -> None:
    topic = TopicNames.from_settings(s.topics).events
    p = producer(s)
    try:
        for key, value in events:
            p.send(topic, key=key.encode(), value=value)
        p.flush(30)
    finally:
        p.close()


def committed(admin: KafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    try:
        offsets = admin.list_group_offsets([group]).get(group, {})
    except KafkaError as exc:  # the group's coordinator is still starting
        if not exc.retriable:
            raise
        return {}
    return {tp: meta.offset for tp, meta in offsets.items()}


def ends(s: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**kafka_python_config(s), group_id=None)
    try:
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def wait_until_ticked(s: Settings, ticks: int, timeout_s: float = 120) -> None:
    """Wait until the worker committed the whole events partition of the patient, and then
    at least ``ticks`` more records of its control partition (its ticks) after that."""
    group = s.worker.app_id
    partition = partition_for(PATIENT, PARTITIONS)
    events = TopicPartition(TopicNames.from_settings(s.topics).events, partition)
    control = TopicPartition(control_topic_name(s), partition)
    admin = KafkaAdminClient(**kafka_python_config(s))
    try:
        deadline = time.monotonic() + timeout_s
        target = ends(s, [events])[events]
        while committed(admin, group).get(events, -1) < target:
            assert time.monotonic() < deadline, "the worker never committed the events"
            time.sleep(0.2)
        after = committed(admin, group).get(control, 0) + ticks
        while committed(admin, group).get(control, -1) < after:
            assert time.monotonic() < deadline, "the worker never ticked"
            time.sleep(0.2)
    finally:
        admin.close()


def ops_notes(s: Settings) -> list[dict[str, object]]:
    topic = TopicNames.from_settings(s.topics).ops
    consumer = KafkaConsumer(**kafka_python_config(s), group_id=None, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last = consumer.end_offsets(tps)
        notes: list[dict[str, object]] = []
        while any(consumer.position(tp) < last[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                notes += [json.loads(r.value) for r in records]
        return notes
    finally:
        consumer.close()


class TestLiveClockOnTheBroker:
    def test_a_watermark_behind_the_deadline_holds_it_until_it_passes(
        self, workers: Workers
    ) -> None:
        """Deadline long past by the wall clock, hospice watermark behind it: no alert after
        several ticks (an ops note instead); the watermark passes it: the alert, at the
        deadline."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        # A source clock ahead keeps the hospice "sending" (not idle) for the whole test,
        # however slow the machine.
        received = datetime.now(UTC) + timedelta(hours=1)
        behind = datetime(2026, 2, 13, 8, 0, tzinfo=UTC)
        send_watermark(s, "HSP01", behind, received)
        send_events(s, example_events("E1-hospice-handoff-missed"))
        workers.start(tick_interval_s=0.2, clock_behind_alert_s=60)
        wait_until_ticked(s, ticks=5)
        assert read_topic(s, names.alerts) == []
        notes = wait_for_notes(s)
        assert [(n["kind"], n["provider"]) for n in notes] == [("clock-held-back", "HSP01")]

        send_watermark(s, "HSP01", datetime(2026, 2, 13, 11, 1, tzinfo=UTC), received)
        alerts = wait_for(s, names.alerts, lambda rs: len(rs) >= 1, timeout_s=120)
        assert [a.record["rule"] for a in alerts] == ["hospice-handoff-missed"]
        assert alerts[0].record["patient"] == PATIENT
        assert alerts[0].record["raised_at"] == datetime(2026, 2, 13, 11, 0, tzinfo=UTC)


def wait_for_notes(s: Settings, timeout_s: float = 60) -> list[dict[str, object]]:
    """The ops notes once there is one (the worker reports at its ticks)."""
    deadline = time.monotonic() + timeout_s
    while not (notes := ops_notes(s)):
        assert time.monotonic() < deadline, "no ops note"
        time.sleep(0.2)
    return notes
