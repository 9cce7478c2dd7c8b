"""MLLP ingest under load: throughput and ACK latency, against a no-op echo ceiling.

N senders on loopback, each sending one message and waiting for its ACK before the
next, as interface engines do. Two loads, each for a fixed time after a warm-up:

1. **closed loop**: every sender sends as fast as its ACKs come back (throughput);
2. **paced**: the senders together offer :data:`PACED_RATE` messages a second
   (latency; measured from each message's scheduled send time, so a slow server
   cannot hide its queueing).

Each load runs against the carebus listener (parse, translate, raw record and
events on Kafka with acks=all, idempotent producer, then the ACK) and, in the same
run, against a no-op MLLP server that answers every frame with a fixed ACK: the
ceiling this machine and load generator allow. Servers run in their own process;
the load generator in this one. Afterwards the raw topic must hold exactly one
record per AA. Targets (2 cores, broker on the same machine): >= 3,000 msg/s with
32 senders; p99 ACK latency < 50 ms at 1,000 msg/s offered.

Kafka: ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS``, else the project's local broker
(started, and stopped afterwards, if it is not running). Run with
``python -m benchmarks mllp``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

SENDERS = 32
WARMUP_S = 2.0
MEASURE_S = 8.0
PACED_RATE = 1000.0
TARGET_RATE = 3000.0
TARGET_P99_MS = 50.0
PATIENTS = 5000
ECHO_ACK = (
    b"\x0bMSH|^~\\&|CAREBUS|REGION|PAS|RXA01|20260301093000||ACK^A01^ACK|1|P|2.4\rMSA|AA|0\r\x1c\r"
)


def nhs_number(seed: int) -> str:
    """A valid (modulus 11) NHS number derived from ``seed``."""
    n = 400_000_000 + seed * 7
    while True:
        digits = f"{n:09d}"
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 11:
            return digits + "0"
        if check != 10:
            return digits + str(check)
        n += 1


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


def _serve(kind: str, settings: Any, ports: Any, stop: Any) -> None:
    asyncio.run(_serve_async(kind, settings, ports, stop))


async def _serve_async(kind: str, settings: Any, ports: Any, stop: Any) -> None:
    if kind == "echo":
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, backlog=256)
        ports.put(server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()
        return
    from carebus.log import configure_logging
    from connectors.ingest import Ingest

    configure_logging(dataclasses.replace(settings.log, level="WARNING", format="console"))
    from carebus.commands.listen import tune_gc

    ingest = Ingest(settings)
    await ingest.start()
    tune_gc()  # as `carebus listen` does
    ports.put(ingest.mllp.port)
    while not stop.is_set():
        await asyncio.sleep(0.1)
    await ingest.stop()


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
    last_ack: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages answered per second (a server that falls behind takes longer)."""
        seconds = max(MEASURE_S, self.last_ack - self.measure_from)
        return self.messages / seconds

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _sender(
    port: int, run: str, first: int, step: int, interval: float | None, t0: float, out: Result
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    measure_from, stop_at = t0 + WARMUP_S, t0 + WARMUP_S + MEASURE_S
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


async def _load(port: int, run: str, paced: bool) -> tuple[Result, int]:
    interval = SENDERS / PACED_RATE if paced else None
    t0 = time.perf_counter() + 0.05
    out = Result(measure_from=t0 + WARMUP_S)
    sent = await asyncio.gather(
        *(_sender(port, run, i, SENDERS, interval, t0, out) for i in range(SENDERS))
    )
    return out, sum(sent)


def _run_server(kind: str, settings: Any) -> dict[str, tuple[Result, int]]:
    ctx = multiprocessing.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(kind, settings, ports, stop), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=60)
        results = {}
        for load in ("closed", "paced"):
            run = f"{kind[0].upper()}{load[0].upper()}{uuid.uuid4().hex[:6]}-"
            results[load] = asyncio.run(_load(port, run, paced=load == "paced"))
        return results
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    from carebus import broker
    from carebus.settings import MllpSettings, load_settings
    from carebus.topics import TopicNames, apply, declared_topics

    settings = load_settings(os.environ)
    started_broker = False
    if settings.uses_local_broker and not broker.status(settings.broker).running:
        broker.start(settings.broker)
        started_broker = True
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = settings.replace(
        topics=dataclasses.replace(settings.topics, prefix=prefix),
        mllp=dataclasses.replace(settings.mllp, port=0, host="127.0.0.1"),
    )
    names = TopicNames.from_settings(settings.topics)
    wanted = {names.raw, names.events, names.deadletter}
    apply(settings, [s for s in declared_topics(settings.topics) if s.name in wanted])
    try:
        print(
            f"MLLP ingest: {SENDERS} senders, each waiting for its ACK; loopback; "
            f"Kafka {settings.bootstrap_servers} (acks=all, idempotent, "
            f"linger {settings.kafka.producer_linger_ms} ms); {os.cpu_count()} CPUs; "
            f"{WARMUP_S:g}s warm-up + {MEASURE_S:g}s per load",
            flush=True,
        )
        carebus = _run_server("carebus", settings)
        echo = _run_server("echo", settings)
        total_aa = sum(sent for _, sent in carebus.values())
        stored = _raw_count(settings, names.raw)
        _report(carebus, echo, total_aa, stored)
    finally:
        _delete_topics(settings, sorted(wanted))
        if started_broker:
            broker.stop(settings.broker)
    del MllpSettings


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
    carebus: dict[str, tuple[Result, int]],
    echo: dict[str, tuple[Result, int]],
    total_aa: int,
    stored: int,
) -> None:
    closed, _ = carebus["closed"]
    paced, _ = carebus["paced"]
    e_closed, _ = echo["closed"]
    e_paced, _ = echo["paced"]
    print()
    print(f"{'load':<30}{'carebus':>12}{'echo ceiling':>14}{'carebus/echo':>14}")
    rows = [
        ("closed loop: msg/s", closed.rate, e_closed.rate),
        ("closed loop: p50 ACK ms", closed.pct(50), e_closed.pct(50)),
        ("closed loop: p95 ACK ms", closed.pct(95), e_closed.pct(95)),
        ("closed loop: p99 ACK ms", closed.pct(99), e_closed.pct(99)),
        (f"paced {PACED_RATE:g}/s: msg/s", paced.rate, e_paced.rate),
        (f"paced {PACED_RATE:g}/s: p50 ACK ms", paced.pct(50), e_paced.pct(50)),
        (f"paced {PACED_RATE:g}/s: p95 ACK ms", paced.pct(95), e_paced.pct(95)),
        (f"paced {PACED_RATE:g}/s: p99 ACK ms", paced.pct(99), e_paced.pct(99)),
    ]
    for label, ours, ceiling in rows:
        ratio = ours / ceiling if ceiling else float("nan")
        print(f"{label:<30}{ours:>12.1f}{ceiling:>14.1f}{ratio:>14.2f}")
    not_aa = closed.other + paced.other
    print()
    print(f"non-AA answers during measurement: {not_aa}")
    print(f"messages sent to carebus (incl. warm-up): {total_aa}; raw records on Kafka: {stored}")
    rate_ok = closed.rate >= TARGET_RATE
    p99_ok = paced.pct(99) < TARGET_P99_MS
    print(
        f"target >= {TARGET_RATE:g} msg/s with {SENDERS} senders: {closed.rate:.0f} msg/s "
        f"({closed.rate / TARGET_RATE:.2f}x target) {'MET' if rate_ok else 'NOT MET'}"
    )
    print(
        f"target p99 < {TARGET_P99_MS:g} ms at {PACED_RATE:g} msg/s offered: "
        f"{paced.pct(99):.1f} ms ({paced.pct(99) / TARGET_P99_MS:.2f}x limit) "
        f"{'MET' if p99_ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
