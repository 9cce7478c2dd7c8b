"""Tests for connectors/partition.py: Kafka's default partitioning of keyed records."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition

from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from connectors.partition import MEMO_SIZE, murmur2, partition_for
from connectors.publish import Publisher, Record


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class TestMurmur2:
    @pytest.mark.parametrize(
        ("key", "java"),
        [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ],
    )
    def test_matches_the_java_client(self, key: bytes, java: int) -> None:
        """The hash is the one Kafka's Java client computes (its own test vectors)."""
        assert _signed(murmur2(key)) == java

    @given(st.binary(max_size=200))
    def test_matches_aiokafka_for_any_bytes(self, key: bytes) -> None:
        """Every key, of every length and byte value, hashes as aiokafka's murmur2 does."""
        assert murmur2(key) == aiokafka_murmur2(key)


class TestPartitionFor:
    @given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
    def test_keyed_records_go_where_aiokafka_sends_them(self, key: bytes, count: int) -> None:
        """A keyed record gets the partition aiokafka's default partitioner gives it."""
        partitions = list(range(count))
        assert partition_for(key, count) == DefaultPartitioner()(key, partitions, partitions)

    def test_remembered_keys_keep_their_partition(self) -> None:
        """A key seen before, and keys after the memo was full, keep their partitions."""
        keys = [f"patient-{n}".encode() for n in range(MEMO_SIZE + 10)]
        first = [partition_for(key, 6) for key in keys]
        again = [partition_for(key, 6) for key in keys]
        assert first == again
        assert first == [(murmur2(k) & 0x7FFFFFFF) % 6 for k in keys]


@pytest.mark.integration
class TestOnTheBroker:
    async def test_each_key_lands_on_its_murmur2_partition(
        self, ingest_settings: Settings, topics: TopicNames
    ) -> None:
        """Published keyed records are on the partition Kafka's default assignment names."""
        keys = [f"943476{n:04d}".encode() for n in range(60)]
        pub = Publisher(ingest_settings)
        await pub.start([topics.events])
        try:
            await pub.publish([Record(topics.events, key, b"v") for key in keys])
        finally:
            await pub.stop()
        consumer = KafkaConsumer(**kafka_python_config(ingest_settings), group_id=None)
        try:
            count = len(consumer.partitions_for_topic(topics.events) or ())
            parts = [TopicPartition(topics.events, p) for p in range(count)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            found: dict[bytes, int] = {}
            for _ in range(40):
                for tp, records in consumer.poll(timeout_ms=500).items():
                    found.update({r.key: tp.partition for r in records})
                if len(found) == len(keys):
                    break
        finally:
            consumer.close()
        assert count > 1
        assert found == {key: (murmur2(key) & 0x7FFFFFFF) % count for key in keys}
