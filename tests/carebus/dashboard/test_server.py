"""Tests for the dashboard's web app and its Kafka collector."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from carebus.dashboard import Collector, build_app
from carebus.metrics import Metrics
from carebus.settings import Settings
from tests.carebus.kafka_records import (
    create_carebus_topics,
    deadletter_headers,
    produce,
    raw_headers,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def idle() -> AsyncIterator[str]:
    """The app over a collector that was never started (no Kafka at all)."""
    collector = Collector(Settings(), since=NOW - timedelta(hours=1))
    runner, url = await start(build_app(collector, metrics=Metrics(), clock=lambda: NOW))
    yield url
    await runner.cleanup()


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


class TestApp:
    async def test_serves_the_page_and_its_assets(self, idle: str) -> None:
        """/ is the HTML page and its script and stylesheet are served under /static/."""
        status, ctype, html = await fetch(idle + "/")
        assert (status, ctype.split(";")[0]) == (200, "text/html")
        assert 'src="/static/dashboard.js"' in html
        for asset in ("/static/dashboard.js", "/static/dashboard.css"):
            assert (await fetch(idle + asset))[0] == 200

    async def test_status_json_has_the_status_shape(self, idle: str) -> None:
        """/api/status is carebus status's JSON plus the collector state."""
        async with aiohttp.ClientSession() as session, session.get(idle + "/api/status") as resp:
            body = await resp.json()
        assert resp.headers["Cache-Control"] == "no-store"
        assert body["generated_at"] == NOW.isoformat()
        assert body["since"] == (NOW - timedelta(hours=1)).isoformat()
        assert body["deadletters"] == {"total": 0, "reasons": []}
        assert body["alerts"] == {"total": 0, "rules": []}
        assert body["collector"] == {"connected": False, "error": ""}

    async def test_not_ready_until_the_collector_has_read_kafka(self, idle: str) -> None:
        """/readyz is 503 (collector not connected) while /healthz is 200."""
        assert (await fetch(idle + "/readyz"))[0] == 503
        assert (await fetch(idle + "/healthz"))[0] == 200
        assert (await fetch(idle + "/metrics"))[0] == 200


async def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.mark.integration
class TestCollector:
    async def test_counts_records_written_before_and_after_start(
        self, kafka_isolated: Settings
    ) -> None:
        """The collector reads the window from since, then keeps tailing new records."""
        names = await asyncio.to_thread(create_carebus_topics, kafka_isolated)
        now = datetime.now(UTC)
        await asyncio.to_thread(
            produce,
            kafka_isolated,
            [(names.raw, b"a", b"MSH", raw_headers("RX1", now, "A1"))],
        )
        collector = Collector(
            kafka_isolated,
            since=now - timedelta(minutes=5),
            expectations={"RX1": timedelta(hours=1)},
            refresh_s=0.3,
        )
        collector.start()
        try:

            def received() -> int:
                feeds = collector.snapshot(datetime.now(UTC))["feeds"]
                return sum(f["messages"] for f in feeds)

            await wait_for(lambda: collector.ready and received() == 1)
            await asyncio.to_thread(
                produce,
                kafka_isolated,
                [
                    (names.raw, b"b", b"MSH", raw_headers("G0001", now, "B1")),
                    (
                        names.deadletter,
                        b"c",
                        b"junk",
                        deadletter_headers("G0001", now, "B2", "unparseable"),
                    ),
                ],
            )
            await wait_for(lambda: received() == 2)

            def deadletters() -> int:
                return int(collector.snapshot(datetime.now(UTC))["deadletters"]["total"])

            await wait_for(lambda: deadletters() == 1)

            def raw_end() -> int:
                topics = collector.snapshot(datetime.now(UTC))["topics"]
                return sum(t["total"] for t in topics if t["topic"] == names.raw)

            await wait_for(lambda: raw_end() == 2)  # offsets refresh every refresh_s
            body = collector.snapshot(datetime.now(UTC))
        finally:
            await asyncio.to_thread(collector.stop)
        assert body["collector"] == {"connected": True, "error": ""}
        assert {f["provider"]: f["messages"] for f in body["feeds"]} == {"RX1": 1, "G0001": 1}
