"""Tests for carebus.topics: the declarations and making a cluster match them."""

from __future__ import annotations

import dataclasses
import socket
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from carebus.admin import admin_client
from carebus.errors import ConfigError, KafkaUnavailable
from carebus.kafka import kafka_python_config
from carebus.settings import KafkaSettings, MllpSettings, Settings, TopicSettings
from carebus.topics import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    LONG_RETENTION_MS,
    RECORD_OVERHEAD_BYTES,
    TopicNames,
    TopicSpec,
    apply,
    compare,
    declared_topics,
    ensure,
    provider_alert_topic,
)


class TestDeclarations:
    def test_every_named_topic_is_declared_once(self) -> None:
        """The declarations cover raw, events, dead letters, alerts, status, ops, engine errors."""
        settings = TopicSettings(prefix="x")
        names = TopicNames.from_settings(settings)
        declared = [s.name for s in declared_topics(settings)]
        assert sorted(declared) == sorted(
            [
                names.raw,
                names.events,
                names.deadletter,
                names.alerts,
                names.alert_status,
                names.ops,
                names.engine_errors,
            ]
        )
        assert len(set(declared)) == len(declared)

    def test_sizing_comes_from_settings(self) -> None:
        """Partitions, replication and min ISR are the configured ones for every topic."""
        settings = TopicSettings(partitions=9, replication_factor=3, min_insync_replicas=2)
        for spec in declared_topics(settings):
            assert spec.partitions == 9
            assert spec.replication_factor == 3
            assert spec.configs["min.insync.replicas"] == "2"

    def test_alert_status_is_compacted_and_archives_keep_long(self) -> None:
        """Alert status is compacted; the raw archive and dead letters keep long retention."""
        names = TopicNames()
        specs = {s.name: s for s in declared_topics(TopicSettings())}
        assert specs[names.alert_status].configs["cleanup.policy"] == "compact"
        errors = specs[names.engine_errors].configs
        assert errors["cleanup.policy"] == "delete"
        assert errors["retention.ms"] == str(LONG_RETENTION_MS)
        assert "retention.ms" not in specs[names.alert_status].configs
        for name in (names.raw, names.deadletter, names.alerts):
            assert specs[name].configs["cleanup.policy"] == "delete"
            assert specs[name].configs["retention.ms"] == str(LONG_RETENTION_MS)

    def test_provider_alert_topic_is_named_for_the_provider(self) -> None:
        """A provider's alert topic is the per-provider name, sized like the others."""
        spec = provider_alert_topic(TopicSettings(prefix="p", partitions=4), "RJE")
        assert spec.name == "p.alerts.provider.RJE"
        assert spec.partitions == 4

    def test_archives_take_the_largest_frame_and_events_keep_the_default(self) -> None:
        """Raw and dead-letter topics allow a max-size frame plus 64 KiB; others set no limit."""
        names = TopicNames()
        specs = {s.name: s for s in declared_topics(TopicSettings(), max_frame_bytes=4_000_000)}
        for name in (names.raw, names.deadletter):
            assert specs[name].configs["max.message.bytes"] == str(4_000_000 + 65_536)
        for name in (names.events, names.alerts, names.alert_status, names.ops):
            assert "max.message.bytes" not in specs[name].configs

    def test_archive_limit_defaults_to_the_listener_frame_limit(self) -> None:
        """Without a frame limit given, the archive limit follows MllpSettings' default."""
        raw = declared_topics(TopicSettings())[0]
        assert raw.max_message_bytes == MllpSettings().max_frame_bytes + RECORD_OVERHEAD_BYTES

    def test_archive_limit_never_falls_below_kafkas_default(self) -> None:
        """A small frame limit does not make the archives stricter than Kafka's default."""
        raw = declared_topics(TopicSettings(), max_frame_bytes=1024)[0]
        assert raw.max_message_bytes == KAFKA_DEFAULT_MAX_MESSAGE_BYTES

    @pytest.mark.parametrize("code", ["", "A B", "X/Y", "ÄB", "X" * 300])
    def test_provider_codes_unfit_for_topic_names_are_rejected(self, code: str) -> None:
        """A provider code that cannot appear in a topic name raises ConfigError."""
        with pytest.raises(ConfigError):
            provider_alert_topic(TopicSettings(), code)


