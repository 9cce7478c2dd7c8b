"""Tests for carebus.durability: no start on topics an AA would not make durable."""

from __future__ import annotations

import dataclasses
import os

import pytest

from carebus.durability import (
    DECLARED,
    DurabilityGate,
    TopicDurability,
    assess,
    is_local_broker,
    observe,
    require_durable,
)
from carebus.errors import ConfigError
from carebus.settings import BrokerSettings, KafkaSettings, Settings, TopicSettings
from carebus.topics import TopicSpec, ensure


def topic(rf: int, isr: int, name: str = "t") -> TopicDurability:
    return TopicDurability(name, rf, isr)


class TestAssess:
    @pytest.mark.parametrize(
        ("topics", "local", "allow", "verdict"),
        [
            ([topic(3, 2)], False, False, "durable"),
            ([topic(5, 3), topic(3, 2)], False, False, "durable"),
            ([topic(1, 1)], True, False, "local"),
            ([topic(3, 2)], True, False, "local"),
            ([topic(1, 1)], False, False, "refused"),
            ([topic(2, 2)], False, False, "refused"),
            ([topic(3, 1)], False, False, "refused"),
            ([topic(3, 2), topic(3, 1)], False, False, "refused"),
            ([topic(1, 1)], False, True, "allowed"),
            ([topic(3, 1)], False, True, "allowed"),
            ([topic(3, 2)], False, True, "durable"),
            ([], False, False, "durable"),
        ],
    )
    def test_verdict_table(
        self, topics: list[TopicDurability], local: bool, allow: bool, verdict: str
    ) -> None:
        """RF >= 3 and min ISR >= 2 start; less refuses unless allowed; local always starts."""
        decision = assess(topics, local=local, allow_low_durability=allow)
        assert decision.verdict == verdict
        assert decision.starts == (verdict != "refused")

    def test_weak_topics_are_named_with_their_shortfall(self) -> None:
        """Each topic that falls short is named with what falls short."""
        decision = assess(
            [topic(1, 1, "a"), topic(3, 2, "b"), topic(3, 1, "c")],
            local=False,
            allow_low_durability=False,
        )
        assert decision.weak == (
            "a: replication factor 1 < 3",
            "a: min.insync.replicas 1 < 2",
            "c: min.insync.replicas 1 < 2",
        )

    def test_allowed_detail_says_low_durability_and_why(self) -> None:
        """The detail /readyz shows for allowed low durability names the setting."""
        detail = assess([topic(1, 1)], local=False, allow_low_durability=True).detail
        assert detail.startswith("LOW DURABILITY allowed by topics.allow_low_durability")
        assert "replication factor 1 < 3" in detail

    def test_long_lists_are_cut_to_one_short_line(self) -> None:
        """Many weak topics give three examples and a count."""
        weak = [topic(1, 2, f"t{i}") for i in range(10)]
        detail = assess(weak, local=False, allow_low_durability=False).detail
        assert detail.endswith("; and 7 more")


class TestLocalBroker:
    @pytest.mark.parametrize(
        ("servers", "host", "port", "local"),
        [
            ("", "127.0.0.1", 9092, True),
            ("127.0.0.1:9092", "127.0.0.1", 9092, True),
            ("localhost:9092", "127.0.0.1", 9092, True),
            (" 127.0.0.1:29092 ", "127.0.0.1", 29092, True),
            ("127.0.0.1:29092", "127.0.0.1", 9092, False),
            ("kafka:9092", "127.0.0.1", 9092, False),
            ("127.0.0.1:9092,kafka-1:9092", "127.0.0.1", 9092, False),
            ("dev-box:9092", "dev-box", 9092, True),
            ("localhost:9092", "dev-box", 9092, False),
            (",", "127.0.0.1", 9092, False),
        ],
    )
    def test_local_means_the_address_of_the_broker_carebus_runs(
        self, servers: str, host: str, port: int, local: bool
    ) -> None:
        """Only no servers, or every server at broker.host:broker.port, is the local broker."""
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=servers),
            broker=BrokerSettings(host=host, port=port),
        )
        assert is_local_broker(settings) is local


