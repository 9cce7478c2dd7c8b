"""Helpers for carebus tests that write records to a real broker."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames

Headers = list[tuple[str, bytes]]


def create_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create ``names`` with the settings' partition count (they must not exist)."""
    names = list(names)
    admin = KafkaAdminClient(**kafka_python_config(settings))
    try:
        admin.create_topics(
            [
                NewTopic(n, settings.topics.partitions, settings.topics.replication_factor)
                for n in names
            ]
        )
        # Creation is acknowledged by the controller; wait until metadata shows it.
        deadline = time.monotonic() + 30
        while not set(names) <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after creation: {names}")
            time.sleep(0.1)
    finally:
        admin.close()


def create_carebus_topics(settings: Settings) -> TopicNames:
    """Create the raw, dead-letter, alerts and ops topics of the settings' prefix."""
    names = TopicNames.from_settings(settings.topics)
    create_topics(settings, [names.raw, names.deadletter, names.alerts, names.ops])
    return names


def raw_headers(sender: str, received: datetime, control_id: str) -> Headers:
    """The headers the listener writes on a raw record (docs/architecture.md, Topics)."""
    return [
        ("carebus-sender", sender.encode()),
        ("carebus-peer", b"127.0.0.1:40000"),
        ("carebus-received-time", received.isoformat().encode()),
        ("carebus-control-id", control_id.encode()),
        ("carebus-raw-sha256", b"0" * 64),
        ("carebus-source", b"mllp"),
    ]


def deadletter_headers(sender: str, received: datetime, control_id: str, reason: str) -> Headers:
    """Raw headers plus the dead-letter reason and detail."""
    return [
        *raw_headers(sender, received, control_id),
        ("carebus-reason", reason.encode()),
        ("carebus-detail", b"test detail"),
    ]


def produce(settings: Settings, records: Sequence[tuple[str, bytes, bytes, Headers]]) -> None:
    """Write ``(topic, key, value, headers)`` records and wait until all are acknowledged."""
    producer = KafkaProducer(**kafka_python_config(settings), acks="all")
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value, headers in records
        ]
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close()