SPEC = TopicSpec("t", partitions=6, replication_factor=1, retention_ms=1000)
MATCHING = {"cleanup.policy": "delete", "min.insync.replicas": "1", "retention.ms": "1000"}


class TestCompare:
    def test_matching_topic_has_no_drift(self) -> None:
        """A topic equal to its declaration reports nothing."""
        assert compare(SPEC, 6, 1, MATCHING) == []

    def test_too_few_partitions_is_fixable(self) -> None:
        """Fewer partitions than declared is drift that adding partitions can fix."""
        (drift,) = compare(SPEC, 3, 1, MATCHING)
        assert (drift.setting, drift.actual, drift.declared, drift.fixable) == (
            "partitions",
            "3",
            "6",
            True,
        )

    def test_too_many_partitions_is_not_fixable(self) -> None:
        """More partitions than declared cannot be fixed: Kafka never removes partitions."""
        (drift,) = compare(SPEC, 8, 1, MATCHING)
        assert drift.setting == "partitions"
        assert drift.fixable is False

    def test_replication_difference_is_not_fixable(self) -> None:
        """A different replication factor is reported as drift apply does not fix."""
        (drift,) = compare(SPEC, 6, 3, MATCHING)
        assert (drift.setting, drift.fixable) == ("replication", False)

    def test_config_value_difference_is_fixable(self) -> None:
        """A config value other than declared is fixable drift naming the key."""
        (drift,) = compare(SPEC, 6, 1, {**MATCHING, "retention.ms": "5"})
        assert (drift.setting, drift.actual, drift.declared, drift.fixable) == (
            "retention.ms",
            "5",
            "1000",
            True,
        )

    def test_record_limit_at_the_broker_default_is_fixable_drift(self) -> None:
        """A topic still at Kafka's default max.message.bytes is drift that apply can fix."""
        spec = dataclasses.replace(SPEC, max_message_bytes=2_000_000)
        (drift,) = compare(spec, 6, 1, {**MATCHING, "max.message.bytes": "1048588"})
        assert (drift.setting, drift.actual, drift.declared, drift.fixable) == (
            "max.message.bytes",
            "1048588",
            "2000000",
            True,
        )
        assert compare(spec, 6, 1, {**MATCHING, "max.message.bytes": "2000000"}) == []

    def test_cleanup_policy_order_does_not_matter(self) -> None:
        """'compact,delete' and 'delete,compact' are the same policy."""
        spec = dataclasses.replace(SPEC, cleanup_policy="compact")
        have = {**MATCHING, "cleanup.policy": "compact"}
        assert compare(spec, 6, 1, have) == []
        assert compare(spec, 6, 1, {**have, "cleanup.policy": "delete"}) != []


