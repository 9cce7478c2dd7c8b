"""Prometheus metrics for every carebus process, defined in one place.

Build one :class:`Metrics` per process at start-up and pass it down; components
call its methods, never ``prometheus_client`` directly, so label values are always
folded to a bounded set and no patient data can reach a label::

    metrics = Metrics(providers=["RX1", "G0001"], topics=TopicNames("carebus"))

    # MLLP listener
    metrics.connection_opened()
    metrics.message_received("RX1", "ADT")         # provider = MSH-4.1, type = MSH-9.1
    metrics.message_accepted("RX1", "ADT")          # ... or message_rejected / _duplicated
    metrics.dead_lettered("RX1", "unparseable")     # reason = MessageRejected.reason
    metrics.ack_sent("AA", seconds=0.004)           # frame read -> ACK written
    metrics.produce_error("carebus.hl7.raw")
    metrics.feed_watermark_failed()                 # feed watermarks not written this time
    metrics.connection_closed()

    # file-drop connector
    metrics.filedrop_file_refused("file-too-large")  # one of FILEDROP_REFUSAL_REASONS
    metrics.filedrop_restarted()

    # Faust worker
    metrics.event_processed("Encounter")            # short Avro schema name
    metrics.alert_raised("death-notified")          # rule id
    metrics.set_deadlines_pending(12)
    metrics.set_consumer_lag("carebus.events", 3, 42)
    metrics.set_clock_behind({"RX1": 5400.0})       # who holds the live clock back (s)

    # feed watch
    metrics.set_feed_silent("RX1", True)
    metrics.ops_alert_raised("feed-silent")

    body = metrics.render()                         # text exposition for /metrics

Each process passes its ``role`` (``listener``, ``worker``, ``dashboard``), so that
its ``/metrics`` shows only its own metrics (:attr:`MetricSpec.roles`): an
unlabelled gauge such as the worker's deadlines would otherwise show up, at 0, in
every process. Updates to another process's metrics do nothing.

Label folding: ``provider`` is one of the region's providers or ``other``;
``message_type`` one of :data:`MESSAGE_TYPES` or ``other``; ``event_type`` one of
:data:`EVENT_TYPES`; ``rule`` one of :data:`RULES`; ``reason`` a
:class:`carebus.errors.MessageRejected` reason, one of :data:`INGEST_REASONS` (or one
passed in ``reasons``);
``topic`` a carebus topic; ``ack_code`` an HL7 acknowledgement code. Anything else
becomes ``other``. ``docs/operations.md`` lists every metric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from carebus.errors import MessageRejected
from carebus.topics import TopicNames

__all__ = [
    "ACK_CODES",
    "ACK_LATENCY_BUCKETS",
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "FILEDROP_REFUSAL_REASONS",
    "GUARD_REASONS",
    "INGEST_REASONS",
    "MESSAGE_TYPES",
    "METRICS",
    "OPS_ALERT_KINDS",
    "OTHER",
    "ROLES",
    "RULES",
    "MetricSpec",
    "Metrics",
    "Role",
    "known_reasons",
]

#: The value every unknown label value folds to.
OTHER = "other"
#: Sender-given (provider, message type) pairs whose metric children are remembered;
#: the memo starts again when full.
SENDER_MEMO_MAX = 4096

#: ``Content-Type`` of :meth:`Metrics.render`'s output.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: HL7 v2 message types (MSH-9.1) carebus translates.
MESSAGE_TYPES: tuple[str, ...] = ("ADT", "MDM", "OML", "ORM", "ORU", "PPR", "REF", "SIU")

#: Short names of the event schemas (``carebus.events.<name>``).
EVENT_TYPES: tuple[str, ...] = (
    "Appointment",
    "Document",
    "Encounter",
    "Order",
    "PatientDemographics",
    "PatientDied",
    "PatientMerged",
    "Problem",
    "Referral",
    "Result",
)

#: The coordination rule ids of the rules spec.
RULES: tuple[str, ...] = (
    "activity-after-death",
    "cancer-referral-not-booked",
    "cancer-referral-not-seen",
    "death-notified",
    "death-pending-appointments",
    "eol-admission",
    "eol-discharge",
    "faster-diagnosis-at-risk",
    "faster-diagnosis-breach",
    "hospice-handoff-missed",
    "identity-unverified",
    "repeated-emergency-admissions",
    "repeated-history",
    "repeated-test",
)

#: HL7 acknowledgement codes (MSA-1), original and enhanced mode.
ACK_CODES: tuple[str, ...] = ("AA", "AE", "AR", "CA", "CE", "CR")

#: Reason codes the ingest edge uses besides the ``MessageRejected`` ones it may not
#: have imported yet: MLLP framing, translator defects, the AE reasons of an MLLP
#: ACK when Kafka is down or processing failed, the allow-list, and resends.
INGEST_REASONS: tuple[str, ...] = (
    "duplicate",
    "framing-error",
    "internal-error",
    "kafka-unavailable",
    "message-too-large",
    "sender-not-allowed",
    "translation-failed",
)

#: Why the file-drop connector moved a file to ``failed/`` without reading its
#: messages (``connectors.filedrop``).
FILEDROP_REFUSAL_REASONS: tuple[str, ...] = (
    "file-too-large",
    "internal-error",
    "not-a-regular-file",
    "unreadable",
)

#: Why an MLLP listener guard refused or closed a connection (``reason`` of
#: ``carebus_mllp_connections_refused_total`` and ``..._dropped_total``).
GUARD_REASONS: tuple[str, ...] = (
    "connection-limit",
    "frame-timeout",
    "framing-error",
    "hand-over-failed",
    "idle-timeout",
    "ip-connection-limit",
    "not-stored",
)

#: Kinds of operational alert published on the ops topic.
OPS_ALERT_KINDS: tuple[str, ...] = (
    "feed-silent",
    "feed-resumed",
    "engine-error",
    "clock-held-back",
    "clock-caught-up",
)

#: What the worker was doing when the rule engine raised (``streams.engine_errors``).
ENGINE_STAGES: tuple[str, ...] = ("event", "deadline")

#: Buckets of the ACK latency histogram, in seconds.
ACK_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


#: The carebus processes that serve ``/metrics``: each exposes only its own metrics.
Role = Literal["listener", "worker", "dashboard"]
ROLES: tuple[Role, ...] = ("listener", "worker", "dashboard")


@dataclass(frozen=True)
class MetricSpec:
    """One metric as exposed: full name, type, label names, meaning, and its processes."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    help: str
    #: The processes (:data:`Role`) whose ``/metrics`` exposes it.
    roles: frozenset[Role] = frozenset(ROLES)


