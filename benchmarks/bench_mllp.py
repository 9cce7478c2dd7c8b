"""MLLP ingest under load: throughput and ACK latency, against a no-op echo ceiling.

N senders on loopback, each sending one message and waiting for its ACK before the
next, as interface engines do. Two loads, each for a fixed time after a warm-up:

1. **closed loop**: every sender sends as fast as its ACKs come back (throughput);
2. **paced**: the senders together offer :data:`PACED_RATE` messages a second
   (latency; measured from each message's scheduled send time, so a slow server
   cannot hide its queueing).

First each listener variant takes :data:`STEADY_S` seconds of the closed-loop load,
unmeasured, so that a freshly started broker's JIT compiler is warm (a long-running
broker is). Each load then runs against the carebus listener (parse, translate, raw
record and events on Kafka with acks=all, idempotent producer, then the ACK) in each
of its variants (:func:`variants`: the event loop uvloop versus asyncio's own, one
and two processes, and the compiled hot path versus the same modules interpreted
from their Python source, :mod:`carebus.compiled`) and, in the same run, against a
no-op MLLP server that answers every frame with a fixed ACK: the ceiling this
machine and load generator allow.
Servers run in their own process; the load generator in this one, on uvloop when it
is installed (as the echo server): the generator stands in for interface engines on
other machines, so the less of the two shared cores it takes, the closer the run is
to that. Besides msg/s and latency, each server reports the CPU time it spent per
message answered (its processes' user + system time from /proc, so less disturbed by
other load on the machine than wall-clock rates), and so do the broker (when it is
the project's local one) and the load generator over the same window: at the target
the two cores give server, broker and generator 667 µs of CPU per message between
them, and the report shows where it goes. Each sender connects from its own loopback
address (127.0.0.2, ...), as distinct interface engines would, which the several-
process listener (``mllp.processes``) spreads over its children.
Afterwards the raw topic must hold exactly one record per AA.

A last section compares ways to produce on the hot path: the CPU cost per message (a
raw record and an event, acks=all, idempotent, :data:`SENDERS` in flight) of carebus's
:class:`~connectors.publish.Publisher` (used: a batch per partition per request, on
aiokafka), aiokafka's own per-record ``send`` and confluent-kafka (librdkafka), on the
same broker, interleaved, best of :data:`PRODUCE_ROUNDS`.

Targets (2 cores, broker on the same machine): >= 3,000 msg/s with 32 senders;
p99 ACK latency < 50 ms at 1,000 msg/s offered.

Kafka: ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS``, else the project's local broker
(started, and stopped afterwards, if it is not running). Run with
``python -m benchmarks mllp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.util
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from benchmarks.ports import free_port
from carebus.synth.nhs import numbered as nhs_number

T = TypeVar("T")

SENDERS = 32
WARMUP_S = 2.0
MEASURE_S = 6.0
#: Before any measurement, each listener variant takes the closed-loop load this long:
#: a freshly started broker's JIT compiler (and each listener's memos) need it to reach
#: the steady state a long-running deployment is in.
STEADY_S = 10.0
#: Interleaved rounds per load and server; the best round of each is reported.
ROUNDS = 2
PACED_RATE = 1000.0
TARGET_RATE = 3000.0
TARGET_P99_MS = 50.0
PATIENTS = 5000
PRODUCE_MESSAGES = 3000
PRODUCE_ROUNDS = 3
#: Producers compared (the first is carebus's own; ratios are against it).
PRODUCE_CLIENTS = ("carebus publisher", "aiokafka send", "confluent-kafka")
ECHO_ACK = (
    b"\x0bMSH|^~\\&|CAREBUS|REGION|PAS|RXA01|20260301093000||ACK^A01^ACK|1|P|2.4\rMSA|AA|0\r\x1c\r"
)


_NHS = [nhs_number(i) for i in range(PATIENTS)]


def message(run: str, n: int) -> bytes:
    """A synthetic NHS-style ADT^A01 (HL7 2.4) with its own control id, MLLP-framed."""
    patient = n % PATIENTS
    return (
        f"\x0bMSH|^~\\&|PAS|RXA01|CAREBUS|REGION|20260301093000||ADT^A01^ADT_A01|{run}{n}|P|2.4"
        f"|||AL|NE|GBR\r"
        f"EVN|A01|20260301093000\r"
        f"PID|1||{_NHS[patient]}^^^NHS^NH~M{patient}^^^RXA01^MR||TEST^PATIENT^{patient}||"
        f"19700101|F|||1 TEST STREET^^LEEDS^^LS1 1AA||||||||||||||||||||\r"
        f"PD1|||^^B86001\r"
        f"PV1|1|I|WARD1^BAY2^BED3^RXA01||||C1234^DOCTOR^TEST|||MED||||19|||||V{run}{n}|||||||"
        f"||||||||||||||||||||||20260301093000\r"
        f"\x1c\r"
    ).encode()


# -- servers (each in its own process) ------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One server configuration to measure."""

    label: str
    kind: str  # "carebus" or "echo"
    mllp: dict[str, Any] = field(default_factory=dict)
    #: The label of the variant this one is compared with (None: the first).
    baseline: str | None = None
    #: Run the hot path from its Python source, not the compiled modules.
    interpreted: bool = False


