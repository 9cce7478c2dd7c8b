"""Tests for connectors/http.py: POST HL7 v2, 200 only after durable publish."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from carebus.settings import HttpSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.http import PATH, HttpServer
from connectors.pipeline import Pipeline
from connectors.publish import Publisher
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration


@pytest.fixture
async def url(ingest_settings: Settings, topics: TopicNames) -> AsyncIterator[str]:
    pub = Publisher(ingest_settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    pipeline = Pipeline(pub, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600))
    server = HttpServer(HttpSettings(port=0, max_body_bytes=64 * 1024), pipeline)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}{PATH}"
    finally:
        await server.stop()
        await pub.stop()


async def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": "x-application/hl7-v2+er7"}) as r,
    ):
        return r.status, await r.json()


class TestHttp:
    async def test_one_message_200_after_publish(
        self, url: str, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A good message gets 200, and its event is readable when the response arrives."""
        status, body = await post(url, adt("H1"))
        assert status == 200
        assert body["accepted"] == 1
        assert body["results"] == [{"position": 1, "control_id": "H1", "status": "accepted"}]
        assert reader.end_offsets(topics.events) == 1

    async def test_batch_with_reject_is_422_with_reasons(
        self, url: str, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A batch with a bad message gets 422 naming it; the good ones are published."""
        bad = adt("H3").replace(b"ADT^A01^ADT_A01", b"ZZZ^Z01")
        status, body = await post(url, adt("H2") + b"\n" + bad)
        assert status == 422
        assert (body["accepted"], body["rejected"]) == (1, 1)
        results = body["results"]
        assert isinstance(results, list)
        assert results[1]["reason"] == "unsupported-message-type"
        assert results[1]["control_id"] == "H3"
        assert reader.end_offsets(topics.events) == 1
        assert reader.end_offsets(topics.deadletter) == 1

    async def test_duplicate_post_is_not_published_twice(
        self, url: str, topics: TopicNames, reader: TopicReader
    ) -> None:
        """Posting the same message again answers 200 as a duplicate without republishing."""
        await post(url, adt("H4"))
        status, body = await post(url, adt("H4"))
        assert status == 200
        assert body["duplicates"] == 1
        assert reader.end_offsets(topics.raw) == 1

    async def test_empty_and_oversize_bodies(self, url: str) -> None:
        """An empty body is 400 and a body over the limit 413, each with a JSON reason."""
        status, body = await post(url, b"  ")
        assert (status, body["error"]) == (400, "empty-body")
        status, body = await post(url, adt("H5") * 400)
        assert (status, body["error"]) == (413, "body-too-large")

    async def test_garbage_is_422(self, url: str, topics: TopicNames, reader: TopicReader) -> None:
        """Bytes that are not HL7 are rejected with reason unparseable and dead-lettered."""
        status, body = await post(url, b"hello")
        assert status == 422
        results = body["results"]
        assert isinstance(results, list)
        assert results[0]["reason"] == "unparseable"
        assert reader.end_offsets(topics.deadletter) == 1
