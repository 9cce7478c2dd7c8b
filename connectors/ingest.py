"""The ingest edge assembled: producer, pipeline, MLLP listener, optional HTTP and file-drop.

:class:`Ingest` is what ``carebus listen`` (and ``carebus run``) start and stop::

    ingest = Ingest(settings, http=True, filedrop=False, observer=metrics)
    await ingest.start()      # producer first: nothing is accepted without Kafka;
                              # then the duplicate window is rebuilt (connectors.window)
    ingest.listening          # True while the MLLP socket accepts connections
    ...
    await ingest.stop()       # stop taking messages, let those in flight finish, flush

``observer`` (a :class:`carebus.metrics.Metrics` in ``carebus listen``) is told about
every message, dead letter, produce error, ACK and connection of every connector.

With ``mllp.watermark_interval_s`` above 0, the pipeline tells a
:class:`~connectors.watermark.WatermarkTracker` about every message it stored, and
a :class:`~connectors.watermark.WatermarkEmitter` (:attr:`Ingest.watermarks`),
started after the listeners and stopped before the producer (writing what is still
due), writes the feeds' watermarks to the events topic. ``child`` (the index of a
child of ``mllp.processes``) goes into their ``source``.
"""

from __future__ import annotations

import asyncio

from carebus.log import get_logger
from carebus.settings import Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.filedrop import FileDrop, FileDropObserver
from connectors.http import HttpServer
from connectors.mllp.allowlist import load_allowlist
from connectors.mllp.server import MllpServer
from connectors.mllp.tls import server_ssl_context
from connectors.pipeline import DeadLetterLimit, IngestObserver, NullObserver, Pipeline
from connectors.publish import Publisher
from connectors.watermark import (
    WatermarkEmitter,
    WatermarkObserver,
    WatermarkTracker,
    source_name,
)
from connectors.window import rebuild_window

log = get_logger(__name__)


class Ingest:
    """Every ingest connector of one process, sharing one producer and one pipeline."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: bool | None = None,
        filedrop: bool | None = None,
        observer: IngestObserver | None = None,
        child: int | None = None,
    ) -> None:
        self.settings = settings
        observer = observer or NullObserver()
        mllp = settings.mllp
        topics = TopicNames.from_settings(settings.topics)
        self.topics = topics
        self.publisher = Publisher(
            settings,
            on_error=observer.produce_error,
            max_request_bytes=max(2 * 1_048_576, mllp.max_frame_bytes + 262_144),
        )
        tracker = (
            WatermarkTracker(mllp.watermark_interval_s) if mllp.watermark_interval_s > 0 else None
        )
        self.watermarks = (
            WatermarkEmitter(
                self.publisher,
                topics.events,
                tracker,
                source=source_name(child),
                timeout_s=mllp.publish_timeout_s,
                observer=observer if isinstance(observer, WatermarkObserver) else None,
            )
            if tracker is not None
            else None
        )
        self.pipeline = Pipeline(
            self.publisher,
            topics,
            publish_timeout_s=mllp.publish_timeout_s,
            fallback_charset=settings.translate.fallback_charset,
            dedup=Deduplicator(mllp.duplicate_window_s, max_entries=mllp.duplicate_max_entries),
            allowlist=load_allowlist(mllp.allowed_senders_file),
            observer=observer,
            deadletter_limit=(
                DeadLetterLimit(mllp.deadletters_per_peer_per_min)
                if mllp.deadletters_per_peer_per_min > 0
                else None
            ),
            on_stored=tracker.observe if tracker is not None else None,
        )
        self.mllp = MllpServer(mllp, self.pipeline, ssl_context=server_ssl_context(mllp))
        use_http = settings.http.enabled if http is None else http
        use_drop = settings.filedrop.enabled if filedrop is None else filedrop
        self.http = HttpServer(settings.http, self.pipeline) if use_http else None
        drop_observer = observer if isinstance(observer, FileDropObserver) else None
        self.filedrop = (
            FileDrop(settings.filedrop, self.pipeline, observer=drop_observer) if use_drop else None
        )
        self._drop_task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """True while the MLLP socket is bound and accepting connections."""
        try:
            return self.mllp.port > 0
        except RuntimeError:  # not started yet, or closed
            return False

    async def start(self) -> None:
        """Connect the producer, then open the listeners.

        Raises :class:`~carebus.errors.KafkaUnavailable`, with nothing opened, when
        Kafka cannot be reached or a topic is missing; ``start`` may then be called
        again.
        """
        t = self.topics
        await self.publisher.start([t.raw, t.events, t.deadletter])
        try:
            dedup = self.pipeline.dedup
            if dedup is not None:
                # Before the port opens: a resend across a restart is then recognised.
                await rebuild_window(self.settings, t.raw, dedup)
            await self.mllp.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            await self.stop()
            raise
        if self.watermarks is not None:
            self.watermarks.start()
        if self.filedrop is not None:
            # Restarted after a crash, with a growing pause (FileDrop.supervise).
            self._drop_task = asyncio.create_task(self.filedrop.supervise(), name="filedrop")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking messages, let those in progress finish, then flush the producer."""
        if self.filedrop is not None:
            self.filedrop.stop()
        await self.mllp.stop(grace_s)
        if self.http is not None:
            await self.http.stop()
        if self._drop_task is not None:
            try:
                await asyncio.wait_for(self._drop_task, grace_s)
            except TimeoutError:
                pass
            except Exception as exc:
                log.error("file drop failed", error=type(exc).__name__)
            self._drop_task = None
        if self.watermarks is not None:
            # After the last message stored, before the producer goes: the latest.
            await self.watermarks.stop(grace_s)
        await self.publisher.stop(grace_s)
        log.info("ingest stopped")