def variants() -> list[Variant]:
    """The listener variants compared in one run: uvloop (when installed) against
    asyncio's loop, one process against two, and, when the hot path is compiled, the
    compiled modules against their Python source."""
    from carebus.compiled import hot_path

    uvloop = importlib.util.find_spec("uvloop") is not None
    loop = "uvloop" if uvloop else "asyncio"
    one, two = {"event_loop": loop, "processes": 1}, {"event_loop": loop, "processes": 2}
    compiled = hot_path() == "compiled"
    interpreted = f"2 processes ({loop}, interpreted)"
    out = [
        Variant(f"1 process ({loop})", "carebus", one),
        Variant(f"2 processes ({loop})", "carebus", two, interpreted if compiled else None),
    ]
    if uvloop:
        out.append(Variant("1 process (asyncio)", "carebus", {"event_loop": "asyncio"}))
    if compiled:
        out.append(Variant(interpreted, "carebus", two, interpreted=True))
    return out


def comparisons(carebus: list[Variant]) -> list[tuple[str, str]]:
    """(variant, baseline) label pairs reported as ratios: each variant against its
    ``baseline`` (the first by default); an interpreted variant is only a baseline."""
    return [(v.label, v.baseline or carebus[0].label) for v in carebus[1:] if not v.interpreted]


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop (the
    listener's ``mllp.event_loop = auto``)."""
    from carebus.commands.listen import run_loop
    from carebus.settings import MllpSettings

    return run_loop(main, MllpSettings(event_loop="auto"))


def _serve(kind: str, settings: Any, stop: Any, source: str | None = None) -> None:
    if kind == "echo":
        _run(_serve_echo(settings.mllp.port, stop))
        return
    if source is not None:
        _import_from_source(source)
    from carebus.commands.listen import run_loop

    run_loop(_serve_carebus(settings, stop), settings.mllp)


def _source_copy() -> str:
    """A temporary copy of the compiled modules' packages, their Python source only."""
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="carebus-source-"))
    for package in _compiled_packages():
        shutil.copytree(
            root / package, target / package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
        )
    return str(target)


def _import_from_source(source: str) -> None:
    """Make this (fresh) process import the hot path from ``source``: interpreted."""
    import sys

    from carebus.compiled import hot_path

    packages = _compiled_packages()
    loaded = [name for name in sys.modules if name.split(".")[0] in packages]
    if loaded:
        raise RuntimeError(f"already imported: {', '.join(sorted(loaded))}")
    sys.path.insert(0, source)
    found = hot_path()
    if found != "interpreted":
        raise RuntimeError(f"the hot path from {source} is {found}")


def _compiled_packages() -> set[str]:
    """The top-level packages holding compiled modules (:data:`carebus.compiled.MODULES`)."""
    from carebus.compiled import MODULES

    return {name.split(".")[0] for name in MODULES}