class TestApplyWithoutBroker:
    def test_unreachable_cluster_raises_kafka_unavailable(self) -> None:
        """When no broker answers, apply raises KafkaUnavailable (retriable)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_s=1.0)
        )
        with pytest.raises(KafkaUnavailable) as info:
            apply(settings)
        assert info.value.retriable is True


def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    with admin_client(settings) as admin:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}


@pytest.mark.integration
class TestApply:
    def test_creates_missing_topics_then_reports_ok(self, kafka_isolated: Settings) -> None:
        """The first apply creates every declared topic; the second finds them all ok."""
        first = apply(kafka_isolated)
        assert [r.status for r in first] == ["created"] * 7
        second = apply(kafka_isolated)
        assert [r.status for r in second] == ["ok"] * 7
        names = [r.name for r in second]
        assert partition_counts(kafka_isolated, names) == dict.fromkeys(names, 2)

    def test_created_topics_carry_declared_configs(self, kafka_isolated: Settings) -> None:
        """A created topic has the declared cleanup policy on the broker."""
        apply(kafka_isolated)
        from kafka.admin import ConfigResource, ConfigResourceType

        status = TopicNames.from_settings(kafka_isolated.topics).alert_status
        with admin_client(kafka_isolated) as admin:
            resource = ConfigResource(ConfigResourceType.TOPIC, status, {"cleanup.policy": None})
            configs = admin.describe_configs([resource], config_filter="all")
        assert configs["topic"][status]["cleanup.policy"]["value"] == "compact"

    def test_partition_count_difference_is_drift(self, kafka_isolated: Settings) -> None:
        """A topic with other partitions than declared is reported as drift, both ways."""
        apply(kafka_isolated)
        more = kafka_isolated.replace(
            topics=dataclasses.replace(kafka_isolated.topics, partitions=3)
        )
        fewer = kafka_isolated.replace(
            topics=dataclasses.replace(kafka_isolated.topics, partitions=1)
        )
        for settings, fixable in ((more, True), (fewer, False)):
            reports = apply(settings)
            assert {r.status for r in reports} == {"drift"}
            for report in reports:
                (drift,) = report.drift
                assert drift.setting == "partitions"
                assert drift.actual == "2"
                assert drift.fixable is fixable

    def test_fix_adds_partitions_and_sets_configs(self, kafka_isolated: Settings) -> None:
        """With fix, missing partitions are added and config values set; then all is ok."""
        name = f"{kafka_isolated.topics.prefix}.fixme"
        spec = TopicSpec(name, partitions=1, replication_factor=1, retention_ms=60_000)
        assert [r.status for r in apply(kafka_isolated, [spec])] == ["created"]
        wanted = dataclasses.replace(spec, partitions=2, retention_ms=120_000)
        (report,) = apply(kafka_isolated, [wanted], fix=True)
        assert report.status == "fixed"
        assert {d.setting for d in report.fixed} == {"partitions", "retention.ms"}
        assert [r.status for r in apply(kafka_isolated, [wanted])] == ["ok"]
        assert partition_counts(kafka_isolated, [name]) == {name: 2}

    def test_fix_leaves_unfixable_drift_reported(self, kafka_isolated: Settings) -> None:
        """With fix, more partitions than declared stays drift (it cannot be repaired)."""
        name = f"{kafka_isolated.topics.prefix}.wide"
        apply(kafka_isolated, [TopicSpec(name, partitions=2, replication_factor=1)])
        (report,) = apply(kafka_isolated, [TopicSpec(name, 1, 1)], fix=True)
        assert report.status == "drift"
        assert [d.setting for d in report.drift] == ["partitions"]

    def test_ensure_creates_a_provider_topic(self, kafka_isolated: Settings) -> None:
        """ensure creates a per-provider alert topic on demand, and is idempotent."""
        spec = provider_alert_topic(kafka_isolated.topics, "RJE")
        assert [r.status for r in ensure(kafka_isolated, [spec])] == ["created"]
        assert [r.status for r in ensure(kafka_isolated, [spec])] == ["ok"]

    def test_impossible_replication_factor_is_a_config_error(
        self, kafka_isolated: Settings
    ) -> None:
        """Asking for more replicas than brokers raises ConfigError naming the topic."""
        name = f"{kafka_isolated.topics.prefix}.toomany"
        with pytest.raises(ConfigError) as info:
            apply(kafka_isolated, [TopicSpec(name, partitions=1, replication_factor=99)])
        assert name in str(info.value)


@pytest.mark.integration
class TestProduceConsume:
    def test_record_round_trips_through_the_events_topic(self, kafka_isolated: Settings) -> None:
        """A keyed record produced to the declared events topic is consumed back intact."""
        apply(kafka_isolated)
        topic = TopicNames.from_settings(kafka_isolated.topics).events
        cfg = kafka_python_config(kafka_isolated)
        value = uuid.uuid4().bytes
        producer = KafkaProducer(acks="all", **cfg)
        try:
            meta = producer.send(
                topic, key=b"9434765919", value=value, headers=[("carebus-schema", b"x")]
            ).get(timeout=30)
        finally:
            producer.close()
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **cfg)
        try:
            tp = TopicPartition(topic, meta.partition)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            records = []
            for _ in range(40):
                records = consumer.poll(timeout_ms=500).get(tp, [])
                if records:
                    break
        finally:
            consumer.close()
        assert records, "the produced record was not consumed"
        assert (records[0].key, records[0].value) == (b"9434765919", value)
        assert records[0].headers == [("carebus-schema", b"x")]


def topic_config(settings: Settings, topic: str, key: str) -> str:
    from kafka.admin import ConfigResource, ConfigResourceType

    with admin_client(settings) as admin:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})
        configs = admin.describe_configs([resource], config_filter="all")
    return str(configs["topic"][topic][key]["value"])


def with_frame_limit(settings: Settings, max_frame_bytes: int) -> Settings:
    return settings.replace(mllp=MllpSettings(max_frame_bytes=max_frame_bytes))


@pytest.mark.integration
class TestArchiveRecordLimit:
    def test_created_archives_carry_the_limit_and_drift_is_reported(
        self, kafka_isolated: Settings
    ) -> None:
        """apply sizes raw and dead-letter topics from mllp.max_frame_bytes and reports drift."""
        names = TopicNames.from_settings(kafka_isolated.topics)
        apply(with_frame_limit(kafka_isolated, 2_000_000))
        for topic in (names.raw, names.deadletter):
            assert topic_config(kafka_isolated, topic, "max.message.bytes") == "2065536"
        assert topic_config(kafka_isolated, names.events, "max.message.bytes") == str(
            KAFKA_DEFAULT_MAX_MESSAGE_BYTES
        )
        bigger = with_frame_limit(kafka_isolated, 3_000_000)
        drifted = {r.name: r for r in apply(bigger) if r.status != "ok"}
        assert set(drifted) == {names.raw, names.deadletter}
        for report in drifted.values():
            assert [str(d) for d in report.drift] == [
                "max.message.bytes is 2065536, declared 3065536"
            ]
        fixed = [r for r in apply(bigger, fix=True) if r.status == "fixed"]
        assert sorted(r.name for r in fixed) == sorted([names.raw, names.deadletter])
        assert {r.status for r in apply(bigger)} == {"ok"}
        assert topic_config(kafka_isolated, names.raw, "max.message.bytes") == "3065536"

    async def test_a_max_size_frame_lands_on_the_raw_topic(self, kafka_isolated: Settings) -> None:
        """A 1 MiB message with the archive headers is stored on raw, but too big for events."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import MessageSizeTooLargeError

        from carebus.kafka import aiokafka_config
        from tests.connectors.ingest_helpers import TopicReader

        apply(kafka_isolated)
        names = TopicNames.from_settings(kafka_isolated.topics)
        value = uuid.uuid4().bytes * (MllpSettings().max_frame_bytes // 16)
        headers = [
            ("carebus-sender", b"RXA01"),
            ("carebus-peer", b"127.0.0.1:50000;cn=" + b"e" * 200),
            ("carebus-received-time", b"2026-03-01T09:30:00.000000+00:00"),
            ("carebus-control-id", b"C" * 199),
            ("carebus-raw-sha256", b"0" * 64),
            ("carebus-source", b"mllp"),
        ]
        producer = AIOKafkaProducer(
            **aiokafka_config(kafka_isolated),
            acks="all",
            enable_idempotence=True,
            max_request_size=2 * 1_048_576,
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait(
                names.raw, value, key=b"RXA01|" + b"C" * 199, headers=headers
            )
            with pytest.raises(MessageSizeTooLargeError):
                await producer.send_and_wait(names.events, value, key=b"9434765919")
        finally:
            await producer.stop()
        reader = TopicReader(kafka_isolated)
        try:
            [record] = reader.read(names.raw)
        finally:
            reader.close()
        assert meta.topic == names.raw
        assert record.value == value
        assert record.headers["carebus-source"] == b"mllp"
