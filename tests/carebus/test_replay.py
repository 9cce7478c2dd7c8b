"""Tests for carebus/replay.py and carebus/commands/replay.py: sending feeds over MLLP.

The listener here is a small MLLP peer written for the tests (its own framing, not
the project's), run on a thread so that the synchronous CLI can talk to it too.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from carebus import replay as replay_module
from carebus.cli import main
from carebus.commands.replay import Progress
from carebus.replay import (
    LatencyHistogram,
    Outgoing,
    Pacer,
    ReplayOptions,
    ReplaySummary,
    replay,
)

Answer = Callable[[bytes, int], list[str]]


def message(control_id: str, facility: str = "XRA", ack: str = "AL|NE") -> bytes:
    """A small ADT^A08 from ``facility`` asking for acknowledgements ``ack`` (MSH-15|16)."""
    return (
        f"MSH|^~\\&|PAS|{facility}|CAREBUS|XRHUB|20260105090000||ADT^A08^ADT_A01|{control_id}"
        f"|P|2.4|||{ack}\rEVN|A08|20260105090000\rPID|1||9990000018^^^NHS^NH\r"
    ).encode()


def control_id_of(raw: bytes) -> str:
    return raw.split(b"\r", 1)[0].split(b"|")[9].decode()


def always(code: str) -> Answer:
    return lambda raw, attempt: [code]


@dataclass
class Received:
    connection: int
    at: float
    raw: bytes


@dataclass
class Peer:
    """An MLLP listener on a thread: answers each frame with ``answer(raw, attempt)``."""

    answer: Answer
    tls: ssl.SSLContext | None = None
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _attempts: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> Peer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def control_ids(self) -> list[str]:
        return [control_id_of(r.raw) for r in self.received]

    def _serve(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                try:
                    data = await reader.readuntil(b"\x1c\r")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                raw = data[data.index(b"\x0b") + 1 : -2]
                self.received.append(Received(connection, time.monotonic(), raw))
                control_id = control_id_of(raw)
                attempt = self._attempts.get(control_id, 0)
                self._attempts[control_id] = attempt + 1
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                for code in self.answer(raw, attempt):
                    ack = f"MSH|^~\\&|PEER|PEER|||20260105090001||ACK|A{len(self.received)}|P|2.4\r"
                    target = "WRONG" if code == "AA-wrong-id" else control_id
                    ack += f"MSA|{code[:2]}|{target}\r"
                    writer.write(b"\x0b" + ack.encode() + b"\x1c\r")
                await writer.drain()
        finally:
            writer.close()


def outgoing(raws: list[bytes]) -> Iterator[Outgoing]:
    total = 0
    for raw in raws:
        total += len(raw)
        yield Outgoing(raw, total)


def options(peer: Peer, **kwargs: object) -> ReplayOptions:
    defaults: dict[str, object] = {"port": peer.port, "rate": None, "ack_timeout_s": 2.0}
    return ReplayOptions(**(defaults | kwargs))  # type: ignore[arg-type]


class TestOutcomes:
    async def test_counts_each_ack_code(self) -> None:
        """AA, AE and AR answers are counted; every message is sent once, in order."""

        def answer(raw: bytes, attempt: int) -> list[str]:
            return [{"0": "AA", "1": "AE", "2": "AR"}[control_id_of(raw)[-1]]]

        raws = [message(f"M{n:02d}{n % 3}") for n in range(30)]
        with Peer(answer) as peer:
            summary = await replay(outgoing(raws), options(peer))
            assert peer.control_ids() == [control_id_of(r) for r in raws]
        assert (summary.sent, summary.aa, summary.ae, summary.ar, summary.no_ack) == (
            30,
            10,
            10,
            10,
            0,
        )
        assert summary.ok
        assert summary.latency.count == 30
        assert summary.progress == sum(len(r) for r in raws)

    async def test_commit_codes_count_as_their_application_codes(self) -> None:
        """CA, CE and CR (enhanced mode) count as AA, AE and AR."""

        def answer(raw: bytes, attempt: int) -> list[str]:
            return [{"0": "CA", "1": "CE", "2": "CR"}[control_id_of(raw)[-1]]]

        with Peer(answer) as peer:
            summary = await replay(outgoing([message(f"C{n}") for n in range(3)]), options(peer))
        assert (summary.aa, summary.ae, summary.ar) == (1, 1, 1)

    async def test_waits_for_the_application_ack_after_the_commit_ack(self) -> None:
        """With MSH-15 and MSH-16 both AL, the second (application) ACK decides."""
        raws = [message(f"E{n}", ack="AL|AL") for n in range(4)]
        with Peer(lambda raw, attempt: ["CA", "AR"]) as peer:
            summary = await replay(outgoing(raws), options(peer))
        assert (summary.sent, summary.aa, summary.ar, summary.no_ack) == (4, 0, 4, 0)

    async def test_no_ack_times_out_and_the_run_goes_on(self) -> None:
        """A message left unanswered counts as no ACK; later messages still go, on a new
        connection."""

        def answer(raw: bytes, attempt: int) -> list[str]:
            return [] if control_id_of(raw) == "N1" else ["AA"]

        raws = [message(c) for c in ("N0", "N1", "N2", "N3")]
        with Peer(answer) as peer:
            summary = await replay(outgoing(raws), options(peer, ack_timeout_s=3.0))
            assert peer.connections == 2
        assert (summary.sent, summary.aa, summary.no_ack) == (4, 3, 1)
        assert not summary.ok

    async def test_ack_for_another_message_is_no_ack(self) -> None:
        """An ACK whose MSA-2 is not the message's control id does not count as its ACK."""
        with Peer(lambda raw, attempt: ["AA-wrong-id"]) as peer:
            summary = await replay(outgoing([message("W1"), message("W2")]), options(peer))
        assert (summary.aa, summary.no_ack) == (0, 2)

    async def test_retries_resend_after_ae(self) -> None:
        """With retries, a message that got AE is resent and its last answer counts."""

        def answer(raw: bytes, attempt: int) -> list[str]:
            return ["AE"] if attempt == 0 else ["AA"]

        with Peer(answer) as peer:
            summary = await replay(
                outgoing([message("R1"), message("R2")]), options(peer, retries=1)
            )
            assert peer.control_ids() == ["R1", "R1", "R2", "R2"]
        assert (summary.sent, summary.aa, summary.ae, summary.retried) == (2, 2, 0, 2)

    async def test_unreachable_listener_ends_the_run(self, unused_tcp_port: int) -> None:
        """When nothing listens, the run stops early and says where it could not connect."""
        summary = await replay(
            outgoing([message("U1")]),
            ReplayOptions(port=unused_tcp_port, rate=None, connect_timeout_s=2.0),
        )
        assert summary.sent == 0
        assert summary.aborted is not None
        assert f"127.0.0.1:{unused_tcp_port}" in summary.aborted
        assert not summary.ok


