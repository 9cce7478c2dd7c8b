"""Tests for connectors/mllp/handoff.py: connections handed from a parent to its children."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from carebus.settings import MllpSettings
from connectors.mllp import handoff as handoff_module
from connectors.mllp.handoff import (
    READY,
    RELEASED,
    ChildMap,
    Dispatcher,
    Receiver,
    channel_pair,
    child_for,
)
from connectors.mllp.server import MllpServer
from connectors.mllp.tls import server_ssl_context
from tests.connectors.mllp.test_integration import send_tls
from tests.connectors.mllp.test_server import EB, SB, Sink, message, msa, recv_acks
from tests.connectors.tls_helpers import Pki, client_context


class TestChildMap:
    def test_same_host_same_child(self) -> None:
        """A host always gets the same child, so its resends meet its duplicate window."""
        homes = ChildMap(3)
        hosts = [f"10.0.{n // 256}.{n % 256}" for n in range(500)]
        first = [homes.child(h) for h in hosts]
        assert [homes.child(h) for h in reversed(hosts)] == first[::-1]

    def test_new_hosts_go_to_the_child_with_fewest(self) -> None:
        """Hosts are spread evenly, each new one to the child serving the fewest."""
        homes = ChildMap(2)
        children = [homes.child(f"127.0.0.{n}") for n in range(2, 34)]
        assert children.count(0) == children.count(1) == 16
        assert children[:4] == [0, 1, 0, 1]

    def test_beyond_the_memory_hosts_are_hashed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past MAX_HOSTS remembered addresses, a new one goes where its hash says, stably."""
        monkeypatch.setattr(handoff_module, "MAX_HOSTS", 4)
        homes = ChildMap(3)
        for n in range(4):
            homes.child(f"10.1.0.{n}")
        late = [f"10.2.0.{n}" for n in range(20)]
        assert [homes.child(h) for h in late] == [child_for(h, 3) for h in late]
        assert [homes.child(h) for h in late] == [child_for(h, 3) for h in late]


class TestChildFor:
    def test_same_host_same_child(self) -> None:
        """A host always hashes to the same child, in any process."""
        hosts = [f"10.0.{n // 256}.{n % 256}" for n in range(500)]
        first = [child_for(h, 3) for h in hosts]
        assert [child_for(h, 3) for h in hosts] == first

    def test_hosts_spread_over_children(self) -> None:
        """Many hosts are spread over every child, none taking the lion's share."""
        counts = [0, 0]
        for n in range(2, 34):
            counts[child_for(f"127.0.0.{n}", 2)] += 1
        assert min(counts) >= 8


def _connect_from(host: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(host, 0))


@pytest.fixture
async def handoff() -> AsyncIterator[tuple[Dispatcher, list[socket.socket], list[list[str]]]]:
    """A dispatcher on a free port with two in-process receivers recording peer hosts."""
    pairs = [channel_pair(), channel_pair()]
    dispatcher = Dispatcher(MllpSettings(port=0), [p for p, _ in pairs])
    seen: list[list[str]] = [[], []]
    receivers = []
    for i, (_, child_end) in enumerate(pairs):

        def adopt(sock: socket.socket, released: object, i: int = i) -> None:
            seen[i].append(sock.getpeername()[0])
            sock.close()

        receivers.append(Receiver(child_end, adopt, lambda: None))
        receivers[-1].start()
    await dispatcher.start()
    try:
        yield dispatcher, [p for p, _ in pairs], seen
    finally:
        await dispatcher.stop()
        for r in receivers:
            r.stop()
        for parent_end, _ in pairs:
            parent_end.close()


class TestDispatcher:
    async def test_connections_reach_the_child_of_their_host(
        self, handoff: tuple[Dispatcher, list[socket.socket], list[list[str]]]
    ) -> None:
        """Each host's connections all reach one child; the hosts are shared evenly."""
        dispatcher, _, seen = handoff
        hosts = [f"127.0.0.{n}" for n in range(2, 10)] * 2
        for host in hosts:
            await asyncio.to_thread(lambda h=host: _connect_from(h, dispatcher.port).close())

        async def all_adopted() -> None:
            while sum(map(len, seen)) < len(hosts):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_adopted(), 30)
        assert not set(seen[0]) & set(seen[1])
        assert len(set(seen[0])) == len(set(seen[1])) == 4
        assert all(seen[i].count(h) == 2 for i in (0, 1) for h in seen[i])
        assert dispatcher.handed_over == [len(seen[0]), len(seen[1])]


