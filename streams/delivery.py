"""Alert publishing with exactly-once effect: one record per dedup key, ever.

The design (``docs/alerts.md`` explains it for operators):

* The alert topic has the events topic's partition count, and an alert raised
  for a patient of events partition ``p`` goes to alert partition ``p``. Only the
  worker that owns events partition ``p`` writes alert partition ``p``.
* Each events partition has its own transactional producer, ``transactional.id``
  ``{app_id}.{prefix}.alerts.{p}``. Starting it fences any earlier producer of
  the partition (a crashed or partitioned-off worker) and aborts its open
  transaction.
* After starting the producer, the publisher reads alert partition ``p`` from the
  beginning to its end with ``read_committed``: the dedup keys found there are
  the *published set*. Until that read is done nothing of ``p`` is published.
* Each batch of alerts is filtered against the published set and written in one
  transaction: every alert to the alert topic and a copy to each recipient's topic
  (``TopicNames.alerts_for``). Only providers named in the region config have a
  topic: a recipient code outside it (whatever code arrived in a message) gets no
  topic and no copy, the alert stays on the region alert topic, and an ops note
  is left (a log line without patient data, once per code, and the
  ``alert_recipient_unknown`` sensor, counted per alert). Only after the commit
  are the keys added to the published set. Just before the transaction the
  batch is also written to the status topic (at least once, not
  transactionally), keyed ``{dedup_key}/alert`` on the dedup key's partition
  (``streams.status``: compaction keeps it apart from the alert's status
  changes), so the status table knows every raised alert.
* Any failure closes the producer; the publisher starts a new one (fencing the
  old, aborting what it left open), reads the partition again and retries. A
  ``ProducerFenced`` means another worker took the partition: it backs off.

So a key is published only when absent from everything committed to its
partition, by the only producer allowed to write there. Alerts are never lost
because the worker keeps each one in the patient's table entry (the outbox,
``streams.coordinator``) until :meth:`AlertDelivery.is_published` says so, and
resubmits the outbox after every restart or rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import schemas.codec
from carebus.errors import CarebusError, ConfigError, KafkaUnavailable
from carebus.kafka import aiokafka_config
from carebus.log import digest, get_logger
from carebus.settings import Settings
from carebus.topics import TopicNames, provider_alert_topic
from schemas.errors import DecodeError, UnknownSchema
from streams.alert import Alert
from streams.control import partition_for
from streams.sensors import NullSensors, WorkerSensors
from streams.status import body_key

log = get_logger(__name__)

ALERT_SCHEMA = "carebus.alerts.Alert"
SCHEMA_HEADER = "carebus-schema"
DEDUP_HEADER = "carebus-dedup-key"
#: Distinct unknown recipient codes logged per process; later ones are only counted.
MAX_LOGGED_UNKNOWN = 1000


def alert_record(alert: Alert) -> dict[str, Any]:
    """The ``carebus.alerts.Alert`` Avro record of ``alert``."""
    return {
        "rule": alert.rule,
        "patient": alert.patient,
        "raised_at": alert.raised_at,
        "recipients": list(alert.recipients),
        "dedup_key": alert.dedup_key,
        "evidence": list(alert.evidence),
        "summary": alert.summary,
    }


def encode_alert(alert: Alert) -> bytes:
    """The single-object Avro encoding of ``alert``."""
    return schemas.codec.encode(ALERT_SCHEMA, alert_record(alert))


def alert_headers(alert: Alert) -> list[tuple[str, bytes]]:
    """The Kafka headers of an alert record."""
    return [
        (SCHEMA_HEADER, ALERT_SCHEMA.encode()),
        (DEDUP_HEADER, alert.dedup_key.encode("utf-8")),
    ]


def dedup_key_of(value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The dedup key of an alert record: its header, else its Avro body."""
    for name, raw in headers:
        if name == DEDUP_HEADER:
            return raw.decode("utf-8")
    if value is None:
        return None
    try:
        schema, record = schemas.codec.decode(value)
    except (DecodeError, UnknownSchema):
        return None
    return str(record["dedup_key"]) if schema == ALERT_SCHEMA else None


