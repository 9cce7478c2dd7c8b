"""No AA while Kafka is down; after it returns, every AA'd message is on Kafka exactly once.

This test runs its own throwaway broker (``throwaway_broker``: its own home and ports)
so that it can stop and restart it without disturbing the shared test broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import hl7.client
import pytest

from carebus import broker
from carebus.settings import BrokerSettings, MllpSettings
from connectors.ingest import Ingest
from tests.connectors.ingest_helpers import TopicReader, adt, start_throwaway

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _send(port: int, raw: bytes) -> str:
    """Send one message; the MSA-1 code, or "" when the connection closed without an ACK."""
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(20)
        ack = client.send_message(raw)
    for segment in ack.decode("latin-1").split("\r"):
        if segment.startswith("MSA"):
            return str(segment.split("|")[1])
    return ""


class TestBrokerOutage:
    async def test_no_aa_while_broker_stopped_and_exactly_once_after(
        self, throwaway_broker: BrokerSettings
    ) -> None:
        """AE while the broker is down; after restart every AA'd message is there exactly once."""
        settings, topics = await start_throwaway(
            throwaway_broker, "outage", mllp=MllpSettings(port=0, publish_timeout_s=2.0)
        )
        ingest = Ingest(settings)
        await ingest.start()
        acked: Counter[str] = Counter()
        try:
            port = ingest.mllp.port
            for n in range(3):
                assert await asyncio.to_thread(_send, port, adt(f"UP{n}")) == "AA"
                acked[f"UP{n}"] += 1

            await asyncio.to_thread(broker.stop, throwaway_broker)
            down = await asyncio.gather(
                *(asyncio.to_thread(_send, port, adt(f"DOWN{n}")) for n in range(3))
            )
            assert down == ["AE", "AE", "AE"]

            await asyncio.to_thread(broker.start, throwaway_broker)
            # The sender resends until it gets AA (and resends one it had AA for).
            deadline = time.monotonic() + 120  # a generous bound: the loop ends at AA
            pending = ["DOWN0", "DOWN1", "DOWN2", "UP0"]
            while pending and time.monotonic() < deadline:
                control_id = pending[0]
                if await asyncio.to_thread(_send, port, adt(control_id)) == "AA":
                    acked[control_id] += 1
                    pending.pop(0)
                else:
                    await asyncio.sleep(0.5)
            assert pending == []
        finally:
            await ingest.stop()

        reader = TopicReader(settings)
        try:
            raw = Counter(r.headers["carebus-control-id"].decode() for r in reader.read(topics.raw))
            events = Counter(
                str(rec["header"]["control_id"])  # type: ignore[index]
                for _, rec in reader.events(topics.events)
            )
        finally:
            reader.close()
        expected = {control_id: 1 for control_id in acked}
        assert dict(raw) == expected
        assert dict(events) == expected