_PM = ("provider", "message_type")
_LISTENER: frozenset[Role] = frozenset({"listener"})
_WORKER: frozenset[Role] = frozenset({"worker"})
_DASHBOARD: frozenset[Role] = frozenset({"dashboard"})

#: Every carebus metric. ``docs/operations.md`` documents each one.
METRICS: tuple[MetricSpec, ...] = (
    # ingest (MLLP listener and the other connectors)
    MetricSpec(
        "carebus_mllp_messages_received_total",
        "counter",
        _PM,
        "HL7 messages read from senders, counted before any check.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_messages_accepted_total",
        "counter",
        _PM,
        "Messages durably published and acknowledged AA.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_messages_rejected_total",
        "counter",
        _PM,
        "Messages rejected with AR/AE and a reason code.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_messages_duplicated_total",
        "counter",
        _PM,
        "Messages recognised as resends of an already accepted control id.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_control_id_conflicts_total",
        "counter",
        _PM,
        "Messages whose sending facility and control id were already used, within the"
        " duplicate window, by a message of different content: stored as new messages.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_last_message_received_timestamp_seconds",
        "gauge",
        ("provider",),
        "Unix time of the last message received from each sending provider.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_ack_latency_seconds",
        "histogram",
        ("ack_code",),
        "Time from a complete frame read to its ACK written.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_open_connections",
        "gauge",
        (),
        "MLLP connections currently open.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_connections_total",
        "counter",
        (),
        "MLLP connections accepted since the process started.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_connections_refused_total",
        "counter",
        ("reason",),
        "MLLP connections closed at once by a connection limit, by reason.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_connections_dropped_total",
        "counter",
        ("reason",),
        "MLLP connections the listener closed: a timeout, broken framing, or a message "
        "not stored for a sender that asked for no ACK; by reason.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_mllp_rate_limited_total",
        "counter",
        (),
        "Messages held back by a rate limit (per peer address or per connection).",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_deadletters_total",
        "counter",
        ("provider", "reason"),
        "Records written to the dead-letter topic, by sending provider and reason code.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_deadletters_dropped_total",
        "counter",
        ("reason",),
        "Rejected messages answered but not dead-lettered: their peer was over"
        " mllp.deadletters_per_peer_per_min.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_kafka_produce_errors_total",
        "counter",
        ("topic",),
        "Records Kafka did not durably accept, after the client's own retries.",
        _LISTENER | _WORKER,
    ),
    MetricSpec(
        "carebus_mllp_watermark_failures_total",
        "counter",
        (),
        "Times a listener process could not write its feed watermarks to the events topic"
        " (written again at the next interval; messages are not affected).",
        _LISTENER,
    ),
    # file-drop connector
    MetricSpec(
        "carebus_filedrop_files_refused_total",
        "counter",
        ("reason",),
        "Dropped files moved to failed/ unread: not a regular file, too large, unreadable.",
        _LISTENER,
    ),
    MetricSpec(
        "carebus_filedrop_restarts_total",
        "counter",
        (),
        "Times the file-drop task crashed and was restarted.",
        _LISTENER,
    ),
    # stream worker
    MetricSpec(
        "carebus_worker_events_processed_total",
        "counter",
        ("event_type",),
        "Care events applied to patient state by the rule engine.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_alerts_raised_total",
        "counter",
        ("rule",),
        "Coordination alerts raised and published, by rule.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_alert_recipients_unknown_total",
        "counter",
        ("rule",),
        "Alert recipients outside the region config: no provider topic, region topic only.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_engine_errors_total",
        "counter",
        ("stage", "rule"),
        "Events and deadlines the rule engine raised on (kept on the engine-errors topic), "
        "by stage and rule (none: outside any rule).",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_deadlines_pending",
        "gauge",
        (),
        "Rule deadlines (timers) pending in this worker's patient state.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_consumer_lag",
        "gauge",
        ("topic", "partition"),
        "Records between the worker's position and the end of each assigned partition.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_clock_behind_seconds",
        "gauge",
        ("provider",),
        "How far a provider holds the worker's live clock behind the wall clock "
        "(its watermark's age, while it is sending); 0 when it holds nothing back.",
        _WORKER,
    ),
    MetricSpec(
        "carebus_worker_clock_held_by",
        "gauge",
        ("provider",),
        "1 for the provider holding the worker's live clock furthest back, else 0.",
        _WORKER,
    ),
    # feed watch
    MetricSpec(
        "carebus_feed_silent",
        "gauge",
        ("provider",),
        "1 while a provider's feed is quiet for longer than its expected interval, else 0.",
        _DASHBOARD,
    ),
    MetricSpec(
        "carebus_ops_alerts_raised_total",
        "counter",
        ("kind",),
        "Operational alerts published on the ops topic, by kind.",
        _DASHBOARD,
    ),
)


