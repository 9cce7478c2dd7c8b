"""Tests for streams/app.py: the app factory and its agents, with the memory store.

The agents run under ``agent.test_context()`` (no broker); alerts go to an
``AlertDelivery`` over in-memory clients (tests/streams/fakes.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from faust.types import Message

import schemas.codec
from carebus.errors import ConfigError
from carebus.settings import Settings, TopicSettings, WorkerSettings
from streams.app import Worker, build_worker, control_topic_name, create_app, handed_over
from streams.control import Tick, encode, partition_for
from streams.coordinator import Entry
from streams.delivery import AlertDelivery
from streams.region import Region
from streams.status import CHANGE
from tests.streams.events import Feed
from tests.streams.fakes import FakeKafka

PARTITIONS = 2


def settings(tmp_path: Path, **worker: Any) -> Settings:
    return Settings(
        topics=TopicSettings(prefix="t", partitions=PARTITIONS),
        worker=WorkerSettings(app_id="test-worker", store="memory://", data_dir=tmp_path, **worker),
    )


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
async def worker(tmp_path: Path, region: Region, kafka: FakeKafka) -> Any:
    s = settings(tmp_path)
    delivery = AlertDelivery(
        s, app_id="test-worker", providers=region.providers, clients=kafka, retry_backoff_s=0.01
    )
    built = build_worker(s, region=region, delivery=delivery)
    built.app.finalize()
    built.app.flow_control.resume()
    delivery.assign(range(PARTITIONS))
    built.coordinator.assign(range(PARTITIONS))
    yield built
    await delivery.stop()


async def put(
    agent: Any, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
) -> None:
    """Deliver one consumed record to a test agent and wait until it is processed."""
    message = Message(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=time.time(),
        timestamp_type=0,
        headers=None,
        key=key,
        value=value,
        checksum=b"",
        serialized_key_size=0,
        serialized_value_size=0,
        generation_id=agent.app.consumer_generation_id,
    )
    channel = agent.stream().channel
    await channel.put(await channel.decode(message))
    async with agent.new_value_processed:
        await asyncio.wait_for(agent.new_value_processed.wait(), 10)


async def eventually(check: Any, timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` is true (the coordinate agent works in batches)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def applied(worker: Worker, key: str) -> int | None:
    """The offset of the last event applied to ``key``'s entry (None: no entry yet)."""
    raw = worker.patients.get(key)
    return None if raw is None else Entry.decode(raw).applied.get("e")


class TestCreateApp:
    def test_app_is_configured_from_settings(self, tmp_path: Path, region: Region) -> None:
        """App id, store, partitions and the web port come from the settings."""
        app = create_app(settings(tmp_path, web_port=16123), region=region)
        assert app.conf.id == "test-worker"
        assert str(app.conf.store) == "memory:"
        assert app.conf.topic_partitions == PARTITIONS
        assert app.conf.web_port == 16123
        assert app.conf.consumer_auto_offset_reset == "earliest"
        assert set(app.agents) == {"coordinate", "alert-status"}
        assert set(app.tables) == {"patients", "alert-status"}

    def test_agents_read_events_control_and_status_topics(
        self, tmp_path: Path, region: Region
    ) -> None:
        """The coordinate agent consumes events and control; the status agent the status topic."""
        s = settings(tmp_path)
        app = create_app(s, region=region)
        coordinate = app.agents["coordinate"].channel.topics  # type: ignore[attr-defined]
        status = app.agents["alert-status"].channel.topics  # type: ignore[attr-defined]
        assert set(coordinate) == {"t.events", control_topic_name(s)}
        assert control_topic_name(s) == "test-worker-control"
        assert list(status) == ["t.alerts.status"]

    def test_tick_interval_must_be_positive(self, tmp_path: Path, region: Region) -> None:
        """A zero tick interval is refused with a clear error."""
        with pytest.raises(ConfigError, match="tick_interval_s"):
            create_app(settings(tmp_path, tick_interval_s=0), region=region)

    def test_a_missing_region_config_is_a_config_error(self, tmp_path: Path) -> None:
        """Without an explicit region the file worker.region_config is loaded and validated."""
        with pytest.raises(ConfigError):
            create_app(settings(tmp_path, region_config=tmp_path / "missing.yaml"))


class TestWorkerApp:
    def test_a_running_producer_is_returned_without_yielding(
        self, tmp_path: Path, region: Region
    ) -> None:
        """Once the producer runs, each send's producer look-up completes without suspending."""
        app = create_app(settings(tmp_path), region=region)
        app.producer._started.set()  # type: ignore[attr-defined]  # as Service.start does
        look_up = app.maybe_start_producer()
        with pytest.raises(StopIteration) as done:
            look_up.send(None)  # a coroutine that suspended would yield here instead
        assert done.value.value is app.producer

    async def test_a_producer_not_yet_running_is_left_to_faust(
        self, tmp_path: Path, region: Region
    ) -> None:
        """Before the producer runs, the look-up is Faust's own (it starts the producer)."""
        app = create_app(settings(tmp_path), region=region)
        started: list[bool] = []

        async def maybe_start() -> bool:
            started.append(True)
            return True

        app.producer.maybe_start = maybe_start  # type: ignore[method-assign]
        assert await app.maybe_start_producer() is app.producer
        assert started == [True]


