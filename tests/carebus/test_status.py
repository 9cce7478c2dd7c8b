"""Tests for carebus.status and ``carebus status``: tallies, rendering, the real broker."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from carebus.cli import main
from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.status import (
    NO_REASON,
    UNDECODABLE,
    GroupLag,
    StatusReport,
    Tally,
    TopicStatus,
    clock_line,
    format_table,
    report_from_tally,
)
from schemas.codec import encode
from tests.carebus.kafka_records import (
    create_carebus_topics,
    create_topics,
    deadletter_headers,
    produce,
    raw_headers,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
NHS = "9434765919"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def alert(rule: str, at: datetime = T0) -> bytes:
    return encode(
        "carebus.alerts.Alert",
        {
            "rule": rule,
            "patient": NHS,
            "raised_at": at,
            "recipients": ["RX1"],
            "dedup_key": f"{rule}:{NHS}:M1",
            "evidence": ["M1"],
            "summary": "test alert",
        },
    )


class TestTally:
    def test_raw_records_count_per_sender_with_last_seen(self) -> None:
        """Raw records are counted by carebus-sender; last seen is the latest received time."""
        t = Tally()
        t.add_raw(raw_headers("RX1", T0, "A1"), ms(T0))
        t.add_raw(raw_headers("RX1", T0 + 2 * MIN, "A2"), ms(T0))
        t.add_raw(raw_headers("RX1", T0 + MIN, "A3"), ms(T0))
        t.add_raw(raw_headers("G0001", T0, "B1"), ms(T0))
        assert t.received == {"RX1": 3, "G0001": 1}
        assert t.last_seen == {"RX1": T0 + 2 * MIN, "G0001": T0}

    def test_record_without_headers_counts_as_unknown_at_its_timestamp(self) -> None:
        """A raw record lacking headers is attributed to 'unknown' at the Kafka timestamp."""
        t = Tally()
        t.add_raw([], ms(T0))
        assert t.last_seen == {"unknown": T0}

    def test_deadletters_count_by_reason_and_sender(self) -> None:
        """Dead letters count by carebus-reason (or unspecified) and by sender."""
        t = Tally()
        t.add_deadletter(deadletter_headers("RX1", T0, "A1", "unparseable"))
        t.add_deadletter(deadletter_headers("RX1", T0, "A2", "unparseable"))
        t.add_deadletter(deadletter_headers("G0001", T0, "B1", "invalid-identifier"))
        t.add_deadletter(raw_headers("G0001", T0, "B2"))
        assert t.deadletters == {"unparseable": 2, "invalid-identifier": 1, NO_REASON: 1}
        assert t.deadletters_by_provider == {"RX1": 2, "G0001": 2}

    def test_alerts_count_by_rule_and_garbage_is_undecodable(self) -> None:
        """Alert values are decoded for their rule; anything else counts as undecodable."""
        t = Tally()
        t.add_alert(alert("death-notified"))
        t.add_alert(alert("death-notified"))
        t.add_alert(alert("eol-admission"))
        t.add_alert(b"not avro")
        t.add_alert(None)
        assert t.alerts == {"death-notified": 2, "eol-admission": 1, UNDECODABLE: 2}

    def test_feeds_flag_quiet_providers_and_include_expected_unseen(self) -> None:
        """A feed past its expectation, or expected but never seen (window unknown), is quiet."""
        t = Tally()
        t.add_raw(raw_headers("RX1", T0, "A1"), ms(T0))
        t.add_raw(raw_headers("G0001", T0 + 50 * MIN, "B1"), ms(T0))
        feeds = t.feeds(T0 + 60 * MIN, {"RX1": 15 * MIN, "G0001": 15 * MIN, "HSP01": 60 * MIN})
        assert [(f.provider, f.messages, f.quiet) for f in feeds] == [
            ("G0001", 1, False),
            ("HSP01", 0, True),
            ("RX1", 1, True),
        ]

    def test_unseen_feed_is_quiet_only_when_the_window_spans_its_interval(self) -> None:
        """A feed never seen in a window shorter than its interval is not flagged."""
        t = Tally()
        expect = {"HSP01": 60 * MIN}
        (short,) = t.feeds(T0 + 30 * MIN, expect, since=T0)
        (long,) = t.feeds(T0 + 61 * MIN, expect, since=T0)
        assert (short.quiet, long.quiet) == (False, True)

    def test_rate_counts_only_the_recent_window(self) -> None:
        """rate_per_minute averages messages received in the last rate_window."""
        t = Tally(rate_window=timedelta(minutes=5))
        for i in range(10):
            t.add_raw(raw_headers("RX1", T0 + i * MIN, f"A{i}"), ms(T0))
        (feed,) = t.feeds(T0 + 9 * MIN)
        assert feed.messages == 10
        assert feed.rate_per_minute == pytest.approx(6 / 5)
        (later,) = t.feeds(T0 + 60 * MIN)
        assert later.rate_per_minute == 0


WATERMARK = [("carebus-schema", b"carebus.events.FeedWatermark")]


def watermark(provider: str, at: datetime, received: datetime, source: str = "h:1") -> bytes:
    return encode(
        "carebus.events.FeedWatermark",
        {
            "provider": provider,
            "source": source,
            "event_time": at,
            "last_received": received,
            "emitted_at": received,
        },
    )


class TestClock:
    def test_the_provider_furthest_behind_holds_the_clock(self) -> None:
        """Of the providers still sending, the one furthest behind the wall clock holds it."""
        t = Tally()
        now = T0 + 60 * MIN
        t.add_watermark(WATERMARK, watermark("RX1", now - 2 * MIN, now))
        t.add_watermark(WATERMARK, watermark("HSP01", T0 - 60 * MIN, now - MIN))
        t.add_watermark(WATERMARK, watermark("HSP01", T0, now - 3 * MIN, source="h:2"))
        t.add_watermark(WATERMARK, watermark("G0001", T0 - 900 * MIN, now - 5 * MIN))
        t.add_watermark(WATERMARK, watermark("C1", now + 60 * MIN, now))
        holds = t.clock(now)
        assert [(c.provider, c.behind, c.holds_clock) for c in holds] == [
            ("HSP01", 60 * MIN, True),
            ("RX1", 2 * MIN, False),
        ]
        line = clock_line(report_from_tally(t, now=now, since=T0))
        assert line == (
            "CLOCK: held back 60m by HSP01 (its watermark 2026-03-02T09:00:00+00:00); "
            "1 more provider(s) behind"
        )

    def test_records_that_are_not_watermarks_are_skipped_undecoded(self) -> None:
        """An event (or junk) on the events topic changes nothing."""
        t = Tally()
        t.add_watermark([("carebus-schema", b"carebus.events.Encounter")], b"junk")
        t.add_watermark(None, watermark("RX1", T0, T0))
        t.add_watermark(WATERMARK, b"junk")
        assert t.watermarks == {}
        assert clock_line(report_from_tally(t, now=T0, since=T0)).startswith(
            "CLOCK: the wall clock"
        )


class TestReport:
    def report(self) -> StatusReport:
        t = Tally()
        t.add_raw(raw_headers("RX1", T0, "A1"), ms(T0))
        t.add_deadletter(deadletter_headers("RX1", T0, "A2", "unparseable"))
        t.add_deadletter(deadletter_headers("RX1", T0, "A3", "invalid-identifier"))
        t.add_deadletter(deadletter_headers("RX1", T0, "A4", "invalid-identifier"))
        t.add_alert(alert("death-notified"))
        return report_from_tally(
            t,
            now=T0 + 30 * MIN,
            since=T0 - timedelta(days=1),
            topics=[TopicStatus("carebus.hl7.raw", {0: 4, 1: 6})],
            lag=[GroupLag("carebus-worker", "carebus.hl7.raw", 1, 2, 6)],
            expectations={"RX1": 15 * MIN},
        )

    def test_json_orders_reasons_by_count(self) -> None:
        """The JSON lists dead-letter reasons most frequent first, with totals."""
        body = self.report().to_json()
        assert body["deadletters"] == {
            "total": 3,
            "reasons": [
                {"reason": "invalid-identifier", "count": 2},
                {"reason": "unparseable", "count": 1},
            ],
        }
        assert body["alerts"] == {"total": 1, "rules": [{"rule": "death-notified", "count": 1}]}
        assert body["topics"] == [
            {
                "topic": "carebus.hl7.raw",
                "partitions": 2,
                "end_offsets": {"0": 4, "1": 6},
                "total": 10,
            }
        ]
        assert body["lag"][0]["lag"] == 4
        assert body["feeds"][0]["quiet"] is True
        assert body["feeds"][0]["rejected"] == 3

    def test_json_never_holds_a_patient(self) -> None:
        """Alert patients are decoded but never reach the report."""
        assert NHS not in json.dumps(self.report().to_json())

    def test_table_shows_each_section(self) -> None:
        """The terminal table has topics, lag, feeds (QUIET flagged), dead letters and alerts."""
        text = format_table(self.report())
        for heading in ("TOPICS", "CONSUMER LAG", "FEEDS", "DEAD LETTERS: 3", "ALERTS: 1"):
            assert heading in text
        rx1 = next(line for line in text.splitlines() if line.startswith("RX1"))
        assert "QUIET" in rx1
        assert "30m ago" in rx1
        assert "invalid-identifier  2" in text
        assert NHS not in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """carebus.cli.main configures logging onto the captured stderr; undo that after."""
    saved = structlog.get_config()
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


@pytest.mark.integration
@pytest.mark.usefixtures("restore_logging")
class TestStatusCommand:
    def test_json_reports_what_was_written_to_the_broker(
        self,
        kafka_isolated: Settings,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """carebus status --json reads offsets, lag, feeds, dead letters and alerts from Kafka."""
        names = create_carebus_topics(kafka_isolated)
        now = datetime.now(UTC)
        produce(
            kafka_isolated,
            [
                (names.raw, b"RX1|A1", b"MSH|1", raw_headers("RX1", now - MIN, "A1")),
                (names.raw, b"RX1|A2", b"MSH|2", raw_headers("RX1", now, "A2")),
                (names.raw, b"G0001|B1", b"MSH|3", raw_headers("G0001", now - 120 * MIN, "B1")),
                (
                    names.deadletter,
                    b"RX1|A3",
                    b"junk",
                    deadletter_headers("RX1", now, "A3", "unparseable"),
                ),
                (
                    names.deadletter,
                    b"RX1|A4",
                    b"junk",
                    deadletter_headers("RX1", now, "A4", "unparseable"),
                ),
                (
                    names.deadletter,
                    b"G0001|B2",
                    b"junk",
                    deadletter_headers("G0001", now, "B2", "invalid-identifier"),
                ),
                (names.alerts, NHS.encode(), alert("death-notified"), []),
                (names.alerts, NHS.encode(), alert("death-notified"), []),
                (names.alerts, NHS.encode(), alert("eol-admission"), []),
            ],
        )
        # A consumer group that has read one record of each raw partition.
        group = f"{names.prefix}-group"
        consumer = KafkaConsumer(**kafka_python_config(kafka_isolated), group_id=group)
        parts = [TopicPartition(names.raw, p) for p in (0, 1)]
        ends = consumer.end_offsets(parts)
        committed = {tp: min(1, ends[tp]) for tp in parts}
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in committed.items()})
        consumer.close()

        region = tmp_path / "region.yaml"
        region.write_text(
            "providers:\n"
            "  RX1: {name: H, kind: hospital, expected_interval: 15m}\n"
            "  G0001: {name: S, kind: gp, expected_interval: 1h}\n"
            "  HSP01: {name: P, kind: hospice, expected_interval: 1d}\n"
            "  C1: {name: C, kind: community}\n"
        )
        monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", kafka_isolated.bootstrap_servers)
        monkeypatch.setenv("CAREBUS_TOPICS_PREFIX", names.prefix)
        assert main(["status", "--json", "--region", str(region), "--since", "1h"]) == 0
        body = json.loads(capsys.readouterr().out)

        totals = {t["topic"]: t["total"] for t in body["topics"]}
        assert totals == {names.raw: 3, names.deadletter: 3, names.alerts: 3, names.ops: 0}
        assert body["deadletters"] == {
            "total": 3,
            "reasons": [
                {"reason": "unparseable", "count": 2},
                {"reason": "invalid-identifier", "count": 1},
            ],
        }
        assert body["alerts"] == {
            "total": 3,
            "rules": [
                {"rule": "death-notified", "count": 2},
                {"rule": "eol-admission", "count": 1},
            ],
        }
        feeds = {f["provider"]: f for f in body["feeds"]}
        assert set(feeds) == {"RX1", "G0001", "HSP01", "C1"}
        assert (feeds["C1"]["messages"], feeds["C1"]["expected_interval_s"]) == (0, None)
        assert (feeds["RX1"]["messages"], feeds["RX1"]["quiet"]) == (2, False)
        assert feeds["RX1"]["rejected"] == 2
        assert datetime.fromisoformat(feeds["RX1"]["last_seen"]) == now
        assert (feeds["G0001"]["messages"], feeds["G0001"]["quiet"]) == (1, True)
        assert (feeds["HSP01"]["messages"], feeds["HSP01"]["quiet"]) == (0, False)
        lag = {(g["topic"], g["partition"]): g for g in body["lag"] if g["group"] == group}
        assert {k: g["lag"] for k, g in lag.items()} == {
            (names.raw, tp.partition): ends[tp] - committed[tp] for tp in parts
        }
        assert NHS not in json.dumps(body)

    def test_table_is_the_default_output(
        self,
        kafka_isolated: Settings,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Without --json, carebus status prints the terminal table."""
        names = create_carebus_topics(kafka_isolated)
        produce(
            kafka_isolated,
            [(names.raw, b"k", b"MSH", raw_headers("RX1", datetime.now(UTC), "A1"))],
        )
        monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", kafka_isolated.bootstrap_servers)
        monkeypatch.setenv("CAREBUS_TOPICS_PREFIX", names.prefix)
        assert main(["status", "--region", "/nonexistent/region.yaml"]) == 2
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "FEEDS" in out
        assert any(line.startswith("RX1 ") for line in out.splitlines())
        assert names.raw in out


