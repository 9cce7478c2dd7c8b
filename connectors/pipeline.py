"""The ordered durability promise every ingest edge (MLLP, file-drop, HTTP) shares.

For each message, :meth:`Pipeline.submit`:

1. parses it once, and checks that the peer may send as its sending facility
   (MSH-4.1; the allow-list applies to network peers, not to the drop folder);
2. answers a resend of an already published (sending facility, MSH-10) as a
   duplicate, without publishing it again (:mod:`connectors.dedup`);
3. translates it to events;
4. enqueues, in this order, the raw bytes (with sender, peer, received time, ...
   as headers) for the raw archive topic and the events for the events topic keyed
   by patient, on the idempotent acks=all producer, and waits until Kafka has
   acknowledged every one of them;
5. only then returns ``accepted``.

A message that can never be accepted (unparseable, untranslatable, a facility the
peer may not use) goes with its reason to the dead-letter topic, and only once that
is acknowledged does ``submit`` return ``rejected``. Any exception while reading,
parsing or translating a message is such a rejection (``unparseable`` or
``translation-failed``), so a bad message is never answered as retriable and
resent for ever. When Kafka is down or too slow,
``submit`` raises :class:`~carebus.errors.KafkaUnavailable` (retriable) instead: the
edge must not claim success, and the sender should resend. A copy whose wait timed
out may still be delivered later; a resend meanwhile waits for it rather than
publishing a second copy.

Records of one message are enqueued together (not raw first and then events after
its acknowledgement) so that concurrent messages share producer batches; a failure
part-way means no success answer, and the resend is recognised or republished with
the same deterministic event ids.

A message Kafka will never take because of its size (a record over the producer's
``max_request_size`` or the topic's ``max.message.bytes``:
:class:`~connectors.publish.RecordTooLarge`) is rejected for good
(:class:`MessageTooLarge`, reason ``message-too-large``) and dead-lettered. A large
message's raw record (over :data:`~connectors.publish.BATCH_BYTES`) is published
and acknowledged before its events, so a refused raw record leaves no events
behind. When the raw bytes are too large for the dead-letter topic as well, the
dead letter keeps the first :data:`DEADLETTER_KEEP_BYTES` of them, with headers
``carebus-raw-size`` (the full size) and ``carebus-truncated`` (why).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from carebus.errors import (
    MessageRejected,
    MessageTooLarge,
    PublishFailed,
    TranslationFailed,
    Unparseable,
)
from carebus.log import get_logger
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.hl7 import Message, parse_message
from connectors.hl7.charset import check_fallback
from connectors.mllp.ack import read_header
from connectors.mllp.allowlist import Allowlist, Peer
from connectors.publish import (
    BATCH_BYTES,
    Headers,
    Publisher,
    Record,
    RecordTooLarge,
    mark_seen,
)

log = get_logger(__name__)

Status = Literal["accepted", "duplicate", "rejected"]

#: Sources the sender allow-list does not apply to: whoever may write to the drop
#: folder is trusted as any facility (file permissions are the control there).
UNCHECKED_SOURCES = frozenset({"file"})

#: Bytes of the raw message a dead letter keeps when the whole is too large for the
#: dead-letter topic.
DEADLETTER_KEEP_BYTES = 32 * 1024


class EventLike(Protocol):
    """What the translator returns: a schema name, a patient key and a record."""

    @property
    def schema(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def record(self) -> dict[str, Any]: ...


Translate = Callable[[Message, bytes, datetime], Sequence[EventLike]]
Encode = Callable[[str, dict[str, Any]], bytes]


class IngestObserver(Protocol):
    """Hook points for metrics; :class:`carebus.metrics.Metrics` fits this shape."""

    def message_received(self, provider: str | None, message_type: str | None) -> None: ...
    def message_accepted(self, provider: str | None, message_type: str | None) -> None: ...
    def message_rejected(self, provider: str | None, message_type: str | None) -> None: ...
    def message_duplicated(self, provider: str | None, message_type: str | None) -> None: ...
    def dead_lettered(self, provider: str | None, reason: str | None) -> None: ...
    def produce_error(self, topic: str) -> None: ...
    def ack_sent(self, ack_code: str, seconds: float) -> None: ...
    def connection_opened(self) -> None: ...
    def connection_closed(self) -> None: ...


class NullObserver:
    """An observer that records nothing."""

    def message_received(self, provider: str | None, message_type: str | None) -> None:
        """Do nothing."""

    def message_accepted(self, provider: str | None, message_type: str | None) -> None:
        """Do nothing."""

    def message_rejected(self, provider: str | None, message_type: str | None) -> None:
        """Do nothing."""

    def message_duplicated(self, provider: str | None, message_type: str | None) -> None:
        """Do nothing."""

    def dead_lettered(self, provider: str | None, reason: str | None) -> None:
        """Do nothing."""

    def produce_error(self, topic: str) -> None:
        """Do nothing."""

    def ack_sent(self, ack_code: str, seconds: float) -> None:
        """Do nothing."""

    def connection_opened(self) -> None:
        """Do nothing."""

    def connection_closed(self) -> None:
        """Do nothing."""


class Sink(Protocol):
    """What the edges need of a pipeline (MLLP, HTTP and file-drop take any such object)."""

    @property
    def observer(self) -> IngestObserver: ...

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome: ...


@dataclass(frozen=True)
class Outcome:
    """How one message ended; ``error`` is set when it was rejected."""

    status: Status
    sending_facility: str
    control_id: str
    message_type: str
    events: int = 0
    error: MessageRejected | None = None


def _default_translate(message: Message, raw: bytes, received_time: datetime) -> Sequence[Any]:
    from connectors.translate import translate

    return translate(message, raw=raw, received_time=received_time)  # type: ignore[no-any-return]


def _default_encode(schema: str, record: dict[str, Any]) -> bytes:
    from schemas.codec import encode

    return encode(schema, record)


class Pipeline:
    """Parse, check, translate and durably publish one message at a time per caller."""

    def __init__(
        self,
        publisher: Publisher,
        topics: TopicNames,
        *,
        publish_timeout_s: float,
        fallback_charset: str = "iso-8859-1",
        dedup: Deduplicator | None = None,
        allowlist: Allowlist | None = None,
        observer: IngestObserver | None = None,
        translate: Translate = _default_translate,
        encode: Encode = _default_encode,
    ) -> None:
        self._publisher = publisher
        self._topics = topics
        self._timeout = publish_timeout_s
        self._fallback = check_fallback(fallback_charset)  # a ConfigError now, not per message
        self._dedup = dedup
        self._allowlist = allowlist
        self._observer: IngestObserver = observer or NullObserver()
        self._translate = translate
        self._encode = encode

    @property
    def observer(self) -> IngestObserver:
        """The observer told about every message."""
        return self._observer

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        """Take one message (no MLLP framing) from ``peer``; see the module docstring.

        ``origin`` names where the message came from when it has no control id (a
        file and position), for the dead-letter key. Raises
        :class:`~carebus.errors.KafkaUnavailable` when the outcome could not be
        made durable.
        """
        try:
            message = parse_message(raw, fallback_charset=self._fallback)
            facility = message.sending_facility
            control_id = message.control_id
            message_type = message.message_type
        except Exception as exc:  # whatever the bytes are, they are rejected, never retried
            unreadable = exc if isinstance(exc, MessageRejected) else _unreadable(exc)
            header = read_header(raw)
            facility = control_id = ""
            if header is not None:
                facility = header.sending_facility.split(header.component_separator)[0]
                control_id = header.control_id
            self._observer.message_received(facility, "")
            ids = (facility, control_id, "")
            return await self._reject(raw, peer, received_time, unreadable, ids=ids, origin=origin)
        self._observer.message_received(facility, message_type)
        ids = (facility, control_id, message_type)
        allowlist = None if peer.source in UNCHECKED_SOURCES else self._allowlist
        if allowlist is not None and not allowlist.allows(peer, facility):
            refused = _not_allowed(facility, control_id)
            return await self._reject(raw, peer, received_time, refused, ids=ids, origin=origin)
        key = (facility, control_id) if control_id else None
        if key is not None and await self._already_published(key):
            self._observer.message_duplicated(facility, message_type)
            log.info("duplicate message", control_id=control_id, sending_facility=facility)
            return Outcome("duplicate", facility, control_id, message_type)
        try:
            events = self._translate(message, raw, received_time)
            records = [
                Record(
                    self._topics.events,
                    ev.key.encode("utf-8"),
                    self._encode(ev.schema, ev.record),
                    (("carebus-schema", ev.schema.encode("ascii")),),
                )
                for ev in events
            ]
        except MessageRejected as exc:
            return await self._reject(raw, peer, received_time, exc, ids=ids, origin=origin)
        except Exception as exc:  # a defect in translation must not stop the feed
            log.error("translation failed", control_id=control_id, error=type(exc).__name__)
            failed = TranslationFailed(
                f"message could not be translated ({type(exc).__name__})", control_id=control_id
            )
            return await self._reject(raw, peer, received_time, failed, ids=ids, origin=origin)
        headers = _raw_headers(raw, peer, received_time, facility, control_id)
        raw_record = Record(self._topics.raw, _key(facility, control_id, origin), raw, headers)
        deadline = asyncio.get_running_loop().time() + self._timeout
        attempt: asyncio.Future[None]
        try:
            if len(raw) > BATCH_BYTES:
                # Large: the raw record alone first, so a refused one leaves no events.
                attempt = asyncio.ensure_future(self._raw_then_events(raw_record, records))
                attempt.add_done_callback(mark_seen)
            else:
                # The raw record first, then the events, in one go: one wait for both.
                attempt = await self._enqueue([raw_record, *records])
            if key is not None and self._dedup is not None:
                self._dedup.track(key, attempt)
            await self._wait(attempt, deadline)
        except RecordTooLarge as exc:
            log.warning(
                "message too large for kafka",
                control_id=control_id,
                sending_facility=facility,
                topic=exc.topic,
                size=exc.size,
            )
            refused = MessageTooLarge(
                f"{exc.size}-byte record refused by Kafka as too large for {exc.topic}",
                control_id=control_id,
            )
            return await self._reject(raw, peer, received_time, refused, ids=ids, origin=origin)
        self._observer.message_accepted(facility, message_type)
        return Outcome("accepted", facility, control_id, message_type, events=len(records))

    async def _already_published(self, key: tuple[str, str]) -> bool:
        if self._dedup is None:
            return False
        if self._dedup.is_duplicate(key):
            return True
        earlier = self._dedup.in_doubt(key)
        if earlier is None:
            return False
        # An earlier copy may still land: never publish a second one meanwhile.
        try:
            await self._wait(earlier, asyncio.get_running_loop().time() + self._timeout)
        except (PublishFailed, RecordTooLarge):
            if not earlier.done():
                raise PublishFailed(
                    f"an earlier copy of {key[1]} is still being published"
                ) from None
            return False
        return True

    async def _raw_then_events(self, raw_record: Record, events: list[Record]) -> None:
        """Publish ``raw_record``, and only once Kafka has it, ``events`` (large messages)."""
        await (await self._enqueue([raw_record]))
        if events:
            await (await self._enqueue(events))

    async def _enqueue(self, records: list[Record]) -> asyncio.Future[None]:
        attempt = await self._publisher.send(records, timeout_s=self._timeout)
        attempt.add_done_callback(mark_seen)
        return attempt

    async def _wait(self, attempt: asyncio.Future[None], deadline: float) -> None:
        """Wait for ``attempt`` until ``deadline`` without cancelling it (it may still land)."""
        if not attempt.done():
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_: object) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            timer = loop.call_at(deadline, wake, None)
            attempt.add_done_callback(wake)
            try:
                await waiter
            finally:
                timer.cancel()
                attempt.remove_done_callback(wake)
        if not attempt.done():
            raise PublishFailed(f"Kafka did not acknowledge within {self._timeout:g}s")
        attempt.result()

    async def _reject(
        self,
        raw: bytes,
        peer: Peer,
        received_time: datetime,
        exc: MessageRejected,
        *,
        ids: tuple[str, str, str],
        origin: str,
    ) -> Outcome:
        facility, control_id, message_type = ids
        if exc.control_id is None and control_id:
            exc.control_id = control_id
        headers = (
            *_raw_headers(raw, peer, received_time, facility, control_id),
            ("carebus-reason", exc.reason.encode("ascii", "replace")),
            ("carebus-detail", exc.detail.encode("utf-8", "replace")),
        )
        record = Record(self._topics.deadletter, _key(facility, control_id, origin), raw, headers)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            await self._wait(await self._enqueue([record]), deadline)
        except RecordTooLarge as refused:
            log.warning(
                "dead letter too large; keeping a truncated copy",
                control_id=control_id,
                size=refused.size,
                kept=DEADLETTER_KEEP_BYTES,
            )
            await self._wait(await self._enqueue([_truncated(record, refused)]), deadline)
        self._observer.dead_lettered(facility, exc.reason)
        self._observer.message_rejected(facility, message_type)
        log.info(
            "message rejected",
            control_id=control_id,
            sending_facility=facility,
            reason=exc.reason,
            source=peer.source,
        )
        return Outcome("rejected", facility, control_id, message_type, error=exc)


def _truncated(record: Record, refused: RecordTooLarge) -> Record:
    """``record`` with its value cut to :data:`DEADLETTER_KEEP_BYTES`, saying so in headers."""
    why = f"record-too-large: {refused.size} bytes refused by {refused.topic}"
    headers = (
        *record.headers,
        ("carebus-raw-size", str(len(record.value)).encode()),
        ("carebus-truncated", why.encode()),
    )
    return Record(record.topic, record.key, record.value[:DEADLETTER_KEEP_BYTES], headers)


def _unreadable(exc: Exception) -> MessageRejected:
    """A rejection for an unexpected failure to read a message (a parser defect)."""
    log.error("message could not be read", error=type(exc).__name__)
    return Unparseable(f"message could not be read ({type(exc).__name__})")


def _not_allowed(facility: str, control_id: str) -> MessageRejected:
    from carebus.errors import SenderNotAllowed

    return SenderNotAllowed(
        f"this peer may not send as sending facility {facility or '(empty)'}",
        control_id=control_id,
        field="MSH-4",
    )


def _key(facility: str, control_id: str, origin: str) -> bytes:
    if control_id:
        return f"{facility}|{control_id}".encode()
    return (origin or facility).encode()


def _raw_headers(
    raw: bytes, peer: Peer, received_time: datetime, facility: str, control_id: str
) -> Headers:
    return (
        ("carebus-sender", facility.encode()),
        ("carebus-peer", peer.describe().encode()),
        ("carebus-received-time", received_time.isoformat().encode()),
        ("carebus-control-id", control_id.encode()),
        ("carebus-raw-sha256", hashlib.sha256(raw).hexdigest().encode()),
        ("carebus-source", peer.source.encode()),
    )