class TestReceiver:
    async def test_parent_gone_is_noticed(self) -> None:
        """When the parent's end closes (even a killed parent), the child is told to stop."""
        parent_end, child_end = channel_pair()
        gone = asyncio.Event()
        receiver = Receiver(child_end, lambda s, _released: s.close(), gone.set)
        receiver.start()
        receiver.ready()
        assert parent_end.recv(16) == READY
        parent_end.close()
        await asyncio.wait_for(gone.wait(), 5)
        receiver.stop()

    async def test_a_release_waits_for_room_on_a_full_channel(self) -> None:
        """A RELEASED message that finds the channel full is sent, in order, once the
        parent reads again: never dropped (the parent's per-address count would leak)."""
        parent_end, child_end = channel_pair()
        released: list[Callable[[], None]] = []
        receiver = Receiver(child_end, lambda s, r: (s.close(), released.append(r)), lambda: None)
        receiver.start()
        passed, kept = socket.socketpair()
        try:
            socket.send_fds(parent_end, [b"C10.0.0.5"], [passed.fileno()])
            async with asyncio.timeout(20):
                while not released:
                    await asyncio.sleep(0.005)
            filler = 0
            while True:  # fill the channel: the parent is not reading
                try:
                    child_end.send(b"F" * 64)
                except BlockingIOError:
                    break
                filler += 1
            released[0]()
            assert receiver.unsent == 1  # waiting for room, not dropped
            parent_end.setblocking(False)
            got: list[bytes] = []
            async with asyncio.timeout(20):
                while RELEASED + b"10.0.0.5" not in got:
                    try:
                        got.append(parent_end.recv(512))
                    except BlockingIOError:
                        await asyncio.sleep(0.005)
            assert got[:filler] == [b"F" * 64] * filler
            assert got[filler:] == [RELEASED + b"10.0.0.5"]
            assert receiver.unsent == 0
        finally:
            receiver.stop()
            parent_end.close()
            passed.close()
            kept.close()


class TestAdoptedConnections:
    async def test_handed_over_socket_is_served_in_order(self) -> None:
        """A server that binds nothing serves a socket accepted elsewhere, ACKs in order."""
        sink = Sink()
        server = MllpServer(MllpSettings(port=0), sink)  # type: ignore[arg-type]
        server.accept_handed_over()
        await server.start()
        parent_end, child_end = channel_pair()
        receiver = Receiver(child_end, server.adopt, lambda: None)
        receiver.start()
        dispatcher = Dispatcher(MllpSettings(port=0), [parent_end])
        await dispatcher.start()
        try:

            def talk() -> list[bytes]:
                with _connect_from("127.0.0.7", dispatcher.port) as c:
                    c.sendall(b"".join(SB + message(f"H{n}") + EB for n in range(3)))
                    return recv_acks(_Client(c), 3)

            acks = await asyncio.to_thread(talk)
            assert [msa(a)[1:3] for a in acks] == [["AA", f"H{n}"] for n in range(3)]
            assert [p.address for p in sink.peers] == ["127.0.0.7"] * 3
            with pytest.raises(RuntimeError):
                _ = server.port  # nothing bound in this process
        finally:
            await dispatcher.stop()
            receiver.stop()
            parent_end.close()
            await server.stop(grace_s=2.0)

    async def test_handed_over_tls_connection_keeps_its_client_certificate(self, pki: Pki) -> None:
        """With (mutual) TLS, the child does the handshake on the handed-over socket and
        still learns the client's certificate."""
        settings = MllpSettings(port=0, tls_certfile=pki.server_cert, tls_client_cafile=pki.cafile)
        sink = Sink()
        server = MllpServer(settings, sink, ssl_context=server_ssl_context(settings))  # type: ignore[arg-type]
        server.accept_handed_over()
        await server.start()
        parent_end, child_end = channel_pair()
        receiver = Receiver(child_end, server.adopt, lambda: None)
        receiver.start()
        dispatcher = Dispatcher(settings, [parent_end])
        await dispatcher.start()
        try:
            ctx = client_context(pki, with_cert=True)
            ack = await send_tls(dispatcher.port, ctx, message("TLS1"))
            assert msa(ack)[1:3] == ["AA", "TLS1"]
            assert "engine.trust-a.example" in sink.peers[0].describe()
        finally:
            await dispatcher.stop()
            receiver.stop()
            parent_end.close()
            await server.stop(grace_s=2.0)


class _Client:
    """The shape recv_acks expects (an object with a ``socket``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
