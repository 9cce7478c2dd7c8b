"""streams/delivery.py on a real broker: fencing, the published set, exactly one record per key."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from carebus.admin import admin_client
from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.alert import Alert
from streams.app import prepare_topics
from streams.delivery import AlertDelivery
from streams.sensors import NullSensors
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
        options: dict[str, Any] = {"providers": ["RX1"], "fenced_backoff_s": 2.0, "linger_s": 0.0}
        zombie = AlertDelivery(s, app_id="t", **options)
        successor = AlertDelivery(s, app_id="t", **options)
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
            await published(zombie, 0, 6)  # it backs off, fences back, rereads, retries
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
        first = AlertDelivery(s, app_id="t", providers=["RX1"], linger_s=0.0)
        try:
            first.assign([1])
            first.submit(1, [alert(n) for n in range(4)])
            await published(first, 1, 4)
        finally:
            await first.stop()
        second = AlertDelivery(s, app_id="t", providers=["RX1"], linger_s=0.0)
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


class Counted(NullSensors):
    """Sensors that count alerts naming a recipient outside the region."""

    def __init__(self) -> None:
        self.unknown = 0

    def alert_recipient_unknown(self, rule: str) -> None:
        self.unknown += 1


class TestUnknownRecipientOnKafka:
    async def test_an_unknown_recipient_creates_no_topic_and_the_alert_stays_regional(
        self, kafka_isolated: Settings
    ) -> None:
        """A code outside the region config gets no topic; the alert is on the region topic."""
        s = kafka_isolated
        await asyncio.to_thread(prepare_topics, s, ["RX1"])
        names = TopicNames.from_settings(s.topics)
        sensors = Counted()
        delivery = AlertDelivery(s, app_id="t", providers=["RX1"], sensors=sensors, linger_s=0.0)
        unknown = dataclasses.replace(alert(0), recipients=("RX1", "ZZ999"))
        try:
            delivery.assign([0])
            delivery.submit(0, [unknown])
            await published(delivery, 0, 1)
        finally:
            await delivery.stop()
        assert keys(await asyncio.to_thread(read_topic, s, names.alerts)) == [unknown.dedup_key]
        copies = await asyncio.to_thread(read_topic, s, names.alerts_for("RX1"))
        assert keys(copies) == [unknown.dedup_key]
        with admin_client(s) as admin:
            present = set(admin.list_topics())
        assert names.alerts_for("RX1") in present
        assert names.alerts_for("ZZ999") not in present
        assert sensors.unknown == 1
