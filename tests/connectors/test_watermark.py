"""Tests for connectors/watermark.py: feed watermarks on the events topic.

The tracker is pure and driven by a fake clock. The emitter and the pipeline's hook
run against the real broker, through a real MLLP listener (:class:`Ingest`). The
emitter's timer is set far beyond any test (``watermark_interval_s`` = 3600): each
test writes the due watermarks itself with ``emit_due``, so nothing depends on how
fast the machine is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import hl7.client
import pytest

from carebus import broker
from carebus.errors import ConfigError
from carebus.settings import BrokerSettings, MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.ingest import Ingest
from connectors.mllp.allowlist import Peer
from connectors.pipeline import NullObserver, Pipeline
from connectors.publish import Publisher
from connectors.watermark import (
    HEARTBEAT_INTERVALS,
    SCHEMA,
    Watermark,
    WatermarkEmitter,
    WatermarkTracker,
    source_name,
)
from schemas.codec import decode
from tests.connectors.ingest_helpers import Rec, TopicReader, adt, start_throwaway

INTERVAL_S = 2.0
HOUR_MS = 3_600_000
#: Far beyond any test: the emitter's own timer never fires; tests call emit_due.
NEVER_S = 3600.0
#: Valid NHS numbers (test range) whose events land on partition 0 and 1 of two.
ON_PARTITION = {0: "9990000026", 1: "9990000018"}
PEER = Peer("mllp", "127.0.0.1", 40000)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def message(
    control_id: str, *, facility: str, when: datetime, nhs: str = "9434765919", ward: str = ""
) -> bytes:
    """A small ADT^A01 from ``facility`` whose event time (EVN-2) is ``when`` (UTC)."""
    raw = adt(control_id, facility=facility, nhs_number=nhs)
    stamp = when.strftime("%Y%m%d%H%M%S").encode()
    raw = raw.replace(b"EVN|A01|20260301093000", b"EVN|A01|" + stamp)
    return raw.replace(b"WARD1", ward.encode()) if ward else raw


def at(hour: int, minute: int = 0) -> datetime:
    """1 March 2026 (GMT, so UTC and local time agree) at ``hour:minute``."""
    return datetime(2026, 3, 1, hour, minute, tzinfo=UTC)


def send(port: int, raw: bytes) -> str:
    """Send one message over MLLP; the MSA-1 code, or "" when no ACK came."""
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(30)
        ack = client.send_message(raw)
    for segment in ack.decode("latin-1").split("\r"):
        if segment.startswith("MSA"):
            return str(segment.split("|")[1])
    return ""


def watermarks(records: list[Rec]) -> list[tuple[Rec, dict[str, object]]]:
    """The feed watermark records among ``records``, decoded, in the order read."""
    out = []
    for rec in records:
        if rec.is_feed:
            schema, value = decode(rec.value)
            assert schema == SCHEMA
            out.append((rec, value))
    return out


def event_times(values: list[dict[str, object]]) -> list[int]:
    return [ms(v["event_time"]) for v in values]  # type: ignore[arg-type]


class Failures:
    """An ingest observer that counts feed watermark failures (and ignores the rest).

    It delegates rather than subclasses: NullObserver is compiled in the real build,
    and an interpreted class cannot inherit from a compiled one.
    """

    def __init__(self) -> None:
        self.failed = 0
        self._rest = NullObserver()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rest, name)

    def feed_watermark_failed(self) -> None:
        self.failed += 1


# -- the tracker (pure, fake clock) ---------------------------------------------------


class TestWatermarkTracker:
    def test_keeps_the_latest_event_time_and_received_time_per_provider(self) -> None:
        """A provider's watermark is its latest event time and latest received time, never lower."""
        t = WatermarkTracker(INTERVAL_S)
        t.observe("RX1", 5_000, 100)
        t.observe("RX1", 3_000, 200)  # an older event time, received later
        t.observe("RX1", 7_000, 150)  # a later event time, received out of order
        t.observe("G01", 1_000, 120)
        assert t.watermark("RX1") == Watermark("RX1", 7_000, 200)
        assert t.watermark("G01") == Watermark("G01", 1_000, 120)
        assert t.watermark("NONE") is None

    def test_due_are_the_providers_changed_since_written(self) -> None:
        """Only providers whose watermark or received time changed since written are due."""
        t = WatermarkTracker(INTERVAL_S)
        assert t.due(0) == []
        t.observe("RX1", 5_000, 100)
        t.observe("G01", 1_000, 120)
        first = t.due(1_000)
        assert sorted(first, key=lambda m: m.provider) == [
            Watermark("G01", 1_000, 120),
            Watermark("RX1", 5_000, 100),
        ]
        t.written(first, 1_000)
        assert t.due(3_000) == []
        t.observe("G01", 900, 2_500)  # an older event: only its received time moves
        assert t.due(3_000) == [Watermark("G01", 1_000, 2_500)]

    def test_what_was_not_written_stays_due(self) -> None:
        """A failed write (no call to written) leaves the same watermarks due next time."""
        t = WatermarkTracker(INTERVAL_S)
        t.observe("RX1", 5_000, 100)
        assert t.due(1_000) == [Watermark("RX1", 5_000, 100)]
        assert t.due(3_000) == [Watermark("RX1", 5_000, 100)]
        t.observe("RX1", 6_000, 2_900)
        assert t.due(5_000) == [Watermark("RX1", 6_000, 2_900)]

    def test_every_known_provider_is_due_again_at_each_heartbeat(self) -> None:
        """Every 30 intervals after a write, every known watermark is due again, changed or not."""
        t = WatermarkTracker(INTERVAL_S)
        beat = int(INTERVAL_S * 1000) * HEARTBEAT_INTERVALS
        assert t.heartbeat_ms == beat
        t.observe("RX1", 5_000, 100)
        t.observe("G01", 1_000, 120)
        t.written(t.due(10_000), 10_000)
        assert t.due(10_000 + beat - 1) == []
        again = t.due(10_000 + beat)
        assert {m.provider for m in again} == {"RX1", "G01"}
        t.written(again, 10_000 + beat)
        assert t.due(10_000 + 2 * beat - 1) == []
        assert len(t.due(10_000 + 2 * beat)) == 2

    def test_a_failed_heartbeat_is_due_at_the_next_interval(self) -> None:
        """A heartbeat not written is due at every later interval until it is written."""
        t = WatermarkTracker(INTERVAL_S)
        t.observe("RX1", 5_000, 100)
        t.written(t.due(0), 0)
        beat = t.heartbeat_ms
        assert t.due(beat) == [Watermark("RX1", 5_000, 100)]  # not written: failed
        assert t.due(beat + 2_000) == [Watermark("RX1", 5_000, 100)]
        t.written(t.due(beat + 2_000), beat + 2_000)
        assert t.due(beat + 4_000) == []

    def test_past_its_limit_it_forgets_the_provider_stored_longest_ago(self) -> None:
        """With max_providers known, a new provider replaces the one stored longest ago."""
        t = WatermarkTracker(INTERVAL_S, max_providers=2)
        t.observe("A", 1, 300)
        t.observe("B", 1, 100)
        t.observe("C", 1, 200)
        assert (t.watermark("A"), t.watermark("B")) == (Watermark("A", 1, 300), None)
        assert {m.provider for m in t.due(0)} == {"A", "C"}

    def test_interval_must_be_positive(self) -> None:
        """A tracker needs a positive interval (0 disables watermarks: no tracker at all)."""
        with pytest.raises(ValueError):
            WatermarkTracker(0)


