"""Tests for connectors/http.py: POST HL7 v2, 200 only after durable publish; HTTPS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from carebus.errors import ConfigError
from carebus.settings import HttpSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.http import PATH, HttpServer
from connectors.mllp.allowlist import Allowlist
from connectors.pipeline import Pipeline
from connectors.publish import Publisher
from tests.connectors.ingest_helpers import TopicReader, adt
from tests.connectors.tls_helpers import Pki, client_context


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


@pytest.mark.integration
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


# -- HTTPS ---------------------------------------------------------------------------


@asynccontextmanager
async def https_server(
    settings: Settings, topics: TopicNames, http: HttpSettings, allowlist: Allowlist | None = None
) -> AsyncIterator[int]:
    """An HTTP(S) endpoint on a real pipeline and producer; yields its port."""
    pub = Publisher(settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    pipeline = Pipeline(
        pub, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600), allowlist=allowlist
    )
    server = HttpServer(http, pipeline)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()
        await pub.stop()


async def post_tls(
    url: str, body: bytes, ctx: ssl.SSLContext | None
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or False)) as session,
        session.post(url, data=body, timeout=aiohttp.ClientTimeout(total=15)) as r,
    ):
        return r.status, await r.json()


def tls_settings(pki: Pki, *, mutual: bool) -> HttpSettings:
    return HttpSettings(
        port=0,
        tls_certfile=pki.server_cert,
        tls_client_cafile=pki.cafile if mutual else None,
    )


@pytest.mark.integration
class TestHttps:
    async def test_https_post_is_accepted_and_published(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader, pki: Pki
    ) -> None:
        """With a server certificate, an HTTPS POST gets 200 once its records are on Kafka."""
        async with https_server(ingest_settings, topics, tls_settings(pki, mutual=False)) as port:
            url = f"https://127.0.0.1:{port}{PATH}"
            status, body = await post_tls(url, adt("S1"), client_context(pki, with_cert=False))
        assert (status, body["accepted"]) == (200, 1)
        [raw] = reader.read(topics.raw)
        assert raw.headers["carebus-source"] == b"http"
        assert raw.headers["carebus-peer"].startswith(b"127.0.0.1:")
        assert reader.end_offsets(topics.events) == 1

    async def test_plain_http_is_refused_when_tls_is_on(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader, pki: Pki
    ) -> None:
        """A plain-HTTP request to the TLS port gets no answer and stores nothing; HTTPS does."""
        async with https_server(ingest_settings, topics, tls_settings(pki, mutual=False)) as port:
            with pytest.raises(aiohttp.ClientError):
                await post_tls(f"http://127.0.0.1:{port}{PATH}", adt("P1"), None)
            https = f"https://127.0.0.1:{port}{PATH}"
            status, _ = await post_tls(https, adt("P2"), client_context(pki, with_cert=False))
        assert status == 200
        assert [r.key for r in reader.read(topics.raw)] == [b"RXA01|P2"]

    async def test_mutual_tls_refuses_a_client_without_a_certificate(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader, pki: Pki
    ) -> None:
        """With a client CA set, a client presenting no certificate is refused at handshake."""
        async with https_server(ingest_settings, topics, tls_settings(pki, mutual=True)) as port:
            url = f"https://127.0.0.1:{port}{PATH}"
            with pytest.raises(aiohttp.ClientError):
                await post_tls(url, adt("N1"), client_context(pki, with_cert=False))
            status, _ = await post_tls(url, adt("N2"), client_context(pki, with_cert=True))
        assert status == 200
        assert [r.key for r in reader.read(topics.raw)] == [b"RXA01|N2"]

    async def test_client_certificate_is_checked_against_the_allow_list(
        self, ingest_settings: Settings, topics: TopicNames, reader: TopicReader, pki: Pki
    ) -> None:
        """The client certificate's CN decides which facilities an HTTPS sender may use."""
        allowlist = Allowlist.from_mapping(
            {"peers": [{"cn": "engine.trust-a.example", "facilities": ["RXA01"]}]}
        )
        ctx = client_context(pki, with_cert=True)
        settings = tls_settings(pki, mutual=True)
        async with https_server(ingest_settings, topics, settings, allowlist) as port:
            url = f"https://127.0.0.1:{port}{PATH}"
            own = await post_tls(url, adt("C1", facility="RXA01"), ctx)
            other = await post_tls(url, adt("C2", facility="RXB02"), ctx)
        assert own[0] == 200
        assert other[0] == 422
        assert other[1]["results"] == [
            {
                "position": 1,
                "control_id": "C2",
                "status": "rejected",
                "reason": "sender-not-allowed",
                "detail": other[1]["results"][0]["detail"],  # type: ignore[index]
            }
        ]
        [raw] = [r for r in reader.read(topics.raw) if r.key == b"RXA01|C1"]
        assert raw.headers["carebus-peer"].endswith(b";cn=engine.trust-a.example")
        [dead] = reader.read(topics.deadletter)
        assert dead.headers["carebus-reason"] == b"sender-not-allowed"


class TestTlsSettings:
    def test_unreadable_certificate_is_a_config_error(self, tmp_path: Path) -> None:
        """A certificate file that cannot be loaded stops the start with a ConfigError."""
        pipeline = Pipeline(Publisher(Settings()), TopicNames(), publish_timeout_s=1.0)
        missing = HttpSettings(tls_certfile=tmp_path / "absent.pem")
        with pytest.raises(ConfigError, match="HTTP TLS certificate"):
            HttpServer(missing, pipeline)

    def test_client_ca_without_certificate_is_a_config_error(self, tmp_path: Path) -> None:
        """A client CA without a server certificate is refused, naming the http settings."""
        pipeline = Pipeline(Publisher(Settings()), TopicNames(), publish_timeout_s=1.0)
        settings = HttpSettings(tls_client_cafile=tmp_path / "ca.pem")
        with pytest.raises(ConfigError, match=r"http\.tls_certfile"):
            HttpServer(settings, pipeline)
