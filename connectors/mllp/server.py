"""The MLLP listener: read a frame, hand it to the pipeline, write the ACK.

Each connection is a short loop. Frames are answered one at a time, in the order
they arrived (pipelined frames are buffered and answered in turn), so a sender's
messages reach Kafka in the order it sent them. The ACK is written only after
:meth:`Pipeline.submit` returned: AA means durably on Kafka. Concurrency comes from
many connections publishing at once, sharing producer batches.

Guards: a connection limit (connections over it are closed at once), a
per-connection rate limit (reading slows down; nothing is dropped), TCP keepalive,
an idle timeout, and a maximum frame size. An oversize frame or broken framing
gets a NAK (when a control id can be read) and the connection is closed. When
Kafka is unavailable the sender gets AE, or no ACK and a closed connection
(``on_kafka_failure``), so that it resends.

In a child of several listener processes (:mod:`connectors.mllp.handoff`) the
server binds nothing (:meth:`MllpServer.accept_handed_over`) and serves the sockets
its parent accepted, given to :meth:`MllpServer.adopt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import time
from collections import deque
from datetime import UTC, datetime

from carebus.errors import KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import MllpSettings
from connectors.hl7 import FramingError, MllpDecoder, frame
from connectors.mllp.ack import AckError, MshHeader, Result, ack_codes, build_ack, read_header
from connectors.mllp.allowlist import Peer
from connectors.pipeline import Sink

log = get_logger(__name__)

_READ_BYTES = 65536
_HEAD_BYTES = 4096
_END_BLOCK = b"\x1c"
_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))
_KAFKA_DOWN = AckError("kafka-unavailable", "message not stored; resend later", "207")
_INTERNAL = AckError("internal-error", "message not processed; resend later", "207")


class AckIds:
    """Unique control ids (MSH-10) for the ACKs this process sends, at most 20 characters."""

    def __init__(self) -> None:
        self._prefix = f"CB{int(time.time()):x}"
        self._counter = itertools.count(1)

    def next(self) -> str:
        """The next id."""
        return f"{self._prefix}{next(self._counter):x}"


class TokenBucket:
    """Allows ``rate`` messages a second on average (bursts of up to ``rate``); 0 is no limit."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    async def take(self) -> None:
        """Wait until one message may go."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            wait = (1 - self._tokens) / self._rate
            await asyncio.sleep(wait)
            self._stamp = time.monotonic()
            self._tokens = 0.0
        else:
            self._tokens -= 1


class MllpServer:
    """An asyncio MLLP listener in front of a :class:`Pipeline`."""

    def __init__(
        self,
        settings: MllpSettings,
        pipeline: Sink,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._ack_ids = AckIds()
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._bind = True
        self._adopting: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
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

    def adopt(self, sock: socket.socket) -> None:
        """Serve ``sock``, a connection accepted by another process (TLS, if any, is ours)."""
        if self._closing:
            sock.close()
            return
        task = asyncio.get_running_loop().create_task(self._adopt(sock))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._accept, loop=loop)
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self._ssl,
                ssl_handshake_timeout=10.0 if self._ssl else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("mllp handed-over connection failed", error=type(exc).__name__)
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise

    async def start(self) -> None:
        """Bind and start accepting connections (or, handed over, only get ready)."""
        if not self._bind:
            self._sweeper = asyncio.create_task(self._sweep_idle(), name="mllp-idle-sweeper")
            log.info("mllp serving handed-over connections", tls=self._ssl is not None)
            return
        self._server = await asyncio.start_server(
            self._accept,
            self._settings.host,
            self._settings.port,
            ssl=self._ssl,
            ssl_handshake_timeout=10.0 if self._ssl else None,
            backlog=max(128, self._settings.max_connections),
        )
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="mllp-idle-sweeper")
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
        for adopting in list(self._adopting):
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

    async def _sweep_idle(self) -> None:
        """Close connections that have been waiting for data longer than the idle timeout.

        One sweeper instead of a timer per read keeps the per-message cost down.
        """
        idle = self._settings.idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            horizon = loop.time() - idle
            for conn in list(self._connections.values()):
                if not conn.busy and conn.last_active < horizon:
                    conn.close_idle()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername") or ("?", None)
        if self._closing or len(self._connections) >= self._settings.max_connections:
            log.warning("mllp connection refused", reason="connection-limit", peer=address[0])
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        _enable_keepalive(writer.get_extra_info("socket"))
        peer = Peer.from_certificate("mllp", str(address[0]), address[1], _peercert(writer))
        conn = _Connection(self, reader, writer, peer)
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


class _Connection:
    """One peer's connection: frames in, ACKs out, in order."""

    def __init__(
        self,
        server: MllpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self._server = server
        self._settings = server._settings
        self._pipeline = server._pipeline
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._decoder = MllpDecoder(self._settings.max_frame_bytes)
        self._bucket = TokenBucket(self._settings.rate_limit_per_s)
        self._limited = self._settings.rate_limit_per_s > 0
        self._frames: deque[bytes] = deque()
        self._head = bytearray()  # the start of the frame being received, for a NAK
        self.busy = False
        self.messages = 0
        self.last_active = asyncio.get_running_loop().time()
        self._idle = False

    def close_idle(self) -> None:
        """Close the connection because it has been idle too long."""
        self._idle = True
        self._writer.close()

    async def run(self) -> None:
        while not self._server._closing:
            if not self._frames:
                data = await self._reader.read(_READ_BYTES)
                if not data:
                    if self._idle:
                        log.info("mllp idle timeout", peer=self._peer.describe())
                    elif self._decoder.buffered:
                        log.info("mllp peer closed mid-frame", bytes=self._decoder.buffered)
                    return
                self.last_active = asyncio.get_running_loop().time()
                try:
                    frames = self._decoder.feed(data)
                except FramingError as exc:
                    for payload in exc.frames:
                        if not await self._answer(payload):
                            return
                    await self._nak(self._context(data, len(exc.frames)), exc.detail)
                    return
                self._track_head(data, len(frames))
                self._frames.extend(frames)
                continue
            payload = self._frames.popleft()
            if self._limited:
                await self._bucket.take()
            if not await self._answer(payload):
                return

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
                return False
            await self._reply(header, *answer, started)
            return True
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
    ) -> None:
        codes = ack_codes(header, result, reject_code=self._settings.reject_ack_code)
        if not codes:
            return
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
        if self._writer.transport.get_write_buffer_size():
            # The peer is not reading its ACKs: wait, but not for ever.
            async with asyncio.timeout(self._settings.idle_timeout_s):
                await self._writer.drain()
        self.last_active = asyncio.get_running_loop().time()
        seconds = time.monotonic() - started
        for code in codes:
            self._pipeline.observer.ack_sent(code, seconds)


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
