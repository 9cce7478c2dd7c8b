"""The live stream worker on a real broker: events/s, and event->alert latency.

The feed is the synthetic region's (``carebus.synth``, seeded), translated and
Avro-encoded beforehand: :data:`BACKLOG` events (>= 100,000) and then
:data:`LIVE` more. Measured, in one run, on the same topic:

1. **baselines**: an aiokafka consumer reading the backlog, nothing else (the
   ceiling of any consumer on this machine); the same plus Avro decode; and a
   Faust app whose one agent only iterates the backlog (the ceiling of any Faust
   agent here: faust-streaming's per-record cost, before any work), on asyncio's
   event loop and on uvloop (the worker's, ``worker.event_loop``);
2. **worker throughput**: ``carebus worker`` (a subprocess; RocksDB store, 1 s
   ticks) started on the backlog; events/s from the moment it is ready (``/readyz``)
   until its committed offsets reach the end of the events topic and of the status
   topic it feeds itself, i.e. decode, per-patient state, the fourteen rules, the
   changelog, transactional alert delivery and the status table; also the worker
   process's CPU time per event (steadier than events/s on a shared machine);
3. **latency**: with the worker caught up, :data:`LIVE` events produced at
   :data:`LIVE_RATE`/s; for each alert raised by an event rule, the time from the
   event's create timestamp to the alert being readable (read_committed) on the
   alert topic, p50/p99; baseline: the same events' time to being readable on the
   events topic by a plain consumer. (The feed is from 2024: once caught up, the
   worker first fires every deadline due since; timing starts after that burst.)

Afterwards every dedup key must be on the alert topic exactly once. Targets
(2 cores, broker on the same machine): >= 5,000 events/s; p99 < 1 s.

Kafka: ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS``, else the project's local broker
(started, and stopped afterwards, if it is not running). Run with
``python -m benchmarks worker``; ``BENCH_WORKER_BACKLOG=20000`` shortens a run
while iterating (the reported figure is at 100,000).
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.ports import free_port

BACKLOG = int(os.environ.get("BENCH_WORKER_BACKLOG", "100000"))
LIVE = 5_000
#: Offered load while timing latency: below capacity, as a region's peak would be.
LIVE_RATE = 250.0
TARGET_RATE = 5_000.0
TARGET_P99_S = 1.0
#: Event rules: the alert is raised by an event (deadline rules fire by the clock).
EVENT_RULES = frozenset(
    {
        "identity-unverified",
        "repeated-history",
        "repeated-test",
        "eol-admission",
        "eol-discharge",
        "repeated-emergency-admissions",
        "death-notified",
        "death-pending-appointments",
        "activity-after-death",
    }
)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Event:
    key: bytes
    value: bytes
    control_id: str


def prepare(count: int) -> list[Event]:
    """``count`` events of the synthetic region's feed (2024 onwards), encoded."""
    import schemas.codec
    from carebus import synth
    from carebus.errors import MessageRejected
    from connectors.hl7 import parse_message
    from connectors.translate import translate

    out: list[Event] = []
    for message in synth.messages(2024, datetime(2024, 1, 1, tzinfo=UTC)):
        try:
            events = translate(
                parse_message(message.raw), raw=message.raw, received_time=message.time
            )
        except MessageRejected:
            continue
        for event in events:
            value = schemas.codec.encode(event.schema, event.record)
            out.append(Event(event.key.encode(), value, event.record["header"]["control_id"]))
        if len(out) >= count:
            return out[:count]
    return out


def produce(
    settings: Any, topic: str, events: list[Event], rate: float | None = None
) -> dict[str, float]:
    """Send events (paced at ``rate``/s when given); returns control id -> create time (s)."""
    from kafka import KafkaProducer

    from carebus.kafka import kafka_python_config

    producer = KafkaProducer(**kafka_python_config(settings), acks="all", linger_ms=5)
    sent: dict[str, float] = {}
    start = time.monotonic()
    try:
        for n, event in enumerate(events):
            if rate is not None:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            now = time.time()
            sent.setdefault(event.control_id, now)
            producer.send(topic, key=event.key, value=event.value, timestamp_ms=int(now * 1000))
        producer.flush(60)
    finally:
        producer.close()
    return sent


