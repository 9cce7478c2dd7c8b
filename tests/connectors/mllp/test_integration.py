"""End-to-end MLLP ingest on the real broker, driven by python-hl7's MLLP client.

An AA is a promise: the raw record and the events are on Kafka when it arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hl7.client
import hl7.mllp
import pytest

from carebus.settings import MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.ingest import Ingest
from tests.connectors.ingest_helpers import TopicReader, adt
from tests.connectors.tls_helpers import Pki, client_context

pytestmark = pytest.mark.integration


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.decode("latin-1").split("\r") if s.startswith("MSA"))
    return line.split("|")


def with_mllp(settings: Settings, **changes: Any) -> Settings:
    return settings.replace(mllp=dataclasses.replace(MllpSettings(port=0), **changes))


@pytest.fixture
async def ingest(ingest_settings: Settings) -> AsyncIterator[Ingest]:
    running = Ingest(with_mllp(ingest_settings))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class TestAcknowledgement:
    async def test_aa_only_when_event_is_readable(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Each AA arrives only once its raw record and event can be read from Kafka."""
        port = ingest.mllp.port
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for n in range(1, 4):
                ack = await asyncio.to_thread(client.send_message, adt(f"AA{n}"))
                assert msa(ack)[1:3] == ["AA", f"AA{n}"]
                # Read right after the ACK: no waiting, no retry.
                assert reader.end_offsets(topics.raw) == n
                assert reader.event_count(topics.events) == n
        controls = [rec["header"]["control_id"] for _, rec in reader.events(topics.events)]  # type: ignore[index]
        assert sorted(controls) == ["AA1", "AA2", "AA3"]

    async def test_garbage_gets_ar_with_reason_and_is_dead_lettered(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Bytes that are not HL7 get AR with a reason, and their raw bytes are dead-lettered."""
        with hl7.client.MLLPClient("127.0.0.1", ingest.mllp.port) as client:
            ack = await asyncio.to_thread(client.send_message, b"this is not HL7")
        fields = msa(ack)
        assert fields[1] == "AR"
        assert fields[3].startswith("unparseable: ")
        assert b"\rERR|" in ack
        [rec] = reader.read(topics.deadletter)
        assert rec.value == b"this is not HL7"
        assert rec.headers["carebus-reason"] == b"unparseable"
        assert reader.event_count(topics.events) == 0

    async def test_untranslatable_message_gets_ar_naming_it(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An HL7 message carebus cannot translate gets AR echoing its control id."""
        raw = adt("UT1").replace(b"ADT^A01^ADT_A01", b"ZZZ^Z99")
        with hl7.client.MLLPClient("127.0.0.1", ingest.mllp.port) as client:
            ack = await asyncio.to_thread(client.send_message, raw)
        assert msa(ack)[1:3] == ["AR", "UT1"]
        assert "unsupported-message-type" in msa(ack)[3]
        assert reader.end_offsets(topics.deadletter) == 1

    async def test_duplicates_get_aa_but_are_published_once(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A resent message (same facility and control id) is AA again but not republished."""
        with hl7.client.MLLPClient("127.0.0.1", ingest.mllp.port) as client:
            first = await asyncio.to_thread(client.send_message, adt("D1"))
        with hl7.client.MLLPClient("127.0.0.1", ingest.mllp.port) as client:
            second = await asyncio.to_thread(client.send_message, adt("D1"))
        assert msa(first)[1:3] == msa(second)[1:3] == ["AA", "D1"]
        assert reader.end_offsets(topics.raw) == 1
        assert reader.event_count(topics.events) == 1


async def send_tls(port: int, ctx: ssl.SSLContext, payload: bytes) -> bytes:
    reader, writer = await hl7.mllp.open_hl7_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        writer.writeblock(payload)
        await writer.drain()
        return bytes(await asyncio.wait_for(reader.readblock(), 60))
    finally:
        writer.close()


class TestTls:
    async def test_tls(
        self, ingest_settings: Settings, pki: Pki, topics: TopicNames, reader: TopicReader
    ) -> None:
        """With a server certificate the listener speaks TLS and acknowledges as usual."""
        settings = with_mllp(ingest_settings, tls_certfile=pki.server_cert)
        ingest = Ingest(settings)
        await ingest.start()
        try:
            ack = await send_tls(ingest.mllp.port, client_context(pki, with_cert=False), adt("T1"))
        finally:
            await ingest.stop()
        assert msa(ack)[1:3] == ["AA", "T1"]
        assert reader.event_count(topics.events) == 1

    async def test_mutual_tls_refuses_client_without_certificate(
        self, ingest_settings: Settings, pki: Pki, topics: TopicNames, reader: TopicReader
    ) -> None:
        """With a client CA configured, a client presenting no certificate gets no ACK."""
        settings = with_mllp(
            ingest_settings, tls_certfile=pki.server_cert, tls_client_cafile=pki.cafile
        )
        ingest = Ingest(settings)
        await ingest.start()
        try:
            ctx = client_context(pki, with_cert=False)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await send_tls(ingest.mllp.port, ctx, adt("NC1"))
        finally:
            await ingest.stop()
        assert reader.end_offsets(topics.raw) == 0

    async def test_mutual_tls_and_allow_list(
        self,
        ingest_settings: Settings,
        pki: Pki,
        tmp_path: Path,
        topics: TopicNames,
        reader: TopicReader,
    ) -> None:
        """A certified peer may send as its own facility; as another one it gets AR."""
        allowed = tmp_path / "senders.yaml"
        allowed.write_text(
            "peers:\n  - cn: engine.trust-a.example\n    facilities: [RXA01]\n", encoding="utf-8"
        )
        settings = with_mllp(
            ingest_settings,
            tls_certfile=pki.server_cert,
            tls_client_cafile=pki.cafile,
            allowed_senders_file=allowed,
        )
        ingest = Ingest(settings)
        await ingest.start()
        try:
            ctx = client_context(pki, with_cert=True)
            own = await send_tls(ingest.mllp.port, ctx, adt("M1", facility="RXA01"))
            other = await send_tls(ingest.mllp.port, ctx, adt("M2", facility="RXB02"))
        finally:
            await ingest.stop()
        assert msa(own)[1:3] == ["AA", "M1"]
        assert msa(other)[1:3] == ["AR", "M2"]
        assert msa(other)[3].startswith("sender-not-allowed: ")
        [dead] = reader.read(topics.deadletter)
        assert dead.headers["carebus-reason"] == b"sender-not-allowed"
        assert b"cn=engine.trust-a.example" in dead.headers["carebus-peer"]
        assert reader.event_count(topics.events) == 1
