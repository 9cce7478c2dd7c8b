"""Tests for connectors/mllp/server.py: framing, ordering and guards of the listener.

These drive the listener with python-hl7's MLLP client against an in-process sink
that records what it was handed (the Kafka path is proven in test_integration.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

import hl7.client
import pytest
import uvloop

from carebus.errors import KafkaUnavailable, MissingRequiredField
from carebus.settings import MllpSettings
from connectors.mllp import server as server_module
from connectors.mllp.allowlist import Peer
from connectors.mllp.server import LogThrottle, MllpServer, TokenBucket, _enable_keepalive
from connectors.mllp.tls import server_ssl_context
from connectors.pipeline import NullObserver, Outcome
from tests.connectors.tls_helpers import Pki, client_context

SB, EB = b"\x0b", b"\x1c\r"


def message(control_id: str, *, ack_modes: str = "") -> bytes:
    accept, _, app = ack_modes.partition("/")
    return (
        f"MSH|^~\\&|PAS|RXA01|CAREBUS|REGION|20260301093000||ADT^A01^ADT_A01|{control_id}|P|2.5.1"
        f"|||{accept}|{app}\rPID|1||123^^^RXA^MR\r"
    ).encode()


@dataclass
class Sink:
    """Records submitted messages; behaviour per control id is configurable."""

    observer: NullObserver = field(default_factory=NullObserver)
    seen: list[str] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    behaviour: Callable[[str], Outcome | Exception] | None = None
    #: When set, each submit waits for it (the message stays "being processed").
    gate: asyncio.Event | None = None
    #: Set once ``expect`` submits are in progress at the same time.
    expect: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    in_progress: int = 0

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        control_id = raw.split(b"|")[9].decode()
        self.seen.append(control_id)
        self.peers.append(peer)
        self.in_progress += 1
        if self.expect and self.in_progress >= self.expect:
            self.all_in.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.expect:
                await self.all_in.wait()
        finally:
            self.in_progress -= 1
        result = self.behaviour(control_id) if self.behaviour else None
        if isinstance(result, Exception):
            raise result
        return result or Outcome("accepted", "RXA01", control_id, "ADT", events=1)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def mllp_settings() -> MllpSettings:
    return MllpSettings(port=0, max_frame_bytes=4096, idle_timeout_s=5.0)


@pytest.fixture
async def server(mllp_settings: MllpSettings, sink: Sink) -> AsyncIterator[MllpServer]:
    srv = MllpServer(mllp_settings, sink)  # type: ignore[arg-type]
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace_s=2.0)


def recv_acks(client: hl7.client.MLLPClient, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read ``count`` MLLP frames (or fewer, if the server closes)."""
    client.socket.settimeout(timeout)
    data = b""
    while data.count(EB) < count:
        chunk = client.socket.recv(65536)
        if not chunk:
            break
        data += chunk
    return [f.lstrip(SB) for f in data.split(EB) if f.strip()]


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.decode("latin-1").split("\r") if s.startswith("MSA"))
    return line.split("|")


def closed_by_server(client: hl7.client.MLLPClient, timeout: float = 5.0) -> bool:
    client.socket.settimeout(timeout)
    try:
        return bool(client.socket.recv(1) == b"")
    except ConnectionResetError:
        return True


class TestOrdering:
    async def test_pipelined_frames_answered_in_order(self, server: MllpServer, sink: Sink) -> None:
        """Several frames sent at once are processed and acknowledged in order."""

        def talk() -> list[bytes]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(b"".join(SB + message(f"C{n}") + EB for n in range(5)))
                return recv_acks(c, 5)

        acks = await asyncio.to_thread(talk)
        assert [msa(a)[1:3] for a in acks] == [["AA", f"C{n}"] for n in range(5)]
        assert sink.seen == [f"C{n}" for n in range(5)]

    async def test_many_connections_at_once(self, server: MllpServer, sink: Sink) -> None:
        """Concurrent connections are served at the same time, each getting its own ACKs."""
        sink.expect = 8  # no message is answered until all 8 are being processed at once

        async def talk(n: int) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(SB + message(f"P{n}") + EB)
                return msa((await reader.readuntil(EB)).lstrip(SB))[2]
            finally:
                writer.close()

        async with asyncio.timeout(30):
            answers = await asyncio.gather(*(talk(n) for n in range(8)))
        assert sorted(answers) == sorted(f"P{n}" for n in range(8))

    async def test_peer_identity_is_passed(self, server: MllpServer, sink: Sink) -> None:
        """The sink learns the peer's address, for the allow-list and the raw headers."""

        def talk() -> None:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.send_message(message("ID1"))

        await asyncio.to_thread(talk)
        assert sink.peers[0].source == "mllp"
        assert sink.peers[0].address == "127.0.0.1"