def faust_noop(settings: Any, topic: str, count: int, *, uvloop: bool = False) -> float:
    """Events/s of a Faust agent that only iterates ``count`` records (own process)."""
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    proc = context.Process(
        target=_faust_noop_main,
        args=(settings.bootstrap_servers, topic, count, results, uvloop),
    )
    proc.start()
    try:
        return float(results.get(timeout=600))
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def _faust_noop_main(servers: str, topic: str, count: int, results: Any, uvloop: bool) -> None:
    import faust

    if uvloop:
        import uvloop as uv

        asyncio.set_event_loop_policy(uv.EventLoopPolicy())

    workdir = tempfile.mkdtemp(prefix="carebus-bench-faust-")
    app = faust.App(
        f"bench-noop-{uuid.uuid4().hex[:8]}",
        broker=[f"aiokafka://{s}" for s in servers.split(",")],
        store="memory://",
        datadir=workdir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source, concurrency=1)
    async def noop(stream: Any) -> None:
        async for _ in stream.events():
            if seen["n"] == 0:
                seen["t0"] = time.perf_counter()
            seen["n"] += 1
            if seen["n"] == count:
                results.put(count / (time.perf_counter() - seen["t0"]))
                shutil.rmtree(workdir, ignore_errors=True)
                os._exit(0)

    faust.Worker(
        app, quiet=True, loglevel="WARNING", redirect_stdouts=False
    ).execute_from_commandline()


