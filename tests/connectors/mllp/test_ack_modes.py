"""What a sender sees in each acknowledgement mode, on the real broker (docs/integrators.md).

A sender that asks for no ACK (MSH-15/MSH-16 ``NE``) must still learn that a message
was not stored: the listener closes its connection, and it resends. A rejected
message it asked no ACK for gets none, and is dead-lettered as always.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from carebus import broker
from carebus.settings import BrokerSettings, MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.ingest import Ingest
from tests.connectors.ingest_helpers import TopicReader, adt, start_throwaway
from tests.connectors.mllp.test_guards import closed, read_frames
from tests.connectors.mllp.test_server import EB, SB, msa

pytestmark = pytest.mark.integration


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(30)
    return sock


def exchange(port: int, *messages: bytes, acks: int) -> tuple[list[bytes], bool]:
    """Send ``messages`` on one connection; up to ``acks`` frames read back, and whether
    the listener closed the connection before sending that many."""
    with connect(port) as sock:
        sock.sendall(b"".join(SB + m + EB for m in messages))
        frames = read_frames(sock, acks)
        return frames, len(frames) < acks and closed(sock)


class TestRejectedWithoutAck:
    async def test_rejected_message_gets_no_ack_but_is_dead_lettered(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader
    ) -> None:
        """NE/NE and rejected: no ACK, the raw bytes on the dead-letter topic, and the
        connection stays open (the next message on it is answered)."""
        ingest = Ingest(ingest_settings.replace(mllp=MllpSettings(port=0)))
        await ingest.start()
        try:
            bad = adt("NER1", ack_modes=("NE", "NE")).replace(b"ADT^A01^ADT_A01", b"ZZZ^Z99")
            good = adt("NER2", ack_modes=("AL", "AL"))
            frames, was_closed = await asyncio.to_thread(
                exchange, ingest.mllp.port, bad, good, acks=2
            )
        finally:
            await ingest.stop()
        assert [msa(f)[1:3] for f in frames] == [["CA", "NER2"], ["AA", "NER2"]]
        assert not was_closed
        [dead] = reader.read(topics.deadletter)
        assert dead.value == bad
        assert dead.headers["carebus-reason"] == b"unsupported-message-type"


class TestNotStoredWithoutAck:
    @pytest.mark.slow
    async def test_not_stored_closes_the_connection_in_every_mode_without_an_ack(
        self, throwaway_broker: BrokerSettings
    ) -> None:
        """Kafka down: original mode gets AE, AL/NE gets CE, and NE/NE (or SU only) gets
        no ACK and a closed connection; resent once Kafka is back, the message is stored."""
        settings, topics = await start_throwaway(
            throwaway_broker, "ackmodes", mllp=MllpSettings(port=0, publish_timeout_s=2.0)
        )
        ingest = Ingest(settings)
        await ingest.start()
        try:
            port = ingest.mllp.port
            [up], _ = await asyncio.to_thread(exchange, port, adt("UP1"), acks=1)
            assert msa(up)[1:3] == ["AA", "UP1"]

            await asyncio.to_thread(broker.stop, throwaway_broker)
            # Each connection gets a second message: an answer to it shows the
            # connection stayed open; the silent modes' second message is never read.
            original = await asyncio.to_thread(exchange, port, adt("DN1"), adt("DN1B"), acks=2)
            commit_only = await asyncio.to_thread(
                exchange,
                port,
                adt("DN2", ack_modes=("AL", "NE")),
                adt("DN2B", ack_modes=("AL", "NE")),
                acks=2,
            )
            silent = await asyncio.to_thread(
                exchange, port, adt("DN3", ack_modes=("NE", "NE")), adt("DN3B"), acks=1
            )
            success_only = await asyncio.to_thread(
                exchange, port, adt("DN4", ack_modes=("SU", "SU")), adt("DN4B"), acks=1
            )

            await asyncio.to_thread(broker.start, throwaway_broker)
            # The NE/NE sender resends on a new connection; an AL message after it on
            # the same connection shows both were taken, in order.
            resent: list[bytes] = []
            async with asyncio.timeout(60):
                while not resent:
                    frames, _ = await asyncio.to_thread(
                        exchange,
                        port,
                        adt("DN3", ack_modes=("NE", "NE")),
                        adt("AFTER1", ack_modes=("NE", "AL")),
                        acks=1,
                    )
                    resent = [f for f in frames if msa(f)[1] == "AA"]
                    if not resent:
                        await asyncio.sleep(0.5)  # a sender's pause before it resends
        finally:
            await ingest.stop()

        assert [msa(f)[1:3] for f in original[0]] == [["AE", "DN1"], ["AE", "DN1B"]]
        assert msa(original[0][0])[3].startswith("kafka-unavailable")
        assert [msa(f)[1:3] for f in commit_only[0]] == [["CE", "DN2"], ["CE", "DN2B"]]
        assert silent == ([], True)
        assert success_only == ([], True)
        assert msa(resent[0])[1:3] == ["AA", "AFTER1"]
        reader = TopicReader(settings)
        try:
            stored = [r.headers["carebus-control-id"] for r in reader.read(topics.raw)]
        finally:
            reader.close()
        assert stored.count(b"DN3") == 1
        assert b"AFTER1" in stored
