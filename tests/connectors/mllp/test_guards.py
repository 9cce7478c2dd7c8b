"""The listener's guards against hostile or broken peers, on the real broker.

Real sockets to a real :class:`MllpServer` in front of a real pipeline and producer.
Time is a fake clock the test moves, and the sweeper is driven by calling
:meth:`MllpServer.sweep`: no test waits for a timeout to pass or depends on speed.
The tests only wait *until* the server has reached a state (read some bytes,
counted a connection), which takes as long as it takes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from carebus.errors import ConfigError
from carebus.metrics import Metrics
from carebus.settings import MllpSettings, Settings, load_settings
from carebus.topics import TopicNames
from connectors.ingest import Ingest
from connectors.mllp.handoff import Dispatcher, Receiver, channel_pair
from connectors.mllp.server import MllpServer
from tests.connectors.ingest_helpers import TopicReader, adt
from tests.connectors.mllp.test_server import EB, SB, msa

pytestmark = pytest.mark.integration


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records each wait asked for and returns at once (the clock does not move)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait until ``condition()`` holds (a state the server reaches, not a time)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    sock.settimeout(20)
    return sock


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` MLLP frames, or fewer if the server closes first."""
    data = b""
    while data.count(EB) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [f.lstrip(SB) for f in data.split(EB) if f.strip()]