class TransactionalProducer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the publisher uses."""

    async def begin_transaction(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...

    async def commit_transaction(self) -> None: ...

    async def stop(self) -> None: ...


class Clients(Protocol):
    """How the publisher reaches Kafka (aiokafka by default; see :class:`KafkaClients`)."""

    async def producer(self, transactional_id: str | None) -> TransactionalProducer:
        """A started producer: transactional (starting it fences older ones), or, for
        ``None``, a plain idempotent one."""

    async def published_keys(self, topic: str, partition: int) -> set[str]:
        """Dedup keys committed to ``topic``/``partition`` (read_committed, to the end)."""

    async def topic_for(self, provider: str) -> str | None:
        """The existing alert topic of ``provider`` (created if need be); None when its
        code cannot name one. Only called for providers of the region config."""


class KafkaClients:
    """aiokafka producers and consumers, and topic creation through ``carebus.topics``."""

    def __init__(self, settings: Settings, *, read_timeout_s: float | None = None) -> None:
        self.settings = settings
        self.names = TopicNames.from_settings(settings.topics)
        self.read_timeout_s = read_timeout_s or max(30.0, 2 * settings.kafka.request_timeout_s)
        self._topics: dict[str, str | None] = {}

    async def producer(self, transactional_id: str | None) -> TransactionalProducer:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        options: dict[str, Any] = {"enable_idempotence": True, "acks": "all"}
        if transactional_id is not None:
            options.update(transactional_id=transactional_id, transaction_timeout_ms=30_000)
        else:
            options.update(linger_ms=self.settings.kafka.producer_linger_ms)
        producer = AIOKafkaProducer(**aiokafka_config(self.settings), **options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaUnavailable(f"cannot start alert producer: {type(exc).__name__}") from exc
        return producer  # type: ignore[no-any-return]

    async def published_keys(self, topic: str, partition: int) -> set[str]:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(
            **aiokafka_config(self.settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        tp = TopicPartition(topic, partition)
        keys: set[str] = set()
        try:
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            deadline = time.monotonic() + self.read_timeout_s
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"timed out reading {topic} partition {partition}")
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for record in batch.get(tp, ()):
                    key = dedup_key_of(record.value, record.headers)
                    if key is not None:
                        keys.add(key)
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot read {topic}: {type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return keys

    async def topic_for(self, provider: str) -> str | None:
        if provider in self._topics:
            return self._topics[provider]
        from carebus.topics import ensure

        try:
            spec = provider_alert_topic(self.settings.topics, provider)
        except ConfigError:
            log.warning("recipient code cannot name a topic; no copy sent", provider=provider)
            self._topics[provider] = None
            return None
        await asyncio.to_thread(ensure, self.settings, [spec])
        self._topics[provider] = spec.name
        return spec.name


@dataclass
class _Partition:
    """The publisher of one events partition's alerts."""

    partition: int
    pending: dict[str, Alert] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    ready: bool = False
    paused: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    producer: TransactionalProducer | None = None


