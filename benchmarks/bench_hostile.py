"""One hostile peer against honest senders: how much does it cost them?

Eight honest senders (interface engines, each at its own loopback address
127.0.0.2 ... 127.0.0.9) send at a steady paced rate (:data:`HONEST_RATE` messages a
second between them), each waiting for its ACK before the next, to a carebus
listener (``carebus listen``, one process, the guards at their defaults except a
shorter ``mllp.frame_timeout_s``, :data:`FRAME_TIMEOUT_S`, so that slow frames time
out within a phase). Their ACK latency is measured from each message's scheduled
send time, so queueing cannot hide.

The hostile peer (one address, 127.0.0.200, in a process of its own) at once:

- opens connections and holds them, up to :data:`FLOOD` at a time, opening another
  shortly after each one the listener closes (the per-IP cap refuses most);
- sends slow frames: a start byte and an MSH header, then one byte a second
  (slowloris), on :data:`SLOW` connections, each reopened when closed;
- sends oversized frames: a header and then :data:`OVERSIZE_BYTES` bytes with no end
  byte, as fast as the listener reads, on :data:`OVERSIZE` connections, each
  reopened when the listener NAKs and closes it.

The hostile peer's process runs at nice :data:`HOSTILE_NICE`, standing in for a peer
on another machine (set it to 0 to let it compete for the cores on equal terms).
The report shows the CPU each party used per phase: the listener's own cost of the
attack is the difference in its CPU between the two conditions.

Phases alternate, :data:`ROUNDS` times: honest senders alone, then honest senders
with the hostile peer, after one unmeasured warm-up phase. The report gives the
honest senders' p50/p99 ACK latency in each condition (all rounds pooled, and per
round) and the ratio of the p99s: the target is within 2x. It also shows what the
hostile peer met (connections refused, NAKs, frame timeouts) and checks that every
honest message got AA and is on the raw topic exactly once, and nothing of the
hostile peer's is.

Kafka: ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS``, else the project's local broker (started,
and stopped afterwards, if it is not running). Run with ``python -m benchmarks hostile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from benchmarks.bench_mllp import (
    Result,
    Variant,
    _raw_count,
    _run,
    _sender,
    _start_server,
    _stop_server,
    _tree_cpu_s,
    _wait_for_port,
    ingest_bench,
)

HONEST = 8
HONEST_RATE = 80.0
WARMUP_S = 2.0
MEASURE_S = 10.0
STEADY_S = 8.0
ROUNDS = 3
FRAME_TIMEOUT_S = 5.0
HOSTILE_HOST = "127.0.0.200"
FLOOD = 100
#: A connection slot of the hostile peer reopens this long after the listener closed it.
FLOOD_PAUSE_S = 0.2
SLOW = 8
OVERSIZE = 2
OVERSIZE_BYTES = 2 * 1_048_576
TARGET_RATIO = 2.0
#: The hostile peer's process runs at this nice level: it stands in for a peer on
#: another machine, so the less it takes of the cores the listener and the honest
#: senders share, the closer the run is to that (0: compete on equal terms).
HOSTILE_NICE = 10
_HEADER = b"\x0bMSH|^~\\&|EVIL|EVIL01|CAREBUS|REGION|20260301093000||ADT^A01^ADT_A01|{n}|P|2.4\r"


# -- the hostile peer (its own process) ---------------------------------------------------------


@dataclass
class HostileCounts:
    connects: int = 0
    refused: int = 0  # closed by the listener before it sent anything back
    naks: int = 0
    slow_frames: int = 0
    oversize_frames: int = 0


def _hostile_main(port: int, ready: Any, stop: Any, counts: Any) -> None:
    """Entry point of the hostile peer's process; ``counts`` is a shared array."""
    os.nice(HOSTILE_NICE)
    asyncio.run(_hostile(port, ready, stop, counts))


