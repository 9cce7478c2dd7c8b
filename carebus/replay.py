"""Send HL7 v2 feeds to an MLLP listener the way an interface engine does.

Each message is framed, written, and its acknowledgement awaited before the next
one goes on that connection. With several connections, messages are spread by
sending facility (MSH-4), so each sender's messages keep their order, as with an
engine's one channel per source system. A shared pacer holds the overall rate.

An acknowledgement's MSA-1 decides the outcome: ``AA``, ``AE`` or ``AR`` (the
enhanced-mode commit codes ``CA``, ``CE``, ``CR`` count as the same). In enhanced
mode, when the message asks for an application ACK after the commit ACK, the
application ACK is awaited too and decides. No answer in time, a closed
connection, or an answer that is not an ACK for the message counts as *no ACK*:
the connection is then closed and opened again for the next message.
``retries`` resends a message that got AE or no ACK, as engines do.

Logs carry control ids and counts only, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from carebus.errors import CarebusError, MessageRejected
from carebus.log import get_logger
from connectors.hl7 import FramingError, MllpDecoder, frame, parse_message
from connectors.mllp.ack import MshHeader, read_header

log = get_logger(__name__)

_READ_BYTES = 65536
_QUEUE_DEPTH = 256
_OUTCOMES = {"AA": "AA", "CA": "AA", "AE": "AE", "CE": "AE", "AR": "AR", "CR": "AR"}


class ReplayError(CarebusError):
    """The listener cannot be reached (or was lost and cannot be reached again)."""

    retriable = True


@dataclass(frozen=True)
class ReplayOptions:
    """Where and how fast to send."""

    host: str = "127.0.0.1"
    port: int = 2575
    #: Messages a second over all connections; ``None`` sends as fast as ACKs come.
    rate: float | None = 100.0
    connections: int = 1
    ack_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    #: Resends of a message that got AE or no ACK.
    retries: int = 0
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send; ``progress`` is how far through the input it ends (bytes)."""

    raw: bytes
    progress: int = 0


class LatencyHistogram:
    """ACK latencies in logarithmic buckets 1% wide: percentiles in bounded memory."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        micros = max(seconds * 1e6, 1.0)
        bucket = round(math.log(micros) / self._BASE)
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) in seconds, within 1%; ``None`` when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return math.exp(bucket * self._BASE) / 1e6
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class ReplaySummary:
    """What happened to the messages sent so far."""

    sent: int = 0
    aa: int = 0
    ae: int = 0
    ar: int = 0
    no_ack: int = 0
    #: Messages whose MSH-15/MSH-16 asked for no acknowledgement at all.
    not_requested: int = 0
    retried: int = 0
    progress: int = 0
    elapsed_s: float = 0.0
    aborted: str | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def ok(self) -> bool:
        """True when every message got an ACK and the run was not cut short."""
        return self.no_ack == 0 and self.aborted is None

    def line(self) -> str:
        """One line of counts, for progress reports."""
        return f"{self.sent} sent, AA {self.aa}, AE {self.ae}, AR {self.ar}, no ACK {self.no_ack}"

    def report(self) -> str:
        """The final summary, several lines."""
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"sent          {self.sent}",
            f"AA            {self.aa}",
            f"AE            {self.ae}",
            f"AR            {self.ar}",
            f"no ACK        {self.no_ack}",
        ]
        if self.not_requested:
            lines.append(f"no ACK asked  {self.not_requested}")
        if self.retried:
            lines.append(f"resent        {self.retried}")
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        lines.append(f"ACK latency   p50 {_ms(p50)}, p99 {_ms(p99)}")
        lines.append(f"elapsed       {self.elapsed_s:.1f} s ({rate:.0f} msg/s)")
        if self.aborted:
            lines.append(f"stopped early: {self.aborted}")
        return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


class Pacer:
    """Spaces sends ``1/rate`` seconds apart across all connections, without bursts.

    ``clock`` and ``sleep`` are the monotonic clock and the wait it uses (a test
    passes a fake pair).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        """Wait for the next send slot."""
        if not self._interval:
            return
        now = self._clock()
        self._next = max(self._next, now)
        delay = self._next - now
        self._next += self._interval
        if delay > 0:
            await self._sleep(delay)