class TestConnectionsAndRate:
    async def test_connections_keep_each_senders_order(self) -> None:
        """With several connections every facility's messages arrive in order, each
        facility on one connection."""
        facilities = ["XRA", "XRB", "XRC", "X80001", "X80002", "XHS01"]
        raws = [message(f"F{n:03d}", facilities[n % 6]) for n in range(60)]
        with Peer(always("AA")) as peer:
            summary = await replay(outgoing(raws), options(peer, connections=3))
            received = list(peer.received)
            used = peer.connections
        assert summary.aa == 60
        assert used == 3
        assert sorted(control_id_of(r.raw) for r in received) == [control_id_of(r) for r in raws]
        for facility in facilities:
            mine = [r for r in received if f"|{facility}|".encode() in r.raw[:40]]
            assert [control_id_of(r.raw) for r in mine] == [
                control_id_of(r) for r in raws if f"|{facility}|".encode() in r[:40]
            ]
            assert len({r.connection for r in mine}) == 1

    async def test_rate_limit_spaces_messages(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """At --rate 40 every message waits for its slot of the one shared pacer."""
        pacers: list[Counted] = []
        monkeypatch.setattr(replay_module, "Pacer", lambda rate: Counted(rate, pacers))
        with Peer(always("AA")) as peer:
            raws = [message(f"P{n}") for n in range(12)]
            summary = await replay(outgoing(raws), options(peer, rate=40.0, connections=3))
        assert summary.aa == 12
        [pacer] = pacers
        assert pacer.rate == 40.0
        assert pacer.waits == 12

    async def test_one_message_at_a_time_per_connection(self) -> None:
        """A connection never has two messages awaiting an ACK: while the first is
        unanswered nothing follows it there; the next goes on a new connection."""

        def answer(raw: bytes, attempt: int) -> list[str]:
            return [] if control_id_of(raw) == "S0" else ["AA"]

        with Peer(answer) as peer:
            raws = [message(f"S{n}") for n in range(3)]
            summary = await replay(outgoing(raws), options(peer, ack_timeout_s=1.0))
            received = [(r.connection, control_id_of(r.raw)) for r in peer.received]
        assert received == [(1, "S0"), (2, "S1"), (2, "S2")]
        assert (summary.aa, summary.no_ack) == (2, 1)


class Counted(Pacer):
    """A pacer that records itself in ``made`` and counts the slots it gives."""

    def __init__(self, rate: float | None, made: list[Counted]) -> None:
        super().__init__(rate)
        self.waits = 0
        made.append(self)

    async def wait(self) -> None:
        self.waits += 1
        await super().wait()


class FakeClock:
    """A monotonic clock that only the sleeps it is asked for move."""

    def __init__(self) -> None:
        self.now = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TestPacer:
    async def test_slots_are_one_interval_apart(self) -> None:
        """At rate 40 the slots are 1/40 s apart: twelve messages span 11/40 s."""
        clock = FakeClock()
        pacer = Pacer(40.0, clock=clock, sleep=clock.sleep)
        slots = []
        for _ in range(12):
            await pacer.wait()
            slots.append(clock.now)
        assert [b - a for a, b in itertools.pairwise(slots)] == [pytest.approx(1 / 40)] * 11

    async def test_no_burst_after_a_quiet_spell(self) -> None:
        """Time not used for sending is not saved up: after a pause the spacing holds."""
        clock = FakeClock()
        pacer = Pacer(40.0, clock=clock, sleep=clock.sleep)
        await pacer.wait()
        clock.now += 10.0
        await pacer.wait()
        assert clock.slept == []
        await pacer.wait()
        assert clock.slept == [pytest.approx(1 / 40)]

    async def test_no_rate_never_waits(self) -> None:
        """Without a rate every slot is at once."""
        clock = FakeClock()
        pacer = Pacer(None, clock=clock, sleep=clock.sleep)
        for _ in range(100):
            await pacer.wait()
        assert clock.slept == []


class TestTls:
    async def test_replays_over_tls(self, tmp_path: Path) -> None:
        """With a TLS context that trusts the listener's CA, messages go over TLS."""
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        with Peer(always("AA"), tls=server_ctx) as peer:
            summary = await replay(
                outgoing([message("T1"), message("T2")]),
                options(peer, ssl=client_ctx, server_hostname="localhost"),
            )
        assert (summary.aa, summary.no_ack) == (2, 0)


class TestLatencyHistogram:
    def test_percentiles_within_one_percent(self) -> None:
        """p50 and p99 of 1..1000 ms come back within 1%."""
        histogram = LatencyHistogram()
        for ms in range(1, 1001):
            histogram.add(ms / 1000)
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        assert p50 is not None and p99 is not None
        assert p50 == pytest.approx(0.5, rel=0.01)
        assert p99 == pytest.approx(0.99, rel=0.01)

    def test_empty_has_no_percentile(self) -> None:
        """Without samples there is no percentile."""
        assert LatencyHistogram().percentile(99) is None


class TestProgress:
    def test_lines_when_not_a_terminal(self) -> None:
        """Off a terminal, each update is one plain line without control characters."""
        stream = io.StringIO()
        progress = Progress(stream, total=200)
        progress.update(ReplaySummary(sent=5, aa=5, progress=100, elapsed_s=1.0))
        progress.finish(ReplaySummary(sent=9, aa=9, progress=200, elapsed_s=2.0))
        assert stream.getvalue() == "replay: 50% 5 sent, AA 5, AE 0, AR 0, no ACK 0 (5 msg/s)\n"

    def test_bar_redrawn_on_a_terminal(self) -> None:
        """On a terminal the bar is redrawn in place and its line ended at the finish."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        stream = Tty()
        progress = Progress(stream, total=100)
        progress.update(ReplaySummary(sent=1, aa=1, progress=50, elapsed_s=1.0))
        progress.finish(ReplaySummary(sent=2, aa=2, progress=90, elapsed_s=1.0))
        text = stream.getvalue()
        assert text.count("\r[") == 2
        assert "#" * 15 + "-" * 15 in text
        assert "[" + "#" * 30 + "] 100%" in text
        assert text.endswith("\n")


class TestCommand:
    def test_replays_a_generated_feed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`carebus replay` sends a generated feed and prints the summary; exit 0."""
        feed = tmp_path / "feed.hl7"
        assert main(["generate", "--messages", "50", "--out", str(feed)]) == 0
        capsys.readouterr()
        with Peer(always("AA")) as peer:
            status = main(["replay", str(feed), "--port", str(peer.port), "--max"])
            count = len(peer.received)
        out = capsys.readouterr().out
        assert status == 0
        assert count == 50
        assert "sent          50" in out
        assert "AA            50" in out
        assert "no ACK        0" in out
        assert "p99" in out

    def test_exit_1_when_a_message_gets_no_ack(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A message without an ACK makes the command fail."""
        feed = tmp_path / "feed.hl7"
        feed.write_bytes(b"\x0b" + message("X1") + b"\x1c\r")
        with Peer(lambda raw, attempt: []) as peer:
            status = main(["replay", str(feed), "--port", str(peer.port), "--timeout", "0.2"])
        assert status == 1
        assert "no ACK        1" in capsys.readouterr().out

    def test_exit_1_when_nothing_listens(
        self, tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unreachable listener is reported on standard error; exit 1."""
        feed = tmp_path / "feed.hl7"
        feed.write_bytes(message("X1"))
        assert main(["replay", str(feed), "--port", str(unused_tcp_port)]) == 1
        assert "cannot connect" in capsys.readouterr().err

    def test_missing_feed_is_a_usage_error(self, tmp_path: Path) -> None:
        """A feed that cannot be read exits 2 before connecting."""
        assert main(["replay", str(tmp_path / "absent.hl7")]) == 2
