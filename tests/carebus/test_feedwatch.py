"""Tests for carebus.feedwatch: intervals, silent-feed detection, the Kafka loop."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from carebus.errors import ConfigError
from carebus.feedwatch import (
    FeedWatch,
    OpsAlert,
    header,
    load_feed_expectations,
    parse_interval,
    parse_time,
    received_at,
    run_feedwatch,
)
from carebus.kafka import kafka_python_config
from carebus.metrics import Metrics
from carebus.settings import Settings
from tests.carebus.kafka_records import create_carebus_topics, produce, raw_headers

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


class TestParseInterval:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("15m", 900),
            ("2h", 7200),
            ("1d", 86400),
            ("45s", 45),
            ("1h30m", 5400),
            ("1.5h", 5400),
            (" 10 m ", 600),
            (900, 900),
            ("900", 900),
        ],
    )
    def test_accepts_the_documented_forms(self, text: object, seconds: int) -> None:
        """Unit suffixes, combinations and plain seconds all parse."""
        assert parse_interval(text) == timedelta(seconds=seconds)

    @pytest.mark.parametrize("text", ["", "soon", "15x", "0", "-5m", True, "5m later"])
    def test_rejects_anything_else(self, text: object) -> None:
        """Words, unknown units, zero and negatives are refused with ValueError."""
        with pytest.raises(ValueError, match="duration"):
            parse_interval(text)


class TestLoadFeedExpectations:
    def test_reads_expected_interval_per_provider(self, tmp_path: Path) -> None:
        """Providers with expected_interval get it; others map to None."""
        path = tmp_path / "region.yaml"
        path.write_text(
            "providers:\n"
            "  RX1: {name: Hospital, kind: hospital, expected_interval: 15m}\n"
            "  G0001: {name: Surgery, kind: gp}\n"
            "  HSP01: {name: Hospice, kind: hospice, expected_interval: 3600}\n"
        )
        assert load_feed_expectations(path) == {
            "RX1": timedelta(minutes=15),
            "G0001": None,
            "HSP01": timedelta(hours=1),
        }

    def test_reads_the_shared_example_region(self) -> None:
        """The spec's example region (no expectations) loads with every provider."""
        path = Path(__file__).resolve().parents[3] / "shared" / "spec" / "examples" / "region.yaml"
        assert load_feed_expectations(path) == {"RX1": None, "G0001": None, "HSP01": None}

    def test_bad_interval_names_the_provider(self, tmp_path: Path) -> None:
        """A malformed interval is a ConfigError naming the provider's key."""
        path = tmp_path / "region.yaml"
        path.write_text("providers:\n  RX1: {name: H, kind: hospital, expected_interval: often}\n")
        with pytest.raises(ConfigError, match=r"providers\.RX1\.expected_interval"):
            load_feed_expectations(path)

    def test_missing_file_and_missing_providers_are_config_errors(self, tmp_path: Path) -> None:
        """An unreadable file or one without providers raises ConfigError."""
        with pytest.raises(ConfigError, match="cannot read"):
            load_feed_expectations(tmp_path / "absent.yaml")
        path = tmp_path / "region.yaml"
        path.write_text("eol_register_codes: []\n")
        with pytest.raises(ConfigError, match="providers"):
            load_feed_expectations(path)


class TestHeaders:
    def test_header_decodes_the_named_value(self) -> None:
        """header() finds a header by name and decodes it; absent gives None."""
        hs = [("carebus-sender", b"RX1"), ("carebus-empty", None)]
        assert header(hs, "carebus-sender") == "RX1"
        assert header(hs, "carebus-empty") is None
        assert header(None, "carebus-sender") is None

    def test_parse_time_accepts_iso_and_epoch(self) -> None:
        """ISO 8601 (naive taken as UTC, Z or offsets) and epoch s/ms give aware UTC times."""
        assert parse_time("2026-03-02T09:00:00+00:00") == T0
        assert parse_time("2026-03-02T09:00:00Z") == T0
        assert parse_time("2026-03-02T10:00:00+01:00") == T0
        assert parse_time("2026-03-02T09:00:00") == T0
        assert parse_time(str(int(T0.timestamp()))) == T0
        assert parse_time(str(int(T0.timestamp() * 1000))) == T0
        assert parse_time("yesterday") is None
        assert parse_time("") is None

    def test_received_at_falls_back_to_the_record_timestamp(self) -> None:
        """Without a usable header the Kafka record timestamp is used."""
        ms = int(T0.timestamp() * 1000)
        assert received_at([], ms) == T0
        later = T0 + MIN
        assert received_at([("carebus-received-time", later.isoformat().encode())], ms) == later