async def _hostile(port: int, ready: Any, stop: Any, counts: Any) -> None:
    tally = HostileCounts()
    serial = iter(range(1, 1 << 30))

    async def open_() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tally.connects += 1
        return await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(HOSTILE_HOST, 0), limit=1 << 20
        )

    async def answered(reader: asyncio.StreamReader) -> None:
        data = await reader.read(65536)
        if not data:
            tally.refused += 1
        elif b"MSA|" in data:
            tally.naks += 1

    async def flood_one() -> None:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await open_()
                try:
                    await answered(reader)
                finally:
                    writer.close()
            await asyncio.sleep(FLOOD_PAUSE_S)

    async def slow_one() -> None:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await open_()
                tally.slow_frames += 1
                writer.write(_HEADER.replace(b"{n}", b"S%d" % next(serial)))
                listening = asyncio.ensure_future(answered(reader))
                try:
                    while not listening.done():
                        writer.write(b"x")
                        await asyncio.wait([listening], timeout=1.0)
                finally:
                    listening.cancel()
                    writer.close()
            await asyncio.sleep(FLOOD_PAUSE_S)

    async def oversize_one() -> None:
        chunk = b"NTE|1||" + b"x" * 65_000 + b"\r"
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await open_()
                tally.oversize_frames += 1
                writer.write(_HEADER.replace(b"{n}", b"O%d" % next(serial)))
                listening = asyncio.ensure_future(answered(reader))
                try:
                    sent = 0
                    while sent < OVERSIZE_BYTES and not listening.done():
                        writer.write(chunk)
                        sent += len(chunk)
                        await writer.drain()
                    await asyncio.wait([listening], timeout=5.0)
                finally:
                    listening.cancel()
                    writer.close()
            await asyncio.sleep(FLOOD_PAUSE_S)

    async def report() -> None:
        while True:
            counts[:] = list(dataclasses.astuple(tally))
            await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(oversize_one()) for _ in range(OVERSIZE)]
    tasks += [asyncio.ensure_future(slow_one()) for _ in range(SLOW)]
    tasks += [asyncio.ensure_future(flood_one()) for _ in range(FLOOD)]
    tasks.append(asyncio.ensure_future(report()))
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts[:] = list(dataclasses.astuple(tally))


@dataclass
class Hostile:
    proc: Any
    stop: Any
    counts: Any


def _start_hostile(port: int) -> Hostile:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    counts = ctx.Array("q", len(dataclasses.fields(HostileCounts)))
    proc = ctx.Process(target=_hostile_main, args=(port, ready, stop, counts), daemon=True)
    proc.start()
    if not ready.wait(60):
        proc.kill()
        raise RuntimeError("the hostile peer did not start")
    return Hostile(proc, stop, counts)


def _stop_hostile(hostile: Hostile) -> HostileCounts:
    hostile.stop.set()
    hostile.proc.join(30)
    if hostile.proc.is_alive():
        hostile.proc.kill()
        hostile.proc.join(5)
    return HostileCounts(*hostile.counts[:])


# -- honest senders -------------------------------------------------------------------------------


async def _honest(port: int, run: str, measure_s: float) -> tuple[Result, int]:
    interval = HONEST / HONEST_RATE
    t0 = time.perf_counter() + 0.05
    out = Result(measure_from=t0 + WARMUP_S, measure_s=measure_s)
    sent = await asyncio.gather(
        *(_sender(port, run, i, HONEST, interval, t0, out) for i in range(HONEST))
    )
    return out, sum(sent)


@dataclass
class Phase:
    hostile: bool
    result: Result
    counts: HostileCounts | None = None
    #: CPU seconds per second of the phase: the listener (and its children), the
    #: hostile peer's process, and this process (the honest senders).
    server_cpu: float = float("nan")
    hostile_cpu: float = 0.0
    honest_cpu: float = float("nan")


@dataclass
class Totals:
    sent: int = 0
    not_aa: int = 0
    phases: list[Phase] = field(default_factory=list)


