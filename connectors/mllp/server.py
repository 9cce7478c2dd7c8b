"""The MLLP listener: read a frame, hand it to the pipeline, write the ACK.

Each connection is a short loop. Frames are answered one at a time, in the order
they arrived (pipelined frames are buffered and answered in turn), so a sender's
messages reach Kafka in the order it sent them. The ACK is written only after
:meth:`Pipeline.submit` returned: AA means durably on Kafka. Concurrency comes from
many connections publishing at once, sharing producer batches.

Guards: a connection limit and a per-IP connection limit (connections over them are
closed at once; with TLS a connection counts from accept, before its handshake: the
TLS listener accepts by hand and starts TLS only on a connection the guards let in,
so half-open handshakes hold places like any connection), a per-IP rate limit shared
by that address's connections (and remembered after they close until it has
refilled: reconnecting buys no fresh burst), an optional per-connection one (reading
slows down; nothing is dropped), TCP keepalive, an idle timeout, a frame timeout (a
frame must be complete within ``frame_timeout_s`` of its start byte: a peer
trickling bytes cannot hold a connection for ever), and a maximum frame size. An
oversize frame, a frame over its time or broken framing gets a NAK (when a control
id can be read) and the connection is closed. When Kafka is unavailable the sender
gets AE, or no ACK and a closed connection (``on_kafka_failure``), so that it
resends; a sender that asked for no ACK (MSH-15/MSH-16 ``NE``) also sees its
connection closed then, never silence for a message that was not stored.

The idle and frame timeouts are one mechanism: each read stamps the connection
with the clock it already reads, and one sweeper (:meth:`MllpServer.sweep`, every
second or so) closes the connections past a deadline; there is no timer per read.
Every guard that refuses, closes or slows is counted (``connection_refused``,
``connection_dropped``, ``rate_limited`` of a :class:`GuardObserver`).

In a child of several listener processes (:mod:`connectors.mllp.handoff`) the
server binds nothing (:meth:`MllpServer.accept_handed_over`) and serves the sockets
its parent accepted, given to :meth:`MllpServer.adopt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from carebus.errors import KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import MllpSettings
from connectors.hl7 import FramingError, MllpDecoder, frame
from connectors.mllp.ack import (
    AckCode,
    AckError,
    MshHeader,
    Result,
    ack_codes,
    build_ack,
    read_header,
)
from connectors.mllp.allowlist import Peer
from connectors.pipeline import Sink

log = get_logger(__name__)

_READ_BYTES = 65536
_HEAD_BYTES = 4096
_END_BLOCK = b"\x1c"
_START_BLOCK = b"\x0b"
_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))
_KAFKA_DOWN = AckError("kafka-unavailable", "message not stored; resend later", "207")
_INTERNAL = AckError("internal-error", "message not processed; resend later", "207")
#: Seconds a TLS peer has to finish its handshake (it holds a counted place meanwhile).
_HANDSHAKE_S = 10.0

#: Rate-limit buckets kept for addresses with no open connection, until each is full
#: again (so a reconnect does not start a fresh burst); beyond it the oldest goes.
MAX_RESTING_BUCKETS = 65_536


class AckIds:
    """Unique control ids (MSH-10) for the ACKs this process sends, at most 20 characters."""

    def __init__(self) -> None:
        self._prefix = f"CB{int(time.time()):x}"
        self._counter = itertools.count(1)

    def next(self) -> str:
        """The next id."""
        return f"{self._prefix}{next(self._counter):x}"


@runtime_checkable
class GuardObserver(Protocol):
    """Told when a listener guard refuses a connection, closes one, or slows a message.

    :class:`carebus.metrics.Metrics` is one; the server uses its pipeline's observer
    when that is one, else counts nothing.
    """

    def connection_refused(self, reason: str) -> None: ...

    def connection_dropped(self, reason: str) -> None: ...

    def rate_limited(self) -> None: ...


class _NoGuardObserver:
    def connection_refused(self, reason: str) -> None:
        pass

    def connection_dropped(self, reason: str) -> None:
        pass

    def rate_limited(self) -> None:
        pass


class LogThrottle:
    """At most one log line every ``period_s`` for a noisy event (a connection flood
    must not become a log flood); counts the lines left out."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._period = period_s
        self._clock = clock
        self._next = float("-inf")
        self._left_out = 0

    def allow(self) -> int | None:
        """None: stay quiet; else how many were left out since the last line."""
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return None
        self._next = now + self._period
        left_out, self._left_out = self._left_out, 0
        return left_out


