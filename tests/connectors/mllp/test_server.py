"""Tests for connectors/mllp/server.py: framing, ordering and guards of the listener.

These drive the listener with python-hl7's MLLP client against an in-process sink
that records what it was handed (the Kafka path is proven in test_integration.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace

import hl7.client
import pytest

from carebus.errors import KafkaUnavailable, MissingRequiredField
from carebus.settings import MllpSettings
from connectors.mllp import server as mllp_server
from connectors.mllp.allowlist import Peer
from connectors.mllp.server import MllpServer, TokenBucket, _enable_keepalive
from connectors.pipeline import NullObserver, Outcome

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
    #: when set, each submit waits for it (so a test decides when processing ends)
    gate: asyncio.Event | None = None
    #: set on each submit (a test waits for it rather than for a sleep)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        control_id = raw.split(b"|")[9].decode()
        self.seen.append(control_id)
        self.peers.append(peer)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        result = self.behaviour(control_id) if self.behaviour else None
        if isinstance(result, Exception):
            raise result
        return result or Outcome("accepted", "RXA01", control_id, "ADT", events=1)


async def until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    """Wait until ``condition()`` holds, looking again each time ``changed`` is set."""
    while not condition():
        changed.clear()
        await changed.wait()


class Counting(TokenBucket):
    """A token bucket that records itself in ``made`` and counts its takes."""

    def __init__(self, rate: float, made: list[Counting]) -> None:
        super().__init__(rate)
        self.rate = rate
        self.taken = 0
        made.append(self)

    async def take(self) -> None:
        self.taken += 1
        await super().take()


class FakeClock:
    """The listener module's clock (``time.monotonic`` and ``asyncio.sleep`` as that
    module sees them), advanced only by the sleeps it asks for. For TokenBucket alone:
    no listener may run while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        monkeypatch.setattr(mllp_server, "time", SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(mllp_server, "asyncio", SimpleNamespace(sleep=self.sleep))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


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
        sink.gate = asyncio.Event()  # no message finishes until all eight are in the sink

        async def talk(n: int) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(SB + message(f"P{n}") + EB)
                return msa(await reader.readuntil(EB))[2]
            finally:
                writer.close()

        answers = [asyncio.create_task(talk(n)) for n in range(8)]
        try:
            await asyncio.wait_for(until(lambda: len(sink.seen) == 8, sink.arrived), 30)
        finally:
            sink.gate.set()
        assert sorted(await asyncio.gather(*answers)) == sorted(f"P{n}" for n in range(8))

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
    @pytest.mark.parametrize("mllp_settings", [MllpSettings(port=0, idle_timeout_s=0.3)])
    async def test_idle_connection_is_closed(self, server: MllpServer) -> None:
        """A connection that sends nothing for idle_timeout_s is closed by the listener."""

        def talk() -> bool:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return closed_by_server(c, timeout=5.0)

        assert await asyncio.to_thread(talk)

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

    @pytest.mark.parametrize("mllp_settings", [MllpSettings(port=0, rate_limit_per_s=5)])
    async def test_rate_limit_slows_a_connection(
        self, server: MllpServer, sink: Sink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Beyond its rate a connection is slowed down, not refused: every message is ACKed."""
        buckets: list[Counting] = []
        monkeypatch.setattr(mllp_server, "TokenBucket", lambda rate: Counting(rate, buckets))

        def talk() -> list[bytes]:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                c.socket.sendall(b"".join(SB + message(f"T{n}") + EB for n in range(7)))
                return recv_acks(c, 7)

        acks = await asyncio.to_thread(talk)
        assert [msa(a)[1] for a in acks] == ["AA"] * 7
        [bucket] = buckets
        assert bucket.rate == 5 and bucket.taken == 7  # each message waits for the bucket

    async def test_stop_lets_message_in_progress_finish(
        self, server: MllpServer, sink: Sink
    ) -> None:
        """On stop, a message being processed still gets its ACK before the connection closes."""
        sink.gate = asyncio.Event()

        def talk() -> bytes:
            with hl7.client.MLLPClient("127.0.0.1", server.port) as c:
                return bytes(c.send_message(message("S1")))

        reply = asyncio.create_task(asyncio.to_thread(talk))
        await asyncio.wait_for(sink.arrived.wait(), 30)
        stopping = asyncio.create_task(server.stop(grace_s=30.0))
        await asyncio.sleep(0)  # stop has begun: the listener no longer accepts
        assert not stopping.done()
        sink.gate.set()  # only now may the message in progress finish
        await stopping
        assert msa(await reply)[1:3] == ["AA", "S1"]

    def test_keepalive_enabled(self) -> None:
        """Accepted sockets get TCP keepalive."""
        with socket.socket() as sock:
            _enable_keepalive(sock)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


class TestTokenBucket:
    async def test_unlimited_never_waits(self) -> None:
        """A rate of 0 means no limit: take() returns without ever suspending."""
        bucket = TokenBucket(0)
        for _ in range(1000):
            with pytest.raises(StopIteration):
                bucket.take().send(None)  # finished at its first step: nothing awaited

    async def test_a_burst_passes_then_each_message_waits_its_share(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At rate 5: a burst of 5 passes at once, then each message waits 1/5 s."""
        clock = FakeClock(monkeypatch)
        bucket = TokenBucket(5)
        for _ in range(7):
            await bucket.take()
        assert clock.slept == [pytest.approx(0.2), pytest.approx(0.2)]

    async def test_tokens_come_back_with_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After a quiet second the full burst is available again, never more."""
        clock = FakeClock(monkeypatch)
        bucket = TokenBucket(5)
        for _ in range(5):
            await bucket.take()
        clock.now += 10.0
        for _ in range(5):
            await bucket.take()
        assert clock.slept == []
        await bucket.take()
        assert clock.slept == [pytest.approx(0.2)]