class TestAnswers:
    async def test_rejection_gets_ar_with_reason(self, server: MllpServer, sink: Sink) -> None:
        """A rejected message is answered AR with its reason in MSA-3 and ERR."""
        sink.behaviour = lambda cid: Outcome(
            "rejected",
            "RXA01",
            cid,
            "ADT",
            error=MissingRequiredField("PID-3 is empty", control_id=cid, field="PID-3"),
        )

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return bytes(c.send_message(message("R1")))

        ack = await asyncio.to_thread(talk)
        assert msa(ack)[1:4] == ["AR", "R1", "missing-required-field: PID-3 is empty"]
        assert b"\rERR||PID^1^3|101^Required field missing^HL70357|E|" in ack

    async def test_kafka_unavailable_gets_ae(self, server: MllpServer, sink: Sink) -> None:
        """When the pipeline cannot make a message durable the sender gets AE, never AA."""
        sink.behaviour = lambda cid: KafkaUnavailable("down")

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return bytes(c.send_message(message("K1")))

        ack = await asyncio.to_thread(talk)
        assert msa(ack)[1:3] == ["AE", "K1"]
        assert "kafka-unavailable" in msa(ack)[3]

    @pytest.mark.parametrize("mllp_settings", [MllpSettings(port=0, on_kafka_failure="close")])
    async def test_kafka_unavailable_can_close_instead(
        self, server: MllpServer, sink: Sink
    ) -> None:
        """With on_kafka_failure=close the sender gets no ACK and the connection closes."""
        sink.behaviour = lambda cid: KafkaUnavailable("down")

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return bytes(c.send_message(message("K2")))

        assert await asyncio.to_thread(talk) == b""

    async def test_not_stored_without_ack_asked_closes(
        self, server: MllpServer, sink: Sink
    ) -> None:
        """A sender that asked for no ACK (NE/NE) is not left thinking a message it could
        not store was taken: its connection is closed, so it resends."""
        sink.behaviour = lambda cid: KafkaUnavailable("down") if cid == "K3" else None

        def talk() -> tuple[list[bytes], bool]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(SB + message("K3", ack_modes="NE/NE") + EB)
                c.socket.sendall(SB + message("K4") + EB)
                return recv_acks(c, 1), closed_by_server(c)

        assert await asyncio.to_thread(talk) == ([], True)
        assert sink.seen == ["K3"]

    async def test_enhanced_mode_never_gets_no_ack(self, server: MllpServer, sink: Sink) -> None:
        """A message asking for no acknowledgement (NE/NE) gets none; the next one does."""

        def talk() -> list[bytes]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(SB + message("E1", ack_modes="NE/NE") + EB)
                c.socket.sendall(SB + message("E2", ack_modes="AL/AL") + EB)
                return recv_acks(c, 2)

        acks = await asyncio.to_thread(talk)
        assert [msa(a)[1:3] for a in acks] == [["CA", "E2"], ["AA", "E2"]]
        assert sink.seen == ["E1", "E2"]