class TestSetting:
    def test_default_interval_is_one_second(self) -> None:
        """mllp.watermark_interval_s is 1 s by default."""
        assert MllpSettings().watermark_interval_s == 1.0

    def test_negative_interval_is_a_config_error(self) -> None:
        """A negative mllp.watermark_interval_s is refused."""
        with pytest.raises(ConfigError, match="watermark_interval_s"):
            MllpSettings(watermark_interval_s=-1)

    def test_zero_disables_the_emitter(self) -> None:
        """With mllp.watermark_interval_s = 0 an ingest process has no watermark emitter."""
        assert Ingest(Settings(mllp=MllpSettings(watermark_interval_s=0))).watermarks is None
        assert Ingest(Settings()).watermarks is not None


class TestRecords:
    def test_one_record_per_partition_keyed_by_provider_with_the_schema_header(self) -> None:
        """Each watermark becomes one record per partition: explicit partition, key, header."""
        emitter = WatermarkEmitter(
            Publisher(Settings()),
            "carebus.events",
            WatermarkTracker(INTERVAL_S),
            source="host:42:1",
            timeout_s=1.0,
        )
        records = emitter.records([Watermark("RX1", 5_000, 6_000)], 3, 7_000)
        assert [r.partition for r in records] == [0, 1, 2]
        for r in records:
            assert (r.topic, r.key) == ("carebus.events", b"RX1")
            assert r.headers == (("carebus-schema", SCHEMA.encode()),)
            schema, value = decode(r.value)
            assert schema == SCHEMA
            assert value["provider"] == "RX1"
            assert value["source"] == "host:42:1"
            assert [ms(value[f]) for f in ("event_time", "last_received", "emitted_at")] == [
                5_000,
                6_000,
                7_000,
            ]

    def test_source_names_host_process_and_child(self) -> None:
        """source is host:pid, with :child for a child of several listener processes."""
        import os
        import socket

        assert source_name() == f"{socket.gethostname()}:{os.getpid()}"
        assert source_name(3) == f"{socket.gethostname()}:{os.getpid()}:3"


