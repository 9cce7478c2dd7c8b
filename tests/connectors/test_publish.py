"""Tests for connectors/publish.py: the idempotent acks=all producer wrapper."""

from __future__ import annotations

import socket

import pytest

from carebus.errors import KafkaUnavailable, PublishFailed
from carebus.settings import KafkaSettings, Settings
from carebus.topics import TopicNames
from connectors.publish import Publisher, Record
from tests.connectors.ingest_helpers import TopicReader


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