class TestFraming:
    async def test_oversize_frame_gets_ar_then_close(self, server: MllpServer, sink: Sink) -> None:
        """A frame over max_frame_bytes is answered AR naming its control id, then closed."""
        big = message("BIG1") + b"NTE|1||" + b"x" * 8000 + b"\r"

        def talk() -> tuple[list[bytes], bool]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(SB + big + EB)
                acks = recv_acks(c, 1)
                return acks, closed_by_server(c)

        acks, closed = await asyncio.to_thread(talk)
        assert msa(acks[0])[1:3] == ["AR", "BIG1"]
        assert "framing-error" in msa(acks[0])[3]
        assert closed
        assert sink.seen == []

    async def test_bytes_outside_a_frame_get_nak_then_close(
        self, server: MllpServer, sink: Sink
    ) -> None:
        """An unframed message after a good frame: the good one is AA, then a NAK, then close."""

        def talk() -> tuple[list[bytes], bool]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(SB + message("OK1") + EB + message("NOFRAME1"))
                acks = recv_acks(c, 2)
                return acks, closed_by_server(c)

        acks, closed = await asyncio.to_thread(talk)
        assert [msa(a)[1:3] for a in acks] == [["AA", "OK1"], ["AR", "NOFRAME1"]]
        assert closed
        assert sink.seen == ["OK1"]

    async def test_unreadable_junk_just_closes(self, server: MllpServer, sink: Sink) -> None:
        """Junk with no readable control id gets no ACK; the connection is closed."""

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.settimeout(5.0)
                return bytes(c.send(b"GET / HTTP/1.1\r\n\r\n"))  # the reply: b"" once closed

        assert await asyncio.to_thread(talk) == b""
        assert sink.seen == []