async def replay(
    messages: Iterable[Outgoing],
    options: ReplayOptions,
    *,
    on_progress: Callable[[ReplaySummary], None] | None = None,
    progress_interval_s: float = 1.0,
) -> ReplaySummary:
    """Send every message and return the summary; never raises for ACK outcomes.

    A listener that cannot be reached (at the start, or again after a lost
    connection) ends the run: the summary's ``aborted`` says why.
    """
    if options.connections < 1:
        raise ValueError("connections must be at least 1")
    summary = ReplaySummary()
    pacer = Pacer(options.rate)
    queues: list[asyncio.Queue[Outgoing | None]] = [
        asyncio.Queue(_QUEUE_DEPTH) for _ in range(options.connections)
    ]
    started = time.monotonic()
    senders = [asyncio.create_task(_Sender(options, summary, pacer).run(queue)) for queue in queues]
    reporter = (
        asyncio.create_task(_report(summary, on_progress, progress_interval_s, started))
        if on_progress is not None
        else None
    )
    try:
        await _distribute(messages, queues, senders)
        await asyncio.gather(*senders)
    except ReplayError as exc:
        summary.aborted = str(exc)
    finally:
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        summary.elapsed_s = time.monotonic() - started
    return summary


async def _distribute(
    messages: Iterable[Outgoing],
    queues: list[asyncio.Queue[Outgoing | None]],
    senders: list[asyncio.Task[None]],
) -> None:
    for index, message in enumerate(messages):
        await _put(queues[_lane(message.raw, index, len(queues))], message, senders)
    for queue in queues:
        await _put(queue, None, senders)