class AlertDelivery:
    """Publishes alerts per events partition (see the module docstring).

    :meth:`submit` never blocks: alerts queue per partition and a task per
    partition publishes them in batches of at most ``batch_max``, waiting
    ``linger_s`` for a batch to fill. ``providers`` are the provider codes of the
    region config: only they get a copy on their own alert topic.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        app_id: str,
        providers: Collection[str],
        clients: Clients | None = None,
        sensors: WorkerSensors | None = None,
        batch_max: int = 1000,
        linger_s: float = 0.05,
        retry_backoff_s: float = 0.5,
        fenced_backoff_s: float = 5.0,
    ) -> None:
        self.names = TopicNames.from_settings(settings.topics)
        self.providers = frozenset(providers)
        self.status_partitions = settings.topics.partitions
        self.transactional_prefix = f"{app_id}.{settings.topics.prefix}.alerts"
        self.clients: Clients = clients or KafkaClients(settings)
        self.sensors: WorkerSensors = sensors or NullSensors()
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.retry_backoff_s = retry_backoff_s
        self.fenced_backoff_s = fenced_backoff_s
        self.published_count = 0
        self.transactions = 0
        self._parts: dict[int, _Partition] = {}
        self._plain: TransactionalProducer | None = None
        self._plain_lock = asyncio.Lock()
        self._unknown_logged: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the sink the coordinator uses ----------------------------------------------

    def submit(self, partition: int, alerts: Sequence[Alert]) -> None:
        """Queue ``alerts`` of events ``partition``; those already published are dropped."""
        part = self._parts.get(partition)
        if part is None:
            # Not (or no longer) ours: the owner publishes them from the outbox.
            return
        for alert in alerts:
            if alert.dedup_key not in part.published:
                part.pending.setdefault(alert.dedup_key, alert)
        if part.pending:
            self._idle.clear()
            part.wake.set()

    def is_published(self, partition: int, dedup_key: str) -> bool:
        """True when ``dedup_key`` is known to be committed to the alert topic."""
        part = self._parts.get(partition)
        return part is not None and dedup_key in part.published

    def take_confirmed(self, partition: int) -> set[str]:
        """Patient keys with alerts published since the last call."""
        part = self._parts.get(partition)
        if part is None or not part.confirmed:
            return set()
        confirmed, part.confirmed = part.confirmed, set()
        return confirmed

    # -- assignment -------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Publish for exactly these events partitions from now on."""
        wanted = set(partitions)
        for partition in set(self._parts) - wanted:
            self._close(self._parts.pop(partition))
        for partition in wanted:
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = _Partition(partition)
                part.task = asyncio.ensure_future(self._run(part))
            part.paused = False
            part.wake.set()
        self._update_idle()

    def pause(self, partitions: Iterable[int]) -> None:
        """Stop publishing for ``partitions`` until they are assigned again (a rebalance)."""
        for partition in partitions:
            part = self._parts.get(partition)
            if part is not None:
                part.paused = True

    def assigned(self) -> set[int]:
        """The partitions this delivery publishes for."""
        return set(self._parts)

    def ready(self, partition: int) -> bool:
        """True once the published set of ``partition`` has been read."""
        part = self._parts.get(partition)
        return part is not None and part.ready

    def pending(self) -> int:
        """Alerts queued and not yet published."""
        return sum(len(p.pending) for p in self._parts.values())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is pending (False on timeout)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop every publisher (open transactions are aborted by the next owner)."""
        parts, self._parts = list(self._parts.values()), {}
        for part in parts:
            self._close(part)
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for part in parts:
            await self._stop_producer(part)
        plain, self._plain = self._plain, None
        if plain is not None:
            with contextlib.suppress(Exception):
                await plain.stop()
        self._idle.set()

    # -- the publisher of one partition -----------------------------------------------

    def _close(self, part: _Partition) -> None:
        part.paused = True
        if part.task is not None:
            part.task.cancel()

    def _update_idle(self) -> None:
        # Cleared too: a partition assigned again after a pause has work queued.
        if all(not p.pending or p.paused for p in self._parts.values()):
            self._idle.set()
        else:
            self._idle.clear()

    async def _run(self, part: _Partition) -> None:
        backoff = self.retry_backoff_s
        while True:
            try:
                await self._open(part)
                backoff = self.retry_backoff_s
                await self._publish_loop(part)
            except asyncio.CancelledError:
                await self._stop_producer(part)
                raise
            except Exception as exc:
                fenced = _is_fenced(exc)
                part.ready = False
                await self._stop_producer(part)
                delay = self.fenced_backoff_s if fenced else backoff
                log.warning(
                    "alert publisher failed; retrying",
                    partition=part.partition,
                    error=type(exc).__name__,
                    fenced=fenced,
                    retry_in_s=delay,
                )
                if not isinstance(exc, (CarebusError, OSError)) and not _is_kafka_error(exc):
                    log.exception("unexpected alert publisher error", partition=part.partition)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, 10.0)

    async def _open(self, part: _Partition) -> None:
        transactional_id = f"{self.transactional_prefix}.{part.partition}"
        part.producer = await self.clients.producer(transactional_id)
        part.published = await self.clients.published_keys(self.names.alerts, part.partition)
        part.ready = True
        for key in [k for k in part.pending if k in part.published]:
            del part.pending[key]
        log.info("alert publisher ready", partition=part.partition, published=len(part.published))

    async def _publish_loop(self, part: _Partition) -> None:
        while True:
            if not part.pending or part.paused:
                part.wake.clear()
                self._update_idle()
                await part.wake.wait()
                continue
            if len(part.pending) < self.batch_max and self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            batch = [a for _, a in zip(range(self.batch_max), part.pending.values(), strict=False)]
            fresh = [a for a in batch if a.dedup_key not in part.published]
            if fresh:
                await self._transaction(part, fresh)
            for alert in batch:
                part.pending.pop(alert.dedup_key, None)
            for alert in fresh:
                part.published.add(alert.dedup_key)
                part.confirmed.add(alert.patient)
                self.sensors.alert_raised(alert.rule)
            self.published_count += len(fresh)

    async def _transaction(self, part: _Partition, alerts: Sequence[Alert]) -> None:
        producer = part.producer
        if producer is None:  # pragma: no cover - _open always sets it
            raise KafkaUnavailable("alert producer not started")
        copies: list[list[str]] = []
        for alert in alerts:
            topics: list[str] = []
            for recipient in alert.recipients:
                if recipient not in self.providers:
                    self._unknown_recipient(alert, recipient)
                    continue
                topic = await self.clients.topic_for(recipient)
                if topic is not None:
                    topics.append(topic)
            copies.append(topics)
        records = [
            (alert.patient.encode("utf-8"), encode_alert(alert), alert_headers(alert))
            for alert in alerts
        ]
        await self._announce(alerts, records)
        await producer.begin_transaction()
        sent = []
        for (key, value, headers), topics in zip(records, copies, strict=True):
            sent.append(
                await producer.send(
                    self.names.alerts, value, key=key, partition=part.partition, headers=headers
                )
            )
            for copy in topics:
                sent.append(await producer.send(copy, value, key=key, headers=headers))
        await asyncio.gather(*sent)
        await producer.commit_transaction()
        self.transactions += 1

    def _unknown_recipient(self, alert: Alert, recipient: str) -> None:
        """An alert names a recipient outside the region config: no topic, an ops note."""
        self.sensors.alert_recipient_unknown(alert.rule)
        if recipient in self._unknown_logged or len(self._unknown_logged) >= MAX_LOGGED_UNKNOWN:
            return
        self._unknown_logged.add(recipient)
        log.warning(
            "alert recipient is not a provider of the region config; "
            "the alert stays on the region alert topic only",
            rule=alert.rule,
            recipient=_loggable_code(recipient),
            topic=self.names.alerts,
        )

    async def _announce(
        self,
        alerts: Sequence[Alert],
        records: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]],
    ) -> None:
        """Write the alerts to the status topic, outside the transaction, and wait.

        At least once and before the alerts are committed: the status table learns
        of every alert no later than integrators do. (Not transactional on purpose:
        the status topic is read by a Faust agent, and Faust reads transaction
        markers as gaps, at a cost that grows with every one.) ``records`` are the
        alerts' encoded (key, value, headers). Each is keyed ``{dedup_key}/alert``
        and sent to the partition of its dedup key (``streams.status``).
        """
        async with self._plain_lock:
            if self._plain is None:
                self._plain = await self.clients.producer(None)
        plain = self._plain
        sent = [
            await plain.send(
                self.names.alert_status,
                value,
                key=body_key(alert.dedup_key).encode("utf-8"),
                partition=partition_for(alert.dedup_key, self.status_partitions),
                headers=headers,
            )
            for alert, (_, value, headers) in zip(alerts, records, strict=True)
        ]
        await asyncio.gather(*sent)

    async def _stop_producer(self, part: _Partition) -> None:
        producer, part.producer = part.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


#: An organisation code as ODS issues them (3 to 8 upper-case letters and digits).
_ODS_LIKE = re.compile(r"[A-Z0-9]{3,8}")


def _loggable_code(code: str) -> str:
    """``code`` when it is shaped like an ODS organisation code, else its keyed log
    digest (:func:`carebus.log.digest`): it came from a message and may hold anything,
    a local patient identifier included."""
    if _ODS_LIKE.fullmatch(code):
        return code
    return digest(code)


def _is_kafka_error(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaError

    return isinstance(exc, KafkaError)


def _is_fenced(exc: BaseException) -> bool:
    from aiokafka.errors import ProducerFenced, TransactionCoordinatorFenced

    return isinstance(exc, (ProducerFenced, TransactionCoordinatorFenced))