class TestGuards:
    @pytest.mark.parametrize("mllp_settings", [MllpSettings(port=0, max_connections=1)])
    async def test_connection_limit(self, server: MllpServer) -> None:
        """Connections beyond max_connections are closed at once; the first keeps working."""

        def talk() -> tuple[bool, str]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as first:
                first.send_message(message("L1"))
                with hl7.client.MLLPClient("127.0.0.1", server.port) as second:
                    refused = closed_by_server(second)
                return refused, msa(first.send_message(message("L2")))[1]

        refused, code = await asyncio.to_thread(talk)
        assert refused
        assert code == "AA"

    async def test_rate_limit_slows_a_connection(self, sink: Sink) -> None:
        """Beyond its rate a connection is slowed down, not refused: every message is ACKed."""
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0)

        settings = MllpSettings(port=0, rate_limit_per_s=5, rate_limit_per_ip_per_s=0)
        srv = MllpServer(settings, sink, clock=lambda: 0.0, sleep=sleep)  # type: ignore[arg-type]
        await srv.start()

        def talk() -> list[bytes]:
            with hl7.client.MLLPClient("127.0.0.1", srv.port) as c:
                c.socket.sendall(b"".join(SB + message(f"T{n}") + EB for n in range(7)))
                return recv_acks(c, 7)

        try:
            acks = await asyncio.to_thread(talk)
        finally:
            await srv.stop(grace_s=2.0)
        assert [msa(a)[1] for a in acks] == ["AA"] * 7
        assert waits == pytest.approx([0.2, 0.4])  # a burst of 5, then at 5/s (clock still)

    async def test_stop_lets_message_in_progress_finish(
        self, server: MllpServer, sink: Sink
    ) -> None:
        """On stop, a message being processed still gets its ACK before the connection closes."""
        sink.gate = asyncio.Event()

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return bytes(c.send_message(message("S1")))

        reply = asyncio.create_task(asyncio.to_thread(talk))
        async with asyncio.timeout(30):
            while not sink.seen:
                await asyncio.sleep(0.01)
        stopping = asyncio.create_task(server.stop(grace_s=30.0))
        await asyncio.sleep(0)  # stop has begun: the listener no longer accepts
        assert not stopping.done()
        sink.gate.set()  # only now may the message in progress finish
        await stopping
        assert msa(await reply)[1:3] == ["AA", "S1"]

    async def test_frame_clock_does_not_run_while_the_listener_is_busy(self, sink: Sink) -> None:
        """A frame that arrived behind a message still being processed gets its full
        frame_timeout_s once the listener is free again: the delay was not the peer's."""
        now = [0.0]
        settings = MllpSettings(port=0, frame_timeout_s=30.0)
        srv = MllpServer(settings, sink, clock=lambda: now[0])  # type: ignore[arg-type]
        await srv.start()
        sink.gate = asyncio.Event()
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        try:
            second = message("B2")
            sock.sendall(SB + message("B1") + EB + SB + second[:30])
            while not sink.seen:
                await asyncio.sleep(0.005)  # until B1 is being processed
            [conn] = srv._connections.values()
            assert conn.busy and conn.frame_started == 0.0
            now[0] = 40.0
            assert srv.sweep() == 0  # busy: not the peer's fault
            sink.gate.set()
            ack1 = await asyncio.to_thread(recv_acks, _Sock(sock), 1)
            assert conn.frame_started == 40.0  # B2's clock starts again
            now[0] = 69.0
            assert srv.sweep() == 0
            sock.sendall(second[30:] + EB)
            ack2 = await asyncio.to_thread(recv_acks, _Sock(sock), 1)
        finally:
            sock.close()
            await srv.stop(grace_s=2.0)
        assert [msa(ack1[0])[1:3], msa(ack2[0])[1:3]] == [["AA", "B1"], ["AA", "B2"]]

    async def test_a_failing_sweep_does_not_stop_the_sweeper(
        self, sink: Sink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A sweep that raises is counted and the sweeper goes on sweeping (the timeouts
        do not silently stop for the life of the process)."""
        # Timeouts this short make the sweeper run about every millisecond.
        settings = MllpSettings(port=0, frame_timeout_s=0.004, idle_timeout_s=0.004)
        srv = MllpServer(settings, sink)  # type: ignore[arg-type]
        calls = 0
        swept_after_failure = asyncio.Event()

        def sweep(now: float | None = None) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            swept_after_failure.set()
            return 0

        monkeypatch.setattr(srv, "sweep", sweep)
        await srv.start()
        try:
            async with asyncio.timeout(30):
                await swept_after_failure.wait()
            assert srv.sweep_failures == 1
            assert srv._sweeper is not None and not srv._sweeper.done()
        finally:
            await srv.stop(grace_s=2.0)

    def test_keepalive_enabled(self) -> None:
        """Accepted sockets get TCP keepalive."""
        with socket.socket() as sock:
            _enable_keepalive(sock)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait until ``condition()`` holds (a state the server reaches, not a time)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def _raw_from(host: str, port: int) -> socket.socket:
    """A plain TCP connection from ``host`` that never starts a TLS handshake."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(host, 0))
    sock.settimeout(20)
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


async def _tls_message(port: int, ctx: ssl.SSLContext, host: str, control_id: str) -> bytes:
    """Send one message over TLS from ``host``; its ACK."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1", local_addr=(host, 0)
    )
    try:
        writer.write(SB + message(control_id) + EB)
        return (await asyncio.wait_for(reader.readuntil(EB), 30)).lstrip(SB)
    finally:
        writer.close()


async def _per_ip_cap_with_tls(sink: Sink, pki: Pki) -> None:
    """Half-open TLS connections over the per-IP cap are closed at once; a failed
    handshake gives its place back; TLS messages still get through."""
    settings = MllpSettings(port=0, max_connections_per_ip=2, tls_certfile=pki.server_cert)
    srv = MllpServer(settings, sink, ssl_context=server_ssl_context(settings))  # type: ignore[arg-type]
    await srv.start()
    ctx = client_context(pki, with_cert=False)
    raw: list[socket.socket] = []
    try:
        raw = [_raw_from("127.0.0.13", srv.port) for _ in range(2)]
        await _until(lambda: srv.connections_from("127.0.0.13") == 2)
        over = _raw_from("127.0.0.13", srv.port)
        raw.append(over)
        assert await asyncio.to_thread(_closed, over)  # refused before any handshake
        other = await _tls_message(srv.port, ctx, "127.0.0.14", "TG1")
        for sock in raw:
            sock.close()
        await _until(lambda: srv.connections_from("127.0.0.13") == 0)
        again = await _tls_message(srv.port, ctx, "127.0.0.13", "TG2")
        await _until(lambda: srv.connections_from("127.0.0.13") == 0)
    finally:
        for sock in raw:
            sock.close()
        await srv.stop(grace_s=2.0)
    assert [msa(other)[1:3], msa(again)[1:3]] == [["AA", "TG1"], ["AA", "TG2"]]
    assert sink.seen == ["TG1", "TG2"]
    with pytest.raises(RuntimeError):
        _ = srv.port  # stopped: no longer listening


class TestTlsGuards:
    async def test_half_open_handshakes_count_against_the_per_ip_cap(
        self, sink: Sink, pki: Pki
    ) -> None:
        """With TLS an address's connections count from accept, not from a finished
        handshake: over max_connections_per_ip, one that never starts its handshake is
        closed at once; a handshake that fails gives its place back."""
        await _per_ip_cap_with_tls(sink, pki)

    def test_the_same_on_uvloop(self, sink: Sink, pki: Pki) -> None:
        """The listener's default event loop, uvloop, upgrades to TLS after the guards too."""
        uvloop.run(_per_ip_cap_with_tls(sink, pki))

    async def test_half_open_handshakes_count_against_the_connection_limit(
        self, sink: Sink, pki: Pki
    ) -> None:
        """Connections still in their TLS handshake hold places under max_connections."""
        settings = MllpSettings(port=0, max_connections=2, tls_certfile=pki.server_cert)
        srv = MllpServer(settings, sink, ssl_context=server_ssl_context(settings))  # type: ignore[arg-type]
        await srv.start()
        raw: list[socket.socket] = []
        try:
            raw = [_raw_from(f"127.0.0.{n}", srv.port) for n in (15, 16)]
            await _until(lambda: srv.connections_from("127.0.0.16") == 1)
            await _until(lambda: srv.connections_from("127.0.0.15") == 1)
            raw.append(_raw_from("127.0.0.17", srv.port))
            assert await asyncio.to_thread(_closed, raw[-1])
        finally:
            for sock in raw:
                sock.close()
            await srv.stop(grace_s=2.0)


class TestTokenBucket:
    def test_unlimited_never_waits(self) -> None:
        """A rate of 0 means no limit."""
        bucket = TokenBucket(0, clock=lambda: 0.0)
        assert {bucket.reserve() for _ in range(1000)} == {0.0}

    def test_burst_then_paced(self) -> None:
        """A full bucket lets ``rate`` messages go at once, then one every 1/rate seconds."""
        now = [0.0]
        bucket = TokenBucket(4, clock=lambda: now[0])
        assert [bucket.reserve() for _ in range(6)] == [0.0] * 4 + [0.25, 0.5]
        now[0] = 0.5  # the two waiting have had their turns
        assert bucket.reserve() == 0.25
        now[0] = 10.0  # refilled, but never beyond one burst
        assert [bucket.reserve() for _ in range(5)] == [0.0] * 4 + [0.25]


class TestRestingBuckets:
    def test_resting_buckets_are_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """At most MAX_RESTING_BUCKETS unconnected addresses are remembered, the oldest
        going first, and a bucket already full again is not kept at all."""
        monkeypatch.setattr(server_module, "MAX_RESTING_BUCKETS", 2)
        now = [0.0]
        settings = MllpSettings(port=0, rate_limit_per_ip_per_s=1)
        srv = MllpServer(settings, Sink(), clock=lambda: now[0])  # type: ignore[arg-type]
        for n in range(4):
            host = f"10.9.0.{n}"
            srv._ip_buckets[host] = bucket = TokenBucket(1, clock=lambda: now[0])
            bucket.reserve()  # one token short of full
            srv._rest_bucket(host)
        assert [srv.ip_bucket_kept(f"10.9.0.{n}") for n in range(4)] == [False, False, True, True]
        srv._ip_buckets["10.9.0.9"] = TokenBucket(1, clock=lambda: now[0])  # unused: full
        srv._rest_bucket("10.9.0.9")
        assert not srv.ip_bucket_kept("10.9.0.9")
        now[0] = 1.0  # both refilled
        srv.sweep()
        assert not srv.ip_bucket_kept("10.9.0.2") and not srv.ip_bucket_kept("10.9.0.3")


class TestLogThrottle:
    def test_one_line_a_period_counting_those_left_out(self) -> None:
        """A flood of refusals logs one line a second, each saying how many it left out."""
        now = [0.0]
        throttle = LogThrottle(1.0, clock=lambda: now[0])
        assert [throttle.allow() for _ in range(4)] == [0, None, None, None]
        now[0] = 1.0
        assert throttle.allow() == 3
        assert throttle.allow() is None


class _Sock:
    """The shape recv_acks expects (an object with a ``socket``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