# -- the pipeline's hook (real broker) -----------------------------------------------


@pytest.mark.integration
class TestPipelineHook:
    async def test_told_only_once_the_records_are_readable_and_never_for_a_duplicate(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """The hook hears provider, event time and received time after the events are on
        Kafka; a duplicate and a rejection tell it nothing."""
        told: list[tuple[str, int, int, int]] = []

        def on_stored(provider: str, event_ms: int, received_ms: int) -> None:
            told.append((provider, event_ms, received_ms, reader.event_count(topics.events)))

        pub = Publisher(ingest_settings)
        await pub.start([topics.raw, topics.events, topics.deadletter])
        try:
            pipeline = Pipeline(
                pub, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), on_stored=on_stored
            )
            received = datetime(2026, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)
            raw = message("HOOK1", facility="RXA01", when=at(9, 30))
            assert (await pipeline.submit(raw, PEER, received)).status == "accepted"
            assert (await pipeline.submit(raw, PEER, received)).status == "duplicate"
            garbage = await pipeline.submit(b"not HL7", PEER, received)
            assert garbage.status == "rejected"
        finally:
            await pub.stop()
        assert told == [("RXA01", ms(at(9, 30)), ms(received), 1)]

    async def test_a_failing_hook_does_not_change_the_answer(
        self, ingest_settings: Settings, topics: TopicNames
    ) -> None:
        """A defect in the hook is logged; the stored message is still accepted."""

        def on_stored(provider: str, event_ms: int, received_ms: int) -> None:
            raise RuntimeError("defect")

        pub = Publisher(ingest_settings)
        await pub.start([topics.raw, topics.events, topics.deadletter])
        try:
            pipeline = Pipeline(pub, topics, publish_timeout_s=10.0, on_stored=on_stored)
            raw = message("HOOK2", facility="RXA01", when=at(9, 30))
            outcome = await pipeline.submit(raw, PEER, datetime.now(UTC))
        finally:
            await pub.stop()
        assert (outcome.status, outcome.events) == ("accepted", 1)


# -- the emitter through a real listener (real broker) -------------------------------


def with_watermarks(settings: Settings, **changes: object) -> Settings:
    mllp = dataclasses.replace(MllpSettings(port=0, watermark_interval_s=NEVER_S), **changes)
    return settings.replace(mllp=mllp)


@pytest.fixture
async def ingest(ingest_settings: Settings) -> AsyncIterator[Ingest]:
    running = Ingest(with_watermarks(ingest_settings))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def emitter(ingest: Ingest) -> WatermarkEmitter:
    assert ingest.watermarks is not None
    return ingest.watermarks


