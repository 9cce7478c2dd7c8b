"""Rebuild the duplicate window at start from the raw topic's recent records.

A listener's window (:class:`connectors.dedup.Deduplicator`) is in memory. So that a
resend is recognised across a restart (a SIGKILL included) and by every child of
``mllp.processes``, each listener process, before it opens its port, reads the raw
topic's records of the last ``mllp.duplicate_window_s`` (``offsets_for_times`` on
every partition, up to the end offsets it found) and restores one entry per record:
key ``(carebus-sender, carebus-control-id)``, digest from ``carebus-content-digest``
(computed from the value for records written before that header existed), MSH-7 and
``carebus-received-time`` kept so the pipeline can publish the events again
(see :mod:`connectors.dedup` on why a restored entry is only *unconfirmed*).

At most ``mllp.duplicate_max_entries`` records are read: the newest, shared evenly
over the partitions. The count and the time taken are logged.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from carebus.errors import KafkaUnavailable
from carebus.kafka import aiokafka_config
from carebus.log import get_logger
from carebus.settings import Settings
from connectors.dedup import Deduplicator, Key, content_digest, msh7_span
from connectors.pipeline import DIGEST_HEADER

log = get_logger(__name__)

#: (timestamp ms, key, digest, MSH-7, received time) of one raw record.
_Entry = tuple[int, Key, str, bytes, str]

#: Records fetched per poll while rebuilding.
_POLL_RECORDS = 5000


async def rebuild_window(settings: Settings, topic: str, dedup: Deduplicator) -> int:
    """Restore into ``dedup`` the raw records of ``topic`` within its window; how many.

    Raises :class:`~carebus.errors.KafkaUnavailable` when Kafka cannot be read.
    """
    if dedup.window_s <= 0 or dedup.max_entries <= 0:
        return 0
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        **aiokafka_config(settings),
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=_POLL_RECORDS,
    )
    try:
        await consumer.start()
        found: list[_Entry] = []
        try:
            found = await _read(consumer, topic, dedup, settings.kafka.request_timeout_s)
        finally:
            await consumer.stop()
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot rebuild the duplicate window from {topic}: {type(exc).__name__}"
        ) from exc
    now_ms = time.time() * 1000
    found.sort(key=lambda item: item[0])
    for stamp, key, digest, msh7, received in found:
        dedup.restore(key, digest, msh7, received, (now_ms - stamp) / 1000)
    restored = len(found)
    log.info(
        "duplicate window rebuilt",
        topic=topic,
        restored=restored,
        seconds=round(time.monotonic() - started, 3),
    )
    return restored


async def _read(
    consumer: AIOKafkaConsumer, topic: str, dedup: Deduplicator, stall_s: float
) -> list[_Entry]:
    """The entries of the records to restore; KafkaUnavailable after ``stall_s`` without any."""
    # A consumer with nothing assigned has no metadata yet: ask for the cluster's.
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise KafkaUnavailable(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    since_ms = int((time.time() - dedup.window_s) * 1000)
    starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
    cap = max(1, dedup.max_entries // len(tps))
    todo: dict[TopicPartition, int] = {}
    for tp in tps:
        end = ends[tp]
        found = starts.get(tp)
        start = end if found is None else found.offset
        start = max(start, end - cap)
        if start < end:
            consumer.seek(tp, start)
            todo[tp] = end
    out: list[_Entry] = []
    progress = time.monotonic()
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=_POLL_RECORDS)
        if any(batch.values()):
            progress = time.monotonic()
        elif time.monotonic() - progress > stall_s:
            raise KafkaUnavailable(f"no records from {topic} for {stall_s:g}s while rebuilding")
        for tp, records in batch.items():
            end = todo.get(tp)
            if end is None:
                continue
            for record in records:
                if record.offset < end:
                    entry = _entry(record)  # small: the values are not kept
                    if entry is not None:
                        out.append(entry)
            if records and records[-1].offset >= end - 1:
                del todo[tp]
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                del todo[tp]
    return out


def _entry(record: Any) -> _Entry | None:
    """What the window keeps of a raw record; None when it has no control id."""
    headers = {k: v for k, v in (record.headers or ())}
    control_id = headers.get("carebus-control-id", b"").decode("utf-8", "replace")
    if not control_id:
        return None
    facility = headers.get("carebus-sender", b"").decode("utf-8", "replace")
    value: bytes = record.value or b""
    stored = headers.get(DIGEST_HEADER)
    digest = stored.decode("ascii", "replace") if stored else content_digest(value)
    start, end = msh7_span(value)
    received = headers.get("carebus-received-time", b"").decode("ascii", "replace")
    return int(record.timestamp), (facility, control_id), digest, value[start:end], received