def _phases(port: int, server_pid: int) -> Totals:
    totals = Totals()
    steady, count = _run(_honest(port, f"W{uuid.uuid4().hex[:6]}-", STEADY_S))
    totals.sent += count
    totals.not_aa += steady.other
    print(f"  warm-up: {STEADY_S:g}s of the honest load", flush=True)
    for round_ in range(ROUNDS):
        for hostile_on in (False, True):
            hostile = _start_hostile(port) if hostile_on else None
            try:
                run = f"H{round_}{'X' if hostile_on else 'N'}{uuid.uuid4().hex[:6]}-"
                began = time.perf_counter(), _tree_cpu_s(server_pid), time.process_time()
                result, count = _run(_honest(port, run, MEASURE_S))
                wall = time.perf_counter() - began[0]
                server_cpu = (_tree_cpu_s(server_pid) - began[1]) / wall
                honest_cpu = (time.process_time() - began[2]) / wall
                hostile_cpu = _tree_cpu_s(hostile.proc.pid) / wall if hostile else 0.0
            finally:
                counts = _stop_hostile(hostile) if hostile is not None else None
            totals.sent += count
            totals.not_aa += result.other
            totals.phases.append(
                Phase(hostile_on, result, counts, server_cpu, hostile_cpu, honest_cpu)
            )
        print(f"  round {round_ + 1} of {ROUNDS} done", flush=True)
    return totals


def _pooled(phases: list[Phase], hostile: bool) -> Result:
    pooled = Result()
    for phase in phases:
        if phase.hostile == hostile:
            pooled.messages += phase.result.messages
            pooled.latencies.extend(phase.result.latencies)
    return pooled


def _report(totals: Totals, stored: int) -> None:
    quiet, attacked = _pooled(totals.phases, False), _pooled(totals.phases, True)
    print(f"{'honest senders':<28}{'msgs':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, r in (("alone", quiet), ("with the hostile peer", attacked)):
        print(
            f"{label:<28}{r.messages:>8}{r.pct(50):>10.1f}{r.pct(99):>10.1f}"
            f"{max(r.latencies, default=float('nan')) * 1000:>10.1f}"
        )
    ratio = attacked.pct(99) / quiet.pct(99)
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"p99 with / without the hostile peer: {ratio:.2f}x "
        f"({verdict} the {TARGET_RATIO:g}x target)"
    )
    print("per round (p99 ms alone -> with):")
    pairs = zip(totals.phases[0::2], totals.phases[1::2], strict=True)
    for n, (alone, with_) in enumerate(pairs, 1):
        c = with_.counts or HostileCounts()
        print(
            f"  round {n}: {alone.result.pct(99):.1f} -> {with_.result.pct(99):.1f} ms "
            f"({with_.result.pct(99) / alone.result.pct(99):.2f}x); hostile peer: "
            f"{c.connects} connects, {c.refused} refused at once, {c.naks} NAKs, "
            f"{c.slow_frames} slow and {c.oversize_frames} oversized frames started; "
            f"CPU (cores) listener {alone.server_cpu:.2f} -> {with_.server_cpu:.2f}, "
            f"honest senders {alone.honest_cpu:.2f} -> {with_.honest_cpu:.2f}, "
            f"hostile peer {with_.hostile_cpu:.2f}"
        )
    ok = totals.not_aa == 0 and stored == totals.sent
    print(
        f"honest messages: {totals.sent} sent, {totals.not_aa} not AA, {stored} on the raw topic "
        f"({'exactly one each' if ok else 'MISMATCH'})"
    )


def main() -> None:
    with ingest_bench("bench-hostile") as (settings, names):
        m = settings.mllp
        print(
            f"Hostile peer: {HONEST} honest senders at {HONEST_RATE:g} msg/s in all, against "
            f"one hostile address ({FLOOD} held connections, {SLOW} slow frames, {OVERSIZE} "
            f"oversized frame streams); listener guards: max_connections_per_ip "
            f"{m.max_connections_per_ip}, rate_limit_per_ip_per_s {m.rate_limit_per_ip_per_s:g}, "
            f"frame_timeout_s {FRAME_TIMEOUT_S:g}, max_frame_bytes {m.max_frame_bytes}; "
            f"hostile peer at nice {HOSTILE_NICE}; "
            f"{os.cpu_count()} CPUs; {ROUNDS} rounds of {MEASURE_S:g}s per condition",
            flush=True,
        )
        variant = Variant(
            "carebus", "carebus", {"processes": 1, "frame_timeout_s": FRAME_TIMEOUT_S}
        )
        server = _start_server(variant, settings)
        try:
            _wait_for_port(server.port, server.proc)
            totals = _phases(server.port, server.proc.pid)
        finally:
            _stop_server(server)
        _report(totals, _raw_count(settings, names.raw))