class TestRequireDeclared:
    def test_low_declared_durability_on_a_cluster_refuses_without_connecting(self) -> None:
        """RF 1 declared for a remote cluster refuses in one line before Kafka is asked."""
        settings = Settings(kafka=KafkaSettings(bootstrap_servers="kafka.invalid:9092"))
        with pytest.raises(ConfigError) as info:
            require_durable(settings, (), role="topics apply")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("topics apply refuses to start")
        assert f"{DECLARED}: replication factor 1 < 3" in message
        assert "topics.allow_low_durability = true" in message

    def test_topics_apply_refuses_with_exit_2_and_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`carebus topics apply` for a cluster with RF 1 declared exits 2 with one line."""
        from carebus.cli import main

        for name in [k for k in os.environ if k.startswith("CAREBUS_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", "kafka.invalid:9092")
        assert main(["topics", "apply"]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("carebus: topics apply refuses to start")


@pytest.mark.integration
class TestAgainstBroker:
    @pytest.fixture
    def weak_topics(self, kafka_isolated: Settings) -> list[str]:
        """Two topics on the single-node test broker: RF 1, min ISR 1 and 2."""
        specs = [
            TopicSpec(f"{kafka_isolated.topics.prefix}.one", 1, 1, min_insync_replicas=1),
            TopicSpec(f"{kafka_isolated.topics.prefix}.two", 1, 1, min_insync_replicas=2),
        ]
        ensure(kafka_isolated, specs)
        return [s.name for s in specs]

    @staticmethod
    def as_a_cluster(settings: Settings, **topics: object) -> Settings:
        """The same broker named by address, with broker settings that do not name it."""
        return Settings(
            kafka=KafkaSettings(bootstrap_servers=settings.bootstrap_servers),
            broker=BrokerSettings(port=settings.broker.port + 7),
            topics=dataclasses.replace(settings.topics, **topics),  # type: ignore[arg-type]
        )

    def test_the_test_broker_counts_as_local_and_starts(
        self, kafka_isolated: Settings, weak_topics: list[str]
    ) -> None:
        """The single-node broker carebus runs is local: RF 1 topics start, quietly."""
        assert is_local_broker(kafka_isolated)
        decision = require_durable(kafka_isolated, weak_topics, role="listener")
        assert decision.verdict == "local"

    def test_observe_reads_replicas_and_min_isr_from_the_cluster(
        self, kafka_isolated: Settings, weak_topics: list[str]
    ) -> None:
        """The replica count and min.insync.replicas come from the cluster's topics."""
        found = observe(kafka_isolated, [*weak_topics, "absent.topic"])
        assert found == [
            TopicDurability(weak_topics[0], 1, 1),
            TopicDurability(weak_topics[1], 1, 2),
        ]

    def test_rf1_on_a_broker_not_named_as_local_refuses(
        self, kafka_isolated: Settings, weak_topics: list[str]
    ) -> None:
        """Settings that do not name the local broker, with RF 1, refuse in one line."""
        settings = self.as_a_cluster(kafka_isolated)
        assert not is_local_broker(settings)
        with pytest.raises(ConfigError) as info:
            require_durable(settings, weak_topics, role="listener")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("listener refuses to start")

    def test_the_cluster_is_checked_not_only_the_settings(
        self, kafka_isolated: Settings, weak_topics: list[str]
    ) -> None:
        """Settings declaring RF 3 and min ISR 2 still refuse when the topics have less."""
        settings = self.as_a_cluster(kafka_isolated, replication_factor=3, min_insync_replicas=2)
        with pytest.raises(ConfigError) as info:
            require_durable(settings, weak_topics, role="worker")
        message = str(info.value)
        assert f"{weak_topics[0]}: replication factor 1 < 3" in message
        assert f"{weak_topics[1]}: min.insync.replicas" not in message
        assert DECLARED not in message

    async def test_allowed_low_durability_starts_and_readyz_reports_it(
        self, kafka_isolated: Settings, weak_topics: list[str]
    ) -> None:
        """With topics.allow_low_durability the process starts and its check says so."""
        settings = self.as_a_cluster(kafka_isolated, allow_low_durability=True)
        gate = DurabilityGate(settings, weak_topics, "listener")
        assert (await gate.check()).ok is False  # not decided yet
        await gate.require()
        result = await gate.check()
        assert result.ok is True
        assert result.detail.startswith("LOW DURABILITY allowed")


class TestSettings:
    def test_allow_low_durability_is_off_by_default(self) -> None:
        """Low durability must be asked for explicitly."""
        assert TopicSettings().allow_low_durability is False
