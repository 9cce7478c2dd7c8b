"""Every topic carebus uses, declared in one place, and making a cluster match.

:class:`TopicNames` gives the names; :func:`declared_topics` the declarations
(partitions, replication, retention, cleanup policy); :func:`apply` creates what is
missing and reports drift, through Kafka's admin API (``carebus.admin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from carebus.errors import ConfigError
from carebus.settings import MllpSettings, Settings, TopicSettings


@dataclass(frozen=True)
class TopicNames:
    """The names of carebus's topics, derived from the configured prefix."""

    prefix: str = "carebus"

    @classmethod
    def from_settings(cls, settings: TopicSettings) -> TopicNames:
        return cls(prefix=settings.prefix)

    @property
    def raw(self) -> str:
        """The raw HL7 archive: every message received, exactly as received."""
        return f"{self.prefix}.hl7.raw"

    @property
    def events(self) -> str:
        """Canonical care events, Avro, keyed by patient."""
        return f"{self.prefix}.events"

    @property
    def deadletter(self) -> str:
        """Raw bytes of messages that could not be accepted, with the reason."""
        return f"{self.prefix}.deadletter"

    @property
    def alerts(self) -> str:
        """Every coordination alert, Avro, keyed by patient."""
        return f"{self.prefix}.alerts"

    @property
    def alert_status(self) -> str:
        """Acknowledge/resolve commands from integrators, keyed by dedup key."""
        return f"{self.prefix}.alerts.status"

    @property
    def ops(self) -> str:
        """Operational alerts, such as a feed gone quiet."""
        return f"{self.prefix}.ops"

    @property
    def engine_errors(self) -> str:
        """Events the rule engine raised on, as consumed, with the error type."""
        return f"{self.prefix}.engine-errors"

    def alerts_for(self, provider: str) -> str:
        """The alert topic one recipient provider's integrators subscribe to."""
        return f"{self.prefix}.alerts.provider.{provider}"


# -- declarations ------------------------------------------------------------------

DAY_MS = 24 * 60 * 60 * 1000
#: Retention of the records an audit may need: the raw archive, dead letters, alerts.
LONG_RETENTION_MS = 400 * DAY_MS
#: Retention of derived or operational streams that can be rebuilt or are short-lived.
SHORT_RETENTION_MS = 30 * DAY_MS
#: Retention of the canonical event stream (replayable from the raw archive beyond it).
EVENTS_RETENTION_MS = 90 * DAY_MS

#: Kafka's limit on the length of a topic name.
MAX_TOPIC_NAME = 249

#: Room for a record's key, headers and batch framing on top of the largest message.
RECORD_OVERHEAD_BYTES = 64 * 1024
#: Kafka's default record-batch limit (``message.max.bytes``): the floor of ours.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588