def closed(sock: socket.socket) -> bool:
    """True when the server closed the connection (with nothing more to read)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


class Listener:
    """A started :class:`Ingest` whose MLLP server runs on a fake clock, with metrics."""

    def __init__(self, ingest: Ingest, clock: FakeClock, sleep: FakeSleep, metrics: Metrics):
        self.ingest = ingest
        self.clock = clock
        self.sleep = sleep
        self.metrics = metrics

    @property
    def server(self) -> MllpServer:
        return self.ingest.mllp

    @property
    def port(self) -> int:
        return self.ingest.mllp.port

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def only_connection(self) -> Any:
        [conn] = self.server._connections.values()
        return conn

    def frame_open(self) -> bool:
        """True once the server has read the start of a frame on its one connection."""
        conns = list(self.server._connections.values())
        return len(conns) == 1 and conns[0].frame_started is not None


@pytest.fixture
def mllp_changes() -> dict[str, Any]:
    return {}


@pytest.fixture
async def listener(
    ingest_settings: Settings, mllp_changes: dict[str, Any]
) -> AsyncIterator[Listener]:
    mllp = dataclasses.replace(MllpSettings(port=0), **mllp_changes)
    settings = ingest_settings.replace(mllp=mllp)
    metrics = Metrics(role="listener")
    clock, sleep = FakeClock(), FakeSleep()
    ingest = Ingest(settings, observer=metrics)
    ingest.mllp = MllpServer(mllp, ingest.pipeline, clock=clock, sleep=sleep)
    await ingest.start()
    try:
        yield Listener(ingest, clock, sleep, metrics)
    finally:
        await ingest.stop(grace_s=2.0)


class TestFrameTimeout:
    async def test_trickled_frame_gets_nak_and_is_closed(
        self, listener: Listener, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A frame still incomplete frame_timeout_s after its start byte gets AR naming its
        control id, its connection is closed and counted, and nothing is published."""
        sock = connect(listener.port)
        try:
            head = SB + adt("SLOW1")[:80]
            sock.sendall(head)
            await until(listener.frame_open)
            listener.clock.advance(29.0)
            assert listener.server.sweep() == 0  # within its time
            listener.clock.advance(2.0)
            assert listener.server.sweep() == 1
            [nak] = await asyncio.to_thread(read_frames, sock, 1)
            assert await asyncio.to_thread(closed, sock)
        finally:
            sock.close()
        assert msa(nak)[1:3] == ["AR", "SLOW1"]
        assert msa(nak)[3].startswith("frame-timeout: ")
        dropped = "carebus_mllp_connections_dropped_total"
        assert listener.counter(dropped, reason="frame-timeout") == 1
        assert reader.end_offsets(topics.raw) == 0

    async def test_trickling_bytes_does_not_extend_the_deadline(self, listener: Listener) -> None:
        """The deadline runs from the start byte: more bytes of the same frame do not reset it."""
        sock = connect(listener.port)
        try:
            raw = adt("SLOW2")
            sock.sendall(SB + raw[:40])
            await until(listener.frame_open)
            started = listener.clock.now
            for n in range(40, 100, 20):  # a trickle every 10 s, each read by the server
                listener.clock.advance(10.0)
                sock.sendall(raw[n : n + 20])
                await until(lambda: listener.only_connection().last_active == listener.clock.now)
                listener.server.sweep()
            assert listener.only_connection().frame_started == started
            listener.clock.advance(1.0)  # 31 s since the start byte, 1 s since the last byte
            assert listener.server.sweep() == 1
            [nak] = await asyncio.to_thread(read_frames, sock, 1)
        finally:
            sock.close()
        assert msa(nak)[1:3] == ["AR", "SLOW2"]

    async def test_quiet_connection_between_frames_is_not_a_slow_frame(
        self, listener: Listener, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Only a started frame has a deadline: a connection quiet between messages for longer
        than frame_timeout_s (under idle_timeout_s) stays open and its next message is AA."""
        sock = connect(listener.port)
        try:
            sock.sendall(SB + adt("Q1") + EB)
            [first] = await asyncio.to_thread(read_frames, sock, 1)
            assert listener.only_connection().frame_started is None
            listener.clock.advance(120.0)
            assert listener.server.sweep() == 0
            sock.sendall(SB + adt("Q2")[:50])
            await until(listener.frame_open)
            listener.clock.advance(20.0)
            assert listener.server.sweep() == 0
            sock.sendall(adt("Q2")[50:] + EB)
            [second] = await asyncio.to_thread(read_frames, sock, 1)
        finally:
            sock.close()
        assert [msa(first)[1:3], msa(second)[1:3]] == [["AA", "Q1"], ["AA", "Q2"]]
        assert reader.end_offsets(topics.raw) == 2

    async def test_idle_connection_is_closed_by_the_same_sweep(self, listener: Listener) -> None:
        """A connection that sends nothing for idle_timeout_s is closed and counted."""
        sock = connect(listener.port)
        try:
            await until(lambda: len(listener.server._connections) == 1)
            listener.clock.advance(299.0)
            assert listener.server.sweep() == 0
            listener.clock.advance(2.0)
            assert listener.server.sweep() == 1
            assert await asyncio.to_thread(closed, sock)
        finally:
            sock.close()
        dropped = "carebus_mllp_connections_dropped_total"
        assert listener.counter(dropped, reason="idle-timeout") == 1


class TestConnectionCapPerIp:
    @pytest.mark.parametrize("mllp_changes", [{"max_connections_per_ip": 2}])
    async def test_connections_over_the_cap_are_refused(self, listener: Listener) -> None:
        """An address's connections over max_connections_per_ip are closed at once and
        counted; its first ones keep working, and other addresses are unaffected."""
        server = listener.server
        first = [connect(listener.port, "127.0.0.5") for _ in range(2)]
        try:
            await until(lambda: server.connections_from("127.0.0.5") == 2)
            third = connect(listener.port, "127.0.0.5")
            assert await asyncio.to_thread(closed, third)
            third.close()
            other = connect(listener.port, "127.0.0.6")
            other.sendall(SB + adt("CAP2") + EB)
            first[0].sendall(SB + adt("CAP1") + EB)
            [ack_other] = await asyncio.to_thread(read_frames, other, 1)
            [ack_first] = await asyncio.to_thread(read_frames, first[0], 1)
            other.close()
            first[1].close()  # frees a place for the address
            await until(lambda: server.connections_from("127.0.0.5") == 1)
            again = connect(listener.port, "127.0.0.5")
            again.sendall(SB + adt("CAP3") + EB)
            [ack_again] = await asyncio.to_thread(read_frames, again, 1)
            again.close()
        finally:
            for sock in first:
                sock.close()
        assert [msa(a)[1:3] for a in (ack_other, ack_first, ack_again)] == [
            ["AA", "CAP2"],
            ["AA", "CAP1"],
            ["AA", "CAP3"],
        ]
        refused = "carebus_mllp_connections_refused_total"
        assert listener.counter(refused, reason="ip-connection-limit") == 1

    async def test_the_multi_process_parent_counts_across_children(
        self, ingest_settings: Settings
    ) -> None:
        """With several processes, the parent refuses an address's connection over the cap
        before handing it over, and counts one down when a child says it is over."""
        mllp = MllpSettings(port=0, max_connections_per_ip=2)
        ingest = Ingest(ingest_settings.replace(mllp=mllp))
        ingest.mllp.accept_handed_over()
        await ingest.start()
        parent_end, child_end = channel_pair()
        receiver = Receiver(child_end, ingest.mllp.adopt, lambda: None)
        receiver.start()
        parent_metrics = Metrics(role="listener")
        dispatcher = Dispatcher(mllp, [parent_end], parent_metrics)
        await dispatcher.start()
        socks: list[socket.socket] = []
        try:
            socks = [connect(dispatcher.port, "127.0.0.7") for _ in range(2)]
            await until(lambda: ingest.mllp.connections_from("127.0.0.7") == 2)
            assert dispatcher.connections_from("127.0.0.7") == 2
            over = connect(dispatcher.port, "127.0.0.7")
            assert await asyncio.to_thread(closed, over)
            over.close()
            assert dispatcher.handed_over == [2]  # refused in the parent, not handed over
            socks[0].sendall(SB + adt("MP1") + EB)
            [ack] = await asyncio.to_thread(read_frames, socks[0], 1)
            socks[1].close()
            await until(lambda: dispatcher.connections_from("127.0.0.7") == 1)
            again = connect(dispatcher.port, "127.0.0.7")
            socks.append(again)
            again.sendall(SB + adt("MP2") + EB)
            [ack_again] = await asyncio.to_thread(read_frames, again, 1)
        finally:
            for sock in socks:
                sock.close()
            await dispatcher.stop()
            receiver.stop()
            parent_end.close()
            await ingest.stop(grace_s=2.0)
        assert [msa(ack)[1:3], msa(ack_again)[1:3]] == [["AA", "MP1"], ["AA", "MP2"]]
        refused = parent_metrics.registry.get_sample_value(
            "carebus_mllp_connections_refused_total", {"reason": "ip-connection-limit"}
        )
        assert refused == 1


class TestRateLimitPerIp:
    @pytest.mark.parametrize("mllp_changes", [{"rate_limit_per_ip_per_s": 2}])
    async def test_an_address_shares_one_rate_over_its_connections(
        self, listener: Listener, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Beyond its burst, an address's messages wait their turn in one queue across its
        connections; every message is still stored and acknowledged, none dropped; another
        address is not held back."""
        a = connect(listener.port, "127.0.0.8")
        b = connect(listener.port, "127.0.0.8")
        c = connect(listener.port, "127.0.0.9")
        try:
            a.sendall(b"".join(SB + adt(f"RA{n}") + EB for n in range(3)))
            b.sendall(b"".join(SB + adt(f"RB{n}") + EB for n in range(3)))
            acks_a = await asyncio.to_thread(read_frames, a, 3)
            acks_b = await asyncio.to_thread(read_frames, b, 3)
            waits = sorted(listener.sleep.waits)
            c.sendall(b"".join(SB + adt(f"RC{n}") + EB for n in range(2)))
            acks_c = await asyncio.to_thread(read_frames, c, 2)
        finally:
            for sock in (a, b, c):
                sock.close()
        assert [msa(x)[1] for x in acks_a + acks_b + acks_c] == ["AA"] * 8
        # The clock stands still: a burst of 2, then each message waits 0.5 s longer
        # than the one before it, whichever connection it came on.
        assert waits == [0.5, 1.0, 1.5, 2.0]
        assert listener.counter("carebus_mllp_rate_limited_total") == 4
        assert reader.end_offsets(topics.raw) == 8

    @pytest.mark.parametrize("mllp_changes", [{"rate_limit_per_ip_per_s": 2}])
    async def test_reconnecting_does_not_forgive_an_address_its_debt(
        self, listener: Listener
    ) -> None:
        """An address that closes its connection in debt and reconnects waits where it left
        off, not with a fresh burst; its bucket is forgotten only once full again."""
        server = listener.server
        first = connect(listener.port, "127.0.0.12")
        try:
            first.sendall(b"".join(SB + adt(f"RD{n}") + EB for n in range(4)))
            acks = await asyncio.to_thread(read_frames, first, 4)
        finally:
            first.close()
        await until(lambda: server.connections_from("127.0.0.12") == 0)
        assert listener.sleep.waits == [0.5, 1.0]  # a burst of 2, then in debt
        server.sweep()
        assert server.ip_bucket_kept("127.0.0.12")  # in debt: kept though unconnected
        again = connect(listener.port, "127.0.0.12")
        try:
            again.sendall(SB + adt("RD4") + EB)
            acks += await asyncio.to_thread(read_frames, again, 1)
        finally:
            again.close()
        await until(lambda: server.connections_from("127.0.0.12") == 0)
        assert listener.sleep.waits == [0.5, 1.0, 1.5]  # behind the earlier debt
        assert [msa(a)[1] for a in acks] == ["AA"] * 5
        listener.clock.advance(2.0)  # the debt is paid, the burst not yet whole
        server.sweep()
        assert server.ip_bucket_kept("127.0.0.12")
        listener.clock.advance(0.5)  # full again: nothing left to remember
        server.sweep()
        assert not server.ip_bucket_kept("127.0.0.12")


class TestGuardSettings:
    def test_the_guards_are_on_by_default(self) -> None:
        """The per-address rate limit and connection cap and the frame timeout are on by
        default (docs/operations.md explains the values)."""
        assert MllpSettings().rate_limit_per_ip_per_s == 500.0
        assert MllpSettings().max_connections_per_ip == 32
        assert MllpSettings().frame_timeout_s == 30.0

    def test_settings_come_from_the_environment(self) -> None:
        """Each guard is set by its CAREBUS_MLLP_* variable; 0 turns a limit off."""
        settings = load_settings(
            {
                "CAREBUS_MLLP_FRAME_TIMEOUT_S": "12.5",
                "CAREBUS_MLLP_MAX_CONNECTIONS_PER_IP": "0",
                "CAREBUS_MLLP_RATE_LIMIT_PER_IP_PER_S": "0",
            }
        )
        assert settings.mllp.frame_timeout_s == 12.5
        assert settings.mllp.max_connections_per_ip == 0
        assert settings.mllp.rate_limit_per_ip_per_s == 0

    @pytest.mark.parametrize(
        "env",
        [
            {"CAREBUS_MLLP_FRAME_TIMEOUT_S": "0"},
            {"CAREBUS_MLLP_IDLE_TIMEOUT_S": "-1"},
            {"CAREBUS_MLLP_MAX_CONNECTIONS_PER_IP": "-1"},
            {"CAREBUS_MLLP_RATE_LIMIT_PER_IP_PER_S": "-5"},
        ],
    )
    def test_impossible_values_are_config_errors(self, env: dict[str, str]) -> None:
        """A timeout that is not positive, or a negative limit, is refused at start-up."""
        with pytest.raises(ConfigError, match="mllp\\."):
            load_settings(env)
