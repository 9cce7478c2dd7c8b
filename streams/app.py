"""The Faust worker: topics, tables, agents and the wall-clock timer, in one place.

:func:`create_app` builds the app from a :class:`carebus.settings.Settings` (no
environment is read here or at import). :func:`build_worker` returns the app with
the parts tests and benchmarks look at.

Topics and tables (``N`` = ``topics.partitions``; all co-partitioned, so one
worker owns partition ``p`` of each):

========================== ======================================= =================
``{prefix}.events``        patient events, Avro                    input
``{app_id}-control``       ticks, merge hand-overs (JSON)          input and output
``{prefix}.alerts.status`` raised alerts and status changes        input (and output)
``{prefix}.alerts``        alerts, partition = events partition    output (delivery)
``{prefix}.alerts.provider.<P>`` one recipient's copy              output (delivery)
``{prefix}.engine-errors``  events the rule engine raised on        output
``{prefix}.ops``            ops alerts: ``engine-error``; a feed     output (JSON)
                           holding the clock back
``patients`` table         :class:`streams.coordinator.Entry`       store: ``worker.store``
``alert-status`` table     :mod:`streams.status` values             store: ``worker.store``
========================== ======================================= =================

The agents are thin loops with ``concurrency=1`` (faust-streaming #606): the
``coordinate`` agent takes the events and control records in batches (up to
:data:`BATCH_MAX`, waiting at most :data:`BATCH_WITHIN_S` for more), hands each to
the :class:`~streams.coordinator.Coordinator`, writes each changed patient entry to
the table once, queues the control messages the coordinator returns, and waits
until Faust's producer buffer has handed all of it to the Kafka client before the
batch's offsets are acknowledged (Faust flushes the client, not reliably its own
buffer, before committing); an event the rule engine raised on goes, with the
batch, to the engine-errors topic, with an ops alert (:mod:`streams.engine_errors`);
the ``alert-status`` agent folds status records into its table. A timer
sends each owned partition a :class:`~streams.control.Tick` every
``worker.tick_interval_s`` while the worker is caught up with it (everything read,
or the last event processed was written at most :data:`CAUGHT_UP_S` ago), so after
a restart or an outage the backlog is worked through by event time before the
wall clock fires anything. Alerts are published by
:class:`~streams.delivery.AlertDelivery`.

The web port (``worker.web_host``:``worker.web_port``) serves one route,
``GET /alerts/{dedup_key}/``: an alert's status, routed to the worker that owns the
key (each worker advertises its own ``worker.advertised_url``). It answers only a
caller with ``Authorization: Bearer`` and the token of ``worker.web_token_file``
(:mod:`carebus.webauth`); others get 401 and no data. Faust's own pages (``/table``,
which would serve every patient's state by key, ``/router``, ``/graph``, statistics,
``/performance``, the index at ``/``) are all off.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import faust
import mode
from faust.exceptions import NotReady
from faust.streams import _current_event
from faust.web.drivers.aiohttp import Web as AiohttpWeb

import schemas.codec
from carebus.errors import ConfigError
from carebus.kafka import common_config
from carebus.log import get_logger
from carebus.settings import Settings, WorkerSettings
from carebus.topics import (
    DAY_MS,
    TopicNames,
    TopicReport,
    TopicSpec,
    declared_topics,
    ensure,
    provider_alert_topic,
)
from carebus.webauth import TokenAuth, server_ssl_context, unauthorized
from schemas.errors import DecodeError, UnknownSchema
from streams import status
from streams.control import Tick
from streams.control import encode as encode_control
from streams.coordinator import Coordinator, Outgoing
from streams.delivery import AlertDelivery
from streams.engine import Engine
from streams.engine_errors import EngineErrorReporter, EngineFailure, failure_record
from streams.region import Region, load_region
from streams.sensors import NullSensors, WorkerSensors

log = get_logger(__name__)

#: How long a stopping worker waits for queued alerts to be published.
DRAIN_ON_STOP_S = 5.0
#: How long Faust's producer (table changelogs, control topic) waits to fill a batch.
PRODUCER_LINGER_S = 0.02
#: The coordinate agent's batches: at most this many records...
BATCH_MAX = 500
#: ...collected for at most this long (it bounds the latency a quiet stream adds).
BATCH_WITHIN_S = 0.02
#: How often a batch polls Faust's producer buffer until it has been handed over.
HANDOVER_POLL_S = 0.001
#: Largest changelog batch per partition: aiokafka keeps one open batch per partition
#: and a send that finds it full waits for a produce round trip.
PRODUCER_MAX_BATCH_BYTES = 512 * 1024
#: A partition counts as caught up (the wall clock may fire its deadlines) when all
#: of it was read, or the last event processed was written at most this long ago
#: (or two tick intervals, if longer).
CAUGHT_UP_S = 10.0


def control_topic_name(settings: Settings) -> str:
    """The worker's internal control topic (Faust's naming: ``{app_id}-control``)."""
    return f"{settings.worker.app_id}-control"


def wall_micros() -> int:
    """The wall clock in epoch microseconds (the worker's edge reads it, nothing else)."""
    return time.time_ns() // 1000


class WorkerWeb(AiohttpWeb):
    """Faust's aiohttp web driver without the index page Faust mounts at ``/``.

    The other built-in pages are off by settings (:func:`_app_config`); the plain
    index (``{"status": "OK"}``) has no setting, so this driver lists none.
    """

    production_blueprints = ()


class WorkerApp(faust.App):
    """faust.App, with the producer look-up every record sent does made cheap.

    Faust's ``maybe_start_producer`` is wrapped against concurrent starts, and the
    wrapper yields to the event loop three times on every call, even long after the
    producer started: once per table changelog record and control message. Once the
    producer runs, this returns it at once; before, it defers to Faust.
    """

    async def maybe_start_producer(self) -> Any:
        producer = self.producer
        if not self.in_transaction and producer.started and not producer.should_stop:
            return producer
        return await super().maybe_start_producer()

    def _new_web(self) -> Any:
        """The web driver: :class:`WorkerWeb` (Faust's aiohttp driver, no index page)."""
        return WorkerWeb(self)


@dataclass
class Worker:
    """The app and the parts it is wired from."""

    app: faust.App
    coordinator: Coordinator
    delivery: AlertDelivery
    patients: Any
    statuses: Any
    names: TopicNames
    control_topic: str


def create_app(
    settings: Settings,
    *,
    region: Region | None = None,
    sensors: WorkerSensors | None = None,
) -> faust.App:
    """The Faust app of the stream worker (see the module docstring)."""
    return build_worker(settings, region=region, sensors=sensors).app


def build_worker(
    settings: Settings,
    *,
    region: Region | None = None,
    sensors: WorkerSensors | None = None,
    delivery: AlertDelivery | None = None,
) -> Worker:
    """Build the app; ``region`` defaults to the file ``worker.region_config``."""
    w = settings.worker
    if w.tick_interval_s <= 0:
        raise ConfigError("worker.tick_interval_s must be positive")
    sensors = sensors or NullSensors()
    region = region if region is not None else load_region(w.region_config)
    app = WorkerApp(w.app_id, **_app_config(settings))
    topology = _declare(app, settings)
    delivery = delivery or AlertDelivery(
        settings, app_id=w.app_id, providers=region.providers, sensors=sensors
    )
    coordinator = Coordinator(
        Engine(region),
        delivery,
        partitions=settings.topics.partitions,
        sensors=sensors,
        feed_idle_s=region.feed_idle_minutes * 60,
        clock_behind_alert_s=w.clock_behind_alert_s,
    )
    _add_agents(app, topology, coordinator)
    _add_clock(app, topology, w.tick_interval_s, sensors)
    _add_lifecycle(app, topology, coordinator, delivery)
    _add_web(app, topology, TokenAuth.from_file(w.web_token_file, "worker.web_token_file"))
    return Worker(
        app,
        coordinator,
        delivery,
        topology.patients,
        topology.statuses,
        topology.names,
        topology.control.get_topic_name(),
    )


@dataclass
class _Topology:
    names: TopicNames
    source: Any
    control: Any
    status: Any
    patients: Any
    statuses: Any
    engine_errors: Any = None
    ops: Any = None
    #: events partition -> Kafka timestamp (epoch s) of the last event processed there
    last_event_ts: dict[int, float] = field(default_factory=dict)


def _declare(app: faust.App, settings: Settings) -> _Topology:
    """Every topic and table of the worker."""
    names = TopicNames.from_settings(settings.topics)
    partitions = settings.topics.partitions
    control_name = control_topic_name(settings)
    return _Topology(
        names=names,
        source=app.topic(names.events, control_name, key_serializer="raw", value_serializer="raw"),
        control=app.topic(
            control_name, partitions=partitions, key_serializer="raw", value_serializer="raw"
        ),
        status=app.topic(names.alert_status, key_serializer="raw", value_serializer="raw"),
        patients=app.Table("patients", partitions=partitions, schema=_raw_values()),
        statuses=app.Table("alert-status", partitions=partitions, schema=_json_values()),
        engine_errors=app.topic(names.engine_errors, key_serializer="raw", value_serializer="raw"),
        ops=app.topic(names.ops, key_serializer="raw", value_serializer="raw"),
    )


def _json_values() -> Any:
    """Table keys are UTF-8 strings, values JSON objects."""
    return faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")


def _raw_values() -> Any:
    """Table keys are UTF-8 strings, values bytes the owner encodes (patient entries)."""
    return faust.Schema(key_type=str, key_serializer="raw", value_serializer="raw")


def _add_agents(app: faust.App, topology: _Topology, coordinator: Coordinator) -> None:
    events_topic = topology.names.events
    reporter = EngineErrorReporter()
    patients, statuses, control = topology.patients, topology.statuses, topology.control
    ops = topology.ops

    @app.agent(topology.source, name="coordinate", concurrency=1)
    async def coordinate(stream: Any) -> None:
        # take_events acknowledges a batch's records once the loop body is done.
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            coordinator.scan_if_needed(patients)
            now = wall_micros()
            out: list[Outgoing] = []
            last: dict[int, Any] = {}
            for event in events:
                message = event.message
                last[message.partition] = event
                set_current_event(event)
                if message.topic == events_topic:
                    if message.timestamp:
                        topology.last_event_ts[message.partition] = message.timestamp
                    key = event.key.decode("utf-8") if isinstance(event.key, bytes) else None
                    out += coordinator.on_event(
                        patients,
                        message.partition,
                        message.offset,
                        key=key,
                        value=event.value,
                        now=now,
                        headers=message.headers,
                    )
                else:
                    out += coordinator.on_control(
                        patients, message.partition, message.offset, value=event.value, now=now
                    )
            # No await from the first record to here: the table and the control topic
            # get the whole batch's effects, queued in Faust's producer buffer...
            for partition, writes in coordinator.take_writes().items():
                set_current_event(last[partition])
                for key, value in writes:
                    patients[key] = value
            set_current_event(None)
            for item in out:
                control.send_soon(
                    key=item.key.encode("utf-8") if item.key is not None else None,
                    value=encode_control(item.message),
                    partition=item.partition,
                )
            failures = coordinator.take_failures()
            if failures:
                send_failures(topology, reporter, failures)
            for note in coordinator.take_ops():
                ops.send_soon(
                    key=str(note["provider"]).encode("utf-8"),
                    value=json.dumps(note, sort_keys=True).encode("utf-8"),
                )
            # ...which must reach the Kafka client before the offsets are acknowledged.
            await handed_over(app.producer.buffer)

    status_topic = topology.status

    @app.agent(topology.status, name="alert-status", concurrency=1)
    async def track_status(stream: Any) -> None:
        async for event in stream.events():
            again = fold_status(statuses, event.key, event.value, event.message.offset)
            if again is not None:  # keep the decisive change the last of its key
                status_topic.send_soon(
                    key=event.key,
                    value=again,
                    partition=event.message.partition,
                    headers=[("carebus-schema", status.CHANGE.encode())],
                )


def send_failures(
    topology: _Topology, reporter: EngineErrorReporter, failures: list[EngineFailure]
) -> None:
    """Queue the engine-errors records of ``failures``, and their ops alerts (throttled)."""
    now_s = time.time()
    names = topology.names
    for failure in failures:
        source = names.events if failure.source == "e" else topology.control.get_topic_name()
        key, value, headers = failure_record(failure, source_topic=source, at_ms=int(now_s * 1000))
        topology.engine_errors.send_soon(
            key=key, value=value, partition=failure.partition, headers=headers
        )
    for alert in reporter.ops_alerts(failures, now_s):
        topology.ops.send_soon(key=b"engine-error", value=alert)


def set_current_event(event: Any) -> None:
    """Make ``event`` the record being processed, for this task (None: no record).

    Faust's tables write (changelog and store) to the partition of the current
    event and read from it. Under ``take_events`` the agent's task has none, so the
    agent sets it: to each record while applying it, and to a record of partition
    ``p`` while writing ``p``'s entries. (Faust's own context variable: faust-streaming
    has no public setter; the version is pinned in pyproject.toml.)
    """
    _current_event.set(None if event is None else weakref.ref(event))


async def handed_over(buffer: Any, poll_s: float = HANDOVER_POLL_S) -> None:
    """Wait until Faust's producer buffer has handed every queued record to the client.

    Faust's commit flushes the Kafka client but gives up waiting on its own buffer
    after 0.1 s without progress, so a batch waits here before its offsets are
    acknowledged. (A buffer that is not running, as under ``test_context``, is not
    waited for.)
    """
    while buffer.size and buffer.started and not buffer.should_stop:
        await asyncio.sleep(poll_s)


def _add_clock(
    app: faust.App, topology: _Topology, interval_s: float, sensors: WorkerSensors
) -> None:
    """The wall-clock timer: a :class:`Tick` with the wall clock to each partition the
    worker is caught up with. The coordinator turns it into the partition's live clock
    (the feeds' watermarks, never past the wall clock: ``Coordinator.on_tick``)."""
    events_topic, control = topology.names.events, topology.control
    tolerance_s = max(CAUGHT_UP_S, 2 * interval_s)

    @app.timer(interval_s, name="clock")  # type: ignore[untyped-decorator]
    async def clock() -> None:
        tps = [tp for tp in app.assignor.assigned_actives() if tp.topic == events_topic]
        if not tps:
            return
        ends = await app.consumer.highwaters(*tps)
        now = wall_micros()
        for tp in sorted(tps):
            position = await app.consumer.position(tp)
            end = ends.get(tp)
            if position is None or end is None:
                continue
            sensors.set_consumer_lag(tp.topic, tp.partition, max(0, end - position))
            last = topology.last_event_ts.get(tp.partition)
            recent = last is not None and now / 1e6 - last <= tolerance_s
            if position >= end or recent:
                await control.send(value=encode_control(Tick(now)), partition=tp.partition)


def _add_lifecycle(
    app: faust.App, topology: _Topology, coordinator: Coordinator, delivery: AlertDelivery
) -> None:
    events_topic = topology.names.events

    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        revoked: Iterable[Any] = args[0]
        delivery.pause(tp.partition for tp in revoked if tp.topic == events_topic)

    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        assigned: Iterable[Any] = args[0]
        owned = sorted({tp.partition for tp in assigned if tp.topic == events_topic})
        log.info("events partitions assigned", partitions=owned)
        delivery.assign(owned)
        coordinator.assign(owned)

    # (mode's receiver type does not admit coroutine functions; they are supported.)
    app.on_partitions_revoked.connect(cast(Any, on_revoked), weak=False)
    app.on_partitions_assigned.connect(cast(Any, on_assigned), weak=False)

    @app.service
    class DeliveryLifecycle(mode.Service):
        """Publish what is queued, then stop the alert publishers, when the app stops."""

        async def on_stop(self) -> None:
            await delivery.drain(DRAIN_ON_STOP_S)
            await delivery.stop()


#: The one route of the worker's web port.
ALERT_ROUTE = "/alerts/{dedup_key}/"
#: Set on a lookup forwarded to the key's owner: the owner answers it from its own table.
ROUTED_HEADER = "X-Carebus-Routed"


def _add_web(app: faust.App, topology: _Topology, auth: TokenAuth) -> None:
    statuses = topology.statuses

    @app.page(ALERT_ROUTE)
    async def alert_status(view: Any, request: Any, dedup_key: str) -> Any:
        # Checked before routing: the forwarded request carries the caller's header.
        if not auth.allows(request.headers.get("Authorization")):
            return unauthorized()
        if not request.headers.get(ROUTED_HEADER):
            try:
                owner = owner_url(app, statuses, dedup_key)
            except (KeyError, NotReady):  # no assignment yet (starting, or rebalancing)
                return view.json({"error": "not-ready"}, status=503)
            if owner != advertised_url_of(app):
                return await _forward(app, view, request, owner)
        value = statuses.get(dedup_key)
        if value is None:
            return view.json(status.new_status(dedup_key), status=404)
        return view.json(value)


def owner_url(app: faust.App, statuses: Any, dedup_key: str) -> str:
    """The advertised URL of the worker whose status table holds ``dedup_key``.

    Status records are keyed by the dedup key's UTF-8 bytes and placed by Kafka's
    default partitioner (:class:`~streams.delivery.AlertDelivery`); the table's
    partition ``p`` lives on the worker owning partition ``p`` of the co-partitioned
    topics. (Faust's ``table_route`` hashes the key as its changelog topic would
    serialize it, JSON, and so asks the wrong worker for most keys.) ``KeyError``
    while no assignment is known.
    """
    topic = statuses.changelog_topic.get_topic_name()
    return str(app.assignor.key_store(topic, dedup_key.encode("utf-8"))).rstrip("/")


def advertised_url_of(app: faust.App) -> str:
    return str(app.conf.canonical_url).rstrip("/")


async def _forward(app: faust.App, view: Any, request: Any, owner: str) -> Any:
    """Ask the owner, with the caller's Authorization header only; relay its answer."""
    headers = {ROUTED_HEADER: "1"}
    if request.headers.get("Authorization"):
        headers["Authorization"] = request.headers["Authorization"]
    url = f"{owner}{request.raw_path}"
    try:
        async with app.http_client.get(url, headers=headers) as response:
            body = await response.read()
            return view.bytes(body, content_type=response.content_type, status=response.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("alert lookup not forwarded", error=type(exc).__name__)
        return view.json({"error": "owner-unreachable"}, status=502)


def advertised_url(settings: WorkerSettings) -> str:
    """The URL other workers reach this one at (``worker.advertised_url``, else derived).

    Derived: ``http(s)://{web_host}:{web_port}``, with the machine's name in place of a
    wildcard ``web_host`` (``0.0.0.0``, ``::``, empty), which no other worker could use.
    """
    if settings.advertised_url:
        return settings.advertised_url.rstrip("/")
    scheme = "https" if settings.web_tls_certfile is not None else "http"
    host = settings.web_host.strip()
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 (a comparison: wildcards)
        host = socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.web_port}"


def _web_tls(settings: WorkerSettings) -> Any:
    return server_ssl_context(
        settings.web_tls_certfile, settings.web_tls_keyfile, section="worker.web_tls"
    )


#: Retention of the control topic: ticks and merge hand-overs are consumed at once.
CONTROL_RETENTION_MS = 7 * DAY_MS

#: The topics that must have ``topics.partitions`` partitions (co-partitioned).
_COPARTITIONED = ("events", "alerts", "alert_status")


def prepare_topics(settings: Settings, providers: Iterable[str]) -> list[TopicReport]:
    """Create the worker's missing topics; ``ConfigError`` when partition counts differ.

    Besides the declared carebus topics, these are the control topic and the alert
    topic of every recipient ``providers`` (codes that cannot name a topic are
    skipped; the worker creates other recipients' topics on first use).
    """
    names = TopicNames.from_settings(settings.topics)
    t = settings.topics
    specs = [
        *declared_topics(t, max_frame_bytes=settings.mllp.max_frame_bytes),
        TopicSpec(
            control_topic_name(settings),
            t.partitions,
            t.replication_factor,
            retention_ms=CONTROL_RETENTION_MS,
            min_insync_replicas=t.min_insync_replicas,
        ),
    ]
    for provider in sorted(set(providers)):
        try:
            specs.append(provider_alert_topic(t, provider))
        except ConfigError:
            log.warning("provider code cannot name a topic", provider=provider)
    reports = ensure(settings, specs)
    must_match = {getattr(names, attr) for attr in _COPARTITIONED}
    must_match.add(control_topic_name(settings))
    for report in reports:
        for drift in report.drift:
            if drift.setting == "partitions" and report.name in must_match:
                raise ConfigError(
                    f"topic {report.name} has {drift.actual} partitions, the worker needs "
                    f"{drift.declared} (topics.partitions) on the events, alerts, status "
                    "and control topics"
                )
    return reports


def fold_status(statuses: Any, key: bytes | None, value: bytes | None, offset: int) -> bytes | None:
    """Apply one record of the status topic to the status table (:mod:`streams.status`).

    Returns the encoded change to write again, keyed like the record, when the
    record is a change that ranks below the alert's status (see
    :func:`streams.status.reassert`), else None.
    """
    if key is None or value is None:
        return None
    kafka_key = key.decode("utf-8", errors="replace")
    try:
        schema, record = schemas.codec.decode(value)
        dedup_key = status.dedup_key_of(kafka_key, schema, record)
        current = statuses.get(dedup_key)
        new = status.apply(current, kafka_key, schema, record)
    except (DecodeError, UnknownSchema, status.BadStatusRecord, KeyError, ValueError) as exc:
        log.warning("status record skipped", offset=offset, error=type(exc).__name__)
        return None
    if new is not None:
        statuses[dedup_key] = new
    if not status.dominated(current, schema, record):
        return None
    decisive = status.reassert(new if new is not None else current)
    return None if decisive is None else schemas.codec.encode(status.CHANGE, decisive)


def _app_config(settings: Settings) -> dict[str, Any]:
    """Faust settings from carebus settings."""
    w = settings.worker
    servers = [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()]
    return {
        "broker": [f"aiokafka://{s}" for s in servers],
        "broker_credentials": _credentials(settings),
        "store": w.store,
        "datadir": str(w.data_dir),
        "autodiscover": False,
        "topic_partitions": settings.topics.partitions,
        "topic_replication_factor": settings.topics.replication_factor,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        # Batch changelog and control records (one produce request per record is
        # the worker's largest cost otherwise); they are not latency-critical.
        "producer_linger": PRODUCER_LINGER_S,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "broker_commit_interval": 1.0,
        "broker_session_timeout": w.session_timeout_s,
        "broker_heartbeat_interval": min(3.0, w.session_timeout_s / 3),
        "web_enabled": True,
        "web_bind": w.web_host,
        "web_host": w.web_host,
        "web_port": w.web_port,
        "canonical_url": advertised_url(w),
        "web_ssl_context": _web_tls(w),
        "web_in_thread": False,
        # Faust's built-in pages are off: /table would serve every patient's state by
        # key, /router the cluster's topology, /graph and the statistics internals.
        # (The alert lookup routes to the key's owner by the assignor, not /router.)
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
    }


def _credentials(settings: Settings) -> Any:
    """Faust broker credentials for the configured security protocol (None: plaintext)."""
    k = settings.kafka
    protocol = k.security_protocol.upper()
    client = common_config(settings)  # validates; reads sasl_password_file
    ssl_context = client.get("ssl_context")
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=client.get("sasl_plain_password"),
            ssl_context=ssl_context,
            mechanism=k.sasl_mechanism or "PLAIN",
        )
    raise ConfigError(f"kafka.security_protocol {k.security_protocol!r} is not supported")
