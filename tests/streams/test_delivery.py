"""Tests for streams/delivery.py: batching, dedup, retries and fencing, with in-memory clients.

These pin the publisher's logic; tests/streams/integration/ proves it on a real broker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

import schemas.codec
from carebus.log import digest
from carebus.settings import Settings, TopicSettings
from streams.alert import Alert
from streams.control import partition_for
from streams.delivery import ALERT_SCHEMA, DEDUP_HEADER, AlertDelivery
from streams.sensors import NullSensors
from streams.status import body_key
from tests.streams.fakes import FakeKafka

SETTINGS = Settings(topics=TopicSettings(prefix="t", partitions=2))
#: The region config's providers ("BAD CODE" stands for one whose code cannot name a topic).
PROVIDERS = ("RX1", "G0001", "BAD CODE")


def alert(n: int, patient: str = "9434765919", recipients: tuple[str, ...] = ("RX1",)) -> Alert:
    return Alert(
        rule="death-notified",
        patient=patient,
        raised_at=datetime(2026, 2, 19, 9, 0, tzinfo=UTC),
        recipients=recipients,
        dedup_key=f"death-notified:{patient}:RX1:MSG{n:04d}",
        evidence=(f"MSG{n:04d}",),
        summary="Patient died",
    )


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


class Counted(NullSensors):
    """Sensors that count alerts naming a recipient outside the region, by rule."""

    def __init__(self) -> None:
        self.unknown: list[str] = []

    def alert_recipient_unknown(self, rule: str) -> None:
        self.unknown.append(rule)


@pytest.fixture
def sensors() -> Counted:
    return Counted()


@pytest.fixture
async def delivery(kafka: FakeKafka, sensors: Counted) -> Any:
    d = AlertDelivery(
        SETTINGS,
        app_id="w",
        providers=PROVIDERS,
        clients=kafka,
        sensors=sensors,
        retry_backoff_s=0.01,
        fenced_backoff_s=0.05,
    )
    yield d
    await d.stop()


async def settle(delivery: AlertDelivery) -> None:
    """Wait until every assigned partition's publisher is ready and nothing is pending."""
    assert await delivery.drain(30.0)
    for partition in delivery.assigned():
        await parked(delivery, partition)
    assert await delivery.drain(30.0)


async def parked(delivery: AlertDelivery, partition: int) -> None:
    """Wait until the partition's publisher has read its published set, looked at its
    queue and gone back to waiting for work (the in-memory clients never block)."""
    part = delivery._parts[partition]

    async def idle() -> None:
        while not part.ready or part.wake.is_set():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(idle(), 30)