class TestCoordinateAgent:
    async def test_events_update_the_table_and_alerts_are_published(
        self, worker: Worker, kafka: FakeKafka
    ) -> None:
        """An event record becomes a table entry and its alert reaches the alert topic."""
        feed = Feed("RX1:MRN7", verified=False)
        event = feed.adt("A01", "RX1", "2026-02-09 09:00")
        partition = partition_for(feed.key, PARTITIONS)
        async with worker.app.agents["coordinate"].test_context() as agent:
            value = schemas.codec.encode(event.schema, event.record)
            await put(agent, "t.events", partition, 4, feed.key.encode(), value)
            await eventually(lambda: worker.patients.get(feed.key) is not None)
            entry = Entry.decode(worker.patients[feed.key])
            assert entry.applied == {"e": 4}
            assert await worker.delivery.drain(5.0)
        assert [k.split(":")[0] for k in kafka.dedup_keys("t.alerts")] == ["identity-unverified"]

    async def test_a_tick_on_the_control_topic_fires_due_deadlines(
        self, worker: Worker, kafka: FakeKafka
    ) -> None:
        """A Tick record fires a deadline that has passed, and the alert is published."""
        feed = Feed("9434797373")
        partition = partition_for(feed.key, PARTITIONS)
        events = [
            feed.adt("A01", "RX1", "2026-02-09 09:00"),
            feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
        ]
        async with worker.app.agents["coordinate"].test_context() as agent:
            for offset, event in enumerate(events):
                value = schemas.codec.encode(event.schema, event.record)
                await put(agent, "t.events", partition, offset, feed.key.encode(), value)
            await eventually(lambda: applied(worker, feed.key) == 1)
            assert kafka.dedup_keys("t.alerts") == []
            tick = encode(Tick(time.time_ns() // 1000))
            await put(agent, worker.control_topic, partition, 0, None, tick)
            await eventually(lambda: kafka.dedup_keys("t.alerts") != [])
        assert [k.split(":")[0] for k in kafka.dedup_keys("t.alerts")] == ["hospice-handoff-missed"]


class FakeBuffer:
    """Faust's producer buffer as handed_over sees it: records drain one per poll."""

    def __init__(self, size: int, *, started: bool = True) -> None:
        self.queued, self.started, self.should_stop = size, started, False
        self.polls = 0

    @property
    def size(self) -> int:
        self.polls += 1
        self.queued = max(0, self.queued - 1) if self.polls > 1 else self.queued
        return self.queued


class TestHandedOver:
    async def test_waits_until_the_buffer_is_empty(self) -> None:
        """A batch waits while Faust's producer buffer still holds records."""
        buffer = FakeBuffer(3)
        await asyncio.wait_for(handed_over(buffer, poll_s=0), 5)
        assert buffer.queued == 0
        assert buffer.polls >= 4

    async def test_a_buffer_that_is_not_running_is_not_waited_for(self) -> None:
        """Under test_context nothing drains the buffer, so there is nothing to wait for."""
        buffer = FakeBuffer(3, started=False)
        await asyncio.wait_for(handed_over(buffer, poll_s=0), 5)
        assert buffer.queued == 3


class TestStatusAgent:
    async def test_status_records_are_folded_into_the_status_table(self, worker: Worker) -> None:
        """An acknowledgement on the status topic shows in the status table."""
        key = "death-notified:9434765919:HSP01:MSG0001"
        change = {
            "dedup_key": key,
            "action": "ACKNOWLEDGED",
            "by": "ann",
            "at": 1_771_491_600_000,
            "note": None,
        }
        async with worker.app.agents["alert-status"].test_context() as agent:
            await put(
                agent, "t.alerts.status", 0, 0, key.encode(), schemas.codec.encode(CHANGE, change)
            )
            await put(agent, "t.alerts.status", 0, 1, key.encode(), b"not avro")
            assert worker.statuses[key]["status"] == "ACKNOWLEDGED"
            assert worker.statuses[key]["history"][0]["by"] == "ann"


class TestAdvertisedUrl:
    def test_derived_from_this_workers_own_address(self, tmp_path: Path, region: Region) -> None:
        """By default a worker advertises its own web host and port, https with a certificate."""
        from streams.app import advertised_url

        assert advertised_url(WorkerSettings(web_host="10.1.2.3", web_port=7001)) == (
            "http://10.1.2.3:7001"
        )
        assert advertised_url(WorkerSettings(web_host="::1", web_port=7001)) == "http://[::1]:7001"
        tls = WorkerSettings(web_host="w1.example", web_tls_certfile=Path("c.pem"))
        assert advertised_url(tls) == "https://w1.example:6066"
        app = create_app(settings(tmp_path, web_port=16124), region=region)
        assert str(app.conf.canonical_url) == "http://127.0.0.1:16124"

    def test_a_wildcard_bind_advertises_the_machines_name(self) -> None:
        """0.0.0.0 is no address for another worker: the machine's name is advertised."""
        import socket

        from streams.app import advertised_url

        url = advertised_url(WorkerSettings(web_host="0.0.0.0", web_port=7002))
        assert url == f"http://{socket.getfqdn()}:7002"

    def test_the_setting_wins(self) -> None:
        """worker.advertised_url is used as given (without a trailing slash)."""
        from streams.app import advertised_url

        w = WorkerSettings(web_host="0.0.0.0", advertised_url="http://10.0.0.7:6066/")
        assert advertised_url(w) == "http://10.0.0.7:6066"