async def _put(
    queue: asyncio.Queue[Outgoing | None],
    message: Outgoing | None,
    senders: list[asyncio.Task[None]],
) -> None:
    """Queue ``message``, waiting while the queue is full, unless a sender has failed."""
    while queue.full():
        waiter = asyncio.ensure_future(queue.put(message))
        done, _ = await asyncio.wait({waiter, *senders}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return
        waiter.cancel()
        for task in senders:
            if task.done():
                task.result()  # raises the sender's ReplayError
    queue.put_nowait(message)


def _lane(raw: bytes, index: int, lanes: int) -> int:
    """The connection for a message: by sending facility, so each sender stays in order."""
    if lanes == 1:
        return 0
    header = read_header(raw)
    if header is None or not header.sending_facility:
        return index % lanes
    return zlib.crc32(header.sending_facility.encode("latin-1")) % lanes


async def _report(
    summary: ReplaySummary,
    on_progress: Callable[[ReplaySummary], None],
    interval: float,
    started: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        summary.elapsed_s = time.monotonic() - started
        on_progress(summary)


class _Sender:
    """One connection: send, await the ACK, next."""

    def __init__(self, options: ReplayOptions, summary: ReplaySummary, pacer: Pacer) -> None:
        self._options = options
        self._summary = summary
        self._pacer = pacer
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = MllpDecoder()
        self._frames: deque[bytes] = deque()

    async def run(self, queue: asyncio.Queue[Outgoing | None]) -> None:
        try:
            while (message := await queue.get()) is not None:
                await self._send(message)
        finally:
            await self._close()

    async def _send(self, message: Outgoing) -> None:
        header = read_header(message.raw)
        control_id = header.control_id if header else ""
        for attempt in range(self._options.retries + 1):
            if attempt:
                self._summary.retried += 1
            await self._pacer.wait()
            outcome, latency = await self._exchange(message.raw, header, control_id)
            if outcome not in ("AE", "no-ack"):
                break
        summary = self._summary
        summary.sent += 1
        summary.progress = max(summary.progress, message.progress)
        if outcome == "AA":
            summary.aa += 1
        elif outcome == "AE":
            summary.ae += 1
        elif outcome == "AR":
            summary.ar += 1
        elif outcome == "not-requested":
            summary.not_requested += 1
        else:
            summary.no_ack += 1
        if latency is not None and outcome != "no-ack":
            summary.latency.add(latency)

    async def _exchange(
        self, raw: bytes, header: MshHeader | None, control_id: str
    ) -> tuple[str, float | None]:
        await self._ensure_connected()
        assert self._writer is not None
        sent_at = time.perf_counter()
        try:
            self._writer.write(frame(raw))
            await self._writer.drain()
        except FramingError:
            log.warning("replay.unsendable", control_id=control_id, reason="block-character")
            return "no-ack", None
        except (OSError, ConnectionError):
            log.warning("replay.connection_lost", control_id=control_id)
            await self._close()
            return "no-ack", None
        if header is not None and not _ack_expected(header):
            return "not-requested", None
        deadline = sent_at + self._options.ack_timeout_s
        code = await self._read_ack(control_id, deadline)
        if code is not None and code.startswith("C") and _application_ack_follows(header, code):
            code = await self._read_ack(control_id, deadline)
        if code is None:
            await self._close()
            return "no-ack", None
        return _OUTCOMES[code], time.perf_counter() - sent_at

    async def _read_ack(self, control_id: str, deadline: float) -> str | None:
        """The next ACK's MSA-1 when it acknowledges ``control_id``; None otherwise."""
        payload = await self._next_frame(deadline)
        if payload is None:
            log.warning("replay.no_ack", control_id=control_id)
            return None
        try:
            ack = parse_message(payload)
        except MessageRejected:
            log.warning("replay.unreadable_ack", control_id=control_id)
            return None
        msa = ack.first("MSA")
        code = msa.get(1).upper() if msa is not None else ""
        acked = msa.get(2) if msa is not None else ""
        if code not in _OUTCOMES or (control_id and acked != control_id):
            log.warning("replay.unexpected_ack", control_id=control_id, acked=acked, code=code)
            return None
        return code

    async def _next_frame(self, deadline: float) -> bytes | None:
        assert self._reader is not None
        while not self._frames:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            try:
                data = await asyncio.wait_for(self._reader.read(_READ_BYTES), remaining)
            except (TimeoutError, OSError, ConnectionError):
                return None
            if not data:
                return None
            try:
                self._frames.extend(self._decoder.feed(data))
            except FramingError as exc:
                self._frames.extend(exc.frames)
                if not self._frames:
                    return None
        return self._frames.popleft()

    async def _ensure_connected(self) -> None:
        if self._writer is not None:
            return
        o = self._options
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    o.host,
                    o.port,
                    ssl=o.ssl,
                    server_hostname=(o.server_hostname or o.host) if o.ssl else None,
                ),
                o.connect_timeout_s,
            )
        except TimeoutError as exc:
            raise ReplayError(f"cannot connect to {o.host}:{o.port}: timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise ReplayError(f"cannot connect to {o.host}:{o.port}: {reason}") from exc
        self._decoder.reset()
        self._frames.clear()

    async def _close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


def _ack_expected(header: MshHeader) -> bool:
    """False only when enhanced mode asks for no acknowledgement of any kind."""
    if not header.enhanced_mode:
        return True
    kinds = (header.accept_ack_type, header.application_ack_type)
    return not all(kind in ("", "NE") for kind in kinds)


def _application_ack_follows(header: MshHeader | None, commit_code: str) -> bool:
    """True when, after this commit ACK, the listener will also send an application ACK."""
    if header is None:
        return False
    wanted = header.application_ack_type
    if wanted == "AL":
        return True
    if wanted == "ER":
        return commit_code != "CA"
    if wanted == "SU":
        return commit_code == "CA"
    return False