def _build(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "counter":
        # prometheus_client appends the _total suffix itself.
        return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(
        spec.name, spec.help, spec.labels, buckets=ACK_LATENCY_BUCKETS, registry=registry
    )


class _Unexposed:
    """Stands in for a metric this process does not expose: every update does nothing."""

    def labels(self, *values: str) -> _Unexposed:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_to_current_time(self) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def remove(self, *values: str) -> None:
        pass


_UNEXPOSED = _Unexposed()


def known_reasons() -> frozenset[str]:
    """Every rejection reason code declared by a loaded ``MessageRejected`` subclass."""
    seen: set[str] = set()
    stack: list[type[MessageRejected]] = [MessageRejected]
    while stack:
        cls = stack.pop()
        seen.add(cls.reason)
        stack.extend(cls.__subclasses__())
    return frozenset(seen)


class Metrics:
    """Every carebus metric, on a registry of its own (one instance per process).

    ``role`` is the process (``listener``, ``worker``, ``dashboard``): only the
    metrics whose :attr:`MetricSpec.roles` include it are registered and exposed,
    and updates to the others do nothing. Without a role every metric is exposed.
    ``providers`` are the sending provider codes of the region config (the only
    values the ``provider`` label takes besides ``other``). ``reasons`` adds
    dead-letter reason codes to those of :func:`known_reasons` and
    :data:`INGEST_REASONS`. Set ``process_metrics`` to also expose the standard
    ``process_*`` and ``python_*`` collectors.
    """

    def __init__(
        self,
        *,
        providers: Iterable[str] = (),
        topics: TopicNames | None = None,
        message_types: Iterable[str] = MESSAGE_TYPES,
        event_types: Iterable[str] = EVENT_TYPES,
        rules: Iterable[str] = RULES,
        reasons: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        process_metrics: bool = False,
        role: Role | None = None,
    ) -> None:
        # The *_created series double the output and no carebus dashboard or rule
        # uses them (this switch is process-wide in prometheus_client).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.providers = frozenset(p for p in providers if p)
        self.message_types = frozenset(message_types)
        self.event_types = frozenset(event_types)
        self.rules = frozenset(rules)
        self._extra_reasons = frozenset(reasons) | frozenset(INGEST_REASONS)
        self._reasons = known_reasons() | self._extra_reasons
        names = topics or TopicNames()
        self.topics = frozenset(
            [
                names.raw,
                names.events,
                names.deadletter,
                names.alerts,
                names.alert_status,
                names.ops,
                names.engine_errors,
                *(names.alerts_for(p) for p in sorted(self.providers)),
            ]
        )
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

        if role is not None and role not in ROLES:
            raise ValueError(f"unknown metrics role {role!r}")
        self.role = role
        self._m: dict[str, Any] = {}
        #: (metric, *label values) -> the labelled child: prometheus_client's
        #: ``labels()`` validates and locks on every call, per message on the hot path.
        self._children: dict[tuple[str, ...], Any] = {}
        #: (metric, sender's provider, sender's message type) -> the child: the label
        #: folding too, once per pair (bounded: senders choose these strings).
        self._by_sender: dict[tuple[str, str | None, str | None], Any] = {}
        #: provider labels the clock gauges were ever set for (kept at 0 once caught up)
        self._clock_labels: set[str] = set()
        for spec in METRICS:
            own = role is None or role in spec.roles
            self._m[spec.name] = _build(spec, self.registry) if own else _UNEXPOSED

    # ----------------------------------------------------------- label folding

    def provider_label(self, provider: str | None) -> str:
        """``provider`` when the region names it, else ``other``."""
        p = (provider or "").strip()
        return p if p in self.providers else OTHER

    def message_type_label(self, message_type: str | None) -> str:
        """MSH-9.1 (``ADT`` or ``ADT^A01``) when carebus knows it, else ``other``."""
        m = (message_type or "").strip().split("^", 1)[0].upper()
        return m if m in self.message_types else OTHER

    def event_type_label(self, event_type: str | None) -> str:
        """Short schema name (``Encounter`` or ``carebus.events.Encounter``), else ``other``."""
        e = (event_type or "").strip().rsplit(".", 1)[-1]
        return e if e in self.event_types else OTHER

    def rule_label(self, rule: str | None) -> str:
        """A known rule id, else ``other``."""
        return rule if rule in self.rules else OTHER

    def reason_label(self, reason: str | None) -> str:
        """A declared rejection reason code, else ``other``."""
        if reason in self._reasons:
            return reason
        if reason:
            # A MessageRejected subclass may have been imported since start-up.
            self._reasons = known_reasons() | self._extra_reasons
            if reason in self._reasons:
                return reason
        return OTHER

    def topic_label(self, topic: str | None) -> str:
        """A carebus topic name, else ``other``."""
        return topic if topic in self.topics else OTHER

    @staticmethod
    def ack_code_label(code: str | None) -> str:
        """An HL7 acknowledgement code, else ``other``."""
        c = (code or "").strip().upper()
        return c if c in ACK_CODES else OTHER

    def _sender_child(self, name: str, provider: str | None, message_type: str | None) -> Any:
        """The child of ``name`` for a sender's provider (and message type, when given)."""
        key = (name, provider, message_type)
        child = self._by_sender.get(key)
        if child is None:
            if len(self._by_sender) >= SENDER_MEMO_MAX:
                self._by_sender.clear()
            labels = [self.provider_label(provider)]
            if message_type is not None:
                labels.append(self.message_type_label(message_type))
            child = self._by_sender[key] = self._child(name, *labels)
        return child

    def _child(self, name: str, *labels: str) -> Any:
        """The child of metric ``name`` for these (already folded) label values."""
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._m[name].labels(*labels)
        return child

    # ----------------------------------------------------------------- ingest

    def message_received(self, provider: str | None, message_type: str | None) -> None:
        """A message was read from a sender (counted before any check)."""
        self._sender_child(
            "carebus_mllp_messages_received_total", provider, message_type or ""
        ).inc()
        self._sender_child(
            "carebus_mllp_last_message_received_timestamp_seconds", provider, None
        ).set_to_current_time()

    def message_accepted(self, provider: str | None, message_type: str | None) -> None:
        """A message was durably published and acknowledged."""
        self._sender_child(
            "carebus_mllp_messages_accepted_total", provider, message_type or ""
        ).inc()

    def message_rejected(self, provider: str | None, message_type: str | None) -> None:
        """A message was rejected (AR/AE) and will not be retried as sent."""
        self._m["carebus_mllp_messages_rejected_total"].labels(
            self.provider_label(provider), self.message_type_label(message_type)
        ).inc()

    def message_duplicated(self, provider: str | None, message_type: str | None) -> None:
        """A message was a resend of one already accepted."""
        self._m["carebus_mllp_messages_duplicated_total"].labels(
            self.provider_label(provider), self.message_type_label(message_type)
        ).inc()

    def control_id_conflict(self, provider: str | None, message_type: str | None) -> None:
        """A message reused the control id of a different message within the window."""
        self._m["carebus_mllp_control_id_conflicts_total"].labels(
            self.provider_label(provider), self.message_type_label(message_type)
        ).inc()

    def deadletter_dropped(self, reason: str | None) -> None:
        """A rejected message's dead letter was not written (its peer's limit was spent)."""
        self._m["carebus_deadletters_dropped_total"].labels(self.reason_label(reason)).inc()

    def ack_sent(self, ack_code: str, seconds: float) -> None:
        """An ACK was written ``seconds`` after its message's frame was complete."""
        code = self.ack_code_label(ack_code)
        self._child("carebus_mllp_ack_latency_seconds", code).observe(max(seconds, 0.0))

    def connection_opened(self) -> None:
        """An MLLP connection was accepted."""
        self._m["carebus_mllp_connections_total"].inc()
        self._m["carebus_mllp_open_connections"].inc()

    def connection_closed(self) -> None:
        """An MLLP connection closed (call exactly once per :meth:`connection_opened`)."""
        self._m["carebus_mllp_open_connections"].dec()

    def connection_refused(self, reason: str) -> None:
        """A connection was closed at once by a limit (:data:`GUARD_REASONS`)."""
        label = reason if reason in GUARD_REASONS else OTHER
        self._child("carebus_mllp_connections_refused_total", label).inc()

    def connection_dropped(self, reason: str) -> None:
        """The listener closed a connection: a guard or a failure (:data:`GUARD_REASONS`)."""
        label = reason if reason in GUARD_REASONS else OTHER
        self._child("carebus_mllp_connections_dropped_total", label).inc()

    def rate_limited(self) -> None:
        """A message was held back by a rate limit."""
        self._m["carebus_mllp_rate_limited_total"].inc()

    def dead_lettered(self, provider: str | None, reason: str | None) -> None:
        """A record was written to the dead-letter topic with this reason code."""
        self._m["carebus_deadletters_total"].labels(
            self.provider_label(provider), self.reason_label(reason)
        ).inc()

    def produce_error(self, topic: str) -> None:
        """Kafka did not durably accept a record for ``topic``."""
        self._m["carebus_kafka_produce_errors_total"].labels(self.topic_label(topic)).inc()

    def feed_watermark_failed(self) -> None:
        """Feed watermarks could not be written (they are written again next interval)."""
        self._m["carebus_mllp_watermark_failures_total"].inc()

    # -------------------------------------------------------------- file drop

    def filedrop_file_refused(self, reason: str) -> None:
        """A dropped file was moved to ``failed/`` unread, for this reason."""
        label = reason if reason in FILEDROP_REFUSAL_REASONS else OTHER
        self._child("carebus_filedrop_files_refused_total", label).inc()

    def filedrop_restarted(self) -> None:
        """The file-drop task crashed and is being restarted."""
        self._m["carebus_filedrop_restarts_total"].inc()

    # ----------------------------------------------------------------- worker

    def event_processed(self, event_type: str) -> None:
        """The worker applied one event."""
        self._m["carebus_worker_events_processed_total"].labels(
            self.event_type_label(event_type)
        ).inc()

    def alert_raised(self, rule: str) -> None:
        """The worker raised (and published) one alert."""
        self._m["carebus_worker_alerts_raised_total"].labels(self.rule_label(rule)).inc()

    def alert_recipient_unknown(self, rule: str) -> None:
        """An alert named a recipient outside the region config (no provider copy)."""
        self._m["carebus_worker_alert_recipients_unknown_total"].labels(self.rule_label(rule)).inc()

    def engine_error(self, stage: str, rule: str | None) -> None:
        """The rule engine raised on an event or a deadline; the record went to engine-errors."""
        self._m["carebus_worker_engine_errors_total"].labels(
            stage if stage in ENGINE_STAGES else OTHER,
            "none" if rule is None else self.rule_label(rule),
        ).inc()

    def set_deadlines_pending(self, count: int) -> None:
        """The number of rule deadlines pending in this worker."""
        self._m["carebus_worker_deadlines_pending"].set(count)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records between the worker's position and the partition's end offset."""
        self._m["carebus_worker_consumer_lag"].labels(
            self.topic_label(topic), str(int(partition))
        ).set(max(lag, 0))

    def set_clock_behind(self, behind: Mapping[str, float]) -> None:
        """Providers holding the live clock back (seconds); the others are set to 0."""
        folded: dict[str, float] = {}
        for provider, seconds in behind.items():
            label = self.provider_label(provider)
            folded[label] = max(seconds, folded.get(label, 0.0))
        held_by = max(folded, key=lambda p: folded[p]) if folded else None
        behind_m = self._m["carebus_worker_clock_behind_seconds"]
        held_m = self._m["carebus_worker_clock_held_by"]
        for label in sorted(self.providers | set(folded) | self._clock_labels):
            behind_m.labels(label).set(max(folded.get(label, 0.0), 0.0))
            held_m.labels(label).set(1 if label == held_by else 0)
        self._clock_labels |= set(folded)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition no longer assigned to this worker."""
        with contextlib.suppress(KeyError):
            self._m["carebus_worker_consumer_lag"].remove(
                self.topic_label(topic), str(int(partition))
            )

    # ------------------------------------------------------------- feed watch

    def set_feed_silent(self, provider: str, silent: bool) -> None:
        """Whether a provider's feed is currently quiet beyond its expected interval."""
        self._m["carebus_feed_silent"].labels(self.provider_label(provider)).set(1 if silent else 0)

    def ops_alert_raised(self, kind: str) -> None:
        """An operational alert was published on the ops topic."""
        self._m["carebus_ops_alerts_raised_total"].labels(
            kind if kind in OPS_ALERT_KINDS else OTHER
        ).inc()

    # ------------------------------------------------------------- exposition

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry (serve as :data:`CONTENT_TYPE`)."""
        return bytes(generate_latest(self.registry))
