"""Crash test: SIGKILL the live worker mid-stream, restart it; nothing lost, nothing doubled.

Two groups of patients, each discharged from hospital RX1 to a hospice, under
local identifiers (so each first message also raises ``identity-unverified``):

- *steady*: discharged long ago, an hour apart, so ``hospice-handoff-missed`` is
  overdue. Their events are still being produced when the worker is killed, and
  while it is down.
- *pending*: discharged so that the 24-hour deadline falls ~25 s after the test
  starts: processed before the kill, due only after the restart. They prove that
  pending deadlines survive a crash and still fire.

The first worker runs without wall-clock ticks, so nothing depends on how fast
the machine is: its deadlines fire only from the event clock (a later steady
discharge passes an earlier one's deadline, mid-stream), and a pending deadline,
later than every event, cannot fire before the kill. The restarted worker ticks.

The RocksDB store and the data directory survive the kill, as on a real host.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import schemas.codec
from carebus import broker
from carebus.settings import BrokerSettings, Settings
from carebus.topics import TopicNames
from connectors.partition import partition_for
from tests.streams.events import Feed
from tests.streams.integration.live import (
    Workers,
    keys,
    producer,
    read_topic,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

STEADY = 600
PENDING = 40
DEADLINE_IN_S = 25


@pytest.fixture
def workers(
    throwaway_broker: BrokerSettings, unique_topic_prefix: str, tmp_path: Path
) -> Iterator[Workers]:
    """Workers on a broker of this test's own, started fresh.

    On the long-lived session broker, after the suite's hundreds of transactional
    producers, the restarted worker was seen to stall for minutes with one alert
    publisher never ready (its transactional producer starting), while the same test
    passes on a fresh broker every time: that stall is an open finding of issue #18.
    This test pins the restart's exactly-once semantics.
    """
    broker.start(throwaway_broker, reset=True)
    kafka = Settings(broker=throwaway_broker)
    s = worker_settings(kafka, unique_topic_prefix, tmp_path / "data", store="rocksdb://")
    w = Workers(s, tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


def discharge(key: str, discharged: datetime) -> list[tuple[str, bytes]]:
    """An admission and a discharge to hospice (PV1-37 = 88) of one patient."""
    feed = Feed(key, verified=False)
    events = [
        feed.adt("A01", "RX1", discharged - timedelta(days=3)),
        feed.adt("A03", "RX1", discharged, discharge_destination="88"),
    ]
    return [(e.key, schemas.codec.encode(e.schema, e.record)) for e in events]


def sentinel_keys(partitions: int) -> list[str]:
    """One patient key for each events partition."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"RX1:LAST{n}"
        keys.setdefault(partition_for(key.encode(), partitions), key)
        n += 1
    return [keys[p] for p in sorted(keys)]


def arrival(key: str) -> list[tuple[str, bytes]]:
    """An admission under a local identifier: it raises identity-unverified at once."""
    event = Feed(key, verified=False).adt("A01", "RX1", datetime.now(UTC) - timedelta(days=1))
    return [(event.key, schemas.codec.encode(event.schema, event.record))]


def expected_keys(patients: list[str]) -> set[str]:
    """Both alerts of every patient: identity-unverified and hospice-handoff-missed."""
    out = set()
    for key in patients:
        out.add(f"identity-unverified:{key}:RX1")
        out.add(f"hospice-handoff-missed:{key}:RX1:MSG0002")
    return out


class TestCrash:
    def test_sigkill_mid_stream_loses_and_duplicates_nothing(self, workers: Workers) -> None:
        """After SIGKILL and restart every alert is on each topic exactly once, deadlines too."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        now = datetime.now(UTC)
        long_ago = now - timedelta(days=30)
        soon = now - timedelta(hours=24) + timedelta(seconds=DEADLINE_IN_S)
        pending = [f"RX1:PEND{n}" for n in range(PENDING)]
        steady = [f"RX1:STDY{n}" for n in range(STEADY)]
        discharged = {k: soon for k in pending} | {
            k: long_ago + timedelta(hours=n) for n, k in enumerate(steady)
        }

        out = producer(s)
        for key in pending:
            for k, v in discharge(key, soon):
                out.send(names.events, key=k.encode(), value=v)
        out.flush(30)

        stop = threading.Event()

        def trickle() -> None:
            for key in steady:
                if stop.is_set():
                    return
                for k, v in discharge(key, discharged[key]):
                    out.send(names.events, key=k.encode(), value=v)
                time.sleep(0.01)
            out.flush(30)

        first = workers.start(tick_interval_s=3600)  # no wall-clock tick before the kill
        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        try:
            # Kill once the worker is visibly in the middle of the stream.
            wait_for(s, names.alerts, lambda rs: len(rs) >= 150, timeout_s=120, poll_s=0.2)
            workers.kill(first)
            before = read_topic(s, names.alerts)
            assert not any(k.startswith("hospice-handoff-missed:RX1:PEND") for k in keys(before))
            assert len(before) < 2 * (STEADY + PENDING)

            workers.start()
            feeder.join(60)
            assert not feeder.is_alive()
        finally:
            stop.set()
            feeder.join(10)
            out.close()

        want = expected_keys(pending + steady)
        wait_for(s, names.alerts, lambda rs: set(keys(rs)) >= want, timeout_s=300, poll_s=1.0)
        # A barrier instead of a pause: one more alert on each partition. Each partition
        # publishes in order, so once these are out, anything raised before them is too.
        sentinels = sentinel_keys(s.topics.partitions)
        out = producer(s)
        for key in sentinels:
            for k, v in arrival(key):
                out.send(names.events, key=k.encode(), value=v)
        out.flush(30)
        out.close()
        marks = {f"identity-unverified:{key}:RX1" for key in sentinels}
        wait_for(s, names.alerts, lambda rs: set(keys(rs)) >= marks, timeout_s=300, poll_s=1.0)
        alerts = [a for a in read_topic(s, names.alerts) if a.dedup_key not in marks]
        counts = Counter(keys(alerts))
        assert set(counts) == want
        assert max(counts.values()) == 1
        for record in alerts:
            if record.record["rule"] == "hospice-handoff-missed":
                due = discharged[record.record["patient"]] + timedelta(hours=24)
                assert abs((record.record["raised_at"] - due).total_seconds()) < 0.001
        copies = Counter(k for k in keys(read_topic(s, names.alerts_for("RX1"))) if k not in marks)
        assert copies == counts
        # The status topic is written at least once, just before each transaction.
        assert set(keys(read_topic(s, names.alert_status))) - marks == want