@pytest.mark.integration
class TestFeedWatermarks:
    async def test_every_partition_has_each_providers_watermark_after_its_events(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """After messages from two providers, every partition holds one watermark per
        provider, after that provider's events there, at its latest event time."""
        port = ingest.mllp.port
        sent = [
            ("RXA01", at(9, 30), ON_PARTITION[0]),
            ("RXA01", at(11, 0), ON_PARTITION[1]),
            ("RXA01", at(10, 0), ON_PARTITION[0]),  # later, with an earlier event time
            ("RYB02", at(8, 0), ON_PARTITION[1]),
            ("RYB02", at(8, 15), ON_PARTITION[0]),
        ]
        before = int(time.time() * 1000)  # whole ms, as last_received is
        for n, (facility, when, nhs) in enumerate(sent):
            raw = message(f"WM{n}", facility=facility, when=when, nhs=nhs)
            assert await asyncio.to_thread(send, port, raw) == "AA"
        after = time.time() * 1000
        assert await emitter(ingest).emit_due() == 2

        records = reader.read(topics.events)
        latest = {"RXA01": ms(at(11, 0)), "RYB02": ms(at(8, 15))}
        for partition in (0, 1):
            here = [r for r in records if r.partition == partition]
            marks = {
                rec.key.decode(): (rec, value)
                for rec, value in watermarks(here)
                if rec.partition == partition
            }
            assert sorted(marks) == ["RXA01", "RYB02"]
            for provider, (mark, value) in marks.items():
                events = [
                    r.offset
                    for r in here
                    if not r.is_feed
                    and decode(r.value)[1]["header"]["sending_facility"] == provider  # type: ignore[index]
                ]
                assert events, (provider, partition)  # each provider has events on each
                assert mark.offset > max(events)
                assert value["provider"] == provider
                assert value["source"] == source_name()
                assert ms(value["event_time"]) == latest[provider]  # type: ignore[arg-type]
                assert before <= ms(value["last_received"]) <= after  # type: ignore[arg-type]
        assert len(watermarks(records)) == 4

    async def test_only_providers_with_newly_stored_messages_are_written_again(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Nothing new stored: nothing written; a provider's older event: its watermark
        written again, at the same event time and a later received time."""
        port = ingest.mllp.port
        for n, facility in enumerate(("RXA01", "RYB02")):
            raw = message(f"ONE{n}", facility=facility, when=at(10, 0))
            assert await asyncio.to_thread(send, port, raw) == "AA"
        assert await emitter(ingest).emit_due() == 2
        assert await emitter(ingest).emit_due() == 0
        assert len(watermarks(reader.read(topics.events))) == 4

        await asyncio.sleep(0.002)  # the wall clock moves on: a later received time
        raw = message("OLDER", facility="RYB02", when=at(7, 0))
        assert await asyncio.to_thread(send, port, raw) == "AA"
        assert await emitter(ingest).emit_due() == 1
        marks = watermarks(reader.read(topics.events))
        assert len(marks) == 6
        for partition in (0, 1):
            ryb = sorted(
                (rec.offset, value)
                for rec, value in marks
                if rec.key == b"RYB02" and rec.partition == partition
            )
            values = [value for _, value in ryb]
            assert event_times(values) == [ms(at(10, 0))] * 2  # never moved back
            earlier, later = (ms(v["last_received"]) for v in values)  # type: ignore[arg-type]
            assert later > earlier

    async def test_a_graceful_stop_writes_the_latest_watermarks(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Stopping the listener writes what is still due before the producer goes."""
        running = Ingest(with_watermarks(ingest_settings))
        await running.start()
        try:
            raw = message("STOP1", facility="RXA01", when=at(9, 45))
            assert await asyncio.to_thread(send, running.mllp.port, raw) == "AA"
        finally:
            await running.stop()
        marks = watermarks(reader.read(topics.events))
        assert sorted(rec.partition for rec, _ in marks) == [0, 1]
        assert event_times([v for _, v in marks]) == [ms(at(9, 45))] * 2

    async def test_the_running_emitter_writes_them_by_itself(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Started with the listener, the emitter writes due watermarks on its own timer."""
        running = Ingest(with_watermarks(ingest_settings, watermark_interval_s=0.05))
        await running.start()
        try:
            raw = message("TIMER1", facility="RXA01", when=at(9, 50))
            assert await asyncio.to_thread(send, running.mllp.port, raw) == "AA"
            deadline = time.monotonic() + 60  # a generous bound: the loop ends on success
            while len(watermarks(reader.read(topics.events))) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await running.stop()
        marks = watermarks(reader.read(topics.events))  # more, if a heartbeat came
        assert {rec.partition for rec, _ in marks} == {0, 1}
        assert set(event_times([v for _, v in marks])) == {ms(at(9, 50))}

    async def test_the_heartbeat_writes_every_known_provider_again(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """At a heartbeat, every known provider is written again, unchanged or not."""
        port = ingest.mllp.port
        for n, facility in enumerate(("RXA01", "RYB02")):
            raw = message(f"HB{n}", facility=facility, when=at(10, n))
            assert await asyncio.to_thread(send, port, raw) == "AA"
        now = int(time.time() * 1000)
        assert await emitter(ingest).emit_due(now) == 2
        assert await emitter(ingest).emit_due(now + emitter(ingest).tracker.heartbeat_ms) == 2
        assert len(watermarks(reader.read(topics.events))) == 8


@pytest.mark.integration
class TestDuplicatesAndConflicts:
    async def test_a_resend_answered_duplicate_does_not_move_the_watermark(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A resend of a stored message (AA, duplicate) changes neither event time nor
        received time: nothing is due."""
        raw = message("DUP1", facility="RXA01", when=at(9, 30))
        assert await asyncio.to_thread(send, ingest.mllp.port, raw) == "AA"
        assert await emitter(ingest).emit_due() == 1
        stored = emitter(ingest).tracker.watermark("RXA01")
        assert await asyncio.to_thread(send, ingest.mllp.port, raw) == "AA"
        assert emitter(ingest).tracker.watermark("RXA01") == stored
        assert await emitter(ingest).emit_due() == 0
        assert len(watermarks(reader.read(topics.events))) == 2

    async def test_a_resend_after_a_restart_moves_nothing(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """After a restart, a resend of a message stored before it is a duplicate (its
        events published again) and gives the new process no watermark."""
        settings = with_watermarks(ingest_settings)
        raw = message("RST1", facility="RXA01", when=at(9, 30))
        first = Ingest(settings)
        await first.start()
        try:
            assert await asyncio.to_thread(send, first.mllp.port, raw) == "AA"
        finally:
            await first.stop()
        second = Ingest(settings)
        await second.start()
        try:
            assert await asyncio.to_thread(send, second.mllp.port, raw) == "AA"
            assert emitter(second).tracker.watermark("RXA01") is None
            assert await emitter(second).emit_due() == 0
        finally:
            await second.stop()
        assert len(watermarks(reader.read(topics.events))) == 2  # the first process's

    async def test_a_reused_control_id_with_new_content_moves_it(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A message reusing a control id with other content is stored, so it counts."""
        port = ingest.mllp.port
        raw = message("CONF1", facility="RXA01", when=at(9, 30))
        assert await asyncio.to_thread(send, port, raw) == "AA"
        other = message("CONF1", facility="RXA01", when=at(12, 0), ward="WARD9")
        assert await asyncio.to_thread(send, port, other) == "AA"
        assert await emitter(ingest).emit_due() == 1
        marks = watermarks(reader.read(topics.events))
        assert event_times([v for _, v in marks]) == [ms(at(12, 0))] * 2


@pytest.mark.integration
@pytest.mark.slow
class TestKafkaDown:
    async def test_acks_are_unchanged_and_the_emitter_recovers(
        self, throwaway_broker: BrokerSettings
    ) -> None:
        """Kafka down: AE as before, a watermark write fails and is counted; Kafka back:
        AA, and the next write puts the latest watermark after the events."""
        settings, topics = await start_throwaway(
            throwaway_broker,
            "wmdown",
            mllp=MllpSettings(port=0, publish_timeout_s=2.0, watermark_interval_s=NEVER_S),
        )
        observer = Failures()
        ingest = Ingest(settings, observer=observer)
        await ingest.start()
        try:
            port = ingest.mllp.port
            wm = emitter(ingest)
            up = message("UP1", facility="RXA01", when=at(9, 30))
            assert await asyncio.to_thread(send, port, up) == "AA"
            assert await wm.emit_due() == 1

            await asyncio.to_thread(broker.stop, throwaway_broker)
            down = message("DOWN1", facility="RXA01", when=at(10, 0))
            assert await asyncio.to_thread(send, port, down) == "AE"
            # Force a write while Kafka is down: the heartbeat is due.
            beat = int(time.time() * 1000) + wm.tracker.heartbeat_ms
            assert await wm.emit_due(beat) == 0
            assert observer.failed == 1
            assert await asyncio.to_thread(send, port, down) == "AE"

            await asyncio.to_thread(broker.start, throwaway_broker)
            late = message("LATE1", facility="RXA01", when=at(11, 0))
            deadline = time.monotonic() + 120  # a generous bound: the loops end on success
            while await asyncio.to_thread(send, port, late) != "AA":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)
            while await wm.emit_due(beat) == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)
        finally:
            await ingest.stop()

        reader = TopicReader(settings)
        try:
            records = reader.read(topics.events)
        finally:
            reader.close()
        marks = watermarks(records)
        last_mark = marks[-1][0]
        assert ms(marks[-1][1]["event_time"]) == ms(at(11, 0))  # type: ignore[arg-type]
        late_events = [
            r.offset
            for r in records
            if not r.is_feed and decode(r.value)[1]["header"]["control_id"] == "LATE1"  # type: ignore[index]
        ]
        assert late_events and last_mark.offset > max(late_events)
