"""Keep a :class:`carebus.status.Tally` up to date by tailing Kafka in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from carebus.log import get_logger
from carebus.settings import Settings
from carebus.status import (
    GroupLag,
    Tally,
    TopicStatus,
    carebus_topics,
    end_offsets,
    group_lag,
    report_from_tally,
)
from carebus.topics import TopicNames

log = get_logger(__name__)


class Collector:
    """Tails carebus's topics from ``since`` on and polls offsets and lag.

    Runs kafka-python in one daemon thread (:meth:`start` / :meth:`stop`); the web
    handlers only call :meth:`snapshot`, which copies the counts under a lock.
    Errors (Kafka's or any other) are logged by class name, shown on the page, and
    the thread reconnects after ``retry_s``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        since: datetime,
        expectations: Mapping[str, timedelta | None] | None = None,
        refresh_s: float = 2.0,
        retry_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._names = TopicNames.from_settings(settings.topics)
        self._since = since
        self._expectations = dict(expectations or {})
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tally = Tally()
        self._topics: list[TopicStatus] = []
        self._lag: list[GroupLag] = []
        self._connected = False
        self._refreshed = False
        self._last_error = ""

    # ----------------------------------------------------------- public API

    def start(self) -> None:
        """Start tailing in a background thread."""
        self._thread = threading.Thread(target=self._run, name="carebus-dashboard", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and close its Kafka clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def ready(self) -> bool:
        """True once connected and offsets were read at least once."""
        return self._connected and self._refreshed

    @property
    def last_error(self) -> str:
        return self._last_error

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """The current counts as the JSON of ``carebus status``, plus collector state."""
        with self._lock:
            report = report_from_tally(
                self._tally,
                now=now,
                since=self._since,
                topics=list(self._topics),
                lag=list(self._lag),
                expectations=self._expectations,
            )
            body = report.to_json()
        body["collector"] = {"connected": self._connected, "error": self._last_error}
        return body

    # ----------------------------------------------------------- the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tail()
            except Exception as exc:  # keep the page alive: report, reconnect, go on
                self._connected = False
                self._last_error = type(exc).__name__
                log.warning("dashboard.collector_error", error=self._last_error)
                self._stop.wait(self._retry_s)

    def _tail(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        from carebus.kafka import kafka_python_config

        cfg = kafka_python_config(self._settings)
        admin = KafkaAdminClient(**cfg)
        consumer = KafkaConsumer(**cfg, group_id=None, enable_auto_commit=False)
        try:
            self._connected = True
            self._last_error = ""
            next_refresh = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_refresh:
                    self._refresh(admin, consumer)
                    next_refresh = time.monotonic() + self._refresh_s
                if not consumer.assignment():
                    self._stop.wait(0.5)
                    continue
                batch = consumer.poll(timeout_ms=500, max_records=2000)
                if batch:
                    self._count(batch)
        finally:
            consumer.close()
            admin.close()

    def _refresh(self, admin: Any, consumer: Any) -> None:
        topics = end_offsets(consumer, carebus_topics(self._settings, admin))
        lag = group_lag(admin, topics)
        self._assign_new_partitions(consumer)
        with self._lock:
            self._topics = topics
            self._lag = lag
        self._refreshed = True

    def _assign_new_partitions(self, consumer: Any) -> None:
        from kafka import TopicPartition

        consumer.topics()  # refresh metadata so newly created topics are seen
        wanted = {
            TopicPartition(t, p)
            for t in (self._names.raw, self._names.deadletter, self._names.alerts)
            for p in consumer.partitions_for_topic(t) or ()
        }
        current = set(consumer.assignment())
        new = wanted - current
        if not new:
            return
        positions = {tp: consumer.position(tp) for tp in current}
        consumer.assign(sorted(wanted))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        found = consumer.offsets_for_times(dict.fromkeys(new, int(self._since.timestamp() * 1000)))
        ends = consumer.end_offsets(list(new))
        for tp in new:
            hit = found.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else ends[tp])

    def _count(self, batch: Mapping[Any, list[Any]]) -> None:
        with self._lock:
            for tp, records in batch.items():
                for rec in records:
                    if tp.topic == self._names.raw:
                        self._tally.add_raw(rec.headers, rec.timestamp)
                    elif tp.topic == self._names.deadletter:
                        self._tally.add_deadletter(rec.headers)
                    else:
                        self._tally.add_alert(rec.value)


def now_utc() -> datetime:
    """The wall clock, read at the edge (web handlers)."""
    return datetime.fromtimestamp(time.time(), UTC)