class TestFeedWatch:
    def make(self) -> FeedWatch:
        return FeedWatch({"RX1": 15 * MIN, "G0001": 60 * MIN}, started_at=T0)

    def test_quiet_within_the_interval_raises_nothing(self) -> None:
        """A feed heard within its interval is not silent."""
        w = self.make()
        w.observe("RX1", T0 + 5 * MIN)
        assert w.check(T0 + 20 * MIN) == []

    def test_silence_raises_one_alert_per_silence(self) -> None:
        """A feed quiet past its interval raises feed-silent once, however often checked."""
        w = self.make()
        w.observe("RX1", T0)
        first = w.check(T0 + 16 * MIN)
        assert [(a.kind, a.provider) for a in first] == [("feed-silent", "RX1")]
        assert first[0].last_seen == T0
        assert first[0].raised_at == T0 + 16 * MIN
        assert w.check(T0 + 17 * MIN) == []
        assert w.check(T0 + 50 * MIN) == []
        assert w.silent == {"RX1"}

    def test_exactly_the_interval_is_not_yet_silent(self) -> None:
        """Silence means strictly longer than the expected interval."""
        w = self.make()
        w.observe("RX1", T0)
        assert w.check(T0 + 15 * MIN) == []

    def test_resumed_feed_raises_resumed_and_can_fall_silent_again(self) -> None:
        """A message after a silence raises feed-resumed, and a later silence alerts again."""
        w = self.make()
        w.observe("RX1", T0)
        w.observe("G0001", T0 + 30 * MIN)
        assert [a.kind for a in w.check(T0 + 16 * MIN)] == ["feed-silent"]
        w.observe("RX1", T0 + 20 * MIN)
        resumed = w.check(T0 + 21 * MIN)
        assert [(a.kind, a.provider) for a in resumed] == [("feed-resumed", "RX1")]
        assert w.silent == frozenset()
        assert [a.provider for a in w.check(T0 + 36 * MIN)] == ["RX1"]

    def test_never_seen_feed_counts_from_the_start(self) -> None:
        """A provider with no message at all falls silent one interval after watching began."""
        w = self.make()
        assert w.check(T0 + 59 * MIN) == [
            OpsAlert("feed-silent", "RX1", T0 + 59 * MIN, None, 15 * MIN)
        ]
        alerts = w.check(T0 + 61 * MIN)
        assert [(a.provider, a.last_seen) for a in alerts] == [("G0001", None)]

    def test_out_of_order_observations_keep_the_latest(self) -> None:
        """An older message seen later does not move last_seen back."""
        w = self.make()
        w.observe("RX1", T0 + 10 * MIN)
        w.observe("RX1", T0)
        assert w.last_seen["RX1"] == T0 + 10 * MIN

    def test_providers_without_expectation_are_ignored(self) -> None:
        """Messages from providers with no expected interval never raise alerts."""
        w = self.make()
        w.observe("RX1", T0 + 100 * MIN)
        w.observe("G0001", T0 + 100 * MIN)
        w.observe("OTHER", T0)
        assert w.check(T0 + 101 * MIN) == []


class TestOpsAlert:
    def test_json_names_provider_and_times_only(self) -> None:
        """The ops alert JSON carries kind, provider, times and a summary, nothing else."""
        alert = OpsAlert("feed-silent", "RX1", T0 + 20 * MIN, T0, 15 * MIN)
        body = json.loads(alert.to_bytes())
        assert body == {
            "kind": "feed-silent",
            "provider": "RX1",
            "raised_at": "2026-03-02T09:20:00+00:00",
            "last_seen": "2026-03-02T09:00:00+00:00",
            "expected_interval_s": 900.0,
            "summary": "No message from RX1 for over 15 min (last: 2026-03-02T09:00:00+00:00)",
        }


def read_ops(
    settings: Settings, topic: str, want: int, timeout_s: float
) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        **kafka_python_config(settings), group_id=None, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                out += [json.loads(r.value) | {"_key": r.key.decode()} for r in records]
        return out
    finally:
        consumer.close()


@pytest.mark.integration
class TestRunFeedwatch:
    async def test_publishes_silent_feed_on_the_ops_topic(self, kafka_isolated: Settings) -> None:
        """A feed quiet past its interval gets one feed-silent record on the ops topic."""
        names = await asyncio.to_thread(create_carebus_topics, kafka_isolated)
        now = datetime.now(UTC)
        await asyncio.to_thread(
            produce,
            kafka_isolated,
            [
                (names.raw, b"RX1|A1", b"MSH|...", raw_headers("RX1", now, "A1")),
                (names.raw, b"G0001|B1", b"MSH|...", raw_headers("G0001", now, "B1")),
            ],
        )
        metrics = Metrics(providers=["RX1", "G0001"])
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_feedwatch(
                kafka_isolated,
                {"RX1": timedelta(seconds=1.5), "G0001": timedelta(hours=1)},
                stop=stop,
                metrics=metrics,
                check_interval_s=0.2,
            )
        )
        try:
            ops = await asyncio.to_thread(read_ops, kafka_isolated, names.ops, 1, 30.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        assert [(o["kind"], o["provider"], o["_key"]) for o in ops] == [
            ("feed-silent", "RX1", "RX1")
        ]
        assert parse_time(str(ops[0]["last_seen"])) == now
        get = metrics.registry.get_sample_value
        assert get("carebus_ops_alerts_raised_total", {"kind": "feed-silent"}) == 1
        assert get("carebus_feed_silent", {"provider": "RX1"}) == 1
        assert get("carebus_feed_silent", {"provider": "G0001"}) == 0