class TestPublishing:
    async def test_each_alert_goes_to_the_alert_topic_its_recipients_and_the_status_topic(
        self, delivery: AlertDelivery, kafka: FakeKafka
    ) -> None:
        """One transaction writes the alert, a copy per recipient and a status record."""
        delivery.assign([1])
        delivery.submit(1, [alert(1, recipients=("G0001", "RX1"))])
        await settle(delivery)
        assert [(p, k) for p, k, _, _ in kafka.log["t.alerts"]] == [(1, b"9434765919")]
        assert len(kafka.log["t.alerts.provider.RX1"]) == 1
        assert len(kafka.log["t.alerts.provider.G0001"]) == 1
        (status_partition, status_key, value, headers) = kafka.log["t.alerts.status"][0]
        # Keyed apart from the alert's status changes, on the dedup key's partition.
        assert status_key == body_key(alert(1).dedup_key).encode()
        assert status_partition == partition_for(alert(1).dedup_key, delivery.status_partitions)
        assert schemas.codec.decode(value)[0] == ALERT_SCHEMA
        assert (DEDUP_HEADER, alert(1).dedup_key.encode()) in headers
        assert kafka.started == ["w.t.alerts.1"]
        assert delivery.is_published(1, alert(1).dedup_key)
        assert delivery.take_confirmed(1) == {"9434765919"}
        assert delivery.take_confirmed(1) == set()

    async def test_the_same_dedup_key_is_published_once(
        self, delivery: AlertDelivery, kafka: FakeKafka
    ) -> None:
        """Submitting an alert again, before or after it is published, adds nothing."""
        delivery.assign([0])
        delivery.submit(0, [alert(1), alert(1)])
        delivery.submit(0, [alert(1)])
        await settle(delivery)
        delivery.submit(0, [alert(1), alert(2)])
        await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key, alert(2).dedup_key]

    async def test_keys_already_on_the_topic_are_not_published_again(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """The published set is read from the alert partition before anything is sent."""
        value = schemas.codec.encode(
            ALERT_SCHEMA, {**alert(1).to_dict(), "raised_at": alert(1).raised_at}
        )
        kafka.log["t.alerts"].append((0, b"9434765919", value, []))
        delivery.assign([0])
        delivery.submit(0, [alert(1), alert(2)])
        await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key, alert(2).dedup_key]

    async def test_a_failed_commit_is_retried_without_duplicates(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """After a failed transaction the publisher restarts, rereads and publishes once."""
        kafka.fail_commits = 2
        delivery.assign([0])
        delivery.submit(0, [alert(1), alert(2)])
        await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key, alert(2).dedup_key]
        assert kafka.started == ["w.t.alerts.0"] * 3

    async def test_a_fenced_publisher_respects_what_the_new_owner_published(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """When fenced, the publisher backs off, fences back, rereads, and skips known keys."""
        delivery.assign([0])
        delivery.submit(0, [alert(1)])
        await settle(delivery)
        other = await kafka.producer("w.t.alerts.0")
        await other.begin_transaction()
        value = schemas.codec.encode(
            ALERT_SCHEMA, {**alert(2).to_dict(), "raised_at": alert(2).raised_at}
        )
        await other.send("t.alerts", value, partition=0, headers=[])
        await other.commit_transaction()
        delivery.submit(0, [alert(2), alert(3)])
        await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [a.dedup_key for a in (alert(1), alert(2), alert(3))]

    async def test_a_recipient_code_that_cannot_name_a_topic_gets_no_copy(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """The alert is still published; only the copy for the bad code is left out."""
        delivery.assign([0])
        delivery.submit(0, [alert(1, recipients=("BAD CODE", "RX1"))])
        await settle(delivery)
        assert len(kafka.log["t.alerts"]) == 1
        assert len(kafka.log["t.alerts.provider.RX1"]) == 1

    async def test_a_recipient_outside_the_region_gets_no_topic_and_an_ops_note(
        self, kafka: FakeKafka, delivery: AlertDelivery, sensors: Counted
    ) -> None:
        """An unknown recipient's alert stays on the region topic, counted and logged once."""
        delivery.assign([0])
        with capture_logs() as logs:
            delivery.submit(
                0, [alert(1, recipients=("RX1", "ZZ999")), alert(2, recipients=("ZZ999",))]
            )
            await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key, alert(2).dedup_key]
        assert len(kafka.log["t.alerts.provider.RX1"]) == 1
        assert "t.alerts.provider.ZZ999" not in kafka.log
        assert sensors.unknown == ["death-notified", "death-notified"]
        [note] = [e for e in logs if "not a provider of the region" in e["event"]]
        assert note["recipient"] == "ZZ999"
        assert note["rule"] == "death-notified"
        assert "9434765919" not in repr(note)

    async def test_an_unknown_code_that_is_not_a_code_is_logged_as_a_digest(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """Whatever arrived as a recipient code is not logged unless it looks like a code."""
        delivery.assign([0])
        with capture_logs() as logs:
            delivery.submit(0, [alert(1, recipients=("Smith^John 9434765919",))])
            await settle(delivery)
        [note] = [e for e in logs if "not a provider of the region" in e["event"]]
        assert note["recipient"] == digest("Smith^John 9434765919")
        assert "Smith" not in repr(note) and "9434765919" not in repr(note)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key]

    @pytest.mark.parametrize("code", ["RXA7731X9", "rx1", "M1", "RX1 2"])
    async def test_what_is_not_shaped_like_an_ods_code_is_digested(
        self, kafka: FakeKafka, delivery: AlertDelivery, code: str
    ) -> None:
        """A local identifier in a recipient field (too long, lower case, ...) is not logged."""
        delivery.assign([0])
        with capture_logs() as logs:
            delivery.submit(0, [alert(1, recipients=(code,))])
            await settle(delivery)
        [note] = [e for e in logs if "not a provider of the region" in e["event"]]
        assert note["recipient"] == digest(code)


class TestAssignment:
    async def test_alerts_of_partitions_not_assigned_are_dropped(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """Only the owner of a partition publishes its alerts (from the outbox)."""
        delivery.assign([0])
        delivery.submit(1, [alert(1)])
        await settle(delivery)
        assert kafka.log["t.alerts"] == []
        assert not delivery.is_published(1, alert(1).dedup_key)

    async def test_paused_partitions_publish_again_once_reassigned(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """During a rebalance nothing is published; after it, the queue goes out."""
        delivery.assign([0])
        await settle(delivery)
        delivery.pause([0])
        delivery.submit(0, [alert(1)])
        await parked(delivery, 0)  # it has seen the alert, and the pause
        assert kafka.log["t.alerts"] == []
        assert delivery.pending() == 1
        delivery.assign([0])
        await settle(delivery)
        assert kafka.dedup_keys("t.alerts") == [alert(1).dedup_key]

    async def test_revoked_partitions_stop_their_publisher(
        self, kafka: FakeKafka, delivery: AlertDelivery
    ) -> None:
        """Assigning a new set closes the publishers of partitions no longer owned."""
        delivery.assign([0, 1])
        await settle(delivery)
        delivery.assign([1])
        assert delivery.assigned() == {1}
        assert not delivery.ready(0)
