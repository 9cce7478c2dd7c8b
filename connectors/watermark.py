"""Feed watermarks: how far each provider's feed has been stored, told to every worker partition.

The worker's live clock follows the feeds (docs/architecture.md, "Feed watermarks"):
it must not move past an event it has not applied yet. Only the ingest edge knows
how far each sending provider's feed has got, so each ingest process (a listener,
each child of ``mllp.processes``, with its HTTP and file-drop connectors) says so
on the events topic itself, as a stream processor's sources emit watermarks:

- :class:`WatermarkTracker` keeps, per provider (MSH-4.1), the latest event time
  (``Header.event_time``) among the messages this process has **stored** (told by
  :class:`connectors.pipeline.Pipeline` once Kafka acknowledged a message's
  records; duplicates tell it nothing) and when it last stored one. It is pure:
  times are passed in, so tests drive it with a fake clock.
- :class:`WatermarkEmitter`, every ``mllp.watermark_interval_s``, writes one
  ``carebus.events.FeedWatermark`` record for each provider whose watermark changed
  since it last wrote it to **every** partition of the events topic (explicit
  partition numbers, key the provider, header ``carebus-schema``), through the
  publisher that writes the events. The events it covers were acknowledged before
  it was enqueued, so on each partition it lands after them: a worker that reads it
  has read every event of that provider this process stored before it. Every
  :data:`HEARTBEAT_INTERVALS` intervals it writes every known provider's watermark
  again, so that a worker that lost its state learns them without new messages.

A failure to write watermarks (Kafka down or slow) never touches a message's
acknowledgement: it is logged, counted (``carebus_mllp_watermark_failures_total``)
and the same watermarks (or newer ones) are written at the next interval. While
one write is still unanswered, no other starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from carebus.errors import CarebusError
from carebus.log import get_logger
from connectors.publish import Publisher, Record, mark_seen

log = get_logger(__name__)

#: The schema of a watermark record (in :data:`schemas.FEED_SCHEMAS`).
SCHEMA = "carebus.events.FeedWatermark"
#: Every known provider's watermark is written again every this many intervals.
HEARTBEAT_INTERVALS = 30
#: Providers followed at most; past it, the one stored longest ago is forgotten
#: (a region has tens to hundreds; an allow-list keeps the set to its senders).
MAX_PROVIDERS = 4096

_HEADERS = (("carebus-schema", SCHEMA.encode("ascii")),)


@dataclass(frozen=True, slots=True)
class Watermark:
    """One provider's watermark as this process knows it (Unix milliseconds)."""

    provider: str
    event_time_ms: int
    last_received_ms: int