async def plain_consume(settings: Any, topic: str, count: int, decode: bool) -> float:
    """Events/s of a bare aiokafka consumer reading ``count`` records of ``topic``."""
    from aiokafka import AIOKafkaConsumer

    import schemas.codec
    from carebus.kafka import aiokafka_config

    consumer = AIOKafkaConsumer(
        topic, **aiokafka_config(settings), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen = 0
        start = time.perf_counter()
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if decode:
                    for record in records:
                        schemas.codec.decode(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def committed_by_partition(settings: Any, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset of each partition of ``topic``."""
    from carebus.admin import admin_client

    with admin_client(settings) as admin:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}


def committed(settings: Any, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group has committed."""
    return sum(o for o in committed_by_partition(settings, group, topic).values() if o > 0)


def end_by_partition(settings: Any, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    from carebus.kafka import kafka_python_config

    consumer = KafkaConsumer(**kafka_python_config(settings), group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def end_offsets(settings: Any, topic: str) -> int:
    return sum(end_by_partition(settings, topic).values())


def consumed(settings: Any, group: str, topic: str) -> bool:
    """True when the group has consumed every partition of ``topic`` to its end.

    A transactional topic ends with a commit marker, which is never delivered
    (so never committed past): one offset short of the end counts as the end.
    """
    done = committed_by_partition(settings, group, topic)
    return all(
        done.get(p, 0) >= end - 1 or end == 0
        for p, end in end_by_partition(settings, topic).items()
    )


class Reader(threading.Thread):
    """Reads a topic from its end (read_committed), noting when each record arrived.

    Feed records (a listener's watermarks on the events topic, ``schemas.FEED_SCHEMAS``)
    are not events: they are skipped.
    """

    def __init__(self, settings: Any, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        from carebus.kafka import kafka_python_config

        self.consumer = KafkaConsumer(
            **kafka_python_config(settings),
            group_id=None,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.records: list[tuple[float, Any]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                arrived = time.time()
                self.records.extend((arrived, r) for r in records if not is_feed_record(r))
        self.consumer.close()


def is_feed_record(record: Any) -> bool:
    """True for a feed record (its ``carebus-schema`` header in ``schemas.FEED_SCHEMAS``)."""
    import schemas

    for name, value in record.headers or ():
        if name == "carebus-schema":
            return bool(value) and value.decode("ascii", "replace") in schemas.FEED_SCHEMAS
    return False


def wait_ready(port: int, timeout_s: float) -> float:
    """Poll the worker's /readyz until it answers 200 (partitions assigned); the time then."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return time.monotonic()
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError("the worker did not become ready")


def start_worker(settings: Any, log: Path, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update(
        {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CAREBUS_TOPICS_PREFIX": settings.topics.prefix,
            "CAREBUS_TOPICS_PARTITIONS": str(settings.topics.partitions),
            "CAREBUS_WORKER_APP_ID": settings.worker.app_id,
            "CAREBUS_WORKER_DATA_DIR": str(settings.worker.data_dir),
            "CAREBUS_WORKER_REGION_CONFIG": str(settings.worker.region_config),
            "CAREBUS_WORKER_TICK_INTERVAL_S": "1",
            "CAREBUS_WORKER_WEB_PORT": str(free_port()),
            "CAREBUS_METRICS_WORKER_PORT": str(metrics_port),
            "CAREBUS_LOG_FORMAT": "json",
            "CAREBUS_LOG_LEVEL": "WARNING",
        }
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "carebus", "worker", "--no-topics"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_caught_up(
    settings: Any, group: str, topic: str, others: tuple[str, ...], timeout_s: float
) -> float:
    """Poll committed offsets until the group has consumed ``topic`` and ``others`` to
    their ends; returns the time then. ``others`` are topics the worker writes to itself
    (the status topic): their records are work caused by the events, so the events are
    not done before.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = committed(settings, group, topic)
        if (
            done > 0
            and done >= end_offsets(settings, topic)
            and all(consumed(settings, group, t) for t in others)
        ):
            return time.monotonic()
        time.sleep(0.25)
    raise TimeoutError(f"worker did not catch up within {timeout_s:.0f} s")


def wait_quiet(settings: Any, topic: str, *, quiet_s: float, timeout_s: float) -> None:
    """Wait until ``topic`` has not grown for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_end = end_offsets(settings, topic)
        if now_end != last:
            last, since = now_end, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{topic} kept growing for {timeout_s:.0f} s")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    import schemas.codec
    from carebus import broker, synth
    from carebus.settings import load_settings
    from carebus.topics import TopicNames
    from streams.app import prepare_topics
    from streams.region import parse_region

    settings = load_settings(os.environ)
    started_broker = False
    if settings.uses_local_broker and not broker.status(settings.broker).running:
        broker.start(settings.broker)
        started_broker = True
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="carebus-bench-worker-"))
    region_file = workdir / "region.yaml"
    region_file.write_text(synth.region_yaml())
    settings = settings.replace(
        topics=dataclasses.replace(settings.topics, prefix=prefix),
        worker=dataclasses.replace(
            settings.worker,
            app_id=f"{prefix}-worker",
            data_dir=workdir / "data",
            region_config=region_file,
            store="rocksdb://",
        ),
    )
    names = TopicNames.from_settings(settings.topics)
    providers = parse_region(synth.region_config()).providers
    prepare_topics(settings, providers)
    worker: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        events = prepare(BACKLOG + LIVE)
        backlog, live = events[:BACKLOG], events[BACKLOG:]
        print(
            f"worker: {len(backlog):,} + {len(live):,} synthetic events prepared in "
            f"{time.perf_counter() - t0:.1f} s; Kafka {settings.bootstrap_servers}; "
            f"{settings.topics.partitions} partitions; {os.cpu_count()} CPUs",
            flush=True,
        )
        produce(settings, names.events, backlog)
        plain = asyncio.run(plain_consume(settings, names.events, len(backlog), decode=False))
        plain_decode = asyncio.run(plain_consume(settings, names.events, len(backlog), decode=True))
        noop = faust_noop(settings, names.events, len(backlog))
        noop_uvloop = faust_noop(settings, names.events, len(backlog), uvloop=True)

        metrics_port = free_port()
        worker = start_worker(settings, workdir / "worker.log", metrics_port)
        t_ready = wait_ready(metrics_port, timeout_s=120)
        cpu_ready = cpu_seconds(worker.pid)
        group, others = settings.worker.app_id, (names.alert_status,)
        t_done = wait_caught_up(settings, group, names.events, others, timeout_s=900)
        rate = len(backlog) / (t_done - t_ready)
        cpu_per_event = (cpu_seconds(worker.pid) - cpu_ready) / len(backlog)

        alerts_reader = Reader(settings, names.alerts)
        events_reader = Reader(settings, names.events)
        alerts_reader.start()
        events_reader.start()
        # Once caught up, the wall-clock tick fires every deadline that fell due
        # between the feed's last event and now: wait for that burst to end.
        wait_quiet(settings, names.alerts, quiet_s=3.0, timeout_s=300)
        wait_caught_up(settings, group, names.events, others, timeout_s=300)
        sent = produce(settings, names.events, live, rate=LIVE_RATE)
        wait_caught_up(settings, group, names.events, others, timeout_s=300)
        time.sleep(3)
        alerts_reader.stopping.set()
        events_reader.stopping.set()
        alerts_reader.join(10)
        events_reader.join(10)

        alert_latency: list[float] = []
        for arrived, record in alerts_reader.records:
            _, alert = schemas.codec.decode(record.value)
            if alert["rule"] not in EVENT_RULES:
                continue
            times = [sent[c] for c in alert["evidence"] if c in sent]
            if times:
                alert_latency.append(arrived - max(times))
        event_latency = [arrived - r.timestamp / 1000 for arrived, r in events_reader.records]
        if os.environ.get("BENCH_DEBUG"):
            print(
                "latency series",
                [round(x, 2) for x in alert_latency[:: max(1, len(alert_latency) // 20)]],
            )

        keys = Counter(alert_keys(settings, names.alerts))
        report(
            events=len(backlog),
            plain=plain,
            plain_decode=plain_decode,
            noop=noop,
            noop_uvloop=noop_uvloop,
            rate=rate,
            cpu_per_event=cpu_per_event,
            alert_latency=alert_latency,
            event_latency=event_latency,
            keys=keys,
        )
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        if os.environ.get("BENCH_DEBUG") and (workdir / "worker.log").exists():
            print((workdir / "worker.log").read_text(errors="replace")[-3000:])
        delete_topics(settings, prefix)
        if started_broker:
            broker.stop(settings.broker)
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alert_keys(settings: Any, topic: str) -> list[str]:
    """The dedup key of every committed record on ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    from carebus.kafka import kafka_python_config
    from streams.delivery import dedup_key_of

    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        group_id=None,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[str] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(k for r in records if (k := dedup_key_of(r.value, r.headers)))
        return out
    finally:
        consumer.close()


def delete_topics(settings: Any, prefix: str) -> None:
    """Remove the run's topics (its prefix, and the worker's internal ones)."""
    from carebus.admin import admin_client

    try:
        with admin_client(settings) as admin:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            if mine:
                admin.delete_topics(mine)
    except Exception as exc:  # tidying up only
        print(f"(could not delete benchmark topics: {type(exc).__name__})")


def report(
    *,
    events: int,
    plain: float,
    plain_decode: float,
    noop: float,
    noop_uvloop: float,
    rate: float,
    cpu_per_event: float,
    alert_latency: list[float],
    event_latency: list[float],
    keys: Counter[str],
) -> None:
    duplicates = sum(n - 1 for n in keys.values())
    print()
    print(f"{'measure':<42}{'worker':>12}{'baseline':>12}{'ratio':>10}")
    rows = [
        ("events/s (baseline: plain consume)", rate, plain),
        ("events/s (baseline: consume + decode)", rate, plain_decode),
        ("events/s (baseline: Faust no-op agent)", rate, noop),
        ("events/s (baseline: Faust no-op, uvloop)", rate, noop_uvloop),
        ("latency p50 s (baseline: event visible)", pct(alert_latency, 50), pct(event_latency, 50)),
        ("latency p99 s (baseline: event visible)", pct(alert_latency, 99), pct(event_latency, 99)),
    ]
    for label, ours, base in rows:
        print(f"{label:<42}{ours:>12,.3f}{base:>12,.3f}{ours / base:>10.2f}")
    print()
    print(
        f"uvloop vs asyncio, Faust no-op agent: {noop_uvloop / noop:.2f}x; worker CPU "
        f"{cpu_per_event * 1e6:,.0f} us per event (all of its work, one process)"
    )
    print(
        f"backlog {events:,} events; {len(alert_latency):,} live alerts timed "
        f"({LIVE:,} events at {LIVE_RATE:,.0f}/s); {len(keys):,} alerts on the alert topic, "
        f"{duplicates} duplicate dedup keys"
    )
    ok_rate = rate >= TARGET_RATE
    ok_p99 = pct(alert_latency, 99) < TARGET_P99_S
    print(
        f"target >= {TARGET_RATE:,.0f} events/s: {'met' if ok_rate else 'NOT met'}; "
        f"target p99 < {TARGET_P99_S:g} s: {'met' if ok_p99 else 'NOT met'}; "
        f"exactly once: {'yes' if duplicates == 0 else 'NO'}"
    )