class TestStatusClock:
    def test_status_names_the_provider_holding_the_clock_back(
        self,
        kafka_isolated: Settings,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """carebus status reads the events topic's recent watermarks: who holds the clock."""
        names = create_carebus_topics(kafka_isolated)
        create_topics(kafka_isolated, [names.events])
        now = datetime.now(UTC)
        produce(
            kafka_isolated,
            [
                (names.events, b"HSP01", watermark("HSP01", now - 90 * MIN, now), WATERMARK),
                (names.events, b"RX1", watermark("RX1", now - MIN, now), WATERMARK),
                (
                    names.events,
                    b"G1",
                    watermark("G0001", now - 900 * MIN, now - 60 * MIN),
                    WATERMARK,
                ),
                (names.events, NHS.encode(), alert("death-notified"), []),
            ],
        )
        monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", kafka_isolated.bootstrap_servers)
        monkeypatch.setenv("CAREBUS_TOPICS_PREFIX", names.prefix)
        assert main(["status", "--json", "--region", "/nonexistent/region.yaml"]) == 2
        capsys.readouterr()
        assert main(["status", "--json"]) == 0
        body = json.loads(capsys.readouterr().out)
        assert [(c["provider"], c["holds_clock"]) for c in body["clock"]] == [
            ("HSP01", True),
            ("RX1", False),
        ]
        assert body["clock"][0]["behind_s"] == pytest.approx(90 * 60, abs=120)
        assert main(["status"]) == 0
        assert "CLOCK: held back 90m by HSP01" in capsys.readouterr().out