class TokenBucket:
    """Allows ``rate`` messages a second on average (bursts of up to ``rate``); 0 is no limit.

    Safe to share between connections: each :meth:`reserve` takes a token at once,
    going into debt when there is none, and says how long its caller must wait for it,
    so that concurrent callers queue in turn instead of all waiting the same time.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._stamp = clock()

    def reserve(self) -> float:
        """Take one message's token; the seconds to wait before that message may go."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate) - 1
        self._tokens = tokens
        self._stamp = now
        return 0.0 if tokens >= 0 else -tokens / self._rate

    def full(self) -> bool:
        """True when the bucket has refilled to a whole burst (no debt, nothing taken)."""
        if self._rate <= 0:
            return True
        refilled = self._tokens + (self._clock() - self._stamp) * self._rate
        return refilled >= self._capacity

    async def take(self) -> None:
        """Wait until one message may go."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


class MllpServer:
    """An asyncio MLLP listener in front of a :class:`Pipeline`."""

    def __init__(
        self,
        settings: MllpSettings,
        pipeline: Sink,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep`` time the guards (tests pass fake ones)."""
        self._settings = settings
        self._pipeline = pipeline
        self._ssl = ssl_context
        self._clock = clock
        self._sleep = sleep
        observer = pipeline.observer
        self._guards: GuardObserver = (
            observer if isinstance(observer, GuardObserver) else _NoGuardObserver()
        )
        #: Open connections (served or still in their TLS handshake), and the shared
        #: rate-limit bucket, per peer address; and all open connections.
        self._per_ip: dict[str, int] = {}
        self._admitted = 0
        self._ip_buckets: dict[str, TokenBucket] = {}
        #: Buckets of addresses whose last connection closed, oldest first: kept until
        #: full again, so that reconnecting does not forgive an address its debt.
        self._resting: OrderedDict[str, TokenBucket] = OrderedDict()
        self._refusals_logged = LogThrottle(clock=clock)
        self._server: asyncio.Server | None = None
        #: With TLS: the listening socket and the task accepting on it.
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._ack_ids = AckIds()
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._bind = True
        self._adopting: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Sweeps that raised (logged; the sweeper carries on).
        self.sweep_failures = 0

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._listener is not None:
            return int(self._listener.getsockname()[1])  # stop() sets it to None
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the MLLP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections currently being served."""
        return len(self._connections)

    def accept_handed_over(self) -> None:
        """Bind no port: serve only the sockets given to :meth:`adopt` (call before start)."""
        self._bind = False

    def adopt(self, sock: socket.socket, released: Callable[[], None] | None = None) -> None:
        """Serve ``sock``, a connection accepted by another process (TLS, if any, is ours).

        ``released`` is called once when the connection is over, however it ends (the
        parent counts each address's open connections with it).
        """
        if self._closing:
            sock.close()
            if released is not None:
                released()
            return
        task = asyncio.get_running_loop().create_task(self._adopt(sock, released))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(
        self,
        sock: socket.socket,
        released: Callable[[], None] | None,
        admitted: str | None = None,
    ) -> None:
        """Serve ``sock`` (its TLS handshake first, if any); ``admitted``: the peer
        address already counted by :meth:`_admit` (given back here if this fails)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        accept = functools.partial(self._accept, released=released, admitted=admitted)
        protocol = asyncio.StreamReaderProtocol(reader, accept, loop=loop)
        served = False
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self._ssl,
                ssl_handshake_timeout=_HANDSHAKE_S if self._ssl else None,
            )
            served = True  # from here on, _accept calls ``released`` (and _leave)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if admitted is None:
                log.info("mllp handed-over connection failed", error=type(exc).__name__)
            else:
                log.info("mllp tls handshake failed", peer=admitted, error=type(exc).__name__)
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise
        finally:
            if not served:
                if admitted is not None:
                    self._leave(admitted)
                if released is not None:
                    released()

    async def _accept_tls(self, listener: socket.socket) -> None:
        """Accept TLS connections: count (or refuse) each at once, then its handshake."""
        loop = asyncio.get_running_loop()
        async for sock, host in accepted(listener):
            if not self._admit(host):
                sock.close()
                continue
            task = loop.create_task(self._adopt(sock, None, admitted=host))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def start(self) -> None:
        """Bind and start accepting connections (or, handed over, only get ready)."""
        if not self._bind:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="mllp-sweeper")
            log.info("mllp serving handed-over connections", tls=self._ssl is not None)
            return
        loop = asyncio.get_running_loop()
        backlog = max(128, self._settings.max_connections)
        if self._ssl is not None:
            # Accept by hand and start TLS only once a connection has passed the
            # guards: the limits count it from accept, not from a finished handshake.
            host = self._settings.host
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.create_server(
                (host, self._settings.port), family=family, backlog=backlog
            )
            self._listener.setblocking(False)
            self._accepting = loop.create_task(self._accept_tls(self._listener))
        else:
            self._server = await loop.create_server(
                self._protocol, self._settings.host, self._settings.port, backlog=backlog
            )
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="mllp-sweeper")
        log.info(
            "mllp listening",
            host=self._settings.host,
            port=self.port,
            tls=self._ssl is not None,
            mutual_tls=self._ssl is not None and self._ssl.verify_mode == ssl.CERT_REQUIRED,
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let messages being processed finish (up to ``grace_s``); close."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for adopting in list(self._adopting) + list(self._handshakes):
            adopting.cancel()
        for task, conn in list(self._connections.items()):
            if not conn.busy:
                task.cancel()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("mllp stopped")

    async def _sweep_forever(self) -> None:
        """Run :meth:`sweep` about once a second (more often for timeouts under 4 s)."""
        s = self._settings
        interval = min(1.0, s.idle_timeout_s / 4, s.frame_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            self._sweep_once()

    def _sweep_once(self) -> None:
        """One :meth:`sweep`; a failure is logged and counted, and the sweeper goes on
        (else the idle and frame timeouts would silently stop for good)."""
        try:
            self.sweep()
        except Exception as exc:
            self.sweep_failures += 1
            log.error("mllp sweep failed", error=type(exc).__name__, failures=self.sweep_failures)

    def sweep(self, now: float | None = None) -> int:
        """Close the connections past a deadline; how many were closed.

        A frame started more than ``frame_timeout_s`` ago and still incomplete gets a
        NAK (when its control id is readable) and its connection is closed; a
        connection that has waited for data longer than ``idle_timeout_s`` is closed.
        A connection processing a message, or held back by a rate limit, is not
        waiting for its peer and is left alone. One sweeper instead of a timer per
        read keeps the per-message cost down; ``now`` (default: the server's clock)
        lets tests drive it.
        """
        now = self._clock() if now is None else now
        frame_horizon = now - self._settings.frame_timeout_s
        idle_horizon = now - self._settings.idle_timeout_s
        closed = 0
        for conn in list(self._connections.values()):
            if conn.busy or conn.held or conn.dropped:
                continue
            if conn.frame_started is not None and conn.frame_started < frame_horizon:
                conn.expire_frame()
                closed += 1
            elif conn.last_active < idle_horizon:
                conn.close_idle()
                closed += 1
        self._forget_full_buckets()
        return closed

    def _rest_bucket(self, host: str) -> None:
        """``host``'s last connection closed: keep its bucket (and any debt) for a while."""
        bucket = self._ip_buckets.pop(host, None)
        if bucket is None or bucket.full():
            return
        self._resting[host] = bucket
        self._resting.move_to_end(host)
        while len(self._resting) > MAX_RESTING_BUCKETS:
            self._resting.popitem(last=False)
        self._forget_full_buckets()

    def _forget_full_buckets(self) -> None:
        """Drop resting buckets that are full again, oldest first (stops at the first
        that is not: the work per call stays small)."""
        while self._resting:
            host, bucket = next(iter(self._resting.items()))
            if not bucket.full():
                return
            del self._resting[host]

    def ip_bucket_kept(self, host: str) -> bool:
        """True while ``host`` has a rate-limit bucket (open connections, or debt left)."""
        return host in self._ip_buckets or host in self._resting

    def connections_from(self, host: str) -> int:
        """Connections open from peer address ``host``."""
        return self._per_ip.get(host, 0)

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        loop = asyncio.get_running_loop()
        return _GuardedProtocol(self, _stream_reader(loop), loop)

    def _admit(self, host: str) -> bool:
        """Count a new connection from ``host``, unless it is over a limit (then False:
        refused, logged and counted). Every True is matched by one :meth:`_leave`."""
        if self.refuse(host):
            return False
        self._per_ip[host] = self._per_ip.get(host, 0) + 1
        self._admitted += 1
        return True

    def _leave(self, host: str) -> None:
        """A connection counted by :meth:`_admit` is over."""
        self._admitted -= 1
        left = self._per_ip.get(host, 1) - 1
        if left > 0:
            self._per_ip[host] = left
        else:
            self._per_ip.pop(host, None)
            self._rest_bucket(host)

    def refuse(self, host: str) -> bool:
        """True (logged, counted) when a new connection from ``host`` is over a limit."""
        refusal = self._refusal(host)
        if refusal is None:
            return False
        left_out = self._refusals_logged.allow()
        if left_out is not None:
            log.warning("mllp connection refused", reason=refusal, peer=host, not_logged=left_out)
        if refusal != "closing":
            self._guards.connection_refused(refusal)
        return True

    def _refusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused, if it is."""
        s = self._settings
        if self._closing:
            return "closing"
        if self._admitted >= s.max_connections:
            return "connection-limit"
        if s.max_connections_per_ip and self._per_ip.get(host, 0) >= s.max_connections_per_ip:
            return "ip-connection-limit"
        return None

    async def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        released: Callable[[], None] | None = None,
        *,
        admitted: str | None = None,
    ) -> None:
        """Serve a connection; ``admitted``: its peer address, already counted at accept."""
        try:
            address = writer.get_extra_info("peername") or ("?", None)
            host = str(address[0]) if admitted is None else admitted
            if admitted is None and not self._admit(host):
                writer.close()
                return
            try:
                await self._serve(reader, writer, host, address[1])
            finally:
                self._leave(host)
        finally:
            if released is not None:
                released()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int | None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        _enable_keepalive(writer.get_extra_info("socket"))
        peer = Peer.from_certificate("mllp", host, port, _peercert(writer))
        bucket = self._ip_buckets.get(host)
        if bucket is None:
            bucket = self._resting.pop(host, None) or TokenBucket(
                self._settings.rate_limit_per_ip_per_s, self._clock
            )
            self._ip_buckets[host] = bucket
        conn = _Connection(self, reader, writer, peer, bucket)
        self._connections[task] = conn
        self._pipeline.observer.connection_opened()
        log.info("mllp connection opened", peer=peer.describe())
        try:
            await conn.run()
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.info("mllp connection lost", peer=peer.describe(), error=type(exc).__name__)
        finally:
            del self._connections[task]
            self._pipeline.observer.connection_closed()
            await _close(writer)
            log.info("mllp connection closed", peer=peer.describe(), messages=conn.messages)


class _GuardedProtocol(asyncio.StreamReaderProtocol):
    """A plain TCP connection over a limit is refused as soon as it is accepted, before
    a stream or a task exists for it: a flood costs little."""

    def __init__(
        self, server: MllpServer, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(reader, self._serve, loop=loop)
        self._guarded = server
        self._host = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername") or ("?", None)
        self._host = str(peer[0])
        if not self._guarded._admit(self._host):
            transport.close()
            return
        super().connection_made(transport)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._guarded._accept(reader, writer, admitted=self._host)


class _Connection:
    """One peer's connection: frames in, ACKs out, in order."""

    def __init__(
        self,
        server: MllpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        ip_bucket: TokenBucket,
    ) -> None:
        self._server = server
        self._settings = server._settings
        self._pipeline = server._pipeline
        self._guards = server._guards
        self._clock = server._clock
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._decoder = MllpDecoder(self._settings.max_frame_bytes)
        self._bucket = TokenBucket(self._settings.rate_limit_per_s, self._clock)
        self._ip_bucket = ip_bucket
        self._limited = self._settings.rate_limit_per_s > 0
        self._ip_limited = self._settings.rate_limit_per_ip_per_s > 0
        self._frames: deque[bytes] = deque()
        self._head = bytearray()  # the start of the frame being received, for a NAK
        self.busy = False
        #: True while a rate limit holds the next message back (not waiting for the peer).
        self.held = False
        self.messages = 0
        self.last_active = self._clock()
        #: When the start byte of the frame being received arrived; None between frames.
        self.frame_started: float | None = None
        #: Why the listener closed this connection (a guard), if it did.
        self.dropped: str | None = None

    def close_idle(self) -> None:
        """Close the connection because it has been idle too long."""
        self.dropped = "idle-timeout"
        log.info("mllp idle timeout", peer=self._peer.describe())
        self._guards.connection_dropped("idle-timeout")
        self._writer.close()

    def expire_frame(self) -> None:
        """NAK the frame that is taking too long (if its control id is readable); close."""
        self.dropped = "frame-timeout"
        header = read_header(bytes(self._head))
        seconds = self._settings.frame_timeout_s
        log.warning(
            "mllp frame timeout",
            peer=self._peer.describe(),
            control_id=header.control_id if header else "",
            bytes=self._decoder.buffered,
            limit_s=seconds,
        )
        self._guards.connection_dropped("frame-timeout")
        if header is not None and header.control_id:
            detail = f"MLLP frame not complete within {seconds:g} s of its start"
            error = AckError("frame-timeout", detail, "100")
            codes = self._write_acks(header, "rejected", error)
            for code in codes:
                self._pipeline.observer.ack_sent(code, seconds)
        self._writer.close()  # what was written still goes out first

    async def run(self) -> None:
        while not self._server._closing:
            if not self._frames:
                data = await self._reader.read(_READ_BYTES)
                if not data:
                    if self.dropped is None and self._decoder.buffered:
                        log.info("mllp peer closed mid-frame", bytes=self._decoder.buffered)
                    return
                now = self._clock()
                self.last_active = now
                try:
                    frames = self._decoder.feed(data)
                except FramingError as exc:
                    for payload in exc.frames:
                        if not await self._answer(payload):
                            return
                    await self._nak(self._context(data, len(exc.frames)), exc.detail)
                    return
                if frames:
                    # A frame is open iff a start byte follows the last end byte.
                    open_ = data.find(_START_BLOCK, data.rfind(_END_BLOCK) + 1) >= 0
                    self.frame_started = now if open_ else None
                    self._track_head(data, len(frames))
                    self._frames.extend(frames)
                    continue
                if self.frame_started is None and _START_BLOCK in data:
                    self.frame_started = now  # feed() would have raised at anything else
                self._track_head(data, 0)
                continue
            payload = self._frames.popleft()
            if self._limited or self._ip_limited:
                await self._throttle()
            if not await self._answer(payload):
                return

    async def _throttle(self) -> None:
        """Wait for the rate limits (this connection's and its address's) to let one go."""
        wait = self._ip_bucket.reserve() if self._ip_limited else 0.0
        if self._limited:
            wait = max(wait, self._bucket.reserve())
        if wait <= 0:
            return
        self._guards.rate_limited()
        self.held = True
        try:
            await self._server._sleep(wait)
        finally:
            self.held = False

    def _track_head(self, data: bytes, completed: int) -> None:
        if completed:
            self._head = bytearray(_after_nth_end(data, completed)[:_HEAD_BYTES])
        elif len(self._head) < _HEAD_BYTES:
            self._head += data[: _HEAD_BYTES - len(self._head)]

    def _context(self, data: bytes, completed: int) -> bytes:
        """The bytes of the frame (or junk) that broke framing, from its start."""
        if completed:
            return _after_nth_end(data, completed)[:_HEAD_BYTES]
        return bytes(self._head + data[:_HEAD_BYTES])

    async def _answer(self, payload: bytes) -> bool:
        """Process one frame and write its ACK(s); False when the connection must close."""
        started = time.monotonic()
        self.busy = True  # on shutdown, let this message finish and its ACK go out
        self.messages += 1
        try:
            header = read_header(payload)
            answer = await self._process(payload, header)
            if answer is None:
                self._guards.connection_dropped("not-stored")
                return False
            return await self._reply(header, *answer, started)
        finally:
            self.busy = False

    async def _process(
        self, payload: bytes, header: MshHeader | None
    ) -> tuple[Result, AckError | None] | None:
        """How the message ended, for its ACK; None when no ACK may be sent."""
        try:
            outcome = await self._pipeline.submit(payload, self._peer, datetime.now(UTC))
        except KafkaUnavailable as exc:
            log.warning(
                "message not stored",
                control_id=header.control_id if header else "",
                error=type(exc).__name__,
                peer=self._peer.describe(),
            )
            if self._settings.on_kafka_failure == "close":
                return None
            return "error", _KAFKA_DOWN
        except Exception as exc:
            log.error(
                "message processing failed",
                control_id=header.control_id if header else "",
                error=type(exc).__name__,
            )
            return "error", _INTERNAL
        rejected = outcome.error
        if rejected is None:
            return "accepted", None
        error = AckError(rejected.reason, rejected.detail, rejected.hl7_error_code, rejected.field)
        return "rejected", error

    async def _nak(self, context: bytes, detail: str) -> None:
        """Answer broken framing or an oversize frame, when a control id is readable."""
        header = read_header(context)
        log.warning(
            "mllp framing error",
            peer=self._peer.describe(),
            control_id=header.control_id if header else "",
            detail=detail,
        )
        self._guards.connection_dropped("framing-error")
        facility = header.sending_facility.split(header.component_separator)[0] if header else None
        self._pipeline.observer.message_received(facility, None)
        self._pipeline.observer.message_rejected(facility, None)
        if header is None or not header.control_id:
            return
        await self._reply(
            header, "rejected", AckError("framing-error", detail, "100"), time.monotonic()
        )

    async def _reply(
        self, header: MshHeader | None, result: Result, error: AckError | None, started: float
    ) -> bool:
        """Write the ACKs the sender asked for; False when the connection must close.

        A message that was not stored (``error``) and for which the sender asked for
        no ACK (MSH-15/MSH-16 ``NE``, or ``SU`` only) closes the connection: silence
        would read as success, and the closed connection makes the sender resend.
        """
        codes = self._write_acks(header, result, error)
        if not codes:
            if result == "error":
                log.warning(
                    "mllp closing: message not stored and no ACK asked for",
                    control_id=header.control_id if header else "",
                    peer=self._peer.describe(),
                )
                self._guards.connection_dropped("not-stored")
                return False
            return True
        if self._writer.transport.get_write_buffer_size():
            # The peer is not reading its ACKs: wait, but not for ever.
            async with asyncio.timeout(self._settings.idle_timeout_s):
                await self._writer.drain()
        now = self._clock()
        self.last_active = now
        if self.frame_started is not None:
            # The next frame's clock runs while the peer sends, not while we process.
            self.frame_started = now
        seconds = time.monotonic() - started
        for code in codes:
            self._pipeline.observer.ack_sent(code, seconds)
        return True

    def _write_acks(
        self, header: MshHeader | None, result: Result, error: AckError | None
    ) -> list[AckCode]:
        """Write the ACKs the sender asked for (none, in some enhanced modes); their codes."""
        codes = ack_codes(header, result, reject_code=self._settings.reject_ack_code)
        if not codes:
            return codes
        now = datetime.now(UTC)
        for code in codes:
            ack = build_ack(
                header,
                code,
                control_id=self._server._ack_ids.next(),
                timestamp=now,
                error=None if code in ("AA", "CA") else error,
            )
            self._writer.write(frame(ack.replace(b"\x0b", b"").replace(b"\x1c", b"")))
        return codes


def _stream_reader(loop: asyncio.AbstractEventLoop) -> asyncio.StreamReader:
    return asyncio.StreamReader(limit=2**16, loop=loop)


async def accepted(listener: socket.socket) -> AsyncIterator[tuple[socket.socket, str]]:
    """Connections accepted on non-blocking ``listener``, with the peer's address, for
    ever; an accept that fails (out of file descriptors, say) is logged and tried
    again shortly."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock, address = await loop.sock_accept(listener)
        except OSError as exc:
            log.warning("mllp accept failed", error=type(exc).__name__)
            await asyncio.sleep(0.1)
            continue
        yield sock, str(address[0])


def _after_nth_end(data: bytes, n: int) -> bytes:
    """``data`` after its ``n``-th end-block byte."""
    index = -1
    for _ in range(n):
        index = data.find(_END_BLOCK, index + 1)
        if index < 0:
            return b""
    return data[index + 1 :]


def _peercert(writer: asyncio.StreamWriter) -> dict[str, object] | None:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    return dict(cert) if cert else None


def _enable_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as exc:
        log.debug("cannot set tcp keepalive", error=type(exc).__name__)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(TimeoutError, ConnectionError, OSError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
