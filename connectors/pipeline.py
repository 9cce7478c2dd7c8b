"""The ordered durability promise every ingest edge (MLLP, file-drop, HTTP) shares.

For each message, :meth:`Pipeline.submit`:

1. checks that the peer may send as its sending facility (MSH-4.1) from the cheap
   header read (:func:`~connectors.mllp.ack.read_header`), before parsing: a peer
   that may not send costs almost nothing (the allow-list applies to network
   peers, not to the drop folder);
2. parses it once;
3. answers a resend of an already published message -- the same (sending
   facility, MSH-10) and the same content digest -- as a duplicate, without
   publishing it again (:mod:`connectors.dedup`; a resend of a message restored
   from the raw topic at start first has its events published again; when they
   cannot be made again, or Kafka refuses one as too large, it is still answered
   duplicate and dead-lettered with the reason and :data:`RAW_STORED_HEADER`). The same
   ids with other content is a new message, marked with
   :data:`CONFLICT_HEADER` on its raw record and events. From this check on, before
   anything awaits, the message is in the window as in flight, so a resend (or
   another message of the same ids) checked while it is still being enqueued sees
   it;
4. translates it to events;
5. enqueues, in this order, the raw bytes (with sender, peer, received time,
   content digest, ... as headers) for the raw archive topic and the events for
   the events topic keyed by patient, on the idempotent acks=all producer, and
   waits until Kafka has acknowledged every one of them;
6. then tells ``on_stored`` (the feed watermarks, :mod:`connectors.watermark`) the
   provider, the latest event time of the events and the received time, and only
   then returns ``accepted``. A duplicate tells it nothing.

A message that can never be accepted (unparseable, untranslatable, a facility the
peer may not use) goes with its reason to the dead-letter topic, and only once that
is acknowledged does ``submit`` return ``rejected``. Any exception while reading,
parsing or translating a message is such a rejection (``unparseable`` or
``translation-failed``), so a bad message is never answered as retriable and
resent for ever. A refused peer's dead letter keeps the headers (and
``carebus-raw-sha256``), not the bytes; past a peer's dead-letter budget
(:class:`DeadLetterLimit`) none is written, and the message is still ``rejected``.
When Kafka is down or too slow,
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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from connectors.dedup import (
    CONFLICT,
    DUPLICATE,
    UNCONFIRMED,
    Deduplicator,
    Seen,
    content_digest,
    with_msh7,
)
from connectors.hl7 import Message, parse_message
from connectors.hl7.charset import check_fallback
from connectors.mllp.ack import MshHeader, read_header
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
Parse = Callable[[bytes, str], Message]
#: Told once a message's records were acknowledged: (provider (MSH-4.1), the latest
#: event time of its events, its received time), times in Unix milliseconds.
Stored = Callable[[str, int, int], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

#: Header on a message's raw record: its content digest (:func:`connectors.dedup.content_digest`).
DIGEST_HEADER = "carebus-content-digest"
#: Header on the raw record and events of a message whose (MSH-4.1, MSH-10) was already
#: used by a message of different content within the window: that message's digest.
CONFLICT_HEADER = "carebus-control-id-conflict"
#: Header on the dead letter of a resend whose stored copy (restored from the raw topic)
#: could not have its events made or published again: the raw topic's name, where the
#: message's raw record is.
RAW_STORED_HEADER = "carebus-raw-stored"


class IngestObserver(Protocol):
    """Hook points for metrics; :class:`carebus.metrics.Metrics` fits this shape."""

    def message_received(self, provider: str | None, message_type: str | None) -> None: ...
    def message_accepted(self, provider: str | None, message_type: str | None) -> None: ...
    def message_rejected(self, provider: str | None, message_type: str | None) -> None: ...
    def message_duplicated(self, provider: str | None, message_type: str | None) -> None: ...
    def control_id_conflict(self, provider: str | None, message_type: str | None) -> None: ...
    def deadletter_dropped(self, reason: str | None) -> None: ...
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

    def control_id_conflict(self, provider: str | None, message_type: str | None) -> None:
        """Do nothing."""

    def deadletter_dropped(self, reason: str | None) -> None:
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


def _default_parse(raw: bytes, fallback_charset: str) -> Message:
    return parse_message(raw, fallback_charset=fallback_charset)


class _Bucket:
    __slots__ = ("dropped", "logged", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.dropped = 0
        self.logged = float("-inf")


class DeadLetterLimit:
    """Per-peer budget of dead letters: ``per_min`` a minute, in bursts of up to ``per_min``.

    Over it, :meth:`allow` is False (the caller still answers the sender, but writes
    no dead letter); the drops are logged at most once per ``log_interval_s`` per peer.
    At most ``max_peers`` peers are followed (the oldest are forgotten first).
    """

    def __init__(
        self,
        per_min: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_interval_s: float = 60.0,
        max_peers: int = 10_000,
    ) -> None:
        self._capacity = float(per_min)
        self._rate = per_min / 60.0
        self._clock = clock
        self._interval = log_interval_s
        self._max_peers = max_peers
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, peer: str, reason: str) -> bool:
        """Take one dead letter from ``peer``'s budget; False when it is spent."""
        now = self._clock()
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self._max_peers:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[peer] = _Bucket(self._capacity, now)
        else:
            bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.stamp) * self._rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.dropped += 1
        if now - bucket.logged >= self._interval:
            log.warning(
                "dead letters dropped: peer over its dead-letter rate limit",
                peer=peer,
                dropped=bucket.dropped,
                reason=reason,
                limit_per_min=int(self._capacity),
            )
            bucket.dropped = 0
            bucket.logged = now
        return False


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
        parse: Parse = _default_parse,
        deadletter_limit: DeadLetterLimit | None = None,
        on_stored: Stored | None = None,
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
        self._parse = parse
        self._limit = deadletter_limit
        self._on_stored = on_stored

    @property
    def observer(self) -> IngestObserver:
        """The observer told about every message."""
        return self._observer

    @property
    def dedup(self) -> Deduplicator | None:
        """The duplicate window, if there is one."""
        return self._dedup

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        """Take one message (no MLLP framing) from ``peer``; see the module docstring.

        ``origin`` names where the message came from when it has no control id (a
        file and position), for the dead-letter key. Raises
        :class:`~carebus.errors.KafkaUnavailable` when the outcome could not be
        made durable.
        """
        allowlist = None if peer.source in UNCHECKED_SOURCES else self._allowlist
        # The cheap header read, only where it is needed: the allow-list, or a parse error.
        header = read_header(raw) if allowlist is not None else None
        if allowlist is not None:
            # From the cheap header read, before parsing: a peer that may not send
            # costs almost nothing.
            refused = await self._refuse_early(
                raw, peer, received_time, header=header, allowlist=allowlist, origin=origin
            )
            if refused is not None:
                return refused
        try:
            message = self._parse(raw, self._fallback)
            facility = message.sending_facility
            control_id = message.control_id
            message_type = message.message_type
        except Exception as exc:  # whatever the bytes are, they are rejected, never retried
            unreadable = exc if isinstance(exc, MessageRejected) else _unreadable(exc)
            ids = _header_ids(header if allowlist is not None else read_header(raw))
            self._observer.message_received(ids[0], "")
            return await self._reject(raw, peer, received_time, unreadable, ids=ids, origin=origin)
        self._observer.message_received(facility, message_type)
        ids = (facility, control_id, message_type)
        if allowlist is not None and not allowlist.allows(peer, facility):
            refused_exc = _not_allowed(facility, control_id)
            return await self._reject(
                raw, peer, received_time, refused_exc, ids=ids, origin=origin, keep_body=False
            )
        key = (facility, control_id) if control_id else None
        digest = content_digest(raw)
        conflict = ""
        if key is not None and self._dedup is not None:
            seen, conflict = await self._in_window(
                raw, key, digest, message_type, peer=peer, received=received_time, origin=origin
            )
            if seen is not None:
                return seen
        translated = self._translated(message, raw, received_time, conflict)
        if isinstance(translated, MessageRejected):
            return await self._reject(raw, peer, received_time, translated, ids=ids, origin=origin)
        records, event_time = translated
        headers = (
            *_raw_headers(raw, peer, received_time, facility, control_id),
            (DIGEST_HEADER, digest.encode()),
        )
        if conflict:
            headers = (*headers, (CONFLICT_HEADER, conflict.encode()))
        raw_record = Record(self._topics.raw, _key(facility, control_id, origin), raw, headers)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            attempt = await self._start(raw_record, records, key, digest)
            await self._wait(attempt, deadline)
        except RecordTooLarge as exc:
            log.warning(
                "message too large for kafka",
                control_id=control_id,
                sending_facility=facility,
                topic=exc.topic,
                size=exc.size,
            )
            refused_exc = MessageTooLarge(
                f"{exc.size}-byte record refused by Kafka as too large for {exc.topic}",
                control_id=control_id,
            )
            return await self._reject(raw, peer, received_time, refused_exc, ids=ids, origin=origin)
        if event_time is not None:
            self._stored(facility, event_time, received_time)
        self._observer.message_accepted(facility, message_type)
        return Outcome("accepted", facility, control_id, message_type, events=len(records))

    def _stored(self, facility: str, event_time: datetime, received_time: datetime) -> None:
        """Tell ``on_stored`` (if any) that a message of ``facility`` is stored."""
        on_stored = self._on_stored
        if on_stored is None:
            return
        try:
            on_stored(facility, _millis(event_time), _millis(received_time))
        except Exception as exc:  # it is stored: a watermark defect must not change the answer
            log.error("feed watermark not updated", error=type(exc).__name__)

    def _translated(
        self, message: Message, raw: bytes, received_time: datetime, conflict: str
    ) -> tuple[list[Record], datetime | None] | MessageRejected:
        """The event records of ``message`` and their latest event time (None without
        events or ``on_stored``), or why it cannot be translated: a defect in
        translation is a rejection too, so that it never stops the feed."""
        try:
            return self._event_records(
                message, raw, received_time, conflict, latest=self._on_stored is not None
            )
        except MessageRejected as exc:
            return exc
        except Exception as exc:
            control_id = message.control_id
            log.error("translation failed", control_id=control_id, error=type(exc).__name__)
            return TranslationFailed(
                f"message could not be translated ({type(exc).__name__})", control_id=control_id
            )

    def _event_records(
        self,
        message: Message,
        raw: bytes,
        received_time: datetime,
        conflict: str,
        *,
        latest: bool = False,
    ) -> tuple[list[Record], datetime | None]:
        """The events of ``message`` as records (marked when its control id conflicts),
        and with ``latest`` the latest ``header.event_time`` among them (else None)."""
        events = self._translate(message, raw, received_time)
        records = []
        event_time: datetime | None = None
        for ev in events:
            if latest:
                when = ev.record["header"]["event_time"]
                if event_time is None or when > event_time:
                    event_time = when
            headers: Headers = (("carebus-schema", ev.schema.encode("ascii")),)
            if conflict:
                headers = (*headers, (CONFLICT_HEADER, conflict.encode()))
            records.append(
                Record(
                    self._topics.events,
                    ev.key.encode("utf-8"),
                    self._encode(ev.schema, ev.record),
                    headers,
                )
            )
        return records, event_time

    async def _refuse_early(
        self,
        raw: bytes,
        peer: Peer,
        received_time: datetime,
        *,
        header: MshHeader | None,
        allowlist: Allowlist,
        origin: str,
    ) -> Outcome | None:
        """Reject, unparsed, a message the allow-list refuses by its header; else None.

        A facility with the escape character in it is left to the check after parsing
        (the allow-list holds unescaped names).
        """
        if header is None:
            if allowlist.knows(peer):
                return None  # unreadable: parsing will say why
            facility = control_id = ""
        else:
            facility = header.sending_facility.split(header.component_separator)[0]
            control_id = header.control_id
            escape = header.encoding_characters[2:3]
            if escape and escape in facility:
                return None
            if allowlist.allows(peer, facility):
                return None
        message_type = header.message_type.split(header.component_separator)[0] if header else ""
        self._observer.message_received(facility, message_type)
        ids = (facility, control_id, message_type)
        refused = _not_allowed(facility, control_id)
        return await self._reject(
            raw, peer, received_time, refused, ids=ids, origin=origin, keep_body=False
        )

    async def _in_window(
        self,
        raw: bytes,
        key: tuple[str, str],
        digest: str,
        message_type: str,
        *,
        peer: Peer,
        received: datetime,
        origin: str,
    ) -> tuple[Outcome | None, str]:
        """A duplicate's outcome, or None and the digest this message conflicts with ("")."""
        assert self._dedup is not None
        facility, control_id = key
        status, other = await self._check_window(key, digest)
        if status == DUPLICATE:
            self._observer.message_duplicated(facility, message_type)
            log.info("duplicate message", control_id=control_id, sending_facility=facility)
            return Outcome("duplicate", facility, control_id, message_type), ""
        if status == UNCONFIRMED and other is not None:
            # Held while its events are published again: a second resend waits for it.
            placeholder: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._dedup.hold(key, digest, placeholder)
            try:
                events = await self._republish(
                    raw, other, key, message_type, peer=peer, received=received, origin=origin
                )
                self._dedup.confirm(key, digest)
            finally:
                self._dedup.release(key, digest, placeholder)
                placeholder.set_result(None)  # whoever waits for it checks again
            self._observer.message_duplicated(facility, message_type)
            log.info(
                "duplicate of a message restored from the raw topic; events published again",
                control_id=control_id,
                sending_facility=facility,
                events=events,
            )
            outcome = Outcome("duplicate", facility, control_id, message_type, events=events)
            return outcome, ""
        conflict = ""
        if status == CONFLICT and other is not None:
            conflict = other.digest
        else:
            conflict = self._dedup.pending_other(key, digest) or ""
        if conflict:
            self._observer.control_id_conflict(facility, message_type)
            log.warning(
                "control id reused with different content; stored as a new message",
                control_id=control_id,
                sending_facility=facility,
                digest=digest[:12],
                earlier_digest=conflict[:12],
            )
        return None, conflict

    async def _republish(
        self,
        raw: bytes,
        stored: Seen,
        key: tuple[str, str],
        message_type: str,
        *,
        peer: Peer,
        received: datetime,
        origin: str,
    ) -> int:
        """Publish again the events of the restored message ``raw`` is a resend of; how
        many. When they cannot be, the resend is dead-lettered (never an error)."""
        facility, control_id = key
        events = await self._republish_events(raw, stored.msh7, stored.received, control_id)
        if isinstance(events, MessageRejected):
            # Never failed for ever (its raw record is stored), but never silent either.
            log.warning(
                "events of a restored message not published again; dead-lettered",
                control_id=control_id,
                sending_facility=facility,
                reason=events.reason,
            )
            ids = (facility, control_id, message_type)
            await self._dead_letter(
                raw, peer, received, events, ids=ids, origin=origin, raw_stored=True
            )
            return 0
        return events

    async def _check_window(self, key: tuple[str, str], digest: str) -> tuple[str, Seen | None]:
        assert self._dedup is not None
        deadline = 0.0
        while True:
            status, seen = self._dedup.check(key, digest)
            if status == DUPLICATE:
                return status, seen
            earlier = self._dedup.in_doubt(key, digest)
            if earlier is None:
                return status, seen
            if earlier.done():
                if earlier.cancelled() or earlier.exception() is not None:
                    return status, seen  # it failed: this copy is stored instead
                return DUPLICATE, None  # on Kafka (and remembered in a moment)
            # An earlier copy may still land: never publish a second one meanwhile.
            if not deadline:
                deadline = asyncio.get_running_loop().time() + self._timeout
            try:
                await self._wait(earlier, deadline)
            except Exception:
                if not earlier.done():
                    raise PublishFailed(
                        f"an earlier copy of {key[1]} is still being published"
                    ) from None
            # Look again: a placeholder ended (its attempt is in the window now), or
            # the copy failed and another resend waiting for it may have started its own.

    async def _republish_events(
        self, raw: bytes, msh7: bytes, received: str, control_id: str
    ) -> int | MessageRejected:
        """Publish again the events of a stored message ``raw`` is a resend of; how many,
        or why they cannot be (they cannot be made, or Kafka refuses one as too large).

        The stored copy was restored from the raw topic, which does not prove its
        events were stored. The resend differs from it at most in MSH-7, framing and
        line endings, so with the original MSH-7 and received time put back it
        translates to the same events with the same ids.
        """
        original = with_msh7(raw, msh7)
        try:
            when = datetime.fromisoformat(received)
        except ValueError:
            when = datetime.now(UTC)
        try:
            records, _ = self._event_records(
                self._parse(original, self._fallback), original, when, ""
            )
        except Exception as exc:  # it was accepted once; never let its resend fail for ever
            log.error(
                "events of a restored message could not be made again",
                control_id=control_id,
                error=type(exc).__name__,
            )
            if isinstance(exc, MessageRejected):
                return exc
            return TranslationFailed(
                f"events of a stored message could not be made again ({type(exc).__name__})",
                control_id=control_id,
            )
        if records:
            deadline = asyncio.get_running_loop().time() + self._timeout
            try:
                await self._wait(await self._enqueue(records), deadline)
            except RecordTooLarge as exc:
                log.warning(
                    "events of a restored message too large for kafka",
                    control_id=control_id,
                    topic=exc.topic,
                    size=exc.size,
                )
                return MessageTooLarge(
                    f"{exc.size}-byte event of a stored message refused by Kafka as too large "
                    f"for {exc.topic}",
                    control_id=control_id,
                )
        return len(records)

    async def _start(
        self, raw_record: Record, records: list[Record], key: tuple[str, str] | None, digest: str
    ) -> asyncio.Future[None]:
        """Enqueue a message's raw record and events; the attempt that ends once Kafka has all.

        With a window, the message is held in it as in flight before the first await
        (``send`` may pause: a full buffer, a topic to learn), so that a resend, or
        another message of the same ids, checked meanwhile sees it; then the attempt
        takes the placeholder's place (or it is released when enqueueing raised) and
        the placeholder ends, so that its waiters check again.
        """
        dedup = self._dedup if key is not None else None
        placeholder: asyncio.Future[None] | None = None
        if dedup is not None and key is not None:
            placeholder = asyncio.get_running_loop().create_future()
            dedup.hold(key, digest, placeholder)
        attempt: asyncio.Future[None]
        try:
            if len(raw_record.value) > BATCH_BYTES:
                # Large: the raw record alone first, so a refused one leaves no events.
                attempt = asyncio.ensure_future(self._raw_then_events(raw_record, records))
                attempt.add_done_callback(mark_seen)
            else:
                # The raw record first, then the events, in one go: one wait for both.
                attempt = await self._enqueue([raw_record, *records])
        except BaseException:
            if dedup is not None and key is not None and placeholder is not None:
                dedup.release(key, digest, placeholder)
                placeholder.set_result(None)  # whoever waits for it checks again
            raise
        if dedup is not None and key is not None and placeholder is not None:
            dedup.track(key, digest, attempt)
            placeholder.set_result(None)  # whoever waits for it now waits for the attempt
        return attempt

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
        keep_body: bool = True,
    ) -> Outcome:
        """Dead-letter ``raw`` with its reason, then return ``rejected``.

        Without ``keep_body`` (a peer the allow-list refuses) the dead letter keeps the
        headers (metadata and ``carebus-raw-sha256``) and ``carebus-raw-size``, not the
        bytes. Over the peer's dead-letter rate limit, nothing is written.
        """
        facility, control_id, message_type = ids
        written = await self._dead_letter(
            raw, peer, received_time, exc, ids=ids, origin=origin, keep_body=keep_body
        )
        self._observer.message_rejected(facility, message_type)
        if written:
            log.info(
                "message rejected",
                control_id=control_id,
                sending_facility=facility,
                reason=exc.reason,
                source=peer.source,
            )
        return Outcome("rejected", facility, control_id, message_type, error=exc)

    async def _dead_letter(
        self,
        raw: bytes,
        peer: Peer,
        received_time: datetime,
        exc: MessageRejected,
        *,
        ids: tuple[str, str, str],
        origin: str,
        keep_body: bool = True,
        raw_stored: bool = False,
    ) -> bool:
        """Write ``raw``'s dead letter with ``exc``'s reason; False when the peer's
        dead-letter budget is spent (nothing written). ``raw_stored``: the message's raw
        record is on the raw topic (:data:`RAW_STORED_HEADER`)."""
        facility, control_id, _ = ids
        if exc.control_id is None and control_id:
            exc.control_id = control_id
        limit = None if peer.source in UNCHECKED_SOURCES else self._limit
        if limit is not None and not limit.allow(peer.address, exc.reason):
            self._observer.deadletter_dropped(exc.reason)
            return False
        headers = (
            *_raw_headers(raw, peer, received_time, facility, control_id),
            ("carebus-reason", exc.reason.encode("ascii", "replace")),
            ("carebus-detail", exc.detail.encode("utf-8", "replace")),
        )
        value = raw
        if not keep_body:
            value = b""
            headers = (
                *headers,
                ("carebus-raw-size", str(len(raw)).encode()),
                ("carebus-body-dropped", exc.reason.encode("ascii", "replace")),
            )
        if raw_stored:
            headers = (*headers, (RAW_STORED_HEADER, self._topics.raw.encode()))
        record = Record(self._topics.deadletter, _key(facility, control_id, origin), value, headers)
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
        return True


def _millis(moment: datetime) -> int:
    """``moment`` as Unix milliseconds (naive means UTC), exactly (no float rounding)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MILLISECOND


def _header_ids(header: MshHeader | None) -> tuple[str, str, str]:
    """(MSH-4.1, MSH-10, "") as the cheap header read gives them (raw, still escaped)."""
    if header is None:
        return "", "", ""
    return header.sending_facility.split(header.component_separator)[0], header.control_id, ""


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
