"""A bad message over MLLP is rejected (AR, dead letter), never answered AE, on the real broker.

AE means "resend": a message that can never be read must not get it, or the sending
engine resends it for ever and every message queued behind it waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import hl7.client
import pytest

from carebus.settings import MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.ingest import Ingest
from tests.connectors.hl7.strategies import with_msh18
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration

DETAIL = "MSH-18 names a character set that cannot carry HL7"


def segment(ack: bytes, name: str) -> list[str]:
    line = next(s for s in ack.decode("latin-1").split("\r") if s.startswith(name))
    return line.split("|")


@pytest.fixture
async def ingest(ingest_settings: Settings) -> AsyncIterator[Ingest]:
    running = Ingest(ingest_settings.replace(mllp=dataclasses.replace(MllpSettings(port=0))))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class TestUnusableCharacterSet:
    @pytest.mark.parametrize("latin1", [True, False], ids=["latin1-bytes", "ascii-bytes"])
    async def test_msh18_undefined_gets_ar_and_is_dead_lettered(
        self, ingest: Ingest, topics: TopicNames, reader: TopicReader, latin1: bool
    ) -> None:
        """MSH-18 UNDEFINED gets AR naming MSH-18, its raw bytes go to the dead-letter topic,
        and the next message on the same connection is accepted."""
        raw = with_msh18(adt("CS1"), b"UNDEFINED")
        if latin1:
            raw = raw.replace(b"TEST^PATIENT", b"T\xc9ST^PATIENT")
        with hl7.client.MLLPClient("127.0.0.1", ingest.mllp.port) as client:
            ack = await asyncio.to_thread(client.send_message, raw)
            after = await asyncio.to_thread(client.send_message, adt("CS2"))
        msa = segment(ack, "MSA")
        assert msa[1:3] == ["AR", "CS1"]
        assert msa[3] == f"unparseable: {DETAIL}"
        assert "MSH^1^18" in segment(ack, "ERR")[2]
        assert segment(after, "MSA")[1:3] == ["AA", "CS2"]
        [dead] = reader.read(topics.deadletter)
        assert dead.value == raw
        assert dead.headers["carebus-reason"] == b"unparseable"
        assert dead.headers["carebus-detail"] == DETAIL.encode()
        assert dead.headers["carebus-control-id"] == b"CS1"
        assert reader.end_offsets(topics.raw) == 1  # CS2 only
