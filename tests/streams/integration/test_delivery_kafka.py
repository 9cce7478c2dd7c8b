"""streams/delivery.py on a real broker: fencing, the published set, exactly one record per key."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.alert import Alert
from streams.app import prepare_topics
from streams.delivery import AlertDelivery
from tests.streams.integration.live import keys, read_topic

pytestmark = pytest.mark.integration


def alert(n: int) -> Alert:
    return Alert(
        rule="death-notified",
        patient="9434765919",
        raised_at=datetime(2026, 2, 19, 9, 0, tzinfo=UTC),
        recipients=("RX1",),
        dedup_key=f"death-notified:9434765919:RX1:MSG{n:04d}",
        evidence=(f"MSG{n:04d}",),
        summary="Patient died",
    )


async def published(delivery: AlertDelivery, partition: int, count: int) -> None:
    """Wait until ``count`` alerts of the batch are known published."""
    for _ in range(300):
        if all(delivery.is_published(partition, alert(n).dedup_key) for n in range(count)):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("alerts not published")


class TestDeliveryOnKafka:
    async def test_a_zombie_publisher_is_fenced_and_nothing_is_published_twice(
        self, kafka_isolated: Settings
    ) -> None:
        """Two publishers of one partition (a zombie and its successor) never duplicate a key."""
        s = kafka_isolated
        await asyncio.to_thread(prepare_topics, s, ["RX1"])
        names = TopicNames.from_settings(s.topics)
        zombie = AlertDelivery(s, app_id="t", fenced_backoff_s=2.0, linger_s=0.0)
        successor = AlertDelivery(s, app_id="t", fenced_backoff_s=2.0, linger_s=0.0)
        try:
            zombie.assign([0])
            zombie.submit(0, [alert(n) for n in range(3)])
            await published(zombie, 0, 3)

            successor.assign([0])
            for _ in range(300):
                if successor.ready(0):
                    break
                await asyncio.sleep(0.1)
            assert all(successor.is_published(0, alert(n).dedup_key) for n in range(3))

            batch = [alert(n) for n in range(6)]
            zombie.submit(0, batch)
            successor.submit(0, batch)
            await published(successor, 0, 6)
            await asyncio.sleep(3.0)  # the zombie backs off, fences back, rereads, retries
            await published(zombie, 0, 6)
        finally:
            await zombie.stop()
            await successor.stop()

        counts = Counter(keys(await asyncio.to_thread(read_topic, s, names.alerts)))
        assert counts == Counter({alert(n).dedup_key: 1 for n in range(6)})
        copies = Counter(keys(await asyncio.to_thread(read_topic, s, names.alerts_for("RX1"))))
        assert copies == counts

    async def test_a_new_publisher_reads_what_is_already_published(
        self, kafka_isolated: Settings
    ) -> None:
        """The published set is rebuilt from the alert partition (read_committed) on assignment."""
        s = kafka_isolated
        await asyncio.to_thread(prepare_topics, s, ["RX1"])
        first = AlertDelivery(s, app_id="t", linger_s=0.0)
        try:
            first.assign([1])
            first.submit(1, [alert(n) for n in range(4)])
            await published(first, 1, 4)
        finally:
            await first.stop()
        second = AlertDelivery(s, app_id="t", linger_s=0.0)
        try:
            second.assign([1])
            for _ in range(300):
                if second.ready(1):
                    break
                await asyncio.sleep(0.1)
            assert all(second.is_published(1, alert(n).dedup_key) for n in range(4))
            assert not second.is_published(0, alert(0).dedup_key)
            second.submit(1, [alert(n) for n in range(5)])
            await published(second, 1, 5)
            assert await second.drain(10)
        finally:
            await second.stop()
        names = TopicNames.from_settings(s.topics)
        counts = Counter(keys(await asyncio.to_thread(read_topic, s, names.alerts)))
        assert counts == Counter({alert(n).dedup_key: 1 for n in range(5)})