class WatermarkTracker:
    """Per provider, the latest event time stored and when; which watermarks are due."""

    def __init__(
        self,
        interval_s: float,
        *,
        heartbeat_intervals: int = HEARTBEAT_INTERVALS,
        max_providers: int = MAX_PROVIDERS,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.interval_s = interval_s
        self.heartbeat_ms = round(interval_s * 1000 * heartbeat_intervals)
        self._max = max_providers
        # provider -> [latest event time, last received], both Unix ms
        self._latest: dict[str, list[int]] = {}
        # provider -> (event time, last received) as last written
        self._written: dict[str, tuple[int, int]] = {}
        self._next_heartbeat_ms: int | None = None

    def observe(self, provider: str, event_time_ms: int, received_ms: int) -> None:
        """A message from ``provider`` with this (latest) event time, received then, is stored."""
        known = self._latest.get(provider)
        if known is not None:
            known[0] = max(known[0], event_time_ms)
            known[1] = max(known[1], received_ms)
            return
        if len(self._latest) >= self._max:
            self._forget_oldest()
        self._latest[provider] = [event_time_ms, received_ms]

    def _forget_oldest(self) -> None:
        oldest = min(self._latest, key=lambda p: self._latest[p][1])
        del self._latest[oldest]
        self._written.pop(oldest, None)

    def watermark(self, provider: str) -> Watermark | None:
        """``provider``'s watermark, or None when none of its messages was stored."""
        known = self._latest.get(provider)
        return None if known is None else Watermark(provider, known[0], known[1])

    def due(self, now_ms: int) -> list[Watermark]:
        """The watermarks to write at ``now_ms``: those changed since written, or at a
        heartbeat (every :data:`HEARTBEAT_INTERVALS` intervals after the last one
        written) every known one. Nothing changes until :meth:`written`."""
        heartbeat = self._next_heartbeat_ms is not None and now_ms >= self._next_heartbeat_ms
        due = []
        for provider, (event_time, received) in self._latest.items():
            if heartbeat or self._written.get(provider) != (event_time, received):
                due.append(Watermark(provider, event_time, received))
        return due

    def written(self, marks: Sequence[Watermark], now_ms: int) -> None:
        """``marks``, returned by :meth:`due` at ``now_ms``, are on every partition."""
        for mark in marks:
            if mark.provider in self._latest:
                self._written[mark.provider] = (mark.event_time_ms, mark.last_received_ms)
        if marks and (self._next_heartbeat_ms is None or now_ms >= self._next_heartbeat_ms):
            self._next_heartbeat_ms = now_ms + self.heartbeat_ms


@runtime_checkable
class WatermarkObserver(Protocol):
    """Hook point for metrics; :class:`carebus.metrics.Metrics` fits this shape."""

    def feed_watermark_failed(self) -> None: ...


class _NoObserver:
    def feed_watermark_failed(self) -> None:
        """Do nothing."""


def source_name(child: int | None = None) -> str:
    """This process as a watermark's ``source``: host:pid, and :child for a child."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return name if child is None else f"{name}:{child}"


def _default_encode(schema: str, record: dict[str, Any]) -> bytes:
    from schemas.codec import encode

    return encode(schema, record)


class WatermarkEmitter:
    """Writes the tracker's due watermarks to every partition of the events topic."""

    def __init__(
        self,
        publisher: Publisher,
        topic: str,
        tracker: WatermarkTracker,
        *,
        source: str,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        observer: WatermarkObserver | None = None,
        encode: Callable[[str, dict[str, Any]], bytes] = _default_encode,
    ) -> None:
        self.tracker = tracker
        self.source = source
        self._publisher = publisher
        self._topic = topic
        self._timeout = timeout_s
        self._clock = clock
        self._observer: WatermarkObserver = observer or _NoObserver()
        self._encode = encode
        self._pending: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def records(self, marks: Sequence[Watermark], partitions: int, now_ms: int) -> list[Record]:
        """The records of ``marks``: each one on each of ``partitions`` partitions."""
        out: list[Record] = []
        for mark in marks:
            value = self._encode(
                SCHEMA,
                {
                    "provider": mark.provider,
                    "source": self.source,
                    "event_time": mark.event_time_ms,
                    "last_received": mark.last_received_ms,
                    "emitted_at": now_ms,
                },
            )
            key = mark.provider.encode("utf-8")
            out.extend(Record(self._topic, key, value, _HEADERS, p) for p in range(partitions))
        return out

    async def emit_due(self, now_ms: int | None = None) -> int:
        """Write the due watermarks now; how many were written (0: none due, a write
        still unanswered, or a failure: logged, counted, tried again next time)."""
        pending = self._pending
        if pending is not None and not pending.done():
            return 0
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        marks = self.tracker.due(now)
        if not marks:
            return 0
        try:
            partitions = await self._publisher.partition_count(self._topic)
            records = self.records(marks, partitions, now)
            attempt = await self._publisher.send(records, timeout_s=self._timeout)
            attempt.add_done_callback(mark_seen)
            self._pending = attempt
            await asyncio.wait_for(asyncio.shield(attempt), self._timeout)
        except (CarebusError, TimeoutError) as exc:
            self._observer.feed_watermark_failed()
            log.warning(
                "feed watermarks not written; trying again next interval",
                providers=len(marks),
                error=type(exc).__name__,
            )
            return 0
        self.tracker.written(marks, now)
        return len(marks)

    async def run(self) -> None:
        """Every interval, :meth:`emit_due` (never ends by itself; cancel it)."""
        while True:
            await asyncio.sleep(self.tracker.interval_s)
            try:
                await self.emit_due()
            except Exception as exc:  # a defect here must not stop the watermarks for good
                self._observer.feed_watermark_failed()
                log.error("feed watermark emitter failed", error=type(exc).__name__)

    def start(self) -> None:
        """Start writing every interval, in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="watermarks")

    async def stop(self, timeout_s: float) -> None:
        """Stop the task, then write what is still due (waiting at most ``timeout_s``)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        saved, self._timeout = self._timeout, min(self._timeout, timeout_s)
        try:
            await self.emit_due()
        except Exception as exc:
            log.error("feed watermark emitter failed", error=type(exc).__name__)
        finally:
            self._timeout = saved
