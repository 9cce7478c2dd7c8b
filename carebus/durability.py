"""Refuse to run on topics whose ``AA`` would mean one broker's page cache.

The listener answers ``AA`` once Kafka acknowledges a write with ``acks=all``. That
acknowledgement is only worth something if "all" is several brokers: a topic with
replication factor 1, or with ``min.insync.replicas`` 1 (the leader alone is then
enough for ``acks=all`` whenever its followers fall behind), loses acknowledged
messages with one broker's disk, or with one broker's page cache on a crash.

So, outside the local development broker, the listener and the worker start only when
every topic they use has replication factor >= :data:`MIN_REPLICATION_FACTOR` and
``min.insync.replicas`` >= :data:`MIN_INSYNC_REPLICAS` **on the cluster** (described
through the admin API: the replica count of the topic's weakest partition, and the
topic's effective ``min.insync.replicas`` config, broker default included), and the
settings declare no less (``topics.replication_factor``,
``topics.min_insync_replicas``). Otherwise they refuse with a one-line
:class:`ConfigError`, unless ``topics.allow_low_durability = true``; then they log a
warning at start and ``/readyz`` reports the low durability in its ``durability``
check (which still passes).

**The local development broker** is the single-node broker :mod:`carebus.broker`
runs: ``kafka.bootstrap_servers`` is empty (carebus runs it), or every bootstrap
server is ``broker.host:broker.port`` (``localhost``, ``127.0.0.1`` and ``::1`` count
as the same host when ``broker.host`` is a loopback address). Any other address,
such as the docker-compose ``kafka:9092``, is a cluster, however many brokers it has.

:func:`assess` is the pure decision (table-tested); :func:`observe` asks the
cluster; :func:`require_durable` does both and raises or warns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from carebus.errors import ConfigError
from carebus.log import get_logger
from carebus.settings import Settings

log = get_logger(__name__)

#: Replicas each topic needs outside the local broker: any one broker can be lost.
MIN_REPLICATION_FACTOR = 3
#: In-sync replicas an ``acks=all`` write needs: an ``AA`` is on two brokers.
MIN_INSYNC_REPLICAS = 2

#: Host names that mean this machine, when ``broker.host`` is one of them.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: What :class:`Durability` (its ``verdict``) decides: start quietly, start with a
#: warning, or refuse.
Verdict = Literal["durable", "local", "allowed", "refused"]

#: The name :func:`require_durable` gives the settings' own declaration.
DECLARED = "settings (topics.replication_factor, topics.min_insync_replicas)"


@dataclass(frozen=True)
class TopicDurability:
    """How durably one topic (or the settings' declaration) keeps acknowledged writes."""

    name: str
    replication_factor: int
    min_insync_replicas: int

    def shortfalls(self) -> list[str]:
        """What falls short of the minimums, as phrases without patient data."""
        found = []
        if self.replication_factor < MIN_REPLICATION_FACTOR:
            found.append(f"replication factor {self.replication_factor} < {MIN_REPLICATION_FACTOR}")
        if self.min_insync_replicas < MIN_INSYNC_REPLICAS:
            found.append(f"min.insync.replicas {self.min_insync_replicas} < {MIN_INSYNC_REPLICAS}")
        return found


@dataclass(frozen=True)
class Durability:
    """The decision about the topics a process uses, and why."""

    verdict: Verdict
    #: ``"<topic>: <shortfall>"`` for each topic that falls short (empty when durable).
    weak: tuple[str, ...] = ()

    @property
    def starts(self) -> bool:
        """Whether the process may start."""
        return self.verdict != "refused"

    @property
    def detail(self) -> str:
        """One line for ``/readyz`` and the logs."""
        if self.verdict == "durable":
            return (
                f"replication factor >= {MIN_REPLICATION_FACTOR}, "
                f"min.insync.replicas >= {MIN_INSYNC_REPLICAS}"
            )
        if self.verdict == "local":
            return "local development broker (single node, not durable)"
        summary = _summary(self.weak)
        if self.verdict == "allowed":
            return f"LOW DURABILITY allowed by topics.allow_low_durability: {summary}"
        return summary


def assess(
    topics: Iterable[TopicDurability], *, local: bool, allow_low_durability: bool
) -> Durability:
    """Decide whether a process using ``topics`` may start (pure; see the module doc)."""
    if local:
        return Durability("local")
    weak = tuple(f"{t.name}: {s}" for t in topics for s in t.shortfalls())
    if not weak:
        return Durability("durable")
    return Durability("allowed" if allow_low_durability else "refused", weak)


def is_local_broker(settings: Settings) -> bool:
    """Whether the settings name the local development broker (module docstring)."""
    if settings.uses_local_broker:
        return True
    host, port = settings.broker.host, settings.broker.port
    hosts = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else frozenset({host})
    local = {f"{h}:{port}" for h in hosts}
    servers = [s.strip() for s in settings.kafka.bootstrap_servers.split(",") if s.strip()]
    return bool(servers) and all(s in local for s in servers)


def declared(settings: Settings) -> TopicDurability:
    """The durability the settings ask ``topics apply`` to create topics with."""
    t = settings.topics
    return TopicDurability(DECLARED, t.replication_factor, t.min_insync_replicas)


def observe(settings: Settings, topics: Sequence[str]) -> list[TopicDurability]:
    """Each existing topic of ``topics`` as the cluster has it (missing ones are left out).

    The replication factor is the replica count of the topic's weakest partition;
    ``min.insync.replicas`` is the topic's effective value (its own, or the broker's
    default). Raises :class:`KafkaUnavailable` or :class:`ConfigError` (``carebus.admin``).
    """
    from carebus.admin import admin_client

    if not topics:
        return []
    with admin_client(settings) as admin:
        replicas = _replicas(admin, list(topics))
        isr = _min_insync(admin, sorted(replicas))
    return [TopicDurability(name, replicas[name], isr[name]) for name in topics if name in replicas]


def require_durable(settings: Settings, topics: Sequence[str], *, role: str) -> Durability:
    """Assess the settings and ``topics`` on the cluster; refuse, warn, or pass.

    Raises a one-line :class:`ConfigError` when the process must not start; logs a
    warning when low durability is allowed. On the local broker the cluster is not asked.
    """
    local = is_local_broker(settings)
    found = [declared(settings)]
    if not local:
        found.extend(observe(settings, topics))
    decision = assess(found, local=local, allow_low_durability=settings.topics.allow_low_durability)
    if decision.verdict == "refused":
        raise ConfigError(
            f"{role} refuses to start: an AA would not survive losing one broker "
            f"({decision.detail}); use a cluster of 3+ brokers with "
            f"topics.replication_factor = {MIN_REPLICATION_FACTOR} and "
            f"topics.min_insync_replicas = {MIN_INSYNC_REPLICAS} (docs/security.md), "
            "or set topics.allow_low_durability = true"
        )
    if decision.verdict == "allowed":
        log.warning("durability.low", role=role, detail=decision.detail, topics=len(topics))
    else:
        log.info("durability.checked", role=role, verdict=decision.verdict, topics=len(topics))
    return decision


def _summary(weak: Sequence[str]) -> str:
    shown = "; ".join(weak[:3])
    return shown + (f"; and {len(weak) - 3} more" if len(weak) > 3 else "")


def _replicas(admin: Any, names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        if topic.get("error_code", 0) != 0:
            continue
        parts = topic.get("partitions") or []
        if parts:
            found[topic["name"]] = min(len(p.get("replica_nodes") or ()) for p in parts)
    return found


def _min_insync(admin: Any, names: list[str]) -> dict[str, int]:
    from kafka.admin import ConfigResource, ConfigResourceType

    if not names:
        return {}
    key = "min.insync.replicas"
    resources = [ConfigResource(ConfigResourceType.TOPIC, n, {key: None}) for n in names]
    raw = admin.describe_configs(resources, config_filter="all").get("topic", {})
    found: dict[str, int] = {}
    for name in names:
        entry = raw.get(name, {}).get(key)
        value = entry.get("value") if isinstance(entry, dict) else None
        try:
            found[name] = int(str(value))
        except ValueError:
            # A topic whose value cannot be read counts as the weakest possible.
            found[name] = 1
    return found


class DurabilityGate:
    """:func:`require_durable` for a process, and its ``durability`` readiness check.

    The check fails until :meth:`require` (or :meth:`record`) has decided; then it
    passes with the decision's detail, which says so when low durability is allowed.
    """

    def __init__(self, settings: Settings, topics: Sequence[str], role: str) -> None:
        self._settings = settings
        self._topics = tuple(topics)
        self._role = role
        self.decision: Durability | None = None

    async def require(self) -> None:
        """Decide (asking the cluster in a worker thread); raise when the process must not start."""
        import asyncio

        self.record(
            await asyncio.to_thread(require_durable, self._settings, self._topics, role=self._role)
        )

    def record(self, decision: Durability) -> None:
        """Keep a decision made elsewhere (by :func:`require_durable`)."""
        self.decision = decision

    async def check(self) -> Any:
        """The ``durability`` readiness check (a :class:`carebus.health.CheckResult`)."""
        from carebus.health import CheckResult

        if self.decision is None:
            return CheckResult(False, "not checked yet")
        return CheckResult(self.decision.starts, self.decision.detail)