async def _until(stop: Any) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)


async def _serve_echo(port: int, stop: Any) -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", port, backlog=256)
    await _until(stop)
    server.close()


async def _serve_carebus(settings: Any, stop: Any) -> None:
    """``carebus listen`` itself (health endpoint, child processes and all)."""
    from carebus.commands.listen import serve
    from carebus.log import configure_logging

    configure_logging(dataclasses.replace(settings.log, level="WARNING", format="console"))
    stopped = asyncio.Event()
    watcher = asyncio.ensure_future(_until(stop))
    watcher.add_done_callback(lambda _: stopped.set())
    await serve(settings, stop=stopped)


def _tree_cpu_s(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and every process below it (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(k) for k in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / ticks


def _wait_for_port(port: int, proc: Any, timeout_s: float = 120) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError(f"the server exited with {proc.exitcode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"port {port} did not open")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\x1c\r")
            writer.write(ECHO_ACK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


# -- load -----------------------------------------------------------------------------------


@dataclass
class Result:
    """One load against one server."""

    messages: int = 0
    accepted: int = 0
    other: int = 0
    measure_from: float = 0.0
    measure_s: float = MEASURE_S
    last_ack: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = float("nan")
    #: CPU time of the broker (when it runs on this machine) and of this process (the
    #: load generator) over the same window: the rest of the two cores' budget.
    broker_cpu_s: float = float("nan")
    generator_cpu_s: float = float("nan")

    @property
    def rate(self) -> float:
        """Messages answered per second (a server that falls behind takes longer)."""
        seconds = max(self.measure_s, self.last_ack - self.measure_from)
        return self.messages / seconds

    @property
    def cpu_us(self) -> float:
        """Server CPU time per message answered while measuring, in microseconds."""
        return self.cpu_s / self.messages * 1e6 if self.messages else float("nan")

    def per_message_us(self, seconds: float) -> float:
        """``seconds`` of CPU time per message answered while measuring, in microseconds."""
        return seconds / self.messages * 1e6 if self.messages else float("nan")

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _sender(
    port: int, run: str, first: int, step: int, interval: float | None, t0: float, out: Result
) -> int:
    # Each sender is its own interface engine, at its own loopback address.
    source = (f"127.0.0.{2 + first % 250}", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source)
    measure_from, stop_at = out.measure_from, out.measure_from + out.measure_s
    n = first
    sent = 0
    scheduled = t0 + (first / step) * (interval or 0)
    try:
        while True:
            now = time.perf_counter()
            if interval is not None:
                if scheduled > now:
                    await asyncio.sleep(scheduled - now)
                start = scheduled
                scheduled += interval
            else:
                start = now
            if start >= stop_at:
                break
            writer.write(message(run, n))
            ack = await reader.readuntil(b"\x1c\r")
            done = time.perf_counter()
            sent += 1
            if start >= measure_from:
                out.messages += 1
                out.latencies.append(done - start)
                out.last_ack = max(out.last_ack, done)
                if b"MSA|AA|" in ack or b"MSA|CA|" in ack:
                    out.accepted += 1
                else:
                    out.other += 1
            n += step
    finally:
        writer.close()
    return sent


async def _load(
    port: int,
    run: str,
    paced: bool,
    cpu: Callable[[], float],
    broker_pid: int | None,
    measure_s: float = MEASURE_S,
) -> tuple[Result, int]:
    interval = SENDERS / PACED_RATE if paced else None
    t0 = time.perf_counter() + 0.05
    out = Result(measure_from=t0 + WARMUP_S, measure_s=measure_s)

    def cpu_now() -> tuple[float, float, float]:
        broker = _tree_cpu_s(broker_pid) if broker_pid else float("nan")
        return cpu(), broker, time.process_time()

    async def cpu_window() -> tuple[float, float, float]:
        await asyncio.sleep(out.measure_from - time.perf_counter())
        return await asyncio.to_thread(cpu_now)

    started = asyncio.ensure_future(cpu_window())
    sent = await asyncio.gather(
        *(_sender(port, run, i, SENDERS, interval, t0, out) for i in range(SENDERS))
    )
    end, begin = await asyncio.to_thread(cpu_now), await started
    out.cpu_s, out.broker_cpu_s, out.generator_cpu_s = (
        b - a for a, b in zip(begin, end, strict=True)
    )
    return out, sum(sent)


@dataclass
class Server:
    """One server process, started once and measured in several interleaved rounds."""

    variant: Variant
    proc: Any
    stop: Any
    port: int
    #: The source copy an interpreted variant runs from (removed when it stops).
    source: str | None = None

    def cpu(self) -> float:
        return _tree_cpu_s(self.proc.pid)


def _start_server(variant: Variant, settings: Any) -> Server:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    port = free_port()
    settings = settings.replace(
        mllp=dataclasses.replace(settings.mllp, port=port, **variant.mllp),
        metrics=dataclasses.replace(settings.metrics, listener_port=free_port(4)),
    )
    source = _source_copy() if variant.interpreted else None
    proc = ctx.Process(target=_serve, args=(variant.kind, settings, stop, source))
    proc.start()
    return Server(variant, proc, stop, port, source)


def _stop_server(server: Server) -> None:
    server.stop.set()
    server.proc.join(60)
    if server.proc.is_alive():
        server.proc.terminate()
        server.proc.join(5)
    if server.source is not None:
        import shutil

        shutil.rmtree(server.source, ignore_errors=True)


def _better(load: str, new: Result, old: Result | None) -> bool:
    """Best of the rounds: the higher rate (closed loop), the lower p99 (paced)."""
    if old is None:
        return True
    return new.rate > old.rate if load == "closed" else new.pct(99) < old.pct(99)


def _measure(
    servers: list[Server], broker_pid: int | None
) -> tuple[dict[str, dict[str, Result]], dict[str, int], int]:
    """Each load against each server, interleaved, :data:`ROUNDS` times; best of each.

    Also: messages sent to each server, and non-AA answers from carebus in any round.
    """
    best: dict[str, dict[str, Result]] = {s.variant.label: {} for s in servers}
    sent: dict[str, int] = {s.variant.label: 0 for s in servers}
    not_aa = 0
    for server in servers:
        if server.variant.kind == "carebus":
            run = f"W{uuid.uuid4().hex[:6]}-"
            steady, count = _run(_load(server.port, run, False, server.cpu, None, STEADY_S))
            sent[server.variant.label] += count
            not_aa += steady.other
    print(f"  steady state: {STEADY_S:g}s of closed-loop load on each listener", flush=True)
    for round_ in range(ROUNDS):
        for load in ("closed", "paced"):
            for server in servers:
                label = server.variant.label
                run = f"R{round_}{load[0].upper()}{uuid.uuid4().hex[:6]}-"
                result, count = _run(
                    _load(server.port, run, load == "paced", server.cpu, broker_pid)
                )
                sent[label] += count
                not_aa += result.other if server.variant.kind == "carebus" else 0
                if _better(load, result, best[label].get(load)):
                    best[label][load] = result
        print(f"  round {round_ + 1} of {ROUNDS} done", flush=True)
    return best, sent, not_aa


# -- Kafka clients for the hot-path producer ------------------------------------------------


@dataclass(frozen=True)
class ProduceCost:
    """CPU per message (raw record + event) for one client, best of the rounds."""

    client: str
    process_us: float
    loop_thread_us: float
    rate: float


_HEADERS = [
    ("carebus-sender", b"RXA01"),
    ("carebus-peer", b"127.0.0.1:50000"),
    ("carebus-received-time", b"2026-03-01T09:30:00.123456+00:00"),
    ("carebus-control-id", b"XX0000000001"),
    ("carebus-raw-sha256", b"0" * 64),
    ("carebus-source", b"mllp"),
]
_SCHEMA_HEADER = [("carebus-schema", b"carebus.events.Encounter")]
_EVENT = b"\xc3\x01" + b"E" * 460


class _ConfluentAsync:
    """confluent-kafka behind asyncio futures: delivery reports from a poll thread,
    handed to the loop in batches."""

    def __init__(self, config: dict[str, Any]) -> None:
        import confluent_kafka

        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer(config)
        self._done: list[tuple[asyncio.Future[None], Any]] = []
        self._running = True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)
            if self._done:
                batch, self._done = self._done, []
                self._loop.call_soon_threadsafe(self._settle, batch)

    @staticmethod
    def _settle(batch: list[tuple[asyncio.Future[None], Any]]) -> None:
        for fut, err in batch:
            if fut.done():
                continue
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(RuntimeError(str(err)))

    def _report(self, fut: asyncio.Future[None], err: Any, _msg: Any) -> None:
        self._done.append((fut, err))

    def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        wire: list[tuple[str, str | bytes | None]] = list(headers)
        fut: asyncio.Future[None] = self._loop.create_future()
        report = functools.partial(self._report, fut)
        self._producer.produce(topic, value, key, headers=wire, on_delivery=report)
        return fut

    def close(self) -> None:
        self._producer.flush(30)
        self._running = False
        self._thread.join()


async def _produce_round(client: str, settings: Any, raw: str, events: str) -> ProduceCost:
    from aiokafka import AIOKafkaProducer

    from connectors.publish import Publisher, Record

    send: Callable[[int], Coroutine[Any, Any, None]]
    close: Callable[[], Coroutine[Any, Any, None]]
    body = message("P", 1)[1:-2]
    if client == "carebus publisher":
        publisher = Publisher(settings)
        await publisher.start([raw, events])
        raw_headers, event_headers = tuple(_HEADERS), tuple(_SCHEMA_HEADER)

        async def send_pub(n: int) -> None:
            records = [
                Record(raw, b"RXA01|P%d" % n, body, raw_headers),
                Record(events, _NHS[n % PATIENTS].encode(), _EVENT, event_headers),
            ]
            await (await publisher.send(records))

        send, close = send_pub, publisher.stop
    elif client == "aiokafka send":
        # aiokafka's own per-record path: its partitioner, each partition's batch
        # lingering on its own.
        config = {**Publisher(settings).producer_config()}
        config["linger_ms"] = settings.mllp.publish_linger_ms
        producer = AIOKafkaProducer(**config)
        await producer.start()

        async def send_ai(n: int) -> None:
            first = await producer.send(raw, body, b"RXA01|P%d" % n, headers=_HEADERS)
            second = await producer.send(
                events, _EVENT, _NHS[n % PATIENTS].encode(), headers=_SCHEMA_HEADER
            )
            await asyncio.gather(first, second)

        send, close = send_ai, producer.stop
    else:
        ck = _ConfluentAsync(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": settings.mllp.publish_linger_ms,
                "partitioner": "murmur2_random",  # as Java and aiokafka: same partitions
            }
        )

        async def send_ck(n: int) -> None:
            first = ck.send(raw, b"RXA01|P%d" % n, body, _HEADERS)
            second = ck.send(events, _NHS[n % PATIENTS].encode(), _EVENT, _SCHEMA_HEADER)
            await asyncio.gather(first, second)

        async def close_ck() -> None:
            await asyncio.to_thread(ck.close)

        send, close = send_ck, close_ck

    async def sender(first: int, total: int) -> None:
        for n in range(first, total, SENDERS):
            await send(n)

    try:
        await asyncio.gather(*(sender(i, 10 * SENDERS) for i in range(SENDERS)))  # warm-up
        cpu0, thread0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        await asyncio.gather(*(sender(i, PRODUCE_MESSAGES) for i in range(SENDERS)))
        wall = time.perf_counter() - t0
        cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
    finally:
        await close()
    n = PRODUCE_MESSAGES
    return ProduceCost(client, cpu / n * 1e6, thread / n * 1e6, n / wall)


def produce_costs(settings: Any, raw: str, events: str) -> list[ProduceCost]:
    """Best-of-:data:`PRODUCE_ROUNDS` cost per message of each client, interleaved."""
    best: dict[str, ProduceCost] = {}
    for _ in range(PRODUCE_ROUNDS):
        for client in PRODUCE_CLIENTS:
            cost = asyncio.run(_produce_round(client, settings, raw, events))
            if client not in best or cost.loop_thread_us < best[client].loop_thread_us:
                best[client] = cost
    return list(best.values())


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def ingest_bench(stem: str) -> Iterator[tuple[Any, Any]]:
    """Settings for an ingest benchmark and its topic names: a topic prefix of its own,
    the MLLP listener on a free loopback port, quiet logs, the raw, events and
    dead-letter topics created. The local broker is started for the run when carebus
    uses it and it is down; afterwards the topics are deleted and such a broker stopped."""
    from carebus import broker
    from carebus.settings import load_settings
    from carebus.topics import TopicNames, apply, declared_topics

    settings = load_settings(os.environ)
    started_broker = False
    if settings.uses_local_broker and not broker.status(settings.broker).running:
        broker.start(settings.broker)
        started_broker = True
    settings = settings.replace(
        topics=dataclasses.replace(settings.topics, prefix=f"{stem}-{uuid.uuid4().hex[:8]}"),
        mllp=dataclasses.replace(settings.mllp, port=0, host="127.0.0.1"),
        log=dataclasses.replace(settings.log, level="WARNING", format="console"),
    )
    names = TopicNames.from_settings(settings.topics)
    wanted = {names.raw, names.events, names.deadletter}
    apply(settings, [s for s in declared_topics(settings.topics) if s.name in wanted])
    try:
        yield settings, names
    finally:
        _delete_topics(settings, sorted(wanted))
        if started_broker:
            broker.stop(settings.broker)


def main() -> None:
    from carebus import broker
    from carebus.compiled import hot_path

    with ingest_bench("bench") as (settings, names):
        print(
            f"MLLP ingest: {SENDERS} senders, each waiting for its ACK; loopback; "
            f"Kafka {settings.bootstrap_servers} (acks=all, idempotent, "
            f"linger {settings.mllp.publish_linger_ms:g} ms); hot path {hot_path()}; "
            f"{os.cpu_count()} CPUs; "
            f"{WARMUP_S:g}s warm-up + {MEASURE_S:g}s per load",
            flush=True,
        )
        carebus = variants()
        servers = [_start_server(v, settings) for v in [*carebus, Variant("echo ceiling", "echo")]]
        try:
            for server in servers:
                _wait_for_port(server.port, server.proc)
            broker_pid = broker.status(settings.broker).pid if settings.uses_local_broker else None
            measured, sent, not_aa = _measure(servers, broker_pid)
        finally:
            for server in servers:
                _stop_server(server)
        carebus_labels = [v.label for v in carebus]
        total_aa = sum(sent[label] for label in carebus_labels)
        stored = _raw_count(settings, names.raw)
        _report(measured, carebus_labels, comparisons(carebus), total_aa, stored, not_aa)
        _report_produce(produce_costs(settings, names.raw, names.events))


def _raw_count(settings: Any, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    from carebus.kafka import kafka_python_config

    consumer = KafkaConsumer(**kafka_python_config(settings), group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def _delete_topics(settings: Any, topics: list[str]) -> None:
    from carebus.admin import admin_client

    try:
        with admin_client(settings) as admin:
            admin.delete_topics(topics)
    except Exception as exc:  # tidying up only
        print(f"(could not delete benchmark topics: {type(exc).__name__})")


def _report(
    measured: dict[str, dict[str, Result]],
    carebus_labels: list[str],
    pairs: list[tuple[str, str]],
    total_aa: int,
    stored: int,
    not_aa: int,
) -> None:
    labels = list(measured)
    main_label = carebus_labels[0]
    echo = measured["echo ceiling"]
    print()
    width = max(16, *(len(label) + 2 for label in labels))
    print(
        f"{'load':<32}" + "".join(f"{label:>{width}}" for label in labels) + f"{'first/echo':>12}"
    )
    stats: list[tuple[str, Callable[[Result], float]]] = [
        ("msg/s", lambda r: r.rate),
        ("p50 ACK ms", lambda r: r.pct(50)),
        ("p95 ACK ms", lambda r: r.pct(95)),
        ("p99 ACK ms", lambda r: r.pct(99)),
        ("server CPU us/msg", lambda r: r.cpu_us),
        ("broker CPU us/msg", lambda r: r.per_message_us(r.broker_cpu_s)),
        ("generator CPU us/msg", lambda r: r.per_message_us(r.generator_cpu_s)),
    ]
    for load, name in (("closed", "closed loop"), ("paced", f"paced {PACED_RATE:g}/s")):
        for stat, pick in stats:
            values = [pick(measured[x][load]) for x in labels]
            ceiling = pick(echo[load])
            ratio = pick(measured[main_label][load]) / ceiling if ceiling else float("nan")
            cells = "".join(f"{v:>{width}.1f}" for v in values)
            print(f"{name + ': ' + stat:<32}{cells}{ratio:>12.2f}")
    print()
    for other, one in pairs:
        for load in ("closed", "paced"):
            mine, base = measured[other][load], measured[one][load]
            print(
                f"{load:<7} {other} vs {one}: throughput {mine.rate / base.rate:.2f}x, "
                f"p99 {mine.pct(99) / base.pct(99):.2f}x, "
                f"CPU per message {mine.cpu_us / base.cpu_us:.2f}x"
            )
    budget = (os.cpu_count() or 1) / TARGET_RATE * 1e6
    fastest = max(carebus_labels, key=lambda label: measured[label]["closed"].rate)
    closed = measured[fastest]["closed"]
    used = closed.cpu_us + closed.per_message_us(closed.broker_cpu_s + closed.generator_cpu_s)
    print(
        f"CPU budget at {TARGET_RATE:g} msg/s on {os.cpu_count()} CPUs: {budget:.0f} us per "
        f"message for server, broker and generator together; used in the closed loop by "
        f"{fastest}: {used:.0f} us"
    )
    print()
    print(f"non-AA answers during measurement: {not_aa}")
    print(f"messages sent to carebus (incl. warm-up): {total_aa}; raw records on Kafka: {stored}")
    for label in carebus_labels:
        closed, paced = measured[label]["closed"], measured[label]["paced"]
        rate_ok = closed.rate >= TARGET_RATE
        p99_ok = paced.pct(99) < TARGET_P99_MS
        print(
            f"{label}: >= {TARGET_RATE:g} msg/s with {SENDERS} senders: {closed.rate:.0f} "
            f"({closed.rate / TARGET_RATE:.2f}x) {'MET' if rate_ok else 'NOT MET'}; "
            f"p99 < {TARGET_P99_MS:g} ms at {PACED_RATE:g}/s: {paced.pct(99):.1f} ms "
            f"({paced.pct(99) / TARGET_P99_MS:.2f}x) {'MET' if p99_ok else 'NOT MET'}"
        )


def _report_produce(costs: list[ProduceCost]) -> None:
    print()
    print(
        f"hot-path producer, per message (raw record + event, acks=all, idempotent, "
        f"{SENDERS} in flight, best of {PRODUCE_ROUNDS}):"
    )
    print(f"{'client':<18}{'process CPU us':>16}{'loop thread us':>16}{'msg/s':>10}")
    for c in costs:
        print(f"{c.client:<18}{c.process_us:>16.1f}{c.loop_thread_us:>16.1f}{c.rate:>10.0f}")
    ours, *others = costs
    for other in others:
        print(
            f"{other.client} / {ours.client}: process CPU "
            f"{other.process_us / ours.process_us:.2f}x, event-loop thread CPU "
            f"{other.loop_thread_us / ours.loop_thread_us:.2f}x"
        )


if __name__ == "__main__":
    main()