CleanupPolicy = Literal["delete", "compact"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic as carebus wants it. ``retention_ms`` None means the broker default."""

    name: str
    partitions: int
    replication_factor: int
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int | None = None
    min_insync_replicas: int = 1
    #: ``max.message.bytes`` (largest record batch the topic takes); None: broker default.
    max_message_bytes: int | None = None

    @property
    def configs(self) -> dict[str, str]:
        """The topic-level configs carebus sets and checks (Kafka's names, string values)."""
        configs = {
            "cleanup.policy": self.cleanup_policy,
            "min.insync.replicas": str(self.min_insync_replicas),
        }
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs


def _spec(
    settings: TopicSettings,
    name: str,
    cleanup: CleanupPolicy,
    retention: int | None,
    max_message_bytes: int | None = None,
) -> TopicSpec:
    return TopicSpec(
        name=name,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        cleanup_policy=cleanup,
        retention_ms=retention,
        min_insync_replicas=settings.min_insync_replicas,
        max_message_bytes=max_message_bytes,
    )


def archive_max_message_bytes(max_frame_bytes: int) -> int:
    """``max.message.bytes`` of the raw and dead-letter topics for this frame limit.

    The largest frame the MLLP listener accepts plus :data:`RECORD_OVERHEAD_BYTES`
    for key and headers, and never below Kafka's default, so that every message the
    listener accepts (and any HTTP or file message Kafka would take by default) can
    be archived or dead-lettered.
    """
    return max(max_frame_bytes + RECORD_OVERHEAD_BYTES, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)


def declared_topics(
    settings: TopicSettings, *, max_frame_bytes: int = MllpSettings.max_frame_bytes
) -> list[TopicSpec]:
    """Every fixed topic carebus needs (per-provider alert topics come on demand).

    ``max_frame_bytes`` (``settings.mllp.max_frame_bytes``) sizes the raw and
    dead-letter topics (:func:`archive_max_message_bytes`); the others keep the
    broker's default record limit.
    """
    names = TopicNames.from_settings(settings)
    archive = archive_max_message_bytes(max_frame_bytes)
    return [
        _spec(settings, names.raw, "delete", LONG_RETENTION_MS, archive),
        _spec(settings, names.events, "delete", EVENTS_RETENTION_MS),
        _spec(settings, names.deadletter, "delete", LONG_RETENTION_MS, archive),
        _spec(settings, names.alerts, "delete", LONG_RETENTION_MS),
        _spec(settings, names.alert_status, "compact", None),
        _spec(settings, names.ops, "delete", SHORT_RETENTION_MS),
        _spec(settings, names.engine_errors, "delete", LONG_RETENTION_MS),
    ]


def provider_alert_topic(settings: TopicSettings, provider: str) -> TopicSpec:
    """The declaration of one recipient provider's alert topic."""
    name = TopicNames.from_settings(settings).alerts_for(provider)
    legal = all(c.isascii() and (c.isalnum() or c in "._-") for c in provider)
    if not provider or not legal or len(name) > MAX_TOPIC_NAME:
        raise ConfigError(f"provider code {provider!r} cannot be used in a topic name")
    return _spec(settings, name, "delete", SHORT_RETENTION_MS)


# -- drift -------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """One way an existing topic differs from its declaration."""

    setting: str
    actual: str
    declared: str
    fixable: bool

    def __str__(self) -> str:
        return f"{self.setting} is {self.actual}, declared {self.declared}"


@dataclass(frozen=True)
class TopicReport:
    """What ``apply`` found or did for one topic.

    ``status``: ``created``; ``ok`` (matches); ``fixed`` (drift repaired); ``drift``
    (still differs: see ``drift``). ``fixed`` lists what was repaired.
    """

    name: str
    status: Literal["created", "ok", "fixed", "drift"]
    drift: tuple[Drift, ...] = ()
    fixed: tuple[Drift, ...] = ()


def compare(
    spec: TopicSpec, partitions: int, replication_factor: int, configs: Mapping[str, str]
) -> list[Drift]:
    """How an existing topic (its partitions, replication and configs) differs from ``spec``.

    More partitions can be added, never removed; replication needs a reassignment
    (not done here); config values can be set.
    """
    drift = []
    if partitions != spec.partitions:
        drift.append(
            Drift("partitions", str(partitions), str(spec.partitions), partitions < spec.partitions)
        )
    if replication_factor != spec.replication_factor:
        drift.append(
            Drift("replication", str(replication_factor), str(spec.replication_factor), False)
        )
    for key, want in spec.configs.items():
        have = configs.get(key)
        if have is None or _normal(key, have) != _normal(key, want):
            drift.append(Drift(key, "unset" if have is None else have, want, True))
    return drift


def _normal(key: str, value: str) -> str:
    if key == "cleanup.policy":
        return ",".join(sorted(v.strip() for v in value.split(",")))
    return value.strip()


# -- applying ----------------------------------------------------------------------


def apply(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, *, fix: bool = False
) -> list[TopicReport]:
    """Create missing topics and report drift; with ``fix``, repair what can be repaired.

    ``specs`` defaults to :func:`declared_topics` (the raw and dead-letter topics
    sized for ``settings.mllp.max_frame_bytes``). Repairs are setting config values
    and adding partitions (which moves keys to other partitions, hence opt-in).
    Raises :class:`KafkaUnavailable` or :class:`ConfigError` (see ``carebus.admin``).
    """
    from carebus.admin import admin_client, translate

    if specs is None:
        specs = declared_topics(settings.topics, max_frame_bytes=settings.mllp.max_frame_bytes)
    specs = list(specs)
    timeout_ms = int(settings.kafka.request_timeout_s * 1000)
    reports: dict[str, TopicReport] = {}
    with admin_client(settings) as admin:
        existing = _describe(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        if missing:
            reports.update(_create(admin, missing, timeout_ms, translate))
            existing.update(_describe(admin, [s.name for s in missing if s.name not in reports]))
        present = [s for s in specs if s.name not in reports]
        configs = _configs(admin, present)
        for spec in present:
            partitions, replication = existing[spec.name]
            drift = compare(spec, partitions, replication, configs.get(spec.name, {}))
            reports[spec.name] = _reconcile(admin, spec, drift, fix, timeout_ms)
    return [reports[s.name] for s in specs]


def ensure(settings: Settings, specs: Sequence[TopicSpec]) -> list[TopicReport]:
    """Make sure these topics exist (created when missing); drift is reported, not fixed."""
    return apply(settings, specs)


def _describe(admin: Any, names: list[str]) -> dict[str, tuple[int, int]]:
    """Partition count and replication factor of those of ``names`` that exist."""
    found: dict[str, tuple[int, int]] = {}
    if not names:
        return found
    for topic in admin.describe_topics(names):
        if topic.get("error_code", 0) != 0:
            continue
        parts = topic.get("partitions") or []
        replication = max((len(p.get("replica_nodes") or ()) for p in parts), default=0)
        found[topic["name"]] = (len(parts), replication)
    return found


def _create(
    admin: Any, specs: list[TopicSpec], timeout_ms: int, translate: Any
) -> dict[str, TopicReport]:
    """Create topics; returns reports for those created (ones that raced in are left out)."""
    from kafka.errors import TopicAlreadyExistsError, for_code

    request = {
        s.name: {
            "num_partitions": s.partitions,
            "replication_factor": s.replication_factor,
            "configs": s.configs,
        }
        for s in specs
    }
    result = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
    created: dict[str, TopicReport] = {}
    for topic in result.get("topics", []):
        code = topic.get("error_code", 0)
        if code == 0:
            created[topic["name"]] = TopicReport(topic["name"], "created")
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        exc = error(topic.get("error_message") or error.__name__)
        raise translate(exc, f"create topic {topic['name']}") from exc
    if created:
        admin.wait_for_topics(list(created), timeout_ms=timeout_ms)
    return created


def _configs(admin: Any, specs: list[TopicSpec]) -> dict[str, dict[str, str]]:
    """The current values of the configs each spec declares."""
    if not specs:
        return {}
    from kafka.admin import ConfigResource, ConfigResourceType

    resources = [
        ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.configs)) for s in specs
    ]
    raw = admin.describe_configs(resources, config_filter="all").get("topic", {})
    return {
        name: {key: str(entry.get("value")) for key, entry in values.items()}
        for name, values in raw.items()
    }


def _reconcile(
    admin: Any, spec: TopicSpec, drift: list[Drift], fix: bool, timeout_ms: int
) -> TopicReport:
    if not drift:
        return TopicReport(spec.name, "ok")
    if not fix:
        return TopicReport(spec.name, "drift", tuple(drift))
    fixable = [d for d in drift if d.fixable]
    remaining = tuple(d for d in drift if not d.fixable)
    from kafka.admin import ConfigResource, ConfigResourceType

    values = {d.setting: d.declared for d in fixable if d.setting != "partitions"}
    if values:
        resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, values)
        result = admin.alter_configs([resource], incremental=True)
        outcome = result.get("topic", {}).get(spec.name, "OK")
        if outcome != "OK":
            raise ConfigError(f"cannot set configs of topic {spec.name}: {outcome}")
    if any(d.setting == "partitions" for d in fixable):
        admin.create_partitions({spec.name: spec.partitions}, timeout_ms=timeout_ms)
    return TopicReport(spec.name, "drift" if remaining else "fixed", remaining, tuple(fixable))
